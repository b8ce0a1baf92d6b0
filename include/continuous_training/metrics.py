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


def metric_standard_error(scored: DataFrame, task: str, classes: list[str] | None, metric: str,
                          value: float) -> float | None:
    """The standard error of `value`, the metric `metric` (a name of `prediction_metrics` without prefix) of the same
    rows, from one Spark aggregation: Hanley and McNeil's for AUC, the binomial one for accuracy, the mean's for mae
    and logloss, the delta method's for rmse, r2 (the label's variance taken as known) and the binary f1. None for
    the weighted f1 of a multiclass task."""
    label = F.col(TRUE_LABEL).cast("double" if task == "regression" else "string")
    n = F.count(F.lit(1))
    if task == "regression":
        error = label - F.col("prediction").cast("double")
        if metric == "mae":
            row = scored.agg(F.stddev(F.abs(error)).alias("sd"), n.alias("n")).head()
            return row["sd"] / row["n"] ** 0.5
        row = scored.agg(F.stddev(error * error).alias("sd"), F.var_pop(label).alias("var"), n.alias("n")).head()
        mse_error = row["sd"] / row["n"] ** 0.5
        return {"rmse": mse_error / (2 * value) if value else None,
                "r2": mse_error / row["var"] if row["var"] else None}.get(metric)
    if metric == "accuracy":
        return (value * (1 - value) / scored.count()) ** 0.5
    if metric == "auc":
        row = scored.agg(F.count_if(label == classes[1]).alias("positive"),
                         F.count_if(label != classes[1]).alias("negative")).head()
        positive, negative = row["positive"], row["negative"]
        if not positive or not negative:
            return None
        q1, q2 = value / (2 - value), 2 * value * value / (1 + value)
        return ((value * (1 - value) + (positive - 1) * (q1 - value * value) + (negative - 1) * (q2 - value * value))
                / (positive * negative)) ** 0.5
    if metric == "logloss":
        true_probability = (
            F.when(label == classes[1], F.col("probability")).otherwise(1 - F.col("probability"))
            if task == "binary_classification"
            else F.element_at("probabilities",
                              F.array_position(F.array(*[F.lit(c) for c in classes]), label).cast("int"))
        )
        loss = -F.log(F.greatest(F.least(true_probability.cast("double"), F.lit(1 - 1e-15)), F.lit(1e-15)))
        row = scored.agg(F.stddev(loss).alias("sd"), n.alias("n")).head()
        return row["sd"] / row["n"] ** 0.5
    if metric == "f1" and task == "binary_classification":
        # f1 = mean(a) / mean(b) with a = 2·[true positive] and b = 2·[true positive] + [false positive] +
        # [false negative]; the delta method gives var(a - f1·b) / (n·mean(b)²).
        actual, predicted = label == classes[1], F.col("prediction").cast("string") == classes[1]
        a = F.when(actual & predicted, 2.0).otherwise(0.0)
        b = a + F.when(actual != predicted, 1.0).otherwise(0.0)
        row = scored.agg(F.var_samp(a - F.lit(value) * b).alias("var"), F.avg(b).alias("mean_b"), n.alias("n")).head()
        return (row["var"] / row["n"]) ** 0.5 / row["mean_b"] if row["mean_b"] else None
    return None
