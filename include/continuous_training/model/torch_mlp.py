"""The model the training stage fits: a small MLP over the featurized vector, and its loss."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from continuous_training.model.tasks import TASKS, output_dim


def build_mlp(input_dim: int, task: str, num_classes: int | None = None,
              hidden: Sequence[int] = (64, 32), seed: int = 0) -> nn.Sequential:
    """ReLU MLP with deterministic initial weights for `seed`; outputs raw scores (logits for classifiers)."""
    if input_dim < 1:
        raise ValueError(f"input_dim must be positive, got {input_dim}")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        layers: list[nn.Module] = []
        width = input_dim
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU()]
            width = units
        layers.append(nn.Linear(width, output_dim(task, num_classes)))
        return nn.Sequential(*layers)
    finally:
        torch.random.set_rng_state(generator_state)


def numpy_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's state_dict as numpy arrays by name (what `model.pyfunc.log_pyfunc_model` stores)."""
    return {name: tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}


def loss_for(task: str, reduction: str = "mean") -> nn.Module:
    """MSE for regression, BCE-with-logits for binary, cross-entropy for multiclass classification."""
    if task == "regression":
        return nn.MSELoss(reduction=reduction)
    if task == "binary_classification":
        return nn.BCEWithLogitsLoss(reduction=reduction)
    if task == "multiclass_classification":
        return nn.CrossEntropyLoss(reduction=reduction)
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
