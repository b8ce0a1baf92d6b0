"""Score the same batch with the same model two ways: this project's batch scoring and `mlflow.pyfunc.spark_udf`.

    .venv/bin/python benchmarks/batch_scoring.py --rows 100000 1000000

In one Spark session: fits the churn feature pipeline on a small training sample, logs and registers a pyfunc
with the training MLP's shape (random weights: the cost does not depend on them), then for each size writes an
unlabelled demo batch as Parquet and times (a) `continuous_training.serving.batch.score` (predictions with lineage and
one probability column per class) and (b) the bare `spark_udf(env_manager="local")` it wraps
(`serving.predict.model_udf`) over the same columns. Both run to the
end through Spark's `noop` sink, so neither is timed writing files. Prints rows/s of both, their ratio, and the
driver's peak memory while scoring (this Python process, and the Spark driver JVM, which in local mode also hosts
the executors), and writes the
figures as JSON (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import mlflow
import psutil
from continuous_training.config import Settings
from continuous_training.data.features import feature_transform, fit_feature_pipeline
from continuous_training.data.ingest import batch_columns
from continuous_training.demo import generate, generate_scoring
from continuous_training.model.pyfunc import log_pyfunc_model
from continuous_training.model.torch_mlp import build_mlp, numpy_weights
from continuous_training.serving.batch import ResolvedModel, score
from continuous_training.serving.predict import model_udf
from continuous_training.spark import build_spark_session
from continuous_training.spec import DatasetSpec, load_spec
from continuous_training.tracking import mlflow_client
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "batch_scoring.json"
HIDDEN = (64, 32)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="Batch sizes to score.")
    parser.add_argument("--master", default="local[*]", help="Spark master.")
    parser.add_argument("--driver-memory", default="2g", help="spark.driver.memory.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Where to write the JSON figures.")
    return parser.parse_args(argv)


class PeakRss:
    """Samples a process's resident memory every 50 ms while in use; `peak_mib` is the largest sample."""

    def __init__(self, pid: int) -> None:
        self.process, self.peak = psutil.Process(pid), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20


def register_model(spark: SparkSession, spec: DatasetSpec, settings: Settings) -> ResolvedModel:
    generate(rows=20_000, batches=1, seed=1, data_dir=settings.data_dir)
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
    version = mlflow.register_model(info.model_uri, spec.registered_model_name).version
    return ResolvedModel(name=spec.registered_model_name, version=str(version), run_id=run.info.run_id,
                         alias="champion")


def batch(spark: SparkSession, spec: DatasetSpec, rows: int, root: Path) -> DataFrame:
    """An unlabelled batch of `rows` rows as Parquet with the spec's types, numeric features as double."""
    written = generate_scoring(rows_per_day=rows, seed=rows, data_dir=root).batches[0]
    columns = batch_columns(spark, spec, [str(written)])
    schema = ", ".join(f"`{column}` {spec.schema_[column]}" for column in columns)
    frame = spark.read.csv(str(written), header=True, schema=schema)
    frame = frame.withColumns({column: F.col(f"`{column}`").cast("double") for column in spec.features.numeric})
    frame.write.mode("overwrite").parquet(str(root / f"batch-{rows}"))
    return spark.read.parquet(str(root / f"batch-{rows}"))


def timed_noop(frame: DataFrame) -> float:
    started = time.perf_counter()
    frame.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


def measure(spark: SparkSession, spec: DatasetSpec, model: ResolvedModel, rows: int, root: Path) -> dict[str, Any]:
    frame = batch(spark, spec, rows, root)
    udf = model_udf(spark, model.uri, spec.task)
    variants = {
        "project": lambda: score(frame, spec, model, date(2026, 11, 5), "bench"),
        "spark_udf": lambda: frame.withColumn("scored", udf(F.struct(
            *[F.col(f"`{column}`") for column in spec.feature_columns]))),
    }
    jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    figures: dict[str, Any] = {"rows": rows}
    for name, build in variants.items():
        timed_noop(build().limit(1000))  # warm-up: Python workers, model load
        with PeakRss(jvm_pid) as jvm, PeakRss(os.getpid()) as python:
            seconds = timed_noop(build())
        figures[name] = {"seconds": round(seconds, 3), "rows_per_s": round(rows / seconds),
                         "driver_jvm_peak_rss_mib": round(jvm.peak_mib, 1),
                         "driver_python_peak_rss_mib": round(python.peak_mib, 1)}
    figures["ratio_project_to_spark_udf"] = round(figures["project"]["rows_per_s"]
                                                  / figures["spark_udf"]["rows_per_s"], 3)
    return figures


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as scratch:
        root = Path(scratch)
        settings = Settings(data_dir=root / "data", mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                            mlflow_artifact_root=root / "artifacts")
        spark = build_spark_session("bench-batch-scoring", {"spark.master": args.master,
                                                            "spark.driver.memory": args.driver_memory,
                                                            "spark.ui.enabled": "false"}, settings)
        spec = load_spec("churn", settings)
        model = register_model(spark, spec, settings)
        results = [measure(spark, spec, model, rows, root / "batches") for rows in args.rows]
        spark.stop()
    print(f"{'rows':>10} {'project rows/s':>15} {'spark_udf rows/s':>17} {'ratio':>6} {'JVM peak MiB':>13} "
          f"{'Python peak MiB':>16}")
    for figures in results:
        project, udf = figures["project"], figures["spark_udf"]
        print(f"{figures['rows']:>10,} {project['rows_per_s']:>15,} {udf['rows_per_s']:>17,} "
              f"{figures['ratio_project_to_spark_udf']:>6.2f} "
              f"{max(project['driver_jvm_peak_rss_mib'], udf['driver_jvm_peak_rss_mib']):>13,.0f} "
              f"{project['driver_python_peak_rss_mib']:>16,.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "batch_scoring", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": psutil.cpu_count()},
        "master": args.master, "results": results,
    }, indent=2))
    print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
