"""Time one drift check over N scored rows against a bare Spark scan and aggregate of the same Parquet.

    .venv/bin/python benchmarks/drift_check.py --rows 100000 1000000 --repeat 1

In one local Spark session with DATA_DIR and MLflow (sqlite) in a temporary folder: registers a churn pyfunc
(random weights over a feature pipeline fitted on `--training-rows` demo rows) whose training run carries the
references a real one logs (`data/stats.json`, `data/prediction_profile.json`, `test_auc`). Then, for each size,
scores one day of that many demo rows with `score_batch` (a new date per size, its labels written beside it) and
times, after one untimed warm-up each, (a) `check_drift` with a one-date window on that partition (profile pass,
labels join and metric, report, MLflow run) and (b) `spark.read.parquet` of the partition with one aggregate over
every column the check profiles. Prints and writes as JSON the seconds of both, their ratio (goal <= 2), the time
spent in each part of the check, the check's outcome, and the peak resident memory during the check of this
Python process and of the Spark driver JVM (goal: flat from 100k to 1M rows). Spark's confs are the jobs' (twice
the local cores as shuffle partitions) unless `--shuffle-partitions` is given. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import psutil
from batch_scoring import HIDDEN, PeakRss
from continuous_training.config import Settings
from continuous_training.data.features import feature_transform, fit_feature_pipeline
from continuous_training.data.stats import compute_stats
from continuous_training.demo import generate, generate_scoring
from continuous_training.metrics import TRUE_LABEL, prediction_metrics
from continuous_training.model.pyfunc import log_pyfunc_model
from continuous_training.model.torch_mlp import build_mlp, numpy_weights
from continuous_training.monitoring import drift, reference
from continuous_training.paths import (
    VALIDATE,
    VALIDATION_FILE,
    ValidationResult,
    stage_dir,
    stage_for,
    write_result,
)
from continuous_training.serving.batch import ResolvedModel, partition_dir, score_batch
from continuous_training.serving.predict import predict_spark
from continuous_training.spark import build_spark_session
from continuous_training.spec import DatasetSpec, load_spec
from continuous_training.tracking import mlflow_client
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "drift_check.json"
FIRST_DAY = date(2026, 11, 5)
LABELS = ("churned", "customer_value", "plan_tier")
# The parts of check_drift, timed by wrapping the functions it calls (looked up in its module at call time).
PHASES = ("load_reference", "compare_window", "read_labels", "performance", "render_drift_report", "log_check")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="Scored rows per check.")
    parser.add_argument("--training-rows", type=int, default=100_000, help="Rows the references are computed on.")
    parser.add_argument("--master", default="local[*]", help="Spark master.")
    parser.add_argument("--driver-memory", default="2g", help="spark.driver.memory.")
    parser.add_argument("--shuffle-partitions", type=int, default=None,
                        help="spark.sql.shuffle.partitions; default as the jobs run (twice the local cores).")
    parser.add_argument("--repeat", type=int, default=1, help="Timed runs of check and baseline; fastest kept.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Where to write the JSON figures.")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("need --repeat >= 1")
    return args


def timed(action: Callable[[], Any]) -> tuple[Any, float]:
    """The action's result and its wall-clock seconds."""
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


