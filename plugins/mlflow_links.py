"""Task links to MLflow: "MLflow run" and "MLflow model version".

Airflow's API server resolves these links when the links of a task instance are asked for (the task page of the
UI). Each link is the MLflow record that the task, or the task it builds on, made for the same DAG run, found by
what was recorded, never guessed from DAG ids or dataset names; a task that recorded nothing gets an empty link,
which the UI does not show.

* "MLflow run": the run tagged with the DAG run's dag id and run id and the task that logs it: `train` (linked on
  train, evaluate, register and promote), `score`, and `check_drift` (linked on check_drift and decide_retraining).
* "MLflow model version": the version registered from that training run (evaluate, register, promote), the version
  named by the `model.name` and `model.version` tags of the scoring or monitoring run (score, check_drift), and the
  version resolve_scoring_run returned (its XCom).

Both links of a task instance come from one lookup, reused for a few seconds; it never raises, and a slow or
unreachable MLflow gives empty links after LOOKUP_TIMEOUT_S.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.python import PythonOperator, ShortCircuitOperator
from airflow.sdk import BaseOperatorLink
from cachetools import TTLCache
from continuous_training.config import get_settings
from continuous_training.orchestration.tasks import (
    CHECK_DRIFT,
    DECIDE_RETRAINING,
    REGISTER,
    RESOLVE_SCORING_RUN,
    SCORE,
    ResolveScoringRun,
)
from continuous_training.paths import EVALUATE, PROMOTE, TRAIN
from continuous_training.tracking import AIRFLOW_DAG_ID_TAG, AIRFLOW_RUN_ID_TAG, AIRFLOW_TASK_ID_TAG, filter_literal

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

RUN_LINK, MODEL_VERSION_LINK = "MLflow run", "MLflow model version"
# For each linked task: the task whose MLflow run it links to.
RUN_LOGGED_BY = {TRAIN: TRAIN, EVALUATE: TRAIN, REGISTER: TRAIN, PROMOTE: TRAIN,
                 SCORE: SCORE, CHECK_DRIFT: CHECK_DRIFT, DECIDE_RETRAINING: CHECK_DRIFT}
VERSION_REGISTERED_FROM_RUN = frozenset({EVALUATE, REGISTER, PROMOTE})
VERSION_TAGGED_ON_RUN = frozenset({SCORE, CHECK_DRIFT})
VERSION_RETURNED_BY = RESOLVE_SCORING_RUN
LINKED_TASKS = frozenset(RUN_LOGGED_BY) | {VERSION_RETURNED_BY}

LOOKUP_TIMEOUT_S = 5.0
LOOKUP_REUSE_S = 10.0
MAX_LOOKUPS_IN_FLIGHT = 8
MAX_LOOKUPS_KEPT = 1024


class TaskRef(NamedTuple):
    """A task instance, as far as its links depend on it (not on its try)."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1


def run_url(ui_url: str, run: Run) -> str:
    return f"{ui_url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"


def model_version_url(ui_url: str, name: str, version: str) -> str:
    return f"{ui_url}/#/models/{quote(name, safe='')}/versions/{quote(version, safe='')}"


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


