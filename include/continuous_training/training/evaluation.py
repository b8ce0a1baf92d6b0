"""Evaluate: score the held-out test split with the candidate and the current champion on exactly the same rows.

The rows are decided once, before scoring (`evaluation_rows`): for classifiers, the test rows whose label every
scored model knows (a label outside a model's classes has no probability to score); regression keeps every row.
The rows left out are counted per label, logged as a warning and as the candidate run's metrics
`test_rows_evaluated` / `test_rows_unknown_label`, and written into `evaluation.json`. Promote reuses
`evaluate_against` when `@champion` moved since evaluate (see `continuous_training.registry`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient
from pyspark import StorageLevel
from pyspark.ml.evaluation import (
    BinaryClassificationEvaluator,
    MulticlassClassificationEvaluator,
    RegressionEvaluator,
)
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from continuous_training.config import Settings, get_settings
from continuous_training.data.features import SPLIT
from continuous_training.errors import PipelineError
from continuous_training.monitoring.reference import PREDICTION_PROFILE_ARTIFACT, prediction_reference
from continuous_training.paths import stage_dir
from continuous_training.registry import CHAMPION, CHAMPION_EVALUATED_TAG, alias_version
from continuous_training.serving.model import model_classes, predict_spark
from continuous_training.spec import DatasetSpec
from continuous_training.tracking import CANDIDATE_MODEL_TAG, mlflow_client, require_training_run

log = logging.getLogger(__name__)

ROWS_EVALUATED_METRIC, ROWS_UNKNOWN_LABEL_METRIC = "test_rows_evaluated", "test_rows_unknown_label"
LABEL, _LABEL_INDEX, _PREDICTED_INDEX, _PROBABILITY_VECTOR = "_label", "_label_index", "_predicted_index", "_probs"
_KNOWN, _UNKNOWN_LABEL = "_known", "_unknown_label"


@dataclass(frozen=True)
class EvaluationRows:
    """The rows every model of one evaluation is scored on, the test rows left out per unknown label, and the classes
    of each model (by URI) the rows were chosen for (None for regression)."""

    rows: DataFrame
    count: int
    unknown_labels: dict[str | None, int]
    classes: dict[str, list[str] | None]


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation logged to the candidate's run; `to_json` is `evaluation.json`."""

    mlflow_run_id: str
    champion_version: str | None
    metrics: dict[str, float]
    rows_evaluated: int
    unknown_labels: dict[str | None, int]

    def to_json(self) -> dict:
        """A JSON document; unknown labels as a list, since a label may be null."""
        return {
            "mlflow_run_id": self.mlflow_run_id,
            "champion_version": self.champion_version,
            "metrics": self.metrics,
            "rows_evaluated": self.rows_evaluated,
            "rows_unknown_label": sum(self.unknown_labels.values()),
            "unknown_labels": [{"label": label, "rows": rows} for label, rows in self.unknown_labels.items()],
        }


def test_rows(spark: SparkSession, spec: DatasetSpec, run_id: str, settings: Settings | None = None) -> DataFrame:
    """The raw rows of this run's test split."""
    raw = spark.read.parquet(str(stage_dir(spec.name, "featurize", run_id, settings) / "raw_splits"))
    return raw.where(F.col(SPLIT) == "test").drop(SPLIT)


def evaluation_rows(rows: DataFrame, spec: DatasetSpec, model_uris: Sequence[str]) -> EvaluationRows:
    """The rows all these models can be scored on: for classifiers, those whose label every model knows.

    One aggregation counts the rows per kept/left-out label (the driver gets a row per distinct label)."""
    if spec.task == "regression":
        evaluation = EvaluationRows(rows, rows.count(), {}, dict.fromkeys(model_uris))
    else:
        classes = {uri: model_classes(uri) for uri in model_uris}
        known_labels = sorted(set.intersection(*(set(model) for model in classes.values())))
        label = F.col(f"`{spec.label}`").cast("string")
        known = F.coalesce(label.isin(known_labels), F.lit(False))
        counts = rows.groupBy(known.alias(_KNOWN), F.when(~known, label).alias(_UNKNOWN_LABEL)).count().collect()
        unknown = sorted(((row[_UNKNOWN_LABEL], row["count"]) for row in counts if not row[_KNOWN]),
                         key=lambda pair: (-pair[1], str(pair[0])))
        evaluation = EvaluationRows(rows.where(known), sum(row["count"] for row in counts if row[_KNOWN]),
                                    dict(unknown), classes)
    if evaluation.count == 0 and not evaluation.unknown_labels:
        raise PipelineError("evaluate: the test split is empty; the run needs more rows")
    if evaluation.count == 0:
        raise PipelineError(f"evaluate: no test row has a label every model knows (test rows per label: "
                            f"{evaluation.unknown_labels}; classes per model: {evaluation.classes})")
    return evaluation


def score_metrics(evaluation: EvaluationRows, model_uri: str, spec: DatasetSpec) -> dict[str, float]:
    """The fixed test metrics of one model (one of those the rows were chosen for), computed in Spark."""
    if model_uri not in evaluation.classes:
        raise ValueError(f"{model_uri} is not one of the models the evaluation rows were chosen for")
    scored = predict_spark(evaluation.rows, model_uri, spec.task).withColumn(LABEL, F.col(f"`{spec.label}`"))
    return prediction_metrics(scored, spec.task, evaluation.classes[model_uri], prefix="test_")


