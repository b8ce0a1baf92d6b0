"""The workload `make setup` dumps Spark's class-data-sharing archive from (see the Makefile's SPARK_CLASS_ARCHIVE).

Run under spark-submit with `-XX:ArchiveClassesAtExit=<file>`: the driver JVM loads the classes the project's
stages use (CSV with a schema, Parquet, aggregations, windows, percentiles, a Spark ML pipeline, Arrow) on a
small demo dataset, then writes them to the archive as it exits. A driver JVM started with
`-XX:SharedArchiveFile=<file>` maps them instead of loading and verifying them again; a JVM or Spark whose classes
differ from the archive's warns once and starts as usual.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from continuous_training.config import Settings
from continuous_training.demo import generate
from continuous_training.paths import VALID_DATA, VALIDATE, stage_dir
from continuous_training.pipeline import run_data_stages
from continuous_training.spark import build_spark_session
from continuous_training.spec import load_spec


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="spark-class-archive-") as root:
        settings = Settings(data_dir=Path(root) / "data")
        spec, run_id = load_spec("churn", settings), "class-archive"
        generate(rows=2_000, batches=2, seed=1, bad_fraction=0.01, data_dir=settings.data_dir)
        spark = build_spark_session("spark-class-archive", {"spark.sql.shuffle.partitions": "2"}, settings)
        run_data_stages(spark, spec, run_id, settings, max_quarantine_fraction=1.0, stats=True)
        valid = spark.read.parquet(str(stage_dir(spec.name, VALIDATE, run_id, settings) / VALID_DATA))
        valid.limit(100).toPandas()
        spark.stop()


if __name__ == "__main__":
    main()
