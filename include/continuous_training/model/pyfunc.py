"""The served model: an MLflow pyfunc on the RAW input columns (`FeatureTransform`, then the MLP in the framework
that trained it), logged from code (`code_model.py`) with its transform, weights and config as artifacts and this
package's `errors` and `model/` modules as its code.

Loading and predicting import numpy, pandas, MLflow and the model's framework only: no pyspark, no Airflow, no
JVM, so the same artifact scores batches in Spark executors and serves online (`mlflow models serve`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.model import ModelInfo

from continuous_training.errors import PipelineError
from continuous_training.model.transform import FeatureTransform, conform_input

TRANSFORM_FILE, WEIGHTS_FILE, CONFIG_FILE = "feature_transform.json", "weights.npz", "model_config.json"
PREDICTION, PROBABILITY, PROBABILITIES = "prediction", "probability", "probabilities"
THREADS_ENV = "CONTINUOUS_TRAINING_MODEL_THREADS"
"""When set, the number of intra-op threads the model's framework may use (read when the model loads)."""
CODE_DIGEST = "served_code_sha256"
"""The key, in a logged model's metadata, of the digest of the code it carries (`served_code_digest`)."""
_PACKAGE = Path(__file__).resolve().parents[1]
_CODE_MODEL = Path(__file__).with_name("code_model.py")
_SERVING_PACKAGES = {"torch": ("mlflow", "torch", "numpy", "pandas"),
                     "tensorflow": ("mlflow", "tensorflow-cpu", "keras", "numpy", "pandas")}


