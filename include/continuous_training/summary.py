"""Print what a run produced: a training_pipeline run (rows per stage, quarantine, the gate's verdict, where
outputs and reports are), a scoring run (rows scored and quarantined, the model version, where predictions are) or
a drift check (the verdict and why, the retraining decision, where the report is)."""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from continuous_training.config import Settings, get_settings
from continuous_training.paths import run_dir_name
from continuous_training.spec import load_spec


def latest_run_dir_name(dataset: str, settings: Settings) -> str:
    """The `run_id=...` folder of the most recent ingest of a dataset."""
    manifests = sorted((settings.data_dir / dataset / "ingest").glob("run_id=*/manifest.json"),
                       key=lambda path: path.stat().st_mtime)
    if not manifests:
        raise SystemExit(f"no runs of {dataset!r} under {settings.data_dir / dataset}")
    return manifests[-1].parent.name


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def summarize(dataset: str, run_id: str | None = None, settings: Settings | None = None) -> str:
    """A human-readable summary of one run (the latest when run_id is None)."""
    settings = settings or get_settings()
    spec = load_spec(dataset, settings)
    run_dir = run_dir_name(run_id) if run_id else latest_run_dir_name(spec.name, settings)
    root = settings.data_dir / spec.name

    def stage(name: str) -> Path:
        return root / name / run_dir

    ingest = _read(stage("ingest") / "manifest.json")
    validation = _read(stage("validate") / "validation.json")
    stats = _read(stage("stats") / "stats.json")
    features = _read(stage("featurize") / "featurize.json")
    lines = [f"training_pipeline summary for {spec.name!r} ({run_dir})", ""]
    if ingest:
        lines.append(f"  ingest     {ingest['rows']:>10,} rows from {len(ingest['files'])} files "
                     f"({ingest['corrupt_rows']:,} malformed)")
    if validation:
        lines.append(f"  validate   {validation['valid']:>10,} valid, {validation['quarantined']:,} quarantined "
                     f"({validation['quarantine_fraction']:.2%})")
        lines += [f"               {count:>8,}  {reason}" for reason, count in validation["reasons"].items()]
    if stats:
        lines.append(f"  stats      {stats['rows']:>10,} rows profiled, {len(stats['columns'])} columns")
    if features:
        rows = features["rows"]
        lines.append(f"  featurize  {rows['train']:>10,} train, {rows['validation']:,} validation, "
                     f"{rows['test']:,} test; feature_dim={features['feature_dim']}")
    evaluation = _read(stage("evaluate") / "evaluation.json")
    promotion = _read(stage("promote") / "promotion.json")
    if evaluation:
        metrics = ", ".join(f"{key}={value:.4f}" for key, value in sorted(evaluation["metrics"].items()))
        lines.append(f"  evaluate   {metrics}")
    if promotion:
        verdict = "@champion" if promotion["promoted"] else "rejected"
        lines.append(f"  promote    {promotion['model_name']} version {promotion['version']} {verdict}: "
                     f"{promotion['reason']}")
        lines.append(f"             MLflow run {evaluation['mlflow_run_id'] if evaluation else '?'} "
                     f"in experiment {spec.name!r} at {settings.mlflow_tracking_uri}")
    if evaluation:
        from continuous_training.tracking import mlflow_client

        triggered_by = mlflow_client(settings).get_run(evaluation["mlflow_run_id"]).data.tags.get("triggered_by")
        if triggered_by:
            lines.append(f"  trigger    {triggered_by}")
    lines += ["", "  outputs:"]
    lines += [f"    {name:<11}{stage(name)}" for name in ("ingest", "validate", "stats", "featurize")
              if stage(name).exists()]
    if (stage("validate") / "quarantine").exists():
        lines.append(f"    quarantine {stage('validate') / 'quarantine'}")
    if (stage("stats") / "report.html").exists():
        lines.append(f"    report     {stage('stats') / 'report.html'}")
    return "\n".join(lines)


def summarize_scoring(dataset: str, scored_for: date, settings: Settings | None = None) -> str:
    """A human-readable summary of the scoring of one date."""
    from continuous_training.serving.scored import SUMMARY_FILE, partition_dir

    spec = load_spec(dataset, settings)
    partition = partition_dir(spec, scored_for, settings)
    summary = _read(partition / SUMMARY_FILE)
    if summary is None:
        raise SystemExit(f"no scoring of {spec.name!r} for {scored_for} under {partition}")
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
        f"  MLflow run  {summary['mlflow_run_id']} in experiment {spec.name + '-scoring'!r}",
    ]
    return "\n".join(lines)


def latest_drift_check(dataset: str, checked_for: date, settings: Settings | None = None) -> dict:
    """The drift.json of the latest check of one date."""
    from continuous_training.monitoring.drift import DRIFT_FILE, MONITORING_STAGE

    settings = settings or get_settings()
    spec = load_spec(dataset, settings)
    checks = [(path.stat().st_mtime, json.loads(path.read_text()))
              for path in (settings.data_dir / spec.name / MONITORING_STAGE).glob(f"run_id=*/{DRIFT_FILE}")]
    of_date = [check for _, check in sorted(checks, key=lambda pair: pair[0])
               if check["checked_for"] == checked_for.isoformat()]
    if not of_date:
        raise SystemExit(f"no drift check of {spec.name!r} for {checked_for}")
    return of_date[-1]


