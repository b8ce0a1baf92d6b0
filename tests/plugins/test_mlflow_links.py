"""The MLflow task links: what each task links to, recorded by the project's own functions in a real SQLite MLflow
store, the negative cases, and the links as Airflow's API server serves them for real DAG runs."""

from __future__ import annotations

import importlib
import json
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import date
from pathlib import Path
from types import ModuleType

import pytest
from airflow.models.taskinstancekey import TaskInstanceKey
from continuous_training.config import PROJECT_ROOT, Settings, get_settings
from continuous_training.monitoring.drift import check_drift, log_check
from continuous_training.registry import register_candidate
from continuous_training.serving.batch import log_summary, resolve_model
from continuous_training.spec import DatasetSpec, load_spec
from continuous_training.tracking import (
    APPROVED,
    CANDIDATE_MODEL_TAG,
    CHAMPION,
    VALIDATION_STATUS_TAG,
    mlflow_client,
    start_training_run,
)
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

UI = "http://mlflow.test:5000"
RUN_ID = "scheduled__2026-11-05T00:00:00+00:00"


@pytest.fixture
def links(monkeypatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "plugins"))
    module = importlib.import_module("mlflow_links")
    module._recent.clear()
    yield module
    module._recent.clear()


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An initialised SQLite MLflow store, created once (schema migrations are slow) and copied per test."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def client(settings: Settings, empty_store: Path) -> MlflowClient:
    shutil.copyfile(empty_store, settings.mlflow_tracking_uri.removeprefix("sqlite:///"))
    return mlflow_client(settings)


@pytest.fixture
def env_settings(settings: Settings, client: MlflowClient, monkeypatch) -> Iterator[Settings]:
    """Point get_settings() (what the plugin reads) at the temporary DATA_DIR and MLflow store, and a test UI URL."""
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", str(settings.mlflow_artifact_root))
    monkeypatch.setenv("MLFLOW_UI_URL", UI + "/")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def churn(settings: Settings) -> DatasetSpec:
    return load_spec("churn", settings)


def links_of(links: ModuleType, dag_id: str, task_id: str, run_id: str = RUN_ID) -> dict[str, str]:
    """The non-empty links of a task instance, by name, as its get_link calls give them."""
    key = TaskInstanceKey(dag_id, task_id, run_id, try_number=1)
    resolved = {link.name: link.get_link(None, ti_key=key) for link in links.MlflowLinksPlugin.operator_extra_links}
    return {name: url for name, url in resolved.items() if url}


def run_page(run: Run) -> str:
    return f"{UI}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"


def train(client: MlflowClient, settings: Settings, dataset: str, dag_id: str, run_id: str = RUN_ID) -> Run:
    """The training run as train logs it, with a candidate model."""
    run = start_training_run(client, dataset, run_id, {"airflow.dag_id": dag_id, "airflow.task_id": "train",
                                                       "dataset": dataset}, settings)
    model = client.create_logged_model(run.info.experiment_id, source_run_id=run.info.run_id)
    client.set_tag(run.info.run_id, CANDIDATE_MODEL_TAG, model.model_uri)
    return run


def run_under_airflow(monkeypatch, dag_id: str, task_id: str) -> None:
    """The environment Airflow gives a task's process (spark-submit jobs inherit it)."""
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", dag_id)
    monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", task_id)


def scoring_summary(spec: DatasetSpec, run_id: str, version: str) -> dict:
    model = {"name": spec.registered_model_name, "version": version, "run_id": "r", "alias": CHAMPION}
    return {"dataset": spec.name, "scored_for": "2026-11-05", "airflow_run_id": run_id, "model": model,
            "rows_in": 10, "quarantined": 1, "scored": 9, "distribution": {"class_shares": {"0": 0.5, "1": 0.5}}}


def checked_result(spec: DatasetSpec, run_id: str, version: str) -> dict:
    model = {"name": spec.registered_model_name, "version": version, "run_id": "r"}
    return {"dataset": spec.name, "checked_for": "2026-11-06", "airflow_run_id": run_id, "outcome": "no_drift",
            "drift_detected": False, "reasons": [], "window": {"dates": ["2026-11-05"], "missing": []},
            "model": model, "rows": 9, "features": {}, "predictions": {}, "drifted_feature_share": 0.0,
            "performance": {}, "labelled_batches": []}


