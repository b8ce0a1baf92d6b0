"""Building blocks the DAG files use, so that they stay a readable pipeline diagram."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk.exceptions import AirflowFailException

from continuous_training.config import get_settings
from continuous_training.paths import local_matches
from continuous_training.registry import promote_candidate, register_candidate
from continuous_training.spec import SpecError, load_spec


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


def _check_spec(params: dict[str, Any]) -> None:
    try:
        spec = load_spec(params["dataset"])
    except SpecError as error:
        raise AirflowFailException(str(error)) from None
    source = spec.source_path()
    if local_matches(source) == []:
        raise AirflowFailException(f"no input files match {source} (source.path of dataset {spec.name!r})")


def check_spec() -> PythonOperator:
    """Fails the run in seconds, without retries, on an unknown dataset, an invalid spec or a source glob that
    matches nothing: user errors that no retry can fix."""
    return PythonOperator(task_id="check_spec", python_callable=_check_spec)


def _register(params: dict[str, Any], run_id: str) -> str:
    version = register_candidate(load_spec(params["dataset"]), run_id)
    return version.version


def _promote(params: dict[str, Any], run_id: str) -> bool:
    decision = promote_candidate(load_spec(params["dataset"]), run_id, params.get("promotion_threshold"),
                                 params["min_improvement"])
    return decision.promoted


def registry_task(step: Literal["register", "promote"]) -> PythonOperator:
    """A registry transition for the run's candidate (MLflow client calls; no Spark needed)."""
    return PythonOperator(task_id=step, python_callable=_register if step == "register" else _promote)
