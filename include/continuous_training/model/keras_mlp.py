"""The Keras twin of the torch MLP (`torch_mlp.py`) and its losses; imports neither torch nor pyspark, so a
TensorFlow model's pyfunc loads with TensorFlow alone."""

from __future__ import annotations

from collections.abc import Sequence

from continuous_training.model.tasks import output_dim


def build_keras_mlp(input_dim: int, task: str, num_classes: int | None = None, hidden: Sequence[int] = (64, 32),
                    seed: int = 0):
    """The Keras twin of `torch_mlp.build_mlp`: the same widths, ReLU, raw scores out; weights seeded by `seed`.
    Layers are named `hidden_<i>` and `output`, so weight paths (`mlp/hidden_0/kernel`, ...) are the same in every
    process."""
    import keras

    if input_dim < 1:
        raise ValueError(f"input_dim must be positive, got {input_dim}")
    layers = [keras.Input(shape=(input_dim,))]
    for index, units in enumerate(hidden):
        layers.append(keras.layers.Dense(units, activation="relu", name=f"hidden_{index}",
                                         kernel_initializer=keras.initializers.GlorotUniform(seed=seed + index)))
    layers.append(keras.layers.Dense(output_dim(task, num_classes), name="output",
                                     kernel_initializer=keras.initializers.GlorotUniform(seed=seed + len(hidden))))
    return keras.Sequential(layers, name="mlp")


def keras_loss(task: str):
    """Per-example loss (no reduction): MSE, binary cross-entropy on logits, sparse categorical cross-entropy."""
    import keras

    if task == "regression":
        return keras.losses.MeanSquaredError(reduction=None)
    if task == "binary_classification":
        return keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)
    output_dim(task, 2)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)


def keras_weights(model) -> dict:
    """The model's weights as numpy arrays by path (what `model.pyfunc.log_pyfunc_model` stores)."""
    return {weight.path: weight.numpy() for weight in model.weights}