def test_training_tasks_link_the_training_run_and_the_version_registered_from_it(links, client, env_settings, churn):
    train(client, env_settings, "churn", "training__churn", run_id="manual__earlier")
    register_candidate(churn, "manual__earlier", env_settings)
    train(client, env_settings, "churn_value", "training_pipeline")
    run = train(client, env_settings, "churn", "training__churn")

    before_register = {task: links_of(links, "training__churn", task)
                       for task in ("train", "evaluate", "register", "promote")}
    links._recent.clear()
    version = str(register_candidate(churn, RUN_ID, env_settings).version)
    after_register = {task: links_of(links, "training__churn", task)
                      for task in ("train", "evaluate", "register", "promote")}

    assert version == "2"
    assert before_register == {task: {"MLflow run": run_page(run)} for task in before_register}
    version_page = f"{UI}/#/models/churn_model/versions/2"
    assert after_register == {"train": {"MLflow run": run_page(run)},
                              **{task: {"MLflow run": run_page(run), "MLflow model version": version_page}
                                 for task in ("evaluate", "register", "promote")}}


def test_tasks_without_records_have_no_links(links, client, env_settings):
    train(client, env_settings, "churn", "training__churn", run_id="manual__other")
    train(client, env_settings, "churn_value", "training_pipeline")

    for task in ("check_spec", "ingest", "validate", "stats", "featurize", "train", "register", "score",
                 "check_drift", "decide_retraining", "resolve_scoring_run", "trigger_retraining"):
        assert links_of(links, "training__churn", task) == {}, task


def test_score_links_its_scoring_run_and_the_version_that_scored(links, client, env_settings, churn, monkeypatch):
    run_under_airflow(monkeypatch, "batch_scoring", "score")
    log_summary(scoring_summary(churn, RUN_ID, "4"), churn, env_settings)
    run_under_airflow(monkeypatch, "batch_scoring__churn", "score")
    run_id = log_summary(scoring_summary(churn, "manual__scored", "3"), churn, env_settings)
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID")
    monkeypatch.delenv("AIRFLOW_CTX_TASK_ID")
    log_summary(scoring_summary(churn, "manual__by_hand", "3"), churn, env_settings)

    assert links_of(links, "batch_scoring__churn", "score", "manual__scored") == {
        "MLflow run": run_page(client.get_run(run_id)),
        "MLflow model version": f"{UI}/#/models/churn_model/versions/3",
    }
    assert links_of(links, "batch_scoring__churn", "score") == {}
    assert links_of(links, "batch_scoring__churn", "score", "manual__by_hand") == {}


def test_drift_tasks_link_the_monitoring_run_and_the_checked_version(links, client, env_settings, churn, monkeypatch,
                                                                    tmp_path):
    run_under_airflow(monkeypatch, "drift_check__churn", "check_drift")
    (tmp_path / "drift_report.html").write_text("<html></html>")
    checked = log_check(checked_result(churn, RUN_ID, "5"), churn, tmp_path, env_settings)
    nothing = check_drift(None, churn, date(2026, 11, 6), "manual__empty", settings=env_settings)["mlflow_run_id"]

    checked_page = run_page(client.get_run(checked))
    assert links_of(links, "drift_check__churn", "check_drift") == {
        "MLflow run": checked_page, "MLflow model version": f"{UI}/#/models/churn_model/versions/5"}
    assert links_of(links, "drift_check__churn", "decide_retraining") == {"MLflow run": checked_page}
    assert links_of(links, "drift_check__churn", "check_drift", "manual__empty") == {
        "MLflow run": run_page(client.get_run(nothing))}
    assert links_of(links, "drift_check", "check_drift") == {}


def test_a_hung_mlflow_gives_empty_links_within_the_time_limit(links, env_settings, monkeypatch, caplog):
    with socket.socket() as silent_server:
        silent_server.bind(("127.0.0.1", 0))
        silent_server.listen()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{silent_server.getsockname()[1]}")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setattr(links, "LOOKUP_TIMEOUT_S", 1.0)
        get_settings.cache_clear()

        started = time.monotonic()
        assert links_of(links, "training__churn", "train") == {}
        elapsed = time.monotonic() - started

    assert 1.0 <= elapsed < 1.8
    assert "MLflow did not answer within 1 s" in caplog.text


