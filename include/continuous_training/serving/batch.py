"""Batch scoring: the validated rows of one batch scored in Spark with one pinned model version, written with
per-row lineage to `$DATA_DIR/<dataset>/predictions/scored_for=<date>/`, and a summary beside the partition that
is also an MLflow run in experiment `<dataset>-scoring`.

The model version is resolved from its alias once, at the start of a scoring run (`resolve_model`), and every
later task of the run scores with that version, so a promotion during the run cannot mix versions. Only a version
the promotion gate approved is resolved: one moved under the alias by hand is refused.

One date is scored once: the score job holds the date's lock, and a run of another DAG for the same date that
finds it scored from the same input files with the same version leaves it as it is (`already_scored`).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from continuous_training.config import Settings, get_settings
from continuous_training.errors import PipelineError
from continuous_training.model.pyfunc import PREDICTION, model_classes
from continuous_training.paths import (
    INGEST,
    MANIFEST_FILE,
    VALIDATE,
    VALIDATION_FILE,
    IngestResult,
    ValidationResult,
    read_result,
    stage_dir,
    stage_for,
    write_result,
)
from continuous_training.serving.predict import predict_spark, probability_columns
from continuous_training.serving.scored import PARTITION, SUMMARY_FILE, partition_dir, predictions_dir
from continuous_training.spark import col
from continuous_training.spec import DatasetSpec
from continuous_training.tracking import (
    airflow_run,
    airflow_task_tags,
    alias_version,
    mlflow_client,
    model_tags,
    require_approved,
)

log = logging.getLogger(__name__)

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@dataclass(frozen=True)
class ResolvedModel:
    """The one model version a scoring run uses."""

    name: str
    version: str
    run_id: str
    alias: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def resolve_model(spec: DatasetSpec, alias: str, settings: Settings | None = None) -> ResolvedModel:
    """The version that holds `alias` now; PipelineError in one line when none does, or when the gate did not
    approve it."""
    client = mlflow_client(settings)
    version = alias_version(client, spec.registered_model_name, alias)
    if version is None:
        raise PipelineError(f"no version of model {spec.registered_model_name!r} holds @{alias}: train one with "
                            f"`make train DATASET={spec.name}` (or trigger training_pipeline for {spec.name!r})")
    require_approved(version, alias)
    return ResolvedModel(name=spec.registered_model_name, version=str(version.version), run_id=version.run_id,
                         alias=alias)


def score(valid: DataFrame, spec: DatasetSpec, model: ResolvedModel, scored_for: date,
          airflow_run_id: str) -> DataFrame:
    """Predictions with lineage: id, timestamp, prediction, class probabilities, lineage, then the batch's other
    columns unchanged."""
    classes = model_classes(model.uri)
    keys = [column for column in (spec.id_column, spec.timestamp_column) if column and column in valid.columns]
    carried = [column for column in valid.columns if column not in keys]
    scored = predict_spark(valid, model.uri, spec.task)
    return scored.select(
        *[col(column) for column in keys],
        F.col(PREDICTION),
        *probability_columns(spec.task, classes),
        F.lit(model.name).alias("model_name"),
        F.lit(model.version).alias("model_version"),
        F.lit(model.run_id).alias("model_run_id"),
        F.lit(scored_for).alias(PARTITION),
        F.lit(airflow_run_id).alias("airflow_run_id"),
        *[col(column) for column in carried],
    )


def write_predictions(predictions: DataFrame, spec: DatasetSpec, scored_for: date,
                      settings: Settings | None = None) -> None:
    """Replace the run's `scored_for` partition and touch no other: written beside it (a hidden folder named after
    it, where Spark stages too), then renamed into place. What a killed write leaves (those hidden folders of the
    date) the date's next write removes; its scoring job holds the date's lock."""
    folder, partition = predictions_dir(spec, settings), partition_dir(spec, scored_for, settings)
    staged, replaced = (folder / f".{partition.name}.{suffix}" for suffix in ("partial", "replaced"))
    shutil.rmtree(replaced, ignore_errors=True)
    predictions.drop(PARTITION).write.mode("overwrite").parquet(str(staged))
    if partition.exists():
        partition.rename(replaced)
    staged.rename(partition)
    shutil.rmtree(replaced, ignore_errors=True)


def prediction_distribution(predictions: DataFrame, task: str) -> dict[str, Any]:
    """Quantiles and mean (regression) or class shares (classifiers) of the predictions, computed in Spark."""
    if task == "regression":
        quantiles = predictions.approxQuantile(PREDICTION, list(QUANTILES), 0.001)
        mean = predictions.select(F.avg(PREDICTION)).first()[0]
        return {"mean": mean, "quantiles": {f"p{round(q * 100):02d}": value
                                            for q, value in zip(QUANTILES, quantiles, strict=True)}}
    counts = {row[PREDICTION]: row["count"] for row in predictions.groupBy(PREDICTION).count().collect()}
    total = sum(counts.values())
    return {"class_shares": {label: count / total for label, count in sorted(counts.items())}}


def score_batch(valid: DataFrame, spec: DatasetSpec, model: ResolvedModel, scored_for: date, airflow_run_id: str,
                settings: Settings | None = None) -> dict[str, Any]:
    """Score a validated batch, write its partition and summary, log the summary to MLflow; returns the summary."""
    settings = settings or get_settings()
    write_predictions(score(valid, spec, model, scored_for, airflow_run_id), spec, scored_for, settings)
    partition = partition_dir(spec, scored_for, settings)
    written = valid.sparkSession.read.parquet(str(partition))
    validation = read_result(stage_dir(spec.name, stage_for(VALIDATE, True), airflow_run_id, settings)
                             / VALIDATION_FILE, ValidationResult)
    summary = {
        "dataset": spec.name, PARTITION: scored_for.isoformat(), "airflow_run_id": airflow_run_id,
        "model": asdict(model), "input_fingerprint": input_fingerprint(spec, airflow_run_id, settings),
        "rows_in": validation.rows_in, "quarantined": validation.quarantined,
        "scored": written.count(), "quarantine_reasons": validation.reasons,
        "predictions": str(partition), "distribution": prediction_distribution(written, spec.task),
    }
    if summary["scored"] != validation.valid or summary["scored"] + summary["quarantined"] != summary["rows_in"]:
        raise PipelineError(f"score: {summary['rows_in']} rows in, {validation.valid} valid, but "
                            f"{summary['scored']} scored and {summary['quarantined']} quarantined")
    write_result(partition / SUMMARY_FILE, summary)
    summary["mlflow_run_id"] = log_summary(summary, spec, settings)
    write_result(partition / SUMMARY_FILE, summary)
    log.info("scored %d rows of %s for %s with %s version %s", summary["scored"], spec.name, scored_for,
             model.name, model.version)
    return summary


def input_fingerprint(spec: DatasetSpec, airflow_run_id: str, settings: Settings | None = None) -> str | None:
    """The fingerprint of the files a scoring run's ingest read (their paths, sizes and modification times); None
    for a batch scored without the scoring ingest."""
    manifest = stage_dir(spec.name, stage_for(INGEST, True), airflow_run_id, settings) / MANIFEST_FILE
    return read_result(manifest, IngestResult).input_fingerprint if manifest.is_file() else None


def already_scored(spec: DatasetSpec, scored_for: date, model: ResolvedModel, airflow_run_id: str,
                   settings: Settings | None = None) -> dict[str, Any] | None:
    """The date's summary when another run (another DAG on the same date) scored the same input files with the same
    model version to the end (its MLflow run logged): the work is done. None for no partition, an unreadable or
    unfinished summary, this run's own (a rerun rewrites it), other input files or another version."""
    try:
        summary = json.loads((partition_dir(spec, scored_for, settings) / SUMMARY_FILE).read_text())
        done = (summary.get("mlflow_run_id") and summary["airflow_run_id"] != airflow_run_id
                and (summary["model"]["name"], summary["model"]["version"]) == (model.name, model.version)
                and (fingerprint := input_fingerprint(spec, airflow_run_id, settings)) is not None
                and summary.get("input_fingerprint") == fingerprint)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return summary if done else None