def summarize_drift(dataset: str, checked_for: date, settings: Settings | None = None) -> str:
    """A human-readable verdict of the latest drift check of one date, with the retraining decision."""
    from continuous_training.monitoring.drift import RETRAIN_TRIGGERED_TAG, monitoring_experiment
    from continuous_training.monitoring.retraining import RETRAIN_REASON_TAG, RETRAIN_RUN_ID_TAG
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
            f"{performance['window']:.4f} on {performance['rows_labelled']:,} labelled rows vs "
            f"{performance['reference']:.4f} at training" if performance["status"] == "checked"
            else performance["status"].replace("_", " ")))
    lines += [f"  why        {reason}" for reason in check["reasons"]]
    if check["outcome"] == "nothing_to_check":
        lines.append(f"  why        {check['message']}")
    triggered = tags.get(RETRAIN_TRIGGERED_TAG) == "true"
    lines.append(f"  retrain    {'triggered: ' + tags[RETRAIN_RUN_ID_TAG] if triggered else 'not triggered'}"
                 f" ({tags.get(RETRAIN_REASON_TAG, 'not decided yet')})")
    lines += ["", f"  report     {check['report']}",
              f"  MLflow run {check['mlflow_run_id']} in experiment "
              f"{monitoring_experiment(load_spec(dataset, settings))!r}"]
    return "\n".join(lines)


def _own_dag_id(kind: str, dataset: str, has_section: bool, settings: Settings | None) -> str:
    """A dataset given by name has its own DAG when its spec has the section; a spec given by path, the generic one
    (whose `dataset` param takes a path)."""
    by_name = "/" not in dataset and Path(dataset).suffix not in {".yaml", ".yml"}
    return f"{kind}__{load_spec(dataset, settings).name}" if by_name and has_section else kind


def scoring_dag_id(dataset: str, settings: Settings | None = None) -> str:
    """The DAG that scores a dataset: its own `batch_scoring__<name>` when the name's spec declares scoring,
    otherwise the generic `batch_scoring` (specs given by path, or without a scoring section)."""
    return _own_dag_id("batch_scoring", dataset, load_spec(dataset, settings).scoring is not None, settings)


def training_dag_id(dataset: str, settings: Settings | None = None) -> str:
    """The DAG that trains a dataset: its own `training__<name>` when the name's spec has a training section,
    otherwise the generic `training_pipeline`."""
    dag_id = _own_dag_id("training", dataset, load_spec(dataset, settings).training is not None, settings)
    return "training_pipeline" if dag_id == "training" else dag_id


def drift_dag_id(dataset: str, settings: Settings | None = None) -> str:
    """The DAG that checks a dataset: its own `drift_check__<name>` when the name's spec declares monitoring,
    otherwise the generic `drift_check`."""
    return _own_dag_id("drift_check", dataset, load_spec(dataset, settings).monitoring is not None, settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="Dataset name or spec path.")
    parser.add_argument("--run-id", help="Airflow run id of a training run (default: the latest run)")
    parser.add_argument("--scored-for", type=date.fromisoformat, help="Summarise the scoring of this date instead.")
    parser.add_argument("--scoring-dag", action="store_true", help="Print the id of the DAG that scores the dataset.")
    parser.add_argument("--checked-for", type=date.fromisoformat, help="Summarise the drift check of this date.")
    parser.add_argument("--drift-dag", action="store_true", help="Print the id of the DAG that checks the dataset.")
    parser.add_argument("--training-dag", action="store_true", help="Print the id of the DAG that trains the dataset.")
    parser.add_argument("--retrain-run", type=date.fromisoformat, metavar="DATE",
                        help="Print the DAG id and run id of the training run the latest drift check of DATE "
                             "triggered (nothing if none).")
    args = parser.parse_args(argv)
    if args.scoring_dag:
        print(scoring_dag_id(args.dataset))
    elif args.drift_dag:
        print(drift_dag_id(args.dataset))
    elif args.training_dag:
        print(training_dag_id(args.dataset))
    elif args.retrain_run:
        from continuous_training.monitoring.retraining import RETRAIN_DAG_ID_TAG, RETRAIN_RUN_ID_TAG
        from continuous_training.tracking import mlflow_client

        tags = mlflow_client().get_run(latest_drift_check(args.dataset, args.retrain_run)["mlflow_run_id"]).data.tags
        if RETRAIN_RUN_ID_TAG in tags:
            print(tags[RETRAIN_DAG_ID_TAG], tags[RETRAIN_RUN_ID_TAG])
    elif args.checked_for:
        print(summarize_drift(args.dataset, args.checked_for))
    elif args.scored_for:
        print(summarize_scoring(args.dataset, args.scored_for))
    else:
        print(summarize(args.dataset, args.run_id))


if __name__ == "__main__":
    main()