def test_a_failing_lookup_gives_empty_links(links, env_settings, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unknown-scheme://nowhere")
    get_settings.cache_clear()

    assert links_of(links, "training__churn", "promote") == {}
    assert "No MLflow links for TaskRef(dag_id='training__churn', task_id='promote'" in caplog.text


def test_plugin_adds_both_links_to_spark_python_short_circuit_and_scoring_resolution_tasks(links) -> None:
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
    from airflow.providers.standard.operators.python import PythonOperator, ShortCircuitOperator
    from continuous_training.orchestration.tasks import ResolveScoringRun

    plugin_links = links.MlflowLinksPlugin.operator_extra_links
    assert [link.name for link in plugin_links] == ["MLflow run", "MLflow model version"]
    assert all(set(link.operators) == {SparkSubmitOperator, PythonOperator, ShortCircuitOperator, ResolveScoringRun}
               for link in plugin_links)


SERVED_LINKS = textwrap.dedent("""
    import json, sys
    from datetime import datetime, timezone
    from pathlib import Path

    from airflow.api_fastapi.app import create_app
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.xcom import XComModel
    from airflow.utils import db
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from fastapi.testclient import TestClient

    dags, recorded = Path(sys.argv[1]), json.loads(sys.argv[2])
    db.upgradedb()
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(BundleDagBag(dags, bundle_path=dags, bundle_name="dags-folder"), "dags-folder", None)
    when = datetime(2026, 11, 5, tzinfo=timezone.utc)
    with create_session() as session:
        for dag_id, run_id in recorded["dag_runs"]:
            SerializedDagModel.get_dag(dag_id, session=session).create_dagrun(
                run_id=run_id, logical_date=when, data_interval=(when, when), run_after=when, conf={},
                run_type=DagRunType.MANUAL, triggered_by=DagRunTriggeredByType.TEST, state=DagRunState.RUNNING,
                session=session)
    for dag_id, run_id, task_id, value in recorded["returned"]:
        # As the execution API stores a task's return value.
        XComModel.set("return_value", value, dag_id=dag_id, task_id=task_id, run_id=run_id, serialize=False)

    api = TestClient(create_app())
    served = {}
    for dag_id, run_id, task_id in recorded["asked"]:
        response = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links")
        response.raise_for_status()
        served[f"{dag_id}.{task_id}"] = response.json()["extra_links"]
    print("RESULT" + json.dumps(served))
""")


@pytest.mark.integration
def test_the_api_server_serves_the_links_of_real_dag_runs(tmp_path: Path, airflow_env, empty_store, monkeypatch):
    env = airflow_env(tmp_path, MLFLOW_UI_URL=UI, AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True")
    settings = Settings(data_dir=Path(env["DATA_DIR"]), mlflow_tracking_uri=env["MLFLOW_TRACKING_URI"],
                        mlflow_artifact_root=Path(env["MLFLOW_ARTIFACT_ROOT"]))
    shutil.copyfile(empty_store, settings.mlflow_tracking_uri.removeprefix("sqlite:///"))
    client, churn = mlflow_client(settings), load_spec("churn", settings)
    training = train(client, settings, "churn", "training_pipeline", "manual__trained")
    register_candidate(churn, "manual__trained", settings)
    client.set_model_version_tag(churn.registered_model_name, "1", VALIDATION_STATUS_TAG, APPROVED)
    client.set_registered_model_alias(churn.registered_model_name, CHAMPION, "1")
    resolved = {"input": "incoming/churn/date=2026-11-05/*.csv", "scored_for": "2026-11-05",
                "model": asdict(resolve_model(churn, CHAMPION, settings))}
    run_under_airflow(monkeypatch, "batch_scoring", "score")
    scoring = log_summary(scoring_summary(churn, "manual__scored", "1"), churn, settings)
    run_under_airflow(monkeypatch, "drift_check", "check_drift")
    monitoring = check_drift(None, churn, date(2026, 11, 5), "manual__checked", settings=settings)["mlflow_run_id"]

    asked = [("training_pipeline", "manual__trained", task) for task in ("check_spec", "train", "register")]
    asked += [("batch_scoring", "manual__scored", task) for task in ("resolve_scoring_run", "ingest", "score")]
    asked += [("drift_check", "manual__checked", "decide_retraining")]
    recorded = {"dag_runs": [("training_pipeline", "manual__trained"), ("batch_scoring", "manual__scored"),
                             ("drift_check", "manual__checked")],
                "returned": [("batch_scoring", "manual__scored", "resolve_scoring_run", resolved)], "asked": asked}
    served = subprocess.run([sys.executable, "-c", SERVED_LINKS, str(PROJECT_ROOT / "dags"), json.dumps(recorded)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert served.returncode == 0, served.stderr[-4000:]

    version_page = f"{UI}/#/models/churn_model/versions/1"
    no_links = {"MLflow run": None, "MLflow model version": None}
    assert json.loads(served.stdout.split("RESULT", 1)[1]) == {
        "training_pipeline.check_spec": no_links,
        "training_pipeline.train": {"MLflow run": run_page(training), "MLflow model version": None},
        "training_pipeline.register": {"MLflow run": run_page(training), "MLflow model version": version_page},
        "batch_scoring.resolve_scoring_run": {"MLflow run": None, "MLflow model version": version_page},
        "batch_scoring.ingest": no_links,
        "batch_scoring.score": {"MLflow run": run_page(client.get_run(scoring)), "MLflow model version": version_page},
        "drift_check.decide_retraining": {"MLflow run": run_page(client.get_run(monitoring)),
                                          "MLflow model version": None},
    }
