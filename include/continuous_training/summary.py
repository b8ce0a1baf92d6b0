"""Print what a training run, a scoring run or a drift check produced and where its outputs are; or, with `--dag`,
the id of the DAG that trains, scores or checks a dataset."""

from __future__ import annotations

import argparse
import logging
from datetime import date
from pathlib import Path

from continuous_training.cli import run_job
from continuous_training.config import Settings, get_settings
from continuous_training.dag_ids import KINDS, dataset_dag_id
from continuous_training.errors import PipelineError
from continuous_training.paths import (
    EVALUATE,
    EVALUATION_FILE,
    FEATURIZE,
    FEATURIZE_FILE,
    INGEST,
    MANIFEST_FILE,
    PROMOTE,
    PROMOTION_FILE,
    QUARANTINE_DATA,
    STATS,
    STATS_FILE,
    STATS_REPORT_FILE,
    VALIDATE,
    VALIDATION_FILE,
    Evaluation,
    FeaturizeResult,
    IngestResult,
    PromotionDecision,
    Result,
    ValidationResult,
    read_result,
    run_dir_name,
)
from continuous_training.spec import load_spec
from continuous_training.tracking import redacted_uri

log = logging.getLogger(__name__)


def latest_run_dir_name(dataset: str, settings: Settings) -> str:
    """The `run_id=...` folder of the most recent ingest of a dataset."""
    manifests = sorted((settings.data_dir / dataset / INGEST).glob(f"run_id=*/{MANIFEST_FILE}"),
                       key=lambda path: path.stat().st_mtime)
    if not manifests:
        raise SystemExit(f"no runs of {dataset!r} under {settings.data_dir / dataset}")
    return manifests[-1].parent.name


def read_written(path: Path, result_type: type[Result]) -> Result | None:
    """A stage's result, None when the stage did not write it or left it damaged (a warning names the file)."""
    if not path.is_file():
        return None
    try:
        return read_result(path, result_type)
    except PipelineError as error:
        log.warning("skipping a damaged result: %s", error)
        return None


def summarize(dataset: str, run_id: str | None = None, settings: Settings | None = None) -> str:
    """A human-readable summary of one run (the latest when run_id is None)."""
    settings = settings or get_settings()
    spec = load_spec(dataset, settings)
    run_dir = run_dir_name(run_id) if run_id else latest_run_dir_name(spec.name, settings)
    root = settings.data_dir / spec.name

    def stage(name: str) -> Path:
        return root / name / run_dir

    ingest = read_written(stage(INGEST) / MANIFEST_FILE, IngestResult)
    validation = read_written(stage(VALIDATE) / VALIDATION_FILE, ValidationResult)
    stats = read_written(stage(STATS) / STATS_FILE, dict)
    features = read_written(stage(FEATURIZE) / FEATURIZE_FILE, FeaturizeResult)
    lines = [f"training_pipeline summary for {spec.name!r} ({run_dir})", ""]
    if ingest:
        lines.append(f"  ingest     {ingest.rows:>10,} rows from {len(ingest.files)} files "
                     f"({ingest.corrupt_rows:,} malformed)")
        if ingest.incomplete_batches:
            lines.append(f"             {len(ingest.incomplete_batches)} batch folders without _SUCCESS skipped: "
                         f"{', '.join(ingest.incomplete_batches)}")
    if validation:
        lines.append(f"  validate   {validation.valid:>10,} valid, {validation.quarantined:,} quarantined "
                     f"({validation.quarantine_fraction:.2%})")
        lines += [f"               {count:>8,}  {reason}" for reason, count in validation.reasons.items()]
        lines += [f"               file quarantined: {path}: {reason}"
                  for path, reason in validation.quarantined_files.items()]
    if stats:
        lines.append(f"  stats      {stats['rows']:>10,} rows profiled, {len(stats['columns'])} columns")
    if features:
        rows = features.rows
        lines.append(f"  featurize  {rows['train']:>10,} train, {rows['validation']:,} validation, "
                     f"{rows['test']:,} test; feature_dim={features.feature_dim}")
    evaluation = read_written(stage(EVALUATE) / EVALUATION_FILE, Evaluation)
    promotion = read_written(stage(PROMOTE) / PROMOTION_FILE, PromotionDecision)
    if evaluation:
        metrics = ", ".join(f"{key}={value:.4f}" for key, value in sorted(evaluation.metrics.items()))
        lines.append(f"  evaluate   {metrics}")
    if promotion:
        verdict = "@champion" if promotion.promoted else "rejected"
        lines.append(f"  promote    {promotion.model_name} version {promotion.version} {verdict}: "
                     f"{promotion.reason}")
        lines.append(f"             MLflow run {evaluation.mlflow_run_id if evaluation else '?'} "
                     f"in experiment {spec.name!r} at {redacted_uri(settings.mlflow_tracking_uri)}")
    if evaluation:
        from continuous_training.tracking import mlflow_client

        triggered_by = mlflow_client(settings).get_run(evaluation.mlflow_run_id).data.tags.get("triggered_by")
        if triggered_by:
            lines.append(f"  trigger    {triggered_by}")
    lines += ["", "  outputs:"]
    outputs = {name: stage(name) for name in (INGEST, VALIDATE, STATS, FEATURIZE)}
    outputs |= {"quarantine": stage(VALIDATE) / QUARANTINE_DATA, "report": stage(STATS) / STATS_REPORT_FILE}
    lines += [f"    {name:<11}{path}" for name, path in outputs.items() if path.exists()]
    return "\n".join(lines)


