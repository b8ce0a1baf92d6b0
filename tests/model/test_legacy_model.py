"""Models logged before the pyfunc was logged from code still score through the real Spark scoring path."""

from __future__ import annotations

import json
import sqlite3
import tarfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
from continuous_training.model.pyfunc import log_pyfunc_model
from continuous_training.model.torch_mlp import build_mlp, numpy_weights
from continuous_training.model.transform import FeatureTransform
from continuous_training.serving.predict import predict_spark

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LOCATIONS = {"experiments": "artifact_location", "runs": "artifact_uri", "logged_models": "artifact_location",
             "model_versions": "storage_location"}


@pytest.fixture
def old_store(tmp_path):
    """The fixture's MLflow store, moved to tmp_path (its artifact locations rewritten), as the tracking URI."""
    recorded = json.loads((FIXTURES / "old_model.json").read_text())
    with tarfile.open(FIXTURES / "old_model.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        for table, column in LOCATIONS.items():
            db.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (recorded["store"], str(tmp_path)))
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield recorded
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


def test_a_model_logged_before_models_from_code_still_scores(spark, old_store):
    columns = [field.split()[0] for field in old_store["schema"].split(", ")]
    rows = spark.createDataFrame([(index, *[row[c] for c in columns]) for index, row in enumerate(old_store["rows"])],
                                 f"row int, {old_store['schema']}").repartition(2)

    scored = predict_spark(rows, "models:/old_model@champion", "multiclass_classification")
    result = scored.toPandas().sort_values("row", ignore_index=True)
    expected = old_store["predictions"]

    assert result["prediction"].tolist() == [row["prediction"] for row in expected]
    np.testing.assert_allclose(result["probability"], [row["probability"] for row in expected], atol=1e-9)
    np.testing.assert_allclose(np.stack(result["probabilities"]), [row["probabilities"] for row in expected],
                               atol=1e-9)


def test_old_and_new_models_score_in_the_same_python_workers(spark, old_store):
    columns = [field.split()[0] for field in old_store["schema"].split(", ")]
    rows = spark.createDataFrame([(index, *[row[c] for c in columns]) for index, row in enumerate(old_store["rows"])],
                                 f"row int, {old_store['schema']}").repartition(2)
    old = mlflow.pyfunc.load_model("models:/old_model@champion")
    transform = FeatureTransform.from_dict(old.unwrap_python_model().transform.to_dict())
    with mlflow.start_run():
        new = log_pyfunc_model(weights=numpy_weights(build_mlp(transform.feature_dim, "multiclass_classification", 3,
                                                               hidden=(4,), seed=1)),
                               transform=transform, task="multiclass_classification", feature_dim=transform.feature_dim,
                               num_classes=3, hidden=(4,), classes=["gold", "silver", "bronze"],
                               input_example=rows.drop("row").limit(2).toPandas())
    new_expected = mlflow.pyfunc.load_model(new.model_uri).predict(rows.orderBy("row").toPandas())

    for uri, expected in [(new.model_uri, new_expected["prediction"].tolist()),
                          ("models:/old_model@champion", [row["prediction"] for row in old_store["predictions"]]),
                          (new.model_uri, new_expected["prediction"].tolist())]:
        scored = predict_spark(rows, uri, "multiclass_classification").toPandas().sort_values("row")
        assert scored["prediction"].tolist() == expected
