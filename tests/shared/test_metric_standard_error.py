"""The standard errors the performance-drift check judges a metric drop by, computed in Spark, against the spread of
the same metric (scikit-learn's) over 1,000 bootstrap resamples of the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from continuous_training.metrics import TRUE_LABEL, metric_standard_error, prediction_metrics
from sklearn import metrics as sk

pytestmark = pytest.mark.integration

ROWS, RESAMPLES = 600, 1_000


def bootstrap_error(frame: pd.DataFrame, metric) -> float:
    generator = np.random.default_rng(0)
    values = [metric(frame.iloc[generator.integers(0, len(frame), len(frame))]) for _ in range(RESAMPLES)]
    return float(np.std(values, ddof=1))


def binary_rows() -> pd.DataFrame:
    generator = np.random.default_rng(1)
    label = generator.integers(0, 2, ROWS)
    probability = 1 / (1 + np.exp(-(1.2 * label - 0.6 + generator.normal(0, 1.3, ROWS))))
    return pd.DataFrame({TRUE_LABEL: label.astype(str), "probability": probability,
                         "prediction": np.where(probability > 0.5, "1", "0")})


def regression_rows() -> pd.DataFrame:
    generator = np.random.default_rng(2)
    label = generator.normal(10, 3, ROWS)
    return pd.DataFrame({TRUE_LABEL: label, "prediction": label + generator.standard_t(4, ROWS)})


BINARY = {
    "auc": lambda f: sk.roc_auc_score(f[TRUE_LABEL].astype(int), f["probability"]),
    "accuracy": lambda f: sk.accuracy_score(f[TRUE_LABEL], f["prediction"]),
    "logloss": lambda f: sk.log_loss(f[TRUE_LABEL].astype(int), f["probability"], labels=[0, 1]),
    "f1": lambda f: sk.f1_score(f[TRUE_LABEL], f["prediction"], pos_label="1"),
}
REGRESSION = {
    "rmse": lambda f: sk.root_mean_squared_error(f[TRUE_LABEL], f["prediction"]),
    "mae": lambda f: sk.mean_absolute_error(f[TRUE_LABEL], f["prediction"]),
    "r2": lambda f: sk.r2_score(f[TRUE_LABEL], f["prediction"]),
}


@pytest.fixture(scope="module")
def binary(spark):
    rows = binary_rows()
    scored = spark.createDataFrame(rows).cache()
    return rows, scored, prediction_metrics(scored, "binary_classification", ["0", "1"])


@pytest.fixture(scope="module")
def regression(spark):
    rows = regression_rows()
    scored = spark.createDataFrame(rows).cache()
    return rows, scored, prediction_metrics(scored, "regression", None)


@pytest.mark.parametrize("metric", sorted(BINARY))
def test_a_binary_classifiers_standard_error_matches_the_bootstrap(binary, metric):
    rows, scored, values = binary
    value = values[metric]

    error = metric_standard_error(scored, "binary_classification", ["0", "1"], metric, value)

    assert value == pytest.approx(BINARY[metric](rows), abs=2e-3)
    assert error == pytest.approx(bootstrap_error(rows, BINARY[metric]), rel=0.15)


@pytest.mark.parametrize("metric", sorted(REGRESSION))
def test_a_regressions_standard_error_matches_the_bootstrap(regression, metric):
    rows, scored, values = regression
    value = values[metric]

    error = metric_standard_error(scored, "regression", None, metric, value)

    assert value == pytest.approx(REGRESSION[metric](rows), rel=1e-9)
    assert error == pytest.approx(bootstrap_error(rows, REGRESSION[metric]), rel=0.15)


def test_a_multiclass_logloss_and_accuracy_standard_errors_match_the_bootstrap_and_its_f1_has_none(spark):
    generator = np.random.default_rng(3)
    classes = ["a", "b", "c"]
    label = generator.integers(0, 3, ROWS)
    logits = generator.normal(0, 1, (ROWS, 3)) + 1.5 * np.eye(3)[label]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    rows = pd.DataFrame({TRUE_LABEL: np.array(classes)[label], "prediction": np.array(classes)[probabilities.argmax(1)],
                         "probabilities": list(probabilities)})
    scored = spark.createDataFrame(rows.assign(probabilities=[p.tolist() for p in probabilities]))
    values = prediction_metrics(scored, "multiclass_classification", classes)
    reference = {
        "accuracy": lambda f: sk.accuracy_score(f[TRUE_LABEL], f["prediction"]),
        "logloss": lambda f: sk.log_loss(f[TRUE_LABEL], np.stack(f["probabilities"].to_list()), labels=classes),
    }

    for metric, compute in reference.items():
        error = metric_standard_error(scored, "multiclass_classification", classes, metric, values[metric])
        assert values[metric] == pytest.approx(compute(rows), abs=1e-6), metric
        assert error == pytest.approx(bootstrap_error(rows, compute), rel=0.15), metric
    assert metric_standard_error(scored, "multiclass_classification", classes, "f1", values["f1"]) is None