@contextmanager
def phase_seconds() -> Iterator[dict[str, float]]:
    """Seconds spent in each of `PHASES` while in use (wrappers on `continuous_training.monitoring.drift`)."""
    seconds = dict.fromkeys(PHASES, 0.0)
    originals = {name: getattr(drift, name) for name in PHASES}

    def wrap(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - start
        return timed_call

    for name, function in originals.items():
        setattr(drift, name, wrap(name, function))
    try:
        yield seconds
    finally:
        for name, function in originals.items():
            setattr(drift, name, function)


def register_model(spark: SparkSession, spec: DatasetSpec, settings: Settings, rows: int) -> ResolvedModel:
    """A registered pyfunc whose training run carries real drift references, as a training run logs them."""
    generate(rows=rows, batches=1, seed=1, data_dir=settings.data_dir)
    train = spark.read.csv(spec.source_path(settings), header=True, schema=spec.ddl_schema)
    transform = feature_transform(fit_feature_pipeline(train, spec), spec)
    network = build_mlp(transform.feature_dim, spec.task, None, hidden=HIDDEN, seed=0)
    client = mlflow_client(settings)
    mlflow.set_experiment(experiment_id=client.create_experiment(
        "bench", artifact_location=(settings.mlflow_artifact_root / "bench").as_uri()))
    with mlflow.start_run() as run:
        info = log_pyfunc_model(weights=numpy_weights(network), transform=transform, task=spec.task,
                                feature_dim=transform.feature_dim, num_classes=None, hidden=HIDDEN,
                                classes=["0", "1"], input_example=train.limit(3).toPandas())
        mlflow.log_dict(compute_stats(train, spec), reference.STATS_ARTIFACT)
        mlflow.log_dict(reference.prediction_reference(train, info.model_uri, spec),
                        reference.PREDICTION_PROFILE_ARTIFACT)
        scored = predict_spark(train, info.model_uri, spec.task).withColumn(TRUE_LABEL, F.col(spec.label))
        mlflow.log_metric("test_auc", prediction_metrics(scored, spec.task, ["0", "1"], "test_")["test_auc"])
    version = mlflow.register_model(info.model_uri, spec.registered_model_name).version
    return ResolvedModel(spec.registered_model_name, str(version), run.info.run_id, "champion")


def score_day(spark: SparkSession, spec: DatasetSpec, settings: Settings, model: ResolvedModel, day: date,
              rows: int) -> None:
    """The scored partition of `day` with `rows` rows (its labels feed written beside it by the generator)."""
    written = generate_scoring(days=1, rows_per_day=rows, start_date=day, seed=rows, data_dir=settings.data_dir)
    schema = ", ".join(f"`{column}` {kind}" for column, kind in spec.schema_.items() if column not in LABELS)
    valid = spark.read.csv(str(written.batches[0]), header=True, schema=schema)
    validate_dir = stage_dir(spec.name, stage_for(VALIDATE, True), f"score-{day}", settings)
    write_result(validate_dir / VALIDATION_FILE, ValidationResult(
        dataset=spec.name, run_id=f"score-{day}", rows_in=rows, valid=rows, quarantined=0, quarantine_fraction=0.0,
        max_quarantine_fraction=0.0, reasons={}))
    score_batch(valid, spec, model, day, f"score-{day}", settings)


def baseline(spark: SparkSession, spec: DatasetSpec, path: str) -> int:
    """One scan of the partition and one aggregate touching every column the check profiles: the row count,
    the mean of each numeric column and the max of each categorical one."""
    checked = [*[(name, "numeric") for name in spec.features.numeric],
               *[(name, "categorical") for name in spec.features.categorical],
               *reference.prediction_columns(spec.task, ["0", "1"])]
    aggregates = [(F.avg if kind == "numeric" else F.max)(F.col(f"`{name}`")) for name, kind in checked]
    return spark.read.parquet(path).agg(F.count(F.lit(1)), *aggregates).head()[0]


def measure(spark: SparkSession, spec: DatasetSpec, settings: Settings, model: ResolvedModel, day: date,
            rows: int, repeat: int) -> dict[str, Any]:
    score_day(spark, spec, settings, model, day, rows)
    path = str(partition_dir(spec, day, settings))
    jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    baseline(spark, spec, path)  # warm-up: JIT, page cache
    baseline_runs = [timed(lambda: baseline(spark, spec, path)) for _ in range(repeat)]
    drift.check_drift(spark, spec, day, f"bench-{rows}-warm-up", window_size=1, settings=settings)
    checks = []
    for i in range(repeat):
        python_start = psutil.Process().memory_info().rss / 2**20
        with phase_seconds() as phases, PeakRss(jvm_pid) as jvm, PeakRss(os.getpid()) as python:
            result, seconds = timed(lambda i=i: drift.check_drift(spark, spec, day, f"bench-{rows}-{i}",
                                                                  window_size=1, settings=settings))
        checks.append({"seconds": round(seconds, 3), "phases": {k: round(v, 3) for k, v in phases.items()},
                       "other_seconds": round(seconds - sum(phases.values()), 3),
                       "driver_python_start_rss_mib": round(python_start, 1),
                       "driver_python_peak_rss_mib": round(python.peak_mib, 1),
                       "driver_jvm_peak_rss_mib": round(jvm.peak_mib, 1),
                       "outcome": result["outcome"], "rows": result.get("rows"), "window": result["window"]["dates"],
                       "drifted_feature_share": result.get("drifted_feature_share"),
                       "performance": {key: result["performance"].get(key) for key in
                                       ("status", "rows_labelled", "window", "reference")}})
    check = min(checks, key=lambda run: run["seconds"])
    check["driver_python_peak_rss_mib"] = max(run["driver_python_peak_rss_mib"] for run in checks)
    check["driver_jvm_peak_rss_mib"] = max(run["driver_jvm_peak_rss_mib"] for run in checks)
    baseline_rows, baseline_s = min(baseline_runs, key=lambda run: run[1])
    return {"rows": rows, "scored_for": day.isoformat(), "check": check,
            "baseline": {"seconds": round(baseline_s, 3), "rows": baseline_rows},
            "ratio_check_to_baseline": round(check["seconds"] / baseline_s, 2)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as scratch:
        root = Path(scratch)
        settings = Settings(data_dir=root / "data", mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                            mlflow_artifact_root=root / "artifacts")
        conf = {"spark.master": args.master, "spark.ui.enabled": "false", "spark.driver.memory": args.driver_memory}
        if args.shuffle_partitions:
            conf["spark.sql.shuffle.partitions"] = str(args.shuffle_partitions)
        spark = build_spark_session("bench-drift-check", conf, settings)
        spark.sparkContext.setLogLevel("ERROR")
        try:
            spec = load_spec("churn", settings)
            model = register_model(spark, spec, settings, args.training_rows)
            results = [measure(spark, spec, settings, model, FIRST_DAY + timedelta(days=i), rows, args.repeat)
                       for i, rows in enumerate(args.rows)]
            parallelism, spark_version = spark.sparkContext.defaultParallelism, spark.version
            shuffle_partitions = spark.conf.get("spark.sql.shuffle.partitions")
        finally:
            spark.stop()
    load_after = os.getloadavg()
    print(f"{args.master} ({parallelism} cores), Spark {spark_version}, shuffle partitions {shuffle_partitions}, "
          f"repeat {args.repeat}, load average before/after {load_before[0]:.2f}/{load_after[0]:.2f}")
    print(f"{'rows':>10} {'check s':>8} {'baseline s':>11} {'ratio':>6} {'Python peak MiB':>16} {'JVM peak MiB':>13}"
          f"  outcome")
    for figures in results:
        check = figures["check"]
        print(f"{figures['rows']:>10,} {check['seconds']:>8.2f} {figures['baseline']['seconds']:>11.2f} "
              f"{figures['ratio_check_to_baseline']:>6.2f} {check['driver_python_peak_rss_mib']:>16,.0f} "
              f"{check['driver_jvm_peak_rss_mib']:>13,.0f}  {check['outcome']} ({check['rows']:,} rows, "
              f"drifted share {check['drifted_feature_share']:.2f}, performance {check['performance']['status']})")
        print(" " * 11 + ", ".join(f"{name} {seconds:.2f}" for name, seconds in
                                   {**check["phases"], "other": check["other_seconds"]}.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "drift_check", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": psutil.cpu_count(),
                    "spark": spark_version, "default_parallelism": parallelism,
                    "load_average_before": [round(value, 2) for value in load_before],
                    "load_average_after": [round(value, 2) for value in load_after]},
        "master": args.master, "shuffle_partitions": shuffle_partitions, "repeat": args.repeat,
        "training_rows": args.training_rows, "results": results,
    }, indent=2))
    print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
