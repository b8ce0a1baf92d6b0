"""Time the data stages (ingest, validate, stats, featurize) against a bare Spark CSV scan of the same files.

    .venv/bin/python benchmarks/data_stages.py --rows 1000000

Generates demo data, then in one Spark session times (a) the baseline: `spark.read.csv` with the spec's
explicit schema plus one aggregate (count and the mean of every numeric column), and (b) the library's stages,
each reading the previous stage's output as the jobs do. Prints seconds per stage and the ratios to the
baseline, and writes them as JSON (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from continuous_training.config import Settings
from continuous_training.data.features import featurize
from continuous_training.data.ingest import ingest
from continuous_training.data.stats import write_stats
from continuous_training.data.validation import validate
from continuous_training.demo import generate
from continuous_training.paths import stage_dir
from continuous_training.spark import build_spark_session
from continuous_training.spec import DatasetSpec, is_numeric_type, load_spec
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

STAGES = ("ingest", "validate", "stats", "featurize")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "data_stages.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="Rows of demo data to generate.")
    parser.add_argument("--batches", type=int, default=4, help="Daily batches (folders) of the rows.")
    parser.add_argument("--bad-fraction", type=float, default=0.01, help="Fraction of malformed rows.")
    parser.add_argument("--dataset", default="churn", help="Spec (name or path) reading the demo data.")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="DATA_DIR for the run (kept afterwards); default: a temporary folder, removed.")
    parser.add_argument("--master", default="local[*]", help="Spark master.")
    parser.add_argument("--driver-memory", default="4g", help="spark.driver.memory.")
    parser.add_argument("--repeat", type=int, default=1, help="Runs of baseline and pipeline; best is kept.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Where to write the JSON figures.")
    return parser.parse_args(argv)


def timed(action: Callable[[], Any]) -> tuple[Any, float]:
    """The action's result and its wall-clock seconds."""
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def reset_peak_rss(pids: dict[str, int]) -> None:
    """Restart the kernel's peak resident set counter (VmHWM) of each process (Linux `clear_refs` 5)."""
    for pid in pids.values():
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_mib(pids: dict[str, int]) -> dict[str, float]:
    """Peak resident set (VmHWM) of each process since its last reset, in MiB."""
    peaks = {}
    for name, pid in pids.items():
        status = Path(f"/proc/{pid}/status").read_text()
        kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        peaks[name] = round(kib / 1024, 1)
    return peaks


def baseline(spark: SparkSession, spec: DatasetSpec, settings: Settings) -> dict[str, Any]:
    """One CSV scan with the explicit schema and one aggregate: the least a stage reading the CSV must do."""
    frame = spark.read.csv(spec.source_path(settings), schema=spec.ddl_schema, header=True)
    numeric = [column for column, spark_type in spec.schema_.items() if is_numeric_type(spark_type)]
    means = [F.avg(F.col(f"`{column}`")).alias(column) for column in numeric]
    return frame.agg(F.count(F.lit(1)).alias("rows"), *means).first().asDict()


def pipeline(spark: SparkSession, spec: DatasetSpec, settings: Settings, run_id: str) -> dict[str, Any]:
    """The four stages through the library, each reading what the previous one wrote; seconds, driver peak RSS
    (JVM and Python process) and outcomes."""
    dirs = {stage: stage_dir(spec.name, stage, run_id, settings) for stage in STAGES}
    valid_path = str(dirs["validate"] / "valid")
    driver = {"jvm": spark.sparkContext._jvm.ProcessHandle.current().pid(), "python": os.getpid()}
    actions = {
        "ingest": lambda: ingest(spark, spec, run_id, dirs["ingest"], settings),
        "validate": lambda: validate(spark.read.parquet(str(dirs["ingest"] / "data")), spec, run_id,
                                     dirs["validate"], settings.quarantine_max_fraction),
        "stats": lambda: write_stats(spark.read.parquet(valid_path), spec, dirs["stats"]),
        "featurize": lambda: featurize(spark.read.parquet(valid_path), spec, run_id, dirs["featurize"],
                                       results["ingest"].input_fingerprint, settings),
    }
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    peaks: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        reset_peak_rss(driver)
        results[stage], seconds[stage] = timed(actions[stage])
        peaks[stage] = peak_rss_mib(driver)
    ingested, validated, featurized = results["ingest"], results["validate"], results["featurize"]
    return {
        "seconds": seconds,
        "driver_peak_rss_mib": peaks,
        "ingest_rows": ingested.rows,
        "corrupt_rows": ingested.corrupt_rows,
        "valid_rows": validated.valid,
        "quarantined_rows": validated.quarantined,
        "feature_dim": featurized.feature_dim,
        "split_rows": featurized.rows,
    }