def logged_run(client: MlflowClient, dag_id: str, airflow_run_id: str, task_id: str) -> Run | None:
    """The MLflow run an Airflow task logged for a DAG run (tagged with its dag id, run id and task id), if any."""
    experiment_ids = _experiment_ids(client)
    if not experiment_ids:
        return None
    tags = {AIRFLOW_DAG_ID_TAG: dag_id, AIRFLOW_RUN_ID_TAG: airflow_run_id, AIRFLOW_TASK_ID_TAG: task_id}
    runs = client.search_runs(
        experiment_ids,
        filter_string=" AND ".join(f"tags.`{tag}` = {filter_literal(value)}" for tag, value in tags.items()),
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return runs[0] if runs else None


def version_registered_from(client: MlflowClient, run: Run) -> tuple[str, str] | None:
    """(model name, version) of the first version registered from a training run, if any."""
    versions = client.search_model_versions(f"run_id = '{run.info.run_id}'")
    first = min(versions, key=lambda version: (version.name, int(version.version)), default=None)
    return (first.name, str(first.version)) if first else None


def version_tagged_on(run: Run) -> tuple[str, str] | None:
    """(model name, version) named by a scoring or monitoring run's tags; None when it names none."""
    name, version = run.data.tags.get("model.name"), run.data.tags.get("model.version")
    return (name, version) if name and version else None


def version_returned_by(task: TaskRef) -> tuple[str, str] | None:
    """(model name, version) of the `model` in the task's return value (XCom), if it returned one."""
    from airflow.models.xcom import XCOM_RETURN_KEY, XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        value = session.scalar(XComModel.get_many(
            key=XCOM_RETURN_KEY, run_id=task.run_id, dag_ids=task.dag_id, task_ids=task.task_id,
            map_indexes=task.map_index,
        ).with_only_columns(XComModel.value))
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    model = value.get("model") if isinstance(value, dict) else None
    if not isinstance(model, dict) or not model.get("name") or not model.get("version"):
        return None
    return str(model["name"]), str(model["version"])


def task_links(task: TaskRef) -> dict[str, str]:
    """The URLs of what a task instance recorded, by link name (no entry for what it did not record)."""
    from mlflow.tracking import MlflowClient

    settings = get_settings()
    ui_url = settings.mlflow_ui_url.rstrip("/")
    links: dict[str, str] = {}
    version = None
    if task.task_id == VERSION_RETURNED_BY:
        version = version_returned_by(task)
    elif task.task_id in RUN_LOGGED_BY:
        client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
        run = logged_run(client, task.dag_id, task.run_id, RUN_LOGGED_BY[task.task_id])
        if run is None:
            return {}
        links[RUN_LINK] = run_url(ui_url, run)
        if task.task_id in VERSION_REGISTERED_FROM_RUN:
            version = version_registered_from(client, run)
        elif task.task_id in VERSION_TAGGED_ON_RUN:
            version = version_tagged_on(run)
    if version:
        links[MODEL_VERSION_LINK] = model_version_url(ui_url, *version)
    return links


@dataclass(frozen=True)
class _Lookup:
    links: Future[dict[str, str]]
    deadline: float


# A lookup answers for LOOKUP_REUSE_S after its deadline.
_recent: TTLCache[TaskRef, _Lookup] = TTLCache(MAX_LOOKUPS_KEPT, ttl=LOOKUP_TIMEOUT_S + LOOKUP_REUSE_S)
_recent_lock = threading.Lock()
_in_flight = threading.BoundedSemaphore(MAX_LOOKUPS_IN_FLIGHT)


def _start_lookup(task: TaskRef) -> Future[dict[str, str]]:
    """task_links in a daemon thread: an MLflow that hangs holds that thread, never the caller nor the process
    exit; at most MAX_LOOKUPS_IN_FLIGHT such threads at a time."""
    links: Future[dict[str, str]] = Future()
    if not _in_flight.acquire(blocking=False):
        links.set_exception(RuntimeError(f"{MAX_LOOKUPS_IN_FLIGHT} earlier lookups still wait for MLflow"))
        return links

    def look_up() -> None:
        try:
            links.set_result(task_links(task))
        except BaseException as error:
            links.set_exception(error)
        finally:
            _in_flight.release()

    threading.Thread(target=look_up, name="mlflow-links", daemon=True).start()
    return links


def recorded_links(ti_key: Any) -> dict[str, str]:
    """task_links of a task instance within LOOKUP_TIMEOUT_S, one lookup answering all its links for
    LOOKUP_REUSE_S; {} for a task without links, and (logged) when the lookup fails or is late."""
    task = TaskRef(ti_key.dag_id, ti_key.task_id, ti_key.run_id, getattr(ti_key, "map_index", -1))
    if task.task_id not in LINKED_TASKS:
        return {}
    now = time.monotonic()
    with _recent_lock:
        lookup = _recent.get(task)
        if lookup is None:
            lookup = _recent[task] = _Lookup(_start_lookup(task), now + LOOKUP_TIMEOUT_S)
    try:
        return lookup.links.result(timeout=max(0.0, lookup.deadline - time.monotonic()))
    except TimeoutError:
        log.warning("No MLflow links for %s: MLflow did not answer within %g s", task, LOOKUP_TIMEOUT_S)
    except Exception as error:
        log.warning("No MLflow links for %s: %s", task, error, exc_info=error)
    return {}


class MlflowLink(BaseOperatorLink):
    """A link to one of the MLflow records of the task instance; empty when it has none."""

    operators = [SparkSubmitOperator, PythonOperator, ShortCircuitOperator, ResolveScoringRun]

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return recorded_links(ti_key).get(self.name, "")


class MlflowRunLink(MlflowLink):
    name = RUN_LINK


class MlflowModelVersionLink(MlflowLink):
    name = MODEL_VERSION_LINK


class MlflowLinksPlugin(AirflowPlugin):
    """Adds the MLflow links to every Spark, Python and short-circuit task (they resolve on the linked tasks)."""

    name = "mlflow_links"
    operator_extra_links = [MlflowRunLink(), MlflowModelVersionLink()]
