"""A drift check: the recent window of a dataset's scored batches against the reference of the model that scored it.

The window is the last `window` dates the scoring schedule fires on, up to the check's date (the last `window`
scored dates for a spec without a scoring schedule); dates scored by another model version than the newest are left
out and listed (`continuous_training.monitoring.reference`), and dates not scored (since the dataset's first scored
date) are named as missing. Every feature and prediction
column of the window is counted on the reference's bins and compared (`drift_statistics.compare`: PSI, KS, unseen
share, null-rate change). When labels of window dates have arrived, the model's promotion metric on those rows is
compared with the same metric on its test split.

Verdict: drift when the share of drifted features reaches `drifted_feature_share`, when a prediction column
drifted, or when the metric is worse than at training by more than `metric_drop` (relative) even at the optimistic
end of its one-sided 95% interval (the window's standard error), so that a few labelled rows' noise is not drift.
Writes `drift.json` and `drift_report.html` to `$DATA_DIR/<dataset>/monitoring/run_id=<run>/` and an MLflow run
in experiment `<dataset>-monitoring` (found again on rerun).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import date, datetime, timedelta
from typing import Any

from croniter import croniter
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from continuous_training.config import Settings, get_settings
from continuous_training.metrics import TRUE_LABEL, metric_standard_error, prediction_metrics
from continuous_training.monitoring.drift_statistics import compare
from continuous_training.monitoring.labels import LANDED_FILE, read_labels
from continuous_training.monitoring.reference import ModelReference, load_reference
from continuous_training.monitoring.report import render_drift_report
from continuous_training.paths import MONITORING, stage_dir, write_text_atomic
from continuous_training.profiles import window_profiles
from continuous_training.serving.scored import PARTITION, ScoredDate, predictions_dir, scored_dates
from continuous_training.spark import col
from continuous_training.spec import LOWER_IS_BETTER, DatasetSpec, Monitoring
from continuous_training.tracking import airflow_run, airflow_task_tags, mlflow_client, model_tags

log = logging.getLogger(__name__)

DRIFT_FILE, REPORT_FILE = "drift.json", "drift_report.html"
CHECKED_FOR_TAG = "checked_for"  # the date a check's MLflow run is for
Z_95_ONE_SIDED = 1.6449  # the standard normal's 95th percentile
DRIFT_DETECTED_TAG, RETRAIN_TRIGGERED_TAG = "drift.detected", "retrain.triggered"
_METRIC_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")
# Airflow's presets that croniter does not know; `@once` and `@continuous` fire on no date.
_CRON_PRESETS = {"@quarterly": "0 0 1 */3 *"}


def window_dates(spec: DatasetSpec, checked_for: date, size: int) -> list[date] | None:
    """The last `size` dates the spec's scoring schedule fires on, up to `checked_for`, oldest first; None for a
    spec without a scoring schedule of dates (no scoring section, `@once`, `@continuous`)."""
    schedule = spec.scoring.schedule if spec.scoring else None
    if schedule is None or schedule in {"@once", "@continuous"}:
        return None
    fires = croniter(_CRON_PRESETS.get(schedule, schedule),
                     datetime.combine(checked_for + timedelta(days=1), datetime.min.time()))
    days: list[date] = []
    while len(days) < size:
        day = fires.get_prev(datetime).date()
        if day not in days:
            days.append(day)
    return days[::-1]


def drift_window(spec: DatasetSpec, checked_for: date, size: int,
                 settings: Settings | None = None) -> tuple[list[ScoredDate], list[ScoredDate]]:
    """(the window, the dates left out): the scored dates among the last `size` dates the scoring schedule fires on
    up to `checked_for` (without one: the last `size` scored dates), keeping those scored by the same model version
    as the newest."""
    expected = window_dates(spec, checked_for, size)
    recent = [scored for scored in scored_dates(spec, settings) if scored.day <= checked_for][-size:]
    if expected is not None:
        recent = [scored for scored in recent if scored.day in expected]
    if not recent:
        return [], []
    version = recent[-1].model["version"]
    return ([scored for scored in recent if scored.model["version"] == version],
            [scored for scored in recent if scored.model["version"] != version])


def missing_dates(spec: DatasetSpec, checked_for: date, size: int, settings: Settings | None = None) -> list[date]:
    """The dates of the window the scoring schedule fired on that have no scored partition, from the dataset's
    first scored date on (before it, nothing was due)."""
    scored = {scored.day for scored in scored_dates(spec, settings)}
    return [day for day in window_dates(spec, checked_for, size) or [] if scored and day >= min(scored)
            and day not in scored]


def performance(window: DataFrame, spec: DatasetSpec, reference: ModelReference, labels: DataFrame | None,
                monitoring: Monitoring) -> dict[str, Any]:
    """The promotion metric on the window's labelled rows against the model's test metric."""
    metric = spec.promotion_metric
    result: dict[str, Any] = {"metric": metric, "reference": reference.metrics.get(metric), "drifted": False}
    if labels is None:
        return {**result, "status": "no_labels"}
    label = col(spec.label)
    joined = window.join(labels.select(spec.id_column, label.alias(TRUE_LABEL)).dropDuplicates([spec.id_column]),
                         on=spec.id_column, how="left")
    known = F.col(TRUE_LABEL).isNotNull()
    if reference.classes is not None:
        known = known & F.col(TRUE_LABEL).cast("string").isin(reference.classes)
    probability = []
    if spec.task == "binary_classification":
        probability = [F.col(f"probability_{reference.classes[1]}").alias("probability")]
    elif spec.task == "multiclass_classification":
        probability = [F.array(*[col(f"probability_{c}") for c in reference.classes]).alias("probabilities")]
    scored = joined.select(F.col(TRUE_LABEL), F.col("prediction"), *probability, known.alias("_known"))
    counts = scored.agg(F.count(F.lit(1)).alias("rows"), F.count(TRUE_LABEL).alias("labelled"),
                        F.count_if("_known").alias("known")).head()
    result |= {"rows_window": counts["rows"], "rows_labelled": counts["known"],
               "rows_without_label": counts["rows"] - counts["labelled"],
               "rows_unknown_label": counts["labelled"] - counts["known"]}
    if counts["known"] < monitoring.min_labelled_rows:
        return {**result, "status": "insufficient_labels"}
    # The metric evaluators run several jobs over these few rows: one partition per core is enough.
    labelled = scored.where("_known").drop("_known").coalesce(window.sparkSession.sparkContext.defaultParallelism)
    labelled = labelled.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        value = prediction_metrics(labelled, spec.task, reference.classes, prefix="test_")[metric]
        error = metric_standard_error(labelled, spec.task, reference.classes, metric.removeprefix("test_"), value)
    finally:
        labelled.unpersist()
    result |= {"status": "checked", "window": value, "standard_error": error}
    if result["reference"] is not None and result["reference"] != 0:
        worse = value - result["reference"] if metric in LOWER_IS_BETTER else result["reference"] - value
        result["drop"] = worse / abs(result["reference"])
        margin = 0 if error is None else Z_95_ONE_SIDED * error / abs(result["reference"])
        result["drop_lower"] = result["drop"] - margin
        result["drifted"] = result["drop_lower"] > monitoring.metric_drop
    return result


def compare_window(window: DataFrame, spec: DatasetSpec, reference: ModelReference,
                   monitoring: Monitoring) -> dict[str, Any]:
    """Features and predictions of the window against the reference (one Spark pass) and the verdict."""
    references = {**reference.features, **reference.predictions}
    current = window_profiles(window, references)
    columns = {name: {**compare(references[name], current[name], monitoring),
                      "reference_profile": references[name], "window_profile": current[name]} for name in references}
    features = {name: columns[name] for name in reference.features}
    predictions = {name: columns[name] for name in reference.predictions}
    drifted = [name for name, result in features.items() if result["drifted"]]
    return {"rows": current[next(iter(current))]["rows"], "features": features, "predictions": predictions,
            "drifted_features": drifted, "drifted_feature_share": len(drifted) / len(features),
            "prediction_drift": any(result["drifted"] for result in predictions.values())}


def verdict(result: dict[str, Any], monitoring: Monitoring) -> list[str]:
    """Why the dataset drifted (empty when it did not)."""
    reasons = []
    features, drifted = result["features"], result["drifted_features"]
    if result["drifted_feature_share"] >= monitoring.drifted_feature_share:
        reasons.append(f"{len(drifted)} of {len(features)} features drifted ({', '.join(drifted)}): "
                       f"{result['drifted_feature_share']:.0%} >= {monitoring.drifted_feature_share:.0%}")
    for name, column in result["predictions"].items():
        if column["drifted"]:
            reasons.append(f"prediction drift on {name}: {'; '.join(column['reasons'])}")
    checked = result["performance"]
    if checked["drifted"]:
        reasons.append(f"{checked['metric']} {checked['window']:.4f} on {checked['rows_labelled']:,} labelled rows vs "
                       f"{checked['reference']:.4f} at training: {checked['drop']:.1%} worse, at least "
                       f"{checked['drop_lower']:.1%} at 95% confidence > {monitoring.metric_drop:.0%}")
    return reasons


def check_drift(spark: SparkSession, spec: DatasetSpec, checked_for: date, airflow_run_id: str,
                window_size: int | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Run one check; writes drift.json and the report, logs the MLflow run; returns the result."""
    settings = settings or get_settings()
    monitoring = spec.monitoring or Monitoring()
    window_size = window_size or monitoring.window
    dates, left_out = drift_window(spec, checked_for, window_size, settings)
    missing = [day.isoformat() for day in missing_dates(spec, checked_for, window_size, settings)]
    result: dict[str, Any] = {
        "dataset": spec.name, "checked_for": checked_for.isoformat(), "airflow_run_id": airflow_run_id,
        "thresholds": monitoring.model_dump(include={"psi_threshold", "ks_threshold", "null_rate_threshold",
                                                     "unseen_share_threshold", "drifted_feature_share",
                                                     "metric_drop", "min_labelled_rows"}),
        "window": {"size": window_size, "dates": [scored.day.isoformat() for scored in dates],
                   "left_out": [{"scored_for": scored.day.isoformat(), "model_version": scored.model["version"]}
                                for scored in left_out],
                   "missing": missing},
    }
    if not dates:
        result |= {"outcome": "nothing_to_check", "drift_detected": False, "reasons": [],
                   "message": f"nothing to check: no batch of {spec.name} scored on or before {checked_for}"
                              + (f" in its window (missing: {', '.join(missing)})" if missing else "")}
    else:
        model = dates[-1].model
        model_uri = f"models:/{model['name']}/{model['version']}"
        reference = load_reference(mlflow_client(settings), spec, model["run_id"], model_uri)
        window = (spark.read.parquet(str(predictions_dir(spec, settings)))
                  .where(F.col(PARTITION).isin([scored.day for scored in dates])))
        result["model"] = model
        result |= compare_window(window, spec, reference, monitoring)
        labels = (read_labels(spark, spec, [scored.day for scored in dates], checked_for, settings)
                  if spec.id_column else None)
        result["performance"] = performance(window, spec, reference, labels, monitoring)
        reasons = verdict(result, monitoring)
        result |= {"outcome": "drift" if reasons else "no_drift", "drift_detected": bool(reasons),
                   "reasons": reasons}
    out_dir = stage_dir(spec.name, MONITORING, airflow_run_id, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    landed = out_dir / LANDED_FILE
    result["labelled_batches"] = json.loads(landed.read_text()) if landed.is_file() else []
    write_text_atomic(out_dir / REPORT_FILE, render_drift_report(result))
    result["report"] = str(out_dir / REPORT_FILE)
    result["mlflow_run_id"] = log_check(result, spec, out_dir, settings)
    write_text_atomic(out_dir / DRIFT_FILE, json.dumps(result, indent=2))
    log.info("drift check of %s for %s: %s%s", spec.name, checked_for, result["outcome"],
             "".join(f"\n  {reason}" for reason in result["reasons"]))
    return result


def monitoring_experiment(spec: DatasetSpec) -> str:
    return f"{spec.name}-monitoring"


def log_check(result: dict[str, Any], spec: DatasetSpec, out_dir, settings: Settings) -> str:
    """The check's MLflow run in `<dataset>-monitoring` (found again on rerun by the Airflow run id)."""
    client = mlflow_client(settings)
    run = airflow_run(client, monitoring_experiment(spec), result["airflow_run_id"],
                      f"drift check {result['checked_for']}", settings=settings)
    run_id = run.info.run_id
    model = result.get("model", {})
    tags = {DRIFT_DETECTED_TAG: str(result["drift_detected"]).lower(), "check.outcome": result["outcome"],
            CHECKED_FOR_TAG: result["checked_for"], "window.dates": ",".join(result["window"]["dates"]),
            "window.missing": ",".join(result["window"]["missing"]),
            **model_tags(model.get("name", ""), model.get("version", ""), model.get("run_id", "")),
            **airflow_task_tags()}
    if RETRAIN_TRIGGERED_TAG not in run.data.tags:
        tags[RETRAIN_TRIGGERED_TAG] = "false"
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    metrics: dict[str, float] = {"window_rows": result.get("rows", 0),
                                 "window_missing_dates": len(result["window"]["missing"])}
    if result["outcome"] != "nothing_to_check":
        metrics["drifted_feature_share"] = result["drifted_feature_share"]
        for name, column in {**result["features"], **result["predictions"]}.items():
            for statistic in ("psi", "ks", "unseen_share", "null_rate_change"):
                if column.get(statistic) is not None:
                    metrics[f"{statistic}.{_METRIC_UNSAFE.sub('_', name)}"] = column[statistic]
        checked = result["performance"]
        metrics |= {f"performance.{key}": checked[key]
                    for key in ("window", "standard_error", "drop", "drop_lower", "rows_labelled")
                    if checked.get(key) is not None}
    metrics["labelled_rows_landed"] = sum(batch.get("rows_landed", 0) for batch in result["labelled_batches"]
                                          if batch["status"] == "landed")
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    client.log_text(run_id, json.dumps(result, indent=2), DRIFT_FILE)
    client.log_artifact(run_id, str(out_dir / REPORT_FILE))
    client.set_terminated(run_id, "FINISHED")
    return run_id
