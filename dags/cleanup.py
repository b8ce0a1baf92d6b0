"""
### cleanup

Keeps storage bounded (`continuous_training.retention`), daily:

`cleanup`

* **cleanup**: for each dataset (every spec under `include/datasets/`, or the `dataset` param): training run folders
  beyond the last `RETENTION_RUNS` per stage go, except what registered model versions keep (their records; the
  `@champion`'s and `@challenger`'s featurize test split too); scoring run folders, predictions partitions and
  monitoring outputs for dates more than `RETENTION_DAYS` before the run's date go; finished MLflow runs of
  `<dataset>-scoring` and `<dataset>-monitoring` for dates more than `MLFLOW_RETENTION_DAYS` before it are
  deleted. A folder whose stage lock is held is skipped; an unreadable registry fails the task and deletes nothing.
  `dry_run` lists, in the task log, what it would remove (as `make clean-data DRY_RUN=1` does).
"""

from typing import Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param
from continuous_training.orchestration.alerts import on_run_failure
from continuous_training.orchestration.tasks import default_task_args


def _cleanup(params: dict[str, Any], dag_run: Any) -> dict[str, int]:
    from continuous_training.retention import cleanup

    outcome = cleanup(params["dataset"] or None, dag_run.logical_date or dag_run.run_after, params["dry_run"])
    return {"removed": len(outcome.removed), "skipped": len(outcome.skipped)}


with DAG(
    dag_id="cleanup",
    doc_md=__doc__,
    schedule="@daily",
    max_active_runs=1,
    catchup=False,
    default_args=default_task_args(),
    on_failure_callback=on_run_failure(),
    tags=["maintenance", "mlflow"],
    params={
        "dataset": Param(None, type=["null", "string"], minLength=1,
                         description="A spec name or path; empty: every spec under include/datasets/."),
        "dry_run": Param(False, type="boolean", description="List what would be removed; remove nothing."),
    },
) as cleanup_dag:
    PythonOperator(task_id="cleanup", python_callable=_cleanup)
