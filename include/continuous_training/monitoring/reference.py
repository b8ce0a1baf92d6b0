"""What a model is checked against: the drift profiles logged with its training run.

* `data/stats.json` (the `stats` stage): `drift_reference` profiles of the features and the label on the rows the
  model was trained from;
* `data/prediction_profile.json` (the `evaluate` stage): the profile of the model's own predictions on its test
  split, the reference of prediction drift;
* the run's `test_*` metrics, the reference of performance drift.
"""

from __future__ import annotations

import json
import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from continuous_training.errors import PipelineError
from continuous_training.model.pyfunc import model_classes
from continuous_training.spec import DatasetSpec
from continuous_training.tracking import PREDICTION_PROFILE_ARTIFACT, STATS_ARTIFACT


@dataclass(frozen=True)
class ModelReference:
    """The drift references of one model version."""

    features: dict[str, dict[str, Any]]
    predictions: dict[str, dict[str, Any]]
    metrics: dict[str, float]
    classes: list[str] | None


def load_reference(client: MlflowClient, spec: DatasetSpec, run_id: str, model_uri: str) -> ModelReference:
    """The references logged with a model's training run; a clear error when the run predates them."""
    folders = {posixpath.dirname(artifact) for artifact in (STATS_ARTIFACT, PREDICTION_PROFILE_ARTIFACT)}
    logged = {artifact.path for folder in folders for artifact in client.list_artifacts(run_id, folder)}
    documents = {}
    with tempfile.TemporaryDirectory() as folder:
        for artifact in (STATS_ARTIFACT, PREDICTION_PROFILE_ARTIFACT):
            if artifact not in logged:
                raise PipelineError(f"the training run {run_id} of {model_uri} has no {artifact}; retrain to get a "
                                    "model drift checks can compare against")
            documents[artifact] = json.loads(Path(client.download_artifacts(run_id, artifact, folder)).read_text())
    stats = documents[STATS_ARTIFACT]
    if "drift_reference" not in stats:
        raise PipelineError(f"{STATS_ARTIFACT} of run {run_id} ({model_uri}) has no drift_reference (written by an "
                            "older version): retrain to get a model drift checks can compare against")
    features = {name: stats["drift_reference"]["columns"][name] for name in spec.feature_columns}
    metrics = {key: value for key, value in client.get_run(run_id).data.metrics.items() if key.startswith("test_")}
    return ModelReference(features=features, predictions=documents[PREDICTION_PROFILE_ARTIFACT]["columns"],
                          metrics=metrics, classes=model_classes(model_uri))
