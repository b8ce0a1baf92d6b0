"""Spark session construction from the settings object, two Spark actions at once, columns by exact name and
literal arrays for column expressions."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pyspark import inheritable_thread_target
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from continuous_training.config import Settings, get_settings

log = logging.getLogger(__name__)

SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"
Background, Foreground = TypeVar("Background"), TypeVar("Foreground")


def build_spark_session(app_name: str, conf: Mapping[str, str] | None = None,
                        settings: Settings | None = None) -> SparkSession:
    """A session for one job. The master comes from spark-submit (the Airflow connection `spark_default`). On a local
    master, shuffles get twice as many partitions as it has cores unless spark.sql.shuffle.partitions is set. Logs
    the application id, master and UI address (for the task log)."""
    settings = settings or get_settings()
    os.environ.setdefault("PYSPARK_PYTHON", settings.pyspark_python)
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.pyspark.python", settings.pyspark_python)
        .config("spark.sql.parquet.compression.codec", "snappy")
        # Adaptive execution also sizes the shuffles under persisted frames.
        .config("spark.sql.optimizer.canChangeCachedPlanOutputPartitioning", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.log.level", "WARN")
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    context = spark.sparkContext
    if context.master.startswith("local") and not context.getConf().contains(SHUFFLE_PARTITIONS):
        spark.conf.set(SHUFFLE_PARTITIONS, str(2 * context.defaultParallelism))
    log.info("Spark application %s (%s) on %s, UI %s", context.applicationId, app_name, context.master,
             context.uiWebUrl or "off (spark.ui.enabled=false)")
    return spark


def submitted_conf() -> dict[str, str]:
    """The Spark conf this driver was started with (spark-submit's --conf, spark-defaults.conf), read before any
    session exists, so a job's own defaults can leave what the cluster set alone."""
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()
    return dict(SparkConf().getAll())


def in_parallel(spark: SparkSession, background: Callable[[], Background],
                foreground: Callable[[], Foreground]) -> tuple[Background, Foreground]:
    """Run two independent Spark actions at once and return both results: `background` on a worker thread that
    inherits the session's local properties and tags, `foreground` on this one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        later = pool.submit(inheritable_thread_target(spark)(background))
        now = foreground()
        return later.result(), now


def col(name: str) -> Column:
    """A column by its exact name, backticks in it escaped (dots and spaces are not parsed as structure)."""
    return F.col(f"`{name.replace('`', '``')}`")


def literal_array(items: Sequence[float | str], element_type: str) -> Column:
    """A constant array<element_type> (`double` or `string`), folded into one literal from one JSON text.
    Infinities and NaN pass."""
    values = [float(item) for item in items] if element_type == "double" else list(items)
    return F.from_json(F.lit(json.dumps(values)), f"array<{element_type}>")
