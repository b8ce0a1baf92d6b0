"""Scoring in Spark executors: `predict_spark` gives what the pyfunc gives, with one version pinned from an alias."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from continuous_training.serving.predict import predict_spark
from tabular_case import PREDICTION_COLUMNS, log_model

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_predict_spark_matches_pyfunc(framework, frames, transform, tracking):
    _, feature_transform = transform
    task = "multiclass_classification"
    scoring = frames[0].limit(20).unionByName(frames[1]).repartition(2)
    info = log_model(task, feature_transform, frames[1].toPandas(), framework)
    version = mlflow.register_model(info.model_uri, "serving_test").version
    mlflow.MlflowClient().set_registered_model_alias("serving_test", "champion", version)

    scored = predict_spark(scoring, "models:/serving_test@champion", task)
    result = scored.toPandas().sort_values("customer id", ignore_index=True)
    expected = mlflow.pyfunc.load_model(info.model_uri).predict(scoring.orderBy("customer id").toPandas())

    assert scored.columns == [*scoring.columns, *PREDICTION_COLUMNS[task]]
    assert len(result) == 25 and result["prediction"].notna().all()
    assert result["prediction"].tolist() == expected["prediction"].tolist()
    np.testing.assert_allclose(result["probability"], expected["probability"], atol=1e-9)
    assert dict(scored.dtypes)["probabilities"] == "array<double>"
    np.testing.assert_allclose(np.stack(result["probabilities"]), np.stack(expected["probabilities"]), atol=1e-9)