def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """Generate the data, time baseline and pipeline in one session, and return the figures."""
    settings = Settings(data_dir=data_dir)
    spec = load_spec(args.dataset, settings)
    demo, generate_s = timed(lambda: generate(rows=args.rows, batches=args.batches, data_dir=data_dir,
                                              bad_fraction=args.bad_fraction))
    load_before = os.getloadavg()
    conf = {"spark.master": args.master, "spark.driver.memory": args.driver_memory}
    spark = build_spark_session("data-stages-benchmark", conf, settings)
    spark.sparkContext.setLogLevel("ERROR")
    try:
        baseline(spark, spec, settings)  # warm-up: JIT and page cache, for baseline and pipeline alike
        baseline_runs = [timed(lambda: baseline(spark, spec, settings)) for _ in range(args.repeat)]
        pipeline_runs = [pipeline(spark, spec, settings, f"bench-{i}") for i in range(args.repeat)]
        parallelism = spark.sparkContext.defaultParallelism
        spark_version = spark.version
    finally:
        spark.stop()
    aggregate, baseline_s = min(baseline_runs, key=lambda run_: run_[1])
    best = {stage: min(run_["seconds"][stage] for run_ in pipeline_runs) for stage in STAGES}
    pipeline_s = sum(best.values())
    outcome = {key: value for key, value in pipeline_runs[-1].items() if key != "seconds"}
    outcome["driver_peak_rss_mib"] = {
        stage: {process: max(run_["driver_peak_rss_mib"][stage][process] for run_ in pipeline_runs)
                for process in ("jvm", "python")}
        for stage in STAGES
    }
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": args.rows,
        "batches": args.batches,
        "bad_fraction": args.bad_fraction,
        "csv_bytes": sum(path.stat().st_size for path in demo.files),
        "csv_files": len(demo.files),
        "repeat": args.repeat,
        "environment": {
            "master": args.master,
            "default_parallelism": parallelism,
            "cpu_count": os.cpu_count(),
            "load_average_before": [round(value, 2) for value in load_before],
            "load_average_after": [round(value, 2) for value in os.getloadavg()],
            "spark": spark_version,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "generate_seconds": round(generate_s, 3),
        "baseline_seconds": round(baseline_s, 3),
        "baseline_rows": aggregate["rows"],
        "stage_seconds": {stage: round(seconds, 3) for stage, seconds in best.items()},
        "stage_seconds_each_run": [{stage: round(seconds, 3) for stage, seconds in run_["seconds"].items()}
                                   for run_ in pipeline_runs],
        "pipeline_seconds": round(pipeline_s, 3),
        "ratio": round(pipeline_s / baseline_s, 2),
        "stage_ratios": {stage: round(seconds / baseline_s, 2) for stage, seconds in best.items()},
        **outcome,
    }


def print_figures(figures: dict[str, Any]) -> None:
    env = figures["environment"]
    size_mib = figures["csv_bytes"] / 2**20
    print(f"{figures['rows']:,} rows in {figures['csv_files']} CSV files ({size_mib:.0f} MiB), "
          f"{env['master']} ({env['default_parallelism']} cores), Spark {env['spark']}, "
          f"load average before/after {env['load_average_before'][0]}/{env['load_average_after'][0]}")
    print(f"{'stage':<12}{'seconds':>10}{'x baseline':>12}{'driver peak RSS MiB (JVM / Python)':>38}")
    print(f"{'baseline':<12}{figures['baseline_seconds']:>10.2f}{1:>12.2f}")
    for stage, seconds in figures["stage_seconds"].items():
        peak = figures["driver_peak_rss_mib"][stage]
        print(f"{stage:<12}{seconds:>10.2f}{figures['stage_ratios'][stage]:>12.2f}"
              f"{peak['jvm']:>30,.0f} / {peak['python']:,.0f}")
    print(f"{'pipeline':<12}{figures['pipeline_seconds']:>10.2f}{figures['ratio']:>12.2f}")
    print(f"rows: {figures['ingest_rows']:,} ingested = {figures['valid_rows']:,} valid + "
          f"{figures['quarantined_rows']:,} quarantined; feature_dim {figures['feature_dim']}; "
          f"data generation {figures['generate_seconds']:.1f} s (not timed in the ratio)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rows < args.batches or args.repeat < 1:
        sys.exit("need --rows >= --batches and --repeat >= 1")
    if args.data_dir is not None:
        figures = run(args, args.data_dir.expanduser().resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="ct-data-stages-") as tmp:
            figures = run(args, Path(tmp))
    print_figures(figures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