def scoring_experiment(spec: DatasetSpec) -> str:
    return f"{spec.name}-scoring"


def log_summary(summary: dict[str, Any], spec: DatasetSpec, settings: Settings) -> str:
    """The scoring run of an Airflow run in `<dataset>-scoring` (found again on rerun); returns its id."""
    client = mlflow_client(settings)
    model = summary["model"]
    run_id = airflow_run(client, scoring_experiment(spec), summary["airflow_run_id"], f"score {summary[PARTITION]}",
                         settings=settings).info.run_id
    for key, value in {**model_tags(model["name"], model["version"], model["run_id"]), "model.alias": model["alias"],
                       PARTITION: summary[PARTITION], **airflow_task_tags()}.items():
        client.set_tag(run_id, key, value)
    metrics = {"rows_in": summary["rows_in"], "rows_scored": summary["scored"],
               "rows_quarantined": summary["quarantined"]}
    distribution = summary["distribution"]
    metrics |= {f"prediction_{name}": value for name, value in distribution.get("quantiles", {}).items()}
    if "mean" in distribution:
        metrics["prediction_mean"] = distribution["mean"]
    metrics |= {f"share_{label}": share for label, share in distribution.get("class_shares", {}).items()}
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    client.log_text(run_id, json.dumps(summary, indent=2), "scoring_summary.json")
    client.set_terminated(run_id, "FINISHED")
    return run_id