def summarize_scoring(dataset: str, scored_for: date, settings: Settings | None = None) -> str:
    """A human-readable summary of the scoring of one date."""
    from continuous_training.serving.batch import scoring_experiment
    from continuous_training.serving.scored import SUMMARY_FILE, partition_dir

    spec = load_spec(dataset, settings)
    partition = partition_dir(spec, scored_for, settings)
    summary = read_written(partition / SUMMARY_FILE, dict)
    if summary is None:
        raise SystemExit(f"no readable scoring summary of {spec.name!r} for {scored_for} under {partition}")
    model = summary["model"]
    distribution = summary["distribution"]
    kind, values = ("class shares", distribution["class_shares"]) if "class_shares" in distribution else (
        "quantiles", distribution["quantiles"])
    lines = [
        f"batch scoring summary for {spec.name!r}, scored_for={summary['scored_for']} ({summary['airflow_run_id']})",
        "",
        f"  model      {model['name']} version {model['version']} (@{model['alias']}, MLflow run {model['run_id']})",
        f"  rows       {summary['rows_in']:,} in = {summary['scored']:,} scored + {summary['quarantined']:,} "
        "quarantined",
        *[f"               {count:>8,}  {reason}" for reason, count in summary["quarantine_reasons"].items()],
        f"  predicted  {kind}: " + ", ".join(f"{key}: {value:.4g}" for key, value in values.items()),
        "",
        f"  predictions {summary['predictions']}",
        f"  MLflow run  {summary['mlflow_run_id']} in experiment {scoring_experiment(spec)!r}",
    ]
    return "\n".join(lines)


def summarize_drift(dataset: str, checked_for: date, settings: Settings | None = None) -> str:
    """A human-readable verdict of the latest drift check of one date, with the retraining decision."""
    from continuous_training.monitoring.drift import RETRAIN_TRIGGERED_TAG, monitoring_experiment
    from continuous_training.monitoring.retraining import (
        RETRAIN_REASON_TAG,
        RETRAIN_RUN_ID_TAG,
        TRIGGER_PENDING,
        latest_drift_check,
    )
    from continuous_training.tracking import mlflow_client

    check = latest_drift_check(dataset, checked_for, settings)
    tags = mlflow_client(settings).get_run(check["mlflow_run_id"]).data.tags
    headline = {"drift": "DRIFT", "no_drift": "no drift", "nothing_to_check": "nothing to check"}[check["outcome"]]
    lines = [f"drift check of {check['dataset']!r} for {check['checked_for']} ({check['airflow_run_id']}): {headline}",
             ""]
    if "model" in check:
        lines.append(f"  window     {', '.join(check['window']['dates'])}: {check['rows']:,} scored rows, model "
                     f"{check['model']['name']} version {check['model']['version']}")
        lines.append(f"  features   {len(check['drifted_features'])} of {len(check['features'])} drifted"
                     + (f": {', '.join(check['drifted_features'])}" if check["drifted_features"] else ""))
        performance = check["performance"]
        lines.append(f"  metric     {performance['metric']}: " + (
            f"{performance['window']:.4f}"
            + ("" if performance.get("standard_error") is None else f" ± {performance['standard_error']:.4f}")
            + f" on {performance['rows_labelled']:,} labelled rows vs {performance['reference']:.4f} at training"
            if performance["status"] == "checked"
            else performance["status"].replace("_", " ")))
    lines += [f"  why        {reason}" for reason in check["reasons"]]
    if check["outcome"] == "nothing_to_check":
        lines.append(f"  why        {check['message']}")
    retrain = {"true": f"triggered: {tags.get(RETRAIN_RUN_ID_TAG)}",
               TRIGGER_PENDING: f"decided, but {tags.get(RETRAIN_RUN_ID_TAG)} was not created (trigger_retraining "
                                "has not succeeded)"}.get(tags.get(RETRAIN_TRIGGERED_TAG, ""), "not triggered")
    lines.append(f"  retrain    {retrain} ({tags.get(RETRAIN_REASON_TAG, 'not decided yet')})")
    lines += ["", f"  report     {check['report']}",
              f"  MLflow run {check['mlflow_run_id']} in experiment "
              f"{monitoring_experiment(load_spec(dataset, settings))!r}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="Dataset name or spec path.")
    parser.add_argument("--run-id", help="Airflow run id of a training run (default: the latest run)")
    parser.add_argument("--scored-for", type=date.fromisoformat, help="Summarise the scoring of this date instead.")
    parser.add_argument("--checked-for", type=date.fromisoformat, help="Summarise the drift check of this date.")
    parser.add_argument("--dag", choices=KINDS, help="Print the id of the DAG that trains, scores or checks the "
                                                      "dataset.")
    args = parser.parse_args(argv)

    def text() -> str:
        if args.dag:
            return dataset_dag_id(args.dag, args.dataset)
        if args.checked_for:
            return summarize_drift(args.dataset, args.checked_for)
        if args.scored_for:
            return summarize_scoring(args.dataset, args.scored_for)
        return summarize(args.dataset, args.run_id)

    run_job(lambda: print(text()))


if __name__ == "__main__":
    main()
