"""Evaluate: score the held-out test split with the candidate and the current champion on the same rows."""

from __future__ import annotations

import json
import logging

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
from continuous_training.features import SPLIT
from continuous_training.paths import stage_dir
from continuous_training.registry import CHAMPION, alias_version
from continuous_training.serving import model_classes, predict_spark
from continuous_training.spec import DatasetSpec
from continuous_training.tracking import CANDIDATE_MODEL_TAG, mlflow_client, require_training_run

log = logging.getLogger(__name__)

METRICS = {
    "regression": ("test_rmse", "test_mae", "test_r2"),
    "binary_classification": ("test_auc", "test_accuracy", "test_f1", "test_logloss"),
    "multiclass_classification": ("test_accuracy", "test_f1", "test_logloss"),
}
_LABEL, _LABEL_INDEX, _PREDICTED_INDEX, _PROBABILITY_VECTOR = "_label", "_label_index", "_predicted_index", "_probs"


def test_rows(spark: SparkSession, spec: DatasetSpec, run_id: str, settings: Settings | None = None) -> DataFrame:
    """The raw rows of this run's test split (the same rows for every model scored)."""
    raw = spark.read.parquet(str(stage_dir(spec.name, "featurize", run_id, settings) / "raw_splits"))
    return raw.where(F.col(SPLIT) == "test").drop(SPLIT)


def score_metrics(rows: DataFrame, model_uri: str, spec: DatasetSpec) -> dict[str, float]:
    """The fixed test metrics of one model on the given raw rows, computed in Spark."""
    scored = predict_spark(rows, model_uri, spec.task).withColumn(_LABEL, F.col(f"`{spec.label}`"))
    if spec.task == "regression":
        scored = scored.select(F.col(_LABEL).cast("double").alias(_LABEL), F.col("prediction").cast("double"))
        scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            evaluator = RegressionEvaluator(labelCol=_LABEL, predictionCol="prediction")
            return {f"test_{name}": evaluator.setMetricName(name).evaluate(scored) for name in ("rmse", "mae", "r2")}
        finally:
            scored.unpersist()
    classes = model_classes(model_uri)
    class_array = F.array(*[F.lit(c) for c in classes])
    probabilities = (
        F.array(1 - F.col("probability"), F.col("probability")) if spec.task == "binary_classification"
        else F.col("probabilities")
    )
    scored = scored.select(
        (F.array_position(class_array, F.col(_LABEL).cast("string")) - 1).cast("double").alias(_LABEL_INDEX),
        (F.array_position(class_array, F.col("prediction")) - 1).cast("double").alias(_PREDICTED_INDEX),
        array_to_vector(probabilities.cast("array<double>")).alias(_PROBABILITY_VECTOR),
        F.col("probability").cast("double").alias("probability"),
    ).where(F.col(_LABEL_INDEX) >= 0).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        multiclass = MulticlassClassificationEvaluator(
            labelCol=_LABEL_INDEX, predictionCol=_PREDICTED_INDEX, probabilityCol=_PROBABILITY_VECTOR
        )
        metrics = {
            "test_accuracy": multiclass.setMetricName("accuracy").evaluate(scored),
            "test_logloss": multiclass.setMetricName("logLoss").evaluate(scored),
        }
        if spec.task == "binary_classification":
            metrics["test_f1"] = multiclass.setMetricName("fMeasureByLabel").setMetricLabel(1.0).evaluate(scored)
            metrics["test_auc"] = BinaryClassificationEvaluator(
                labelCol=_LABEL_INDEX, rawPredictionCol="probability", metricName="areaUnderROC"
            ).evaluate(scored)
        else:
            metrics["test_f1"] = multiclass.setMetricName("f1").evaluate(scored)
        return metrics
    finally:
        scored.unpersist()


def evaluate_candidate(spark: SparkSession, spec: DatasetSpec, run_id: str,
                       settings: Settings | None = None) -> dict[str, float]:
    """Log `test_*` (candidate) and `champion_test_*` (current @champion) to the candidate's run."""
    settings = settings or get_settings()
    client = mlflow_client(settings)
    run = require_training_run(client, spec.name, run_id)
    rows = test_rows(spark, spec, run_id, settings).persist(StorageLevel.MEMORY_AND_DISK)
    metrics = score_metrics(rows, run.data.tags[CANDIDATE_MODEL_TAG], spec)
    champion = alias_version(client, spec.registered_model_name, CHAMPION)
    if champion is not None:
        champion_uri = f"models:/{spec.registered_model_name}/{champion.version}"
        metrics |= {f"champion_{key}": value for key, value in score_metrics(rows, champion_uri, spec).items()}
        client.set_tag(run.info.run_id, "champion_version_evaluated", champion.version)
    rows.unpersist()
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    out_dir = stage_dir(spec.name, "evaluate", run_id, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(
        {"mlflow_run_id": run.info.run_id, "champion_version": champion.version if champion else None,
         "metrics": metrics}, indent=2))
    log.info("evaluate: %s", metrics)
    return metrics