def prediction_metrics(scored: DataFrame, task: str, classes: list[str] | None, prefix: str = "") -> dict[str, float]:
    """Metrics of scored rows, computed in Spark: columns `LABEL` (the true label), `prediction`, and `probability`
    (binary) or `probabilities` (multiclass, in the order of `classes`). Regression: rmse, mae, r2; classifiers:
    accuracy, logloss, f1 (of class 1 for binary, weighted for multiclass) and auc (binary)."""
    if task == "regression":
        scored = scored.select(F.col(LABEL).cast("double").alias(LABEL), F.col("prediction").cast("double"))
        scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            evaluator = RegressionEvaluator(labelCol=LABEL, predictionCol="prediction")
            return {f"{prefix}{name}": evaluator.setMetricName(name).evaluate(scored) for name in ("rmse", "mae", "r2")}
        finally:
            scored.unpersist()
    class_array = F.array(*[F.lit(c) for c in classes])
    probabilities = (
        F.array(1 - F.col("probability"), F.col("probability")) if task == "binary_classification"
        else F.col("probabilities")
    )
    scored = scored.select(
        (F.array_position(class_array, F.col(LABEL).cast("string")) - 1).cast("double").alias(_LABEL_INDEX),
        (F.array_position(class_array, F.col("prediction")) - 1).cast("double").alias(_PREDICTED_INDEX),
        array_to_vector(probabilities.cast("array<double>")).alias(_PROBABILITY_VECTOR),
        (F.col("probability") if task == "binary_classification" else F.lit(None)).cast("double").alias("probability"),
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        multiclass = MulticlassClassificationEvaluator(
            labelCol=_LABEL_INDEX, predictionCol=_PREDICTED_INDEX, probabilityCol=_PROBABILITY_VECTOR
        )
        metrics = {
            f"{prefix}accuracy": multiclass.setMetricName("accuracy").evaluate(scored),
            f"{prefix}logloss": multiclass.setMetricName("logLoss").evaluate(scored),
        }
        if task == "binary_classification":
            metrics[f"{prefix}f1"] = multiclass.setMetricName("fMeasureByLabel").setMetricLabel(1.0).evaluate(scored)
            metrics[f"{prefix}auc"] = BinaryClassificationEvaluator(
                labelCol=_LABEL_INDEX, rawPredictionCol="probability", metricName="areaUnderROC"
            ).evaluate(scored)
        else:
            metrics[f"{prefix}f1"] = multiclass.setMetricName("f1").evaluate(scored)
        return metrics
    finally:
        scored.unpersist()


def evaluate_against(spark: SparkSession, spec: DatasetSpec, airflow_run_id: str, training_run: Run,
                     champion: ModelVersion | None, client: MlflowClient, settings: Settings) -> Evaluation:
    """Score the run's candidate and `champion` (if any) on the same rows of the run's test split; log to the run
    `test_*`, `champion_test_*`, the row counts and the `champion_version_evaluated` tag."""
    candidate_uri = training_run.data.tags[CANDIDATE_MODEL_TAG]
    champion_uri = f"models:/{spec.registered_model_name}/{champion.version}" if champion else None
    model_names = {candidate_uri: "the candidate"} | (
        {champion_uri: f"champion version {champion.version}"} if champion else {})
    raw = test_rows(spark, spec, airflow_run_id, settings).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        evaluation = evaluation_rows(raw, spec, list(model_names))
        metrics = score_metrics(evaluation, candidate_uri, spec)
        if champion_uri is not None:
            champion_metrics = score_metrics(evaluation, champion_uri, spec)
            metrics |= {f"champion_{key}": value for key, value in champion_metrics.items()}
    finally:
        raw.unpersist()
    unknown_rows = sum(evaluation.unknown_labels.values())
    if unknown_rows:
        log.warning("evaluate: %d of %d test rows are left out of every model's metrics: their label is unknown to "
                    "%s (rows per label: %s; classes: %s)", unknown_rows, unknown_rows + evaluation.count,
                    " or ".join(model_names.values()), evaluation.unknown_labels,
                    {model_names[uri]: classes for uri, classes in evaluation.classes.items()})
    run_id = training_run.info.run_id
    for key, value in {**metrics, ROWS_EVALUATED_METRIC: evaluation.count,
                       ROWS_UNKNOWN_LABEL_METRIC: unknown_rows}.items():
        client.log_metric(run_id, key, value)
    if champion is not None:
        client.set_tag(run_id, CHAMPION_EVALUATED_TAG, str(champion.version))
    elif CHAMPION_EVALUATED_TAG in client.get_run(run_id).data.tags:
        client.delete_tag(run_id, CHAMPION_EVALUATED_TAG)
    return Evaluation(mlflow_run_id=run_id, champion_version=str(champion.version) if champion else None,
                      metrics=metrics, rows_evaluated=evaluation.count, unknown_labels=evaluation.unknown_labels)


def evaluate_candidate(spark: SparkSession, spec: DatasetSpec, run_id: str,
                       settings: Settings | None = None) -> Evaluation:
    """Score the candidate and the current `@champion` on the same test rows; log to the run, write
    `evaluation.json`; log the profile of the candidate's predictions on the test split (the reference of the
    prediction drift checks)."""
    settings = settings or get_settings()
    client = mlflow_client(settings)
    run = require_training_run(client, spec.name, run_id)
    champion = alias_version(client, spec.registered_model_name, CHAMPION)
    evaluation = evaluate_against(spark, spec, run_id, run, champion, client, settings)
    reference = prediction_reference(test_rows(spark, spec, run_id, settings), run.data.tags[CANDIDATE_MODEL_TAG],
                                     spec)
    client.log_dict(run.info.run_id, reference, PREDICTION_PROFILE_ARTIFACT)
    out_dir = stage_dir(spec.name, "evaluate", run_id, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(evaluation.to_json(), indent=2))
    log.info("evaluate: %s on %d test rows", evaluation.metrics, evaluation.rows_evaluated)
    return evaluation
