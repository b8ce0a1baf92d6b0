"""An "MLflow run" link on the training_pipeline tasks that produce or use the run's MLflow training run.

The link is resolved by the Airflow API server when a task instance page asks for it: the training run is
the MLflow run tagged with the Airflow dag id and run id (any experiment); without one the link opens the
dataset's experiment, and without that it is empty. Lookups are bounded in time and never raise.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import BaseOperatorLink
from continuous_training.config import get_settings
from continuous_training.spec import load_spec

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

AIRFLOW_DAG_ID_TAG = "airflow.dag_id"
LINKED_TASKS: dict[str, frozenset[str]] = {
    "training_pipeline": frozenset({"train", "evaluate", "register", "promote"}),
}
LOOKUP_TIMEOUT_S = 5.0

_lookups = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mlflow-link")


def _experiment_ids(client: MlflowClient) -> list[str]:
    from mlflow.entities import ViewType

    ids: list[str] = []
    page_token = None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=page_token)
        ids.extend(experiment.experiment_id for experiment in page)
        page_token = page.token
        if not page_token:
            return ids


def training_run_url(client: MlflowClient, ui_url: str, dag_id: str, airflow_run_id: str) -> str:
    """The MLflow UI page of the training run an Airflow run created, or "" when there is none."""
    from continuous_training.tracking import AIRFLOW_RUN_ID_TAG, filter_literal

    experiment_ids = _experiment_ids(client)
    if not experiment_ids:
        return ""
    runs = client.search_runs(
        experiment_ids,
        filter_string=(f"tags.`{AIRFLOW_RUN_ID_TAG}` = {filter_literal(airflow_run_id)} "
                       f"AND tags.`{AIRFLOW_DAG_ID_TAG}` = {filter_literal(dag_id)}"),
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    if not runs:
        return ""
    run = runs[0]
    return f"{ui_url.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"


def experiment_url(client: MlflowClient, ui_url: str, experiment_name: str) -> str:
    """The MLflow UI page of an experiment, or "" when it does not exist."""
    experiment = client.get_experiment_by_name(experiment_name)
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment.experiment_id}" if experiment else ""


def dag_run_conf(dag_id: str, run_id: str) -> dict[str, Any]:
    """The conf a DAG run was triggered with, read from the Airflow metadata database."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        conf = session.scalar(select(DagRun.conf).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    return conf or {}


def run_dataset(operator: Any, dag_id: str, run_id: str) -> str | None:
    """The dataset (spec name) of a DAG run: its conf's `dataset`, else the DAG's default param."""
    try:
        dataset = dag_run_conf(dag_id, run_id).get("dataset")
    except Exception:
        log.warning("Could not read the conf of %s/%s for the MLflow link", dag_id, run_id, exc_info=True)
        dataset = None
    if dataset is None and "dataset" in operator.params:
        dataset = operator.params["dataset"]
    return load_spec(dataset).name if dataset else None


def mlflow_link(operator: Any, dag_id: str, task_id: str, run_id: str) -> str:
    """The training run's page, else the dataset experiment's page, else "" (also for unlinked tasks)."""
    if task_id not in LINKED_TASKS.get(dag_id, ()):
        return ""
    from mlflow.tracking import MlflowClient

    settings = get_settings()
    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    url = training_run_url(client, settings.mlflow_ui_url, dag_id, run_id)
    if url:
        return url
    dataset = run_dataset(operator, dag_id, run_id)
    return experiment_url(client, settings.mlflow_ui_url, dataset) if dataset else ""


class MlflowRunLink(BaseOperatorLink):
    """Opens the MLflow training run of the task's DAG run."""

    name = "MLflow run"
    operators = [SparkSubmitOperator, PythonOperator]

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """Resolved with a time limit; any failure gives an empty link and a log line."""
        try:
            lookup = _lookups.submit(mlflow_link, operator, ti_key.dag_id, ti_key.task_id, ti_key.run_id)
            return lookup.result(timeout=LOOKUP_TIMEOUT_S)
        except Exception:
            log.warning("No MLflow link for %s", ti_key, exc_info=True)
            return ""


class MlflowLinksPlugin(AirflowPlugin):
    """Registers the MLflow run link on the Spark and Python tasks (shown on the training tasks)."""

    name = "mlflow_links"
    operator_extra_links = [MlflowRunLink()]
