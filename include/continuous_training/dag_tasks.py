"""Building blocks the DAG files use, so that they stay a readable pipeline diagram."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from continuous_training.config import get_settings


def default_task_args() -> dict[str, Any]:
    """Retries with exponential backoff and an execution timeout for every task."""
    settings = get_settings()
    return {
        "retries": settings.task_retries,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=settings.task_timeout_minutes),
    }


def spark_job(stage: str, *extra_args: str, **operator_kwargs: Any) -> SparkSubmitOperator:
    """A SparkSubmitOperator running jobs/<stage>.py for the run's dataset and run id."""
    settings = get_settings()
    return SparkSubmitOperator(
        task_id=stage,
        application=str(settings.jobs_dir / f"{stage}.py"),
        application_args=["--dataset", "{{ params.dataset }}", "--run-id", "{{ run_id }}", *extra_args],
        conn_id="spark_default",
        name=f"{stage}-{{{{ params.dataset }}}}",
        driver_memory=settings.spark_driver_memory,
        conf={"spark.pyspark.python": settings.pyspark_python},
        **operator_kwargs,
    )
