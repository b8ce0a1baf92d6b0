"""The tabular case the model and serving tests share: a spec with awkward column names and types, training and
scoring rows, raw text as a CSV holds it, a helper that logs a small pyfunc for it, and the fixtures built on it
(exposed to a test folder by importing them into its conftest)."""

from __future__ import annotations

from decimal import Decimal

import mlflow
import numpy as np
import pandas as pd
import pytest
from continuous_training.data.features import feature_transform, fit_feature_pipeline
from continuous_training.model.keras_mlp import build_keras_mlp, keras_weights
from continuous_training.model.pyfunc import log_pyfunc_model
from continuous_training.model.torch_mlp import build_mlp, numpy_weights
from continuous_training.model.transform import FeatureTransform
from continuous_training.spec import parse_spec

SCHEMA = {"customer id": "string", "Avg Session (min)": "double", "tenure": "int", "constant": "double",
          "monthly charges": "decimal(8,2)", "plan <tier>": "string", "region code": "int", "rating": "double",
          "spend": "double", "churned": "string", "segment": "string", "autopay": "boolean"}
FEATURES = {"numeric": ["Avg Session (min)", "tenure", "constant", "monthly charges"],
            "categorical": ["plan <tier>", "region code", "rating", "autopay"]}
LABELS = {"regression": "spend", "binary_classification": "churned", "multiclass_classification": "segment"}
CLASSES = {"regression": None, "binary_classification": ["no", "yes"],
           "multiclass_classification": ["gold", "silver", "bronze"]}
RAW_TEXT = pd.DataFrame({
    "customer id": ["t0", "t1", "t2", "t3", "t4"],
    "Avg Session (min)": ["4.25", " 7 ", "0.5", "1e1", "31.5"],
    "tenure": ["12", " 70 ", "+5", "0", "-3"],
    "constant": ["3.5", "3.5", "1", "3.5", "3.5"],
    "monthly charges": ["1.005", "-2.675", "99.995", "1.0049999999999999999", " 55.104999 "],
    "plan <tier>": ["plus", "basic", "pro", "enterprise", "plus"],
    "region code": ["20", " 30 ", "+10", "40", "-20"],
    "rating": ["2", "1.5", "12345678", "7.25", "2.0"],
    "autopay": ["false", " TRUE ", "no", "1", "f"],
})
"""Raw text as a CSV would hold it: edge cases of Spark's casts to the spec types (HALF_UP decimals, boolean words)."""
PREDICTION_COLUMNS = {"regression": ["prediction"], "binary_classification": ["prediction", "probability"],
                      "multiclass_classification": ["prediction", "probability", "probabilities"]}


def make_spec(task: str):
    return parse_spec({"name": "serving_test", "source": {"path": "unused.csv", "format": "csv"}, "schema": SCHEMA,
                       "label": LABELS[task], "task": task, "id_column": "customer id", "features": FEATURES})


def train_rows(count: int = 60) -> list[tuple]:
    rng = np.random.default_rng(7)
    rows = []
    for i in range(count):
        rows.append((
            f"c{i}",
            None if i % 9 == 0 else float(np.round(rng.gamma(2, 4), 3)),
            None if i % 11 == 0 else int(rng.integers(0, 72)),
            3.5,
            Decimal(f"{rng.uniform(20, 120):.2f}"),
            None if i % 13 == 0 else str(rng.choice(["basic", "plus", "pro"], p=[0.5, 0.3, 0.2])),
            int(rng.choice([10, 20, 30])),
            float(rng.choice([1.5, 2.0, 12345678.0])),
            float(rng.normal(50, 10)),
            str(rng.choice(["no", "yes"])),
            str(rng.choice(["gold", "silver", "bronze"])),
            None if i % 17 == 0 else i % 3 == 0,
        ))
    return rows


def scoring_rows() -> list[tuple]:
    """Rows with nulls, NaN, categories unseen in training and a null categorical."""
    return [
        ("s0", 4.25, 12, 3.5, Decimal("55.10"), "plus", 20, 2.0, 1.0, "no", "gold", True),
        ("s1", None, None, 3.5, None, None, None, None, 2.0, "yes", "silver", None),
        ("s2", float("nan"), 70, 1.0, Decimal("99.99"), "enterprise", 40, 7.25, 3.0, "no", "bronze", False),
        ("s3", 0.0, 0, 3.5, Decimal("20.00"), "basic", 10, 12345678.0, 4.0, "yes", "gold", True),
        ("s4", 31.5, 5, None, Decimal("70.00"), "pro", 30, 1.5, 5.0, "no", "silver", False),
    ]


def log_model(task: str, transform: FeatureTransform, example: pd.DataFrame, framework: str = "torch"):
    classes = CLASSES[task]
    num_classes = len(classes) if task == "multiclass_classification" else None
    if framework == "tensorflow":
        weights = keras_weights(build_keras_mlp(transform.feature_dim, task, num_classes, hidden=(8,), seed=3))
    else:
        weights = numpy_weights(build_mlp(transform.feature_dim, task, num_classes, hidden=(8,), seed=3))
    with mlflow.start_run():
        return log_pyfunc_model(weights=weights, transform=transform, task=task, framework=framework,
                                feature_dim=transform.feature_dim, num_classes=num_classes, hidden=(8,),
                                classes=classes, input_example=example)


@pytest.fixture(scope="module")
def frames(spark):
    """The case's training and scoring rows as Spark frames."""
    ddl = make_spec("regression").ddl_schema
    return spark.createDataFrame(train_rows(), ddl), spark.createDataFrame(scoring_rows(), ddl)


@pytest.fixture(scope="module")
def transform(frames):
    """The feature pipeline fitted on the training rows, and its `FeatureTransform`."""
    spec = make_spec("regression")
    pipeline = fit_feature_pipeline(frames[0], spec)
    return pipeline, feature_transform(pipeline, spec)


@pytest.fixture
def tracking(tmp_path):
    """A throwaway MLflow tracking store and experiment for one test."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(
        "serving", artifact_location=(tmp_path / "artifacts").as_uri()))
    yield
    mlflow.set_tracking_uri(previous)
