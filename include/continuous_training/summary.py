"""Print what a run produced: a training_pipeline run (rows per stage, quarantine, the gate's verdict, where
outputs and reports are) or a scoring run (rows scored and quarantined, the model version, where predictions are)."""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from continuous_training.config import Settings, get_settings
from continuous_training.paths import run_dir_name
from continuous_training.spec import load_spec, resolve_spec_path


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
    from continuous_training.serving.batch import SUMMARY_FILE, partition_dir

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


def scoring_dag_id(dataset: str, settings: Settings | None = None) -> str:
    """The DAG that scores a dataset: its own `batch_scoring__<name>` when the name's spec declares scoring,
    otherwise the generic `batch_scoring` (specs given by path, or without a scoring section)."""
    spec = load_spec(dataset, settings)
    named = resolve_spec_path(dataset, settings).parent == (settings or get_settings()).datasets_dir
    return f"batch_scoring__{spec.name}" if named and spec.scoring else "batch_scoring"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="Dataset name or spec path.")
    parser.add_argument("--run-id", help="Airflow run id of a training run (default: the latest run)")
    parser.add_argument("--scored-for", type=date.fromisoformat, help="Summarise the scoring of this date instead.")
    parser.add_argument("--scoring-dag", action="store_true", help="Print the id of the DAG that scores the dataset.")
    args = parser.parse_args(argv)
    if args.scoring_dag:
        print(scoring_dag_id(args.dataset))
    elif args.scored_for:
        print(summarize_scoring(args.dataset, args.scored_for))
    else:
        print(summarize(args.dataset, args.run_id))


if __name__ == "__main__":
    main()
