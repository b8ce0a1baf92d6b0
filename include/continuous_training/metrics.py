"""Metrics of scored rows computed in Spark, shared by evaluate (test split) and the performance drift checks."""

from __future__ import annotations

from pyspark import StorageLevel
from pyspark.ml.evaluation import (
    BinaryClassificationEvaluator,
    MulticlassClassificationEvaluator,
    RegressionEvaluator,
)
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

TRUE_LABEL = "_label"
_LABEL_INDEX, _PREDICTED_INDEX, _PROBABILITY_VECTOR = "_label_index", "_predicted_index", "_probs"


def prediction_metrics(scored: DataFrame, task: str, classes: list[str] | None, prefix: str = "") -> dict[str, float]:
    """Metrics of scored rows, computed in Spark: columns `TRUE_LABEL` (the true label), `prediction`, and `probability`
    (binary) or `probabilities` (multiclass, in the order of `classes`). Regression: rmse, mae, r2; classifiers:
    accuracy, logloss, f1 (of class 1 for binary, weighted for multiclass) and auc (binary)."""
    if task == "regression":
        scored = scored.select(F.col(TRUE_LABEL).cast("double").alias(TRUE_LABEL), F.col("prediction").cast("double"))
        scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            evaluator = RegressionEvaluator(labelCol=TRUE_LABEL, predictionCol="prediction")
            return {f"{prefix}{name}": evaluator.setMetricName(name).evaluate(scored) for name in ("rmse", "mae", "r2")}
        finally:
            scored.unpersist()
    class_array = F.array(*[F.lit(c) for c in classes])
    probabilities = (
        F.array(1 - F.col("probability"), F.col("probability")) if task == "binary_classification"
        else F.col("probabilities")
    )
    scored = scored.select(
        (F.array_position(class_array, F.col(TRUE_LABEL).cast("string")) - 1).cast("double").alias(_LABEL_INDEX),
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
