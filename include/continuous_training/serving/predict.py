"""Scoring a Spark DataFrame with a logged pyfunc in the executors, and the prediction columns it adds."""

from __future__ import annotations

from collections.abc import Callable

import mlflow
from mlflow.types import DataType
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DoubleType, StringType, StructField, StructType

from continuous_training.errors import PipelineError
from continuous_training.model.pyfunc import PREDICTION, PROBABILITIES, PROBABILITY, THREADS_ENV
from continuous_training.serving.served_code import check_served_code
from continuous_training.spark import col


def prediction_fields(task: str) -> list[StructField]:
    """The Spark fields of the prediction columns a task's model returns."""
    if task == "regression":
        return [StructField(PREDICTION, DoubleType())]
    if task == "binary_classification":
        return [StructField(PREDICTION, StringType()), StructField(PROBABILITY, DoubleType())]
    if task == "multiclass_classification":
        return [StructField(PREDICTION, StringType()), StructField(PROBABILITY, DoubleType()),
                StructField(PROBABILITIES, ArrayType(DoubleType()))]
    raise PipelineError(f"unknown task {task!r}")


def _pin_alias(model_uri: str) -> str:
    """`models:/name@alias` → `models:/name/<version>`, so every executor scores with the same version."""
    if not model_uri.startswith("models:/") or "@" not in model_uri:
        return model_uri
    name, alias = model_uri[len("models:/"):].split("@", 1)
    return f"models:/{name}/{mlflow.MlflowClient().get_model_version_by_alias(name, alias).version}"


class _ThisPackageFirst(dict):
    """An empty pyfunc `model_config` whose class is this package's: unpickling the UDF in a Python worker
    imports `continuous_training` from the worker's path before MLflow puts any model's `code/` first on
    `sys.path`, so every model in that worker runs this package's `model/` code (`predict_spark` checks first
    that a version logged under other code predicts the same with it, `served_code.check_served_code`)."""


def _as_doubles(df: DataFrame, columns: list[str], doubles: set[str]) -> list[Column]:
    """The input columns, integral and string ones the signature declares `double` cast to double in Spark."""
    types = dict(df.dtypes)
    return [col(c).cast("double").alias(c) if c in doubles and types[c] not in ("double", "float")
            and not types[c].startswith("decimal") else col(c) for c in columns]


def model_udf(spark: SparkSession, pinned_uri: str, task: str) -> Callable[..., Column]:
    """`mlflow.pyfunc.spark_udf` of a model version (local environment): it takes a struct of the model's input
    columns and returns the task's prediction fields; the model's framework is limited to the task's cores."""
    cpus = spark.sparkContext.getConf().get("spark.task.cpus", "1")
    return mlflow.pyfunc.spark_udf(spark, pinned_uri, result_type=StructType(prediction_fields(task)),
                                   env_manager="local", extra_env={THREADS_ENV: cpus, "TF_NUM_INTRAOP_THREADS": cpus},
                                   model_config=_ThisPackageFirst())


def predict_spark(df: DataFrame, model_uri: str, task: str) -> DataFrame:
    """Score a Spark DataFrame in the executors (`model_udf`): Arrow batches of the model's input columns only (the
    other columns never leave the JVM), integral and string columns the signature declares `double` cast first.

    An alias URI is resolved to its version on the driver first; a version logged under other code than the
    installed package's is scored only if both codes predict the same (`check_served_code`, a PipelineError
    otherwise). Returns the input columns plus the task's prediction columns (`prediction_fields`).
    """
    clashes = [field.name for field in prediction_fields(task) if field.name in df.columns]
    if clashes:
        raise PipelineError(f"predict_spark: the input already has columns named {clashes}; rename them first")
    pinned = _pin_alias(model_uri)
    info = mlflow.models.get_model_info(pinned)
    signature = info.signature
    inputs = [c for c in signature.inputs.input_names() if c in df.columns] if signature else df.columns
    doubles = {spec.name for spec in signature.inputs.inputs if spec.type == DataType.double} if signature else set()
    model_inputs = _as_doubles(df, inputs, doubles)
    check_served_code(df.select(*model_inputs), pinned, info)
    scored = model_udf(df.sparkSession, pinned, task)(F.struct(*model_inputs))
    return df.withColumn("_scored", scored).select(*[col(c) for c in df.columns], "_scored.*")


def probability_columns(task: str, classes: list[str] | None) -> list[Column]:
    """One `probability_<class>` column per class, from the pyfunc's probability outputs."""
    if task == "regression":
        return []
    if task == "binary_classification":
        return [(1 - F.col(PROBABILITY)).alias(f"probability_{classes[0]}"),
                F.col(PROBABILITY).alias(f"probability_{classes[1]}")]
    return [F.col(PROBABILITIES)[index].alias(f"probability_{label}") for index, label in enumerate(classes)]


