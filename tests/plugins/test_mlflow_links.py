"""The "MLflow run" task link: URL resolution against a real SQLite MLflow store, and plugin registration."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from continuous_training.config import PROJECT_ROOT, Settings, get_settings
from continuous_training.tracking import ensure_experiment, mlflow_client, start_training_run
from mlflow.tracking import MlflowClient

UI = "http://mlflow.test:5000"
DAG_ID = "training_pipeline"
RUN_ID = "manual__2026-11-21T10:00:00+00:00"


@pytest.fixture
def links(monkeypatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "plugins"))
    return importlib.import_module("mlflow_links")


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
    """Point get_settings() (what the plugin reads) at the temporary MLflow store and a test UI URL."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", str(settings.mlflow_artifact_root))
    monkeypatch.setenv("MLFLOW_UI_URL", UI + "/")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def training_run(client: MlflowClient, settings: Settings, dataset: str, run_id: str = RUN_ID,
                 dag_id: str = DAG_ID) -> tuple[str, str]:
    run = start_training_run(client, dataset, run_id, {"airflow.dag_id": dag_id, "airflow.task_id": "train"},
                             settings)
    return run.info.experiment_id, run.info.run_id


def test_link_points_at_the_training_run_of_the_airflow_run(links, client, settings) -> None:
    ensure_experiment(client, "empty", settings)
    training_run(client, settings, "other", run_id="manual__other")
    training_run(client, settings, "churn_value", dag_id="another_dag")
    experiment_id, run_id = training_run(client, settings, "churn")

    assert links.training_run_url(client, UI, DAG_ID, RUN_ID) == f"{UI}/#/experiments/{experiment_id}/runs/{run_id}"


def test_run_ids_with_quotes_are_searched_literally(links, client, settings) -> None:
    experiment_id, run_id = training_run(client, settings, "churn", run_id="it's")

    assert links.training_run_url(client, UI, DAG_ID, "it's") == f"{UI}/#/experiments/{experiment_id}/runs/{run_id}"
    with pytest.raises(ValueError, match="both quote"):
        links.training_run_url(client, UI, DAG_ID, "it's \"x\"")


def test_without_a_run_the_experiment_page_or_nothing(links, client, settings) -> None:
    assert links.training_run_url(client, UI, DAG_ID, RUN_ID) == ""
    experiment_id = ensure_experiment(client, "churn", settings)

    assert links.training_run_url(client, UI, DAG_ID, RUN_ID) == ""
    assert links.experiment_url(client, UI, "churn") == f"{UI}/#/experiments/{experiment_id}"
    assert links.experiment_url(client, UI, "missing") == ""


def test_get_link_reads_settings_and_skips_unlinked_tasks(links, client, env_settings) -> None:
    experiment_id, run_id = training_run(client, env_settings, "churn")
    link = links.MlflowRunLink()

    for task_id in ("train", "evaluate", "register", "promote"):
        key = SimpleNamespace(dag_id=DAG_ID, task_id=task_id, run_id=RUN_ID)
        assert link.get_link(None, ti_key=key) == f"{UI}/#/experiments/{experiment_id}/runs/{run_id}"
    for dag_id, task_id in ((DAG_ID, "ingest"), ("another_dag", "train")):
        assert link.get_link(None, ti_key=SimpleNamespace(dag_id=dag_id, task_id=task_id, run_id=RUN_ID)) == ""


def test_get_link_failures_give_an_empty_link(links, env_settings, monkeypatch, caplog) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unknown-scheme://nowhere")
    get_settings.cache_clear()
    key = SimpleNamespace(dag_id=DAG_ID, task_id="train", run_id=RUN_ID)

    assert links.MlflowRunLink().get_link(None, ti_key=key) == ""
    assert "No MLflow link" in caplog.text

    monkeypatch.setattr(links, "LOOKUP_TIMEOUT_S", 0.1)
    monkeypatch.setattr(links, "mlflow_link", lambda *args: time.sleep(1) or "late")
    assert links.MlflowRunLink().get_link(None, ti_key=key) == ""


def test_plugin_registers_the_link_on_spark_and_python_operators(links) -> None:
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
    from airflow.providers.standard.operators.python import PythonOperator

    (link,) = links.MlflowLinksPlugin.operator_extra_links
    assert link.name == "MLflow run"
    assert set(link.operators) == {SparkSubmitOperator, PythonOperator}


RESOLVE_LINKS = textwrap.dedent("""
    import json, sys
    from types import SimpleNamespace

    from airflow import plugins_manager
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType

    confs = json.loads(sys.argv[1])
    with create_session() as session:
        for run_id, conf in confs.items():
            if conf is not None:
                session.add(DagRun(dag_id="training_pipeline", run_id=run_id, conf=conf,
                                   run_type=DagRunType.MANUAL, state=DagRunState.SUCCESS))
    dag = DagSerialization.from_dict(DagSerialization.to_dict(DagBag(dag_folder=sys.argv[2]).dags["training_pipeline"]))
    links = {}
    for run_id in confs:
        for task in dag.tasks:
            ti = SimpleNamespace(key=TaskInstanceKey("training_pipeline", task.task_id, run_id, 1, -1))
            links[f"{run_id}/{task.task_id}"] = {name: task.get_extra_links(ti, name) for name in task.extra_links}
    plugins = [info["name"] for info in plugins_manager.get_plugin_info()]
    print("RESULT" + json.dumps({"plugins": plugins, "errors": plugins_manager._get_plugins()[1], "links": links}))
""")


@pytest.mark.integration
def test_airflow_loads_the_plugin_and_resolves_links_on_the_serialized_dag(tmp_path: Path, airflow_env) -> None:
    env = airflow_env(tmp_path, MLFLOW_UI_URL=UI)
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    settings = Settings(mlflow_tracking_uri=env["MLFLOW_TRACKING_URI"],
                        mlflow_artifact_root=Path(env["MLFLOW_ARTIFACT_ROOT"]))
    client = mlflow_client(settings)
    value_experiment = ensure_experiment(client, "churn_value", settings)
    churn_experiment, churn_run = training_run(client, settings, "churn", run_id="manual__trained")

    confs = {"manual__trained": None, "manual__value": {"dataset": "churn_value"}, "manual__default": {}}
    result = subprocess.run([sys.executable, "-c", RESOLVE_LINKS, json.dumps(confs), str(PROJECT_ROOT / "dags")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    resolved = json.loads(result.stdout.split("RESULT", 1)[1])
    links = {key: value["MLflow run"] for key, value in resolved["links"].items()}

    assert "mlflow_links" in resolved["plugins"] and resolved["errors"] == {}
    run_page = f"{UI}/#/experiments/{churn_experiment}/runs/{churn_run}"
    assert {task: links[f"manual__trained/{task}"] for task in ("train", "evaluate", "register", "promote")} == {
        "train": run_page, "evaluate": run_page, "register": run_page, "promote": run_page}
    assert links["manual__trained/ingest"] == ""
    assert links["manual__value/evaluate"] == f"{UI}/#/experiments/{value_experiment}"
    assert links["manual__default/train"] == f"{UI}/#/experiments/{churn_experiment}"