def _sigmoid(scores: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -scores))


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class TabularModel(mlflow.pyfunc.PythonModel):
    """Raw rows → FeatureTransform → MLP (torch or Keras, `config["framework"]`) → predictions (columns depend on
    the task, see `predict`)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Read the transform, config and weights from the model's artifacts; limit the framework's threads to
        `$CONTINUOUS_TRAINING_MODEL_THREADS` when set."""
        artifacts = context.artifacts
        transform = FeatureTransform.from_dict(json.loads(Path(artifacts["feature_transform"]).read_text()))
        config = json.loads(Path(artifacts["model_config"]).read_text())
        with np.load(artifacts["weights"], allow_pickle=False) as stored:
            weights = {name: stored[name] for name in stored.files}
        self.setup(transform, config, weights)
        if os.environ.get(THREADS_ENV):
            self.limit_threads(int(os.environ[THREADS_ENV]))

    def setup(self, transform: FeatureTransform, config: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
        """Build the MLP of `config` in its framework and load its weights (CPU, inference mode)."""
        self.transform, self.config = transform, config
        self.framework = config.get("framework", "torch")
        shape = (config["feature_dim"], config["task"], config["num_classes"], tuple(config["hidden"]))
        if self.framework == "tensorflow":
            from continuous_training.model.keras_mlp import build_keras_mlp

            self.network = build_keras_mlp(*shape)
            self.network.set_weights([weights[weight.path] for weight in self.network.weights])
        else:
            import torch

            from continuous_training.model.torch_mlp import build_mlp

            self.network = build_mlp(*shape)
            self.network.load_state_dict({name: torch.from_numpy(np.asarray(value)) for name, value in weights.items()})
            self.network.eval()

    def limit_threads(self, threads: int) -> None:
        """Cap torch's intra-op threads (TensorFlow reads `TF_NUM_INTRAOP_THREADS` when it starts instead)."""
        if self.framework == "torch":
            import torch

            torch.set_num_threads(threads)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Raw MLP outputs (logits for classifiers) as float64."""
        if self.framework == "tensorflow":
            return np.asarray(self.network(features, training=False), dtype=np.float64)
        import torch

        with torch.no_grad():
            return self.network(torch.from_numpy(features)).double().numpy()

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """regression: `prediction`; binary: `prediction` (class label), `probability` (P(classes[1]));
        multiclass: `prediction`, `probability` (of the predicted class), `probabilities` (ordered as classes)."""
        scores = self.scores(self.transform.transform(model_input))
        task, classes = self.config["task"], self.config["classes"]
        if task == "regression":
            return pd.DataFrame({PREDICTION: scores[:, 0]})
        if task == "binary_classification":
            positive = _sigmoid(scores[:, 0])
            labels = np.where(positive >= 0.5, classes[1], classes[0]).astype(object)
            return pd.DataFrame({PREDICTION: labels, PROBABILITY: positive})
        probabilities = _softmax(scores)
        best = probabilities.argmax(axis=1)
        return pd.DataFrame({
            PREDICTION: np.asarray(classes, dtype=object)[best],
            PROBABILITY: probabilities[np.arange(len(best)), best],
            PROBABILITIES: list(probabilities.tolist()),
        })


def _pinned(package: str) -> str:
    return f"{package}=={version(package).split('+')[0]}"


def _served_files(package: Path) -> list[Path]:
    """The files of the code a model carries, relative to the package: `__init__`, `errors` and `model/` (but
    `__pycache__`), sorted."""
    model = [path.relative_to(package) for path in (package / "model").rglob("*")
             if path.is_file() and "__pycache__" not in path.parts]
    return sorted([Path("__init__.py"), Path("errors.py"), *model])


def served_code_digest(package: Path = _PACKAGE) -> str:
    """SHA-256 over the served files of a package folder (default: the installed package), their relative paths
    and bytes: equal digests, the same served code."""
    digest = hashlib.sha256()
    for relative in _served_files(package):
        content = (package / relative).read_bytes()
        digest.update(f"{relative.as_posix()}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def _served_code(folder: Path) -> Path:
    """A copy of the code the model carries (`_served_files` of the installed package)."""
    package = folder / _PACKAGE.name
    for relative in _served_files(_PACKAGE):
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(_PACKAGE / relative, package / relative)
    return package


def log_pyfunc_model(*, weights: dict[str, np.ndarray], transform: FeatureTransform, task: str,
                     feature_dim: int, num_classes: int | None, hidden: Sequence[int], classes: list[str] | None,
                     input_example: pd.DataFrame, framework: str = "torch", name: str = "model") -> ModelInfo:
    """Log the pyfunc from code (`code_model.py`, with transform + weights + config as artifacts and the served
    code, `_served_code`, whose digest is the model's `CODE_DIGEST` metadata) into the active MLflow run.

    `weights` are the MLP's as numpy arrays: a torch `state_dict`'s names, or Keras weight paths (`framework`
    "tensorflow"). The signature's inputs are `transform.input_schema()`, its outputs inferred from the
    predictions on `input_example` (its feature columns, conformed to the signature, are saved as the input
    example). Requirements pin mlflow, numpy, pandas and the framework: loading and predicting imports neither
    pyspark nor Airflow.
    """
    if framework not in _SERVING_PACKAGES:
        raise PipelineError(f"unknown framework {framework!r}; expected one of {', '.join(_SERVING_PACKAGES)}")
    if transform.feature_dim != feature_dim:
        raise PipelineError(f"feature_dim {feature_dim} does not match the transform's {transform.feature_dim}")
    if task != "regression" and (not classes or len(classes) < 2):
        raise PipelineError(f"{task} needs at least two classes, got {classes}")
    config = {"task": task, "feature_dim": feature_dim, "num_classes": num_classes, "hidden": list(hidden),
              "classes": classes, "framework": framework}
    schema = transform.input_schema()
    transform.check_columns(input_example)
    example = conform_input(input_example[transform.input_columns].reset_index(drop=True), schema)
    model = TabularModel()
    model.setup(transform, config, weights)
    outputs = infer_signature(example, model.predict(None, example)).outputs
    signature = ModelSignature(inputs=schema, outputs=outputs)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / TRANSFORM_FILE).write_text(json.dumps(transform.to_dict(), indent=2))
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        np.savez(folder / WEIGHTS_FILE, **{name: np.asarray(value) for name, value in weights.items()})
        code = _served_code(folder / "code")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(_CODE_MODEL),
            artifacts={"feature_transform": str(folder / TRANSFORM_FILE), "model_config": str(folder / CONFIG_FILE),
                       "weights": str(folder / WEIGHTS_FILE)},
            code_paths=[str(code)],
            signature=signature,
            input_example=example,
            pip_requirements=[_pinned(package) for package in _SERVING_PACKAGES[framework]],
            metadata={CODE_DIGEST: served_code_digest(code)},
        )


def model_classes(model_uri: str) -> list[str] | None:
    """The class labels a logged model predicts, in probability order (None for regression): read from its config
    artifact, without loading the model and its framework."""
    info = mlflow.models.get_model_info(model_uri)
    config = info.flavors["python_function"]["artifacts"]["model_config"]["path"]
    return json.loads(mlflow.artifacts.load_text(f"{info.artifact_path}/{config}"))["classes"]
