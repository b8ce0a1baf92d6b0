"""Evaluate: score the held-out test split with the candidate and the current champion on exactly the same rows
(`evaluation_rows`: for classifiers, the test rows whose label every scored model knows). Promote reuses
`evaluate_against` when `@champion` moved since evaluate. A metric that is not finite (NaN or inf predictions) fails
the evaluation, naming it."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from continuous_training.config import Settings, get_settings
from continuous_training.data.features import SPLIT
from continuous_training.errors import PipelineError
from continuous_training.metrics import TRUE_LABEL, prediction_metrics
from continuous_training.model.pyfunc import PREDICTION, PROBABILITIES, PROBABILITY, model_classes
from continuous_training.paths import (
    EVALUATE,
    EVALUATION_FILE,
    FEATURIZE,
    RAW_SPLITS_DATA,
    Evaluation,
    stage_dir,
    write_result,
)
from continuous_training.profiles import Kind, reference_profiles
from continuous_training.serving.predict import predict_spark, probability_columns
from continuous_training.spark import col
from continuous_training.spec import DatasetSpec
from continuous_training.tracking import (
    CANDIDATE_MODEL_TAG,
    CHAMPION,
    PREDICTION_PROFILE_ARTIFACT,
    alias_version,
    mlflow_client,
    require_training_run,
)

log = logging.getLogger(__name__)

ROWS_EVALUATED_METRIC, ROWS_UNKNOWN_LABEL_METRIC = "test_rows_evaluated", "test_rows_unknown_label"
CHAMPION_EVALUATED_TAG = "champion_version_evaluated"
_KNOWN, _UNKNOWN_LABEL = "_known", "_unknown_label"


@dataclass(frozen=True)
class EvaluationRows:
    """The rows every model of one evaluation is scored on, the test rows left out per unknown label, and the classes
    of each model (by URI) the rows were chosen for (None for regression)."""

    rows: DataFrame
    count: int
    unknown_labels: dict[str | None, int]
    classes: dict[str, list[str] | None]


def read_test_split(spark: SparkSession, featurize_dir: Path) -> DataFrame:
    """The raw rows of the test split the featurize stage wrote to `featurize_dir`."""
    raw = spark.read.parquet(str(featurize_dir / RAW_SPLITS_DATA))
    return raw.where(F.col(SPLIT) == "test").drop(SPLIT)


def evaluation_rows(rows: DataFrame, spec: DatasetSpec, model_uris: Sequence[str]) -> EvaluationRows:
    """The rows all these models can be scored on: for classifiers, those whose label every model knows.

    One aggregation counts the rows per kept/left-out label (the driver gets a row per distinct label)."""
    if spec.task == "regression":
        evaluation = EvaluationRows(rows, rows.count(), {}, dict.fromkeys(model_uris))
    else:
        classes = {uri: model_classes(uri) for uri in model_uris}
        known_labels = sorted(set.intersection(*(set(model) for model in classes.values())))
        label = col(spec.label).cast("string")
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


def _missing_as_nan(task: str) -> dict[str, Column]:
    """The scored values a model left NaN (Arrow hands them to Spark as null) as NaN again, so that the metrics
    over them are NaN rather than computed over fewer rows or failing inside Spark's evaluators."""
    nan = F.lit(float("nan"))
    if task == "regression":
        return {PREDICTION: F.coalesce(F.col(PREDICTION), nan)}
    if task == "binary_classification":
        return {PROBABILITY: F.coalesce(F.col(PROBABILITY), nan)}
    return {PROBABILITIES: F.transform(F.col(PROBABILITIES), lambda value: F.coalesce(value, nan))}


def score_metrics(evaluation: EvaluationRows, model_uri: str, spec: DatasetSpec) -> dict[str, float]:
    """The fixed test metrics of one model (one of those the rows were chosen for), computed in Spark."""
    if model_uri not in evaluation.classes:
        raise ValueError(f"{model_uri} is not one of the models the evaluation rows were chosen for")
    scored = predict_spark(evaluation.rows, model_uri, spec.task).withColumns(_missing_as_nan(spec.task))
    return prediction_metrics(scored.withColumn(TRUE_LABEL, col(spec.label)), spec.task,
                              evaluation.classes[model_uri], prefix="test_")


def _require_finite(metrics: dict[str, float], model: str) -> None:
    """A PipelineError naming the first metric of `model` that is not finite."""
    for key, value in metrics.items():
        if not math.isfinite(value):
            raise PipelineError(
                f"evaluate: {model}'s {key}={value} on the test split is not finite: its predictions hold NaN or inf "
                "(e.g. from a feature value float32 cannot hold); no metric is logged and the champion stays")


def evaluate_against(spark: SparkSession, spec: DatasetSpec, airflow_run_id: str, training_run: Run,
                     champion: ModelVersion | None, client: MlflowClient, settings: Settings) -> Evaluation:
    """Score the run's candidate and `champion` (if any) on the same rows of the run's test split; log to the run
    `test_*`, `champion_test_*`, the row counts and the `champion_version_evaluated` tag."""
    candidate_uri = training_run.data.tags[CANDIDATE_MODEL_TAG]
    champion_uri = f"models:/{spec.registered_model_name}/{champion.version}" if champion else None
    model_names = {candidate_uri: "the candidate"} | (
        {champion_uri: f"champion version {champion.version}"} if champion else {})
    featurize_dir = stage_dir(spec.name, FEATURIZE, airflow_run_id, settings)
    raw = read_test_split(spark, featurize_dir).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        evaluation = evaluation_rows(raw, spec, list(model_names))
        metrics = score_metrics(evaluation, candidate_uri, spec)
        _require_finite(metrics, model_names[candidate_uri])
        if champion_uri is not None:
            champion_metrics = score_metrics(evaluation, champion_uri, spec)
            _require_finite(champion_metrics, model_names[champion_uri])
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
    featurize_dir = stage_dir(spec.name, FEATURIZE, run_id, settings)
    reference = prediction_reference(read_test_split(spark, featurize_dir), run.data.tags[CANDIDATE_MODEL_TAG], spec)
    client.log_dict(run.info.run_id, reference, PREDICTION_PROFILE_ARTIFACT)
    out_dir = stage_dir(spec.name, EVALUATE, run_id, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_result(out_dir / EVALUATION_FILE, evaluation)
    log.info("evaluate: %s on %d test rows", evaluation.metrics, evaluation.rows_evaluated)
    return evaluation


def prediction_columns(task: str, classes: list[str] | None) -> list[tuple[str, Kind]]:
    """The scored columns whose drift is checked: the prediction (a class or a number) and, for a binary
    classifier, the probability of the positive class as written by batch scoring."""
    if task == "regression":
        return [(PREDICTION, "numeric")]
    if task == "binary_classification":
        return [(PREDICTION, "categorical"), (f"probability_{classes[1]}", "numeric")]
    return [(PREDICTION, "categorical")]


def prediction_reference(rows: DataFrame, model_uri: str, spec: DatasetSpec) -> dict[str, Any]:
    """The profile of a model's predictions on `rows` (raw spec columns), as `prediction_profile.json`. The rows
    are scored once and kept while the profile's passes read them."""
    classes = model_classes(model_uri)
    scored = predict_spark(rows, model_uri, spec.task).select(F.col(PREDICTION),
                                                               *probability_columns(spec.task, classes))
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return {"model_uri": model_uri, "columns": reference_profiles(scored, prediction_columns(spec.task, classes))}
    finally:
        scored.unpersist()
