"""The local services for real: `scripts/services.py up` (what `make up` runs) starts the api-server, scheduler,
dag-processor, triggerer and an MLflow server; a training run triggered through the REST API with a login
succeeds under the scheduler (two Keras workers: the spec's `training.params` choose tensorflow), its task log
and its MLflow run are read back through the APIs (MLflow's also with a login); a batch landing starts exactly one
training run through the landing Asset's watcher, and not before its `_SUCCESS` marker (the run itself is the
pipeline the first test proved: `down` stops it mid-way); the grid, graph and MLflow run pages render in headless
Chromium; `down` leaves no process or listener behind."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import ui_pages
from continuous_training.demo import generate, write_churn_spec
from continuous_training.paths import SUCCESS_MARKER
from services_stack import POLL_S, Services, free_port, run_path, running_services

pytestmark = pytest.mark.e2e

DATASET = "fresh"
DAG_ID = f"training__{DATASET}"


@pytest.fixture(scope="module")
def services(tmp_path_factory, airflow_env) -> Iterator[Services]:
    root = tmp_path_factory.mktemp("services")
    datasets = root / "datasets"
    datasets.mkdir()
    write_churn_spec(datasets, DATASET, without=("scoring", "monitoring"), training={
        "on_new_data": True, "params": {"framework": "tensorflow", "epochs": 1, "num_proc": 2, "batch_size": 128}})
    mlflow_port = free_port()
    env = airflow_env(root, DATASETS_DIR=str(datasets), AIRFLOW_PORT=str(free_port()),
                      MLFLOW_PORT=str(mlflow_port), MLFLOW_UI_URL=f"http://127.0.0.1:{mlflow_port}",
                      LANDING_POLL_SECONDS=str(POLL_S), AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL="5",
                      AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5")
    generate(rows=2_000, batches=2, seed=5, data_dir=root / "data", dataset_name=DATASET)
    for args in (["db", "migrate"], ["pools", "set", "mlflow_registry", "1", "registry moves"]):
        subprocess.run(["airflow", *args], env=env, check=True, capture_output=True, timeout=600)
    with running_services(env) as running:
        yield running


def test_the_api_requires_a_login_and_a_triggered_run_is_traced_to_mlflow(services: Services) -> None:
    assert requests.get(f"{services.airflow_url}/api/v2/dags", timeout=30).status_code == 401
    services.unpause(DAG_ID)

    refused = services.api("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {"epochs": 0}},
                           expect=400)
    assert "epochs" in json.dumps(refused), refused
    assert services.runs(DAG_ID) == [], "an invalid form creates no run"

    run = services.api("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {"seed": 7}})
    finished = services.finished(DAG_ID, run["dag_run_id"])

    assert finished["run_type"] == "manual" and finished["conf"]["seed"] == 7
    text = services.task_log(DAG_ID, run["dag_run_id"], "train", 1)
    assert "spark-submit" in text or "SparkSubmit" in text, text[:2000]
    [mlflow_run] = services.mlflow_runs(DATASET, run["dag_run_id"])
    assert mlflow_run["info"]["status"] == "FINISHED"
    tags = {tag["key"]: tag["value"] for tag in mlflow_run["data"]["tags"]}
    params = {param["key"]: param["value"] for param in mlflow_run["data"]["params"]}
    assert tags["airflow.dag_id"] == DAG_ID
    assert params["framework"] == "tensorflow" and tags["tensorflow.workers"] == "2", \
        "the spec's training.params chose two Keras workers"

    assert ui_pages.CHROMIUM.exists(), "the UI checks need Chromium: bash scripts/install_chromium.sh"
    token = services.session.headers["Authorization"].removeprefix("Bearer ")
    grid = ui_pages.render_airflow_run(services.airflow_url, token, DAG_ID, run["dag_run_id"],
                                       wait_for_text=["check_spec", "train", "promote", "Success"])
    assert run["dag_run_id"] in grid
    ui_pages.render_airflow_run(services.airflow_url, token, DAG_ID, run["dag_run_id"], view="graph",
                                wait_for_text=["ingest", "train", "promote"])

    links = services.api("GET", f"{run_path(DAG_ID, run['dag_run_id'])}/taskInstances/promote/links")["extra_links"]
    assert links["MLflow run"] == ui_pages.mlflow_run_url(services.mlflow_url, mlflow_run["info"]["experiment_id"],
                                                          mlflow_run["info"]["run_id"])
    assert links["MLflow model version"] == f"{services.mlflow_url}/#/models/{DATASET}_model/versions/1"
    version = requests.get(f"{services.mlflow_url}/api/2.0/mlflow/model-versions/get", timeout=30,
                           auth=services.mlflow_login,
                           params={"name": f"{DATASET}_model", "version": "1"}).json()["model_version"]
    assert version["run_id"] == mlflow_run["info"]["run_id"]
    page = ui_pages.render(links["MLflow run"], headers=ui_pages.basic_auth_header(services.mlflow_login),
                           local_storage=ui_pages.MLFLOW_UI_STATE,
                           wait_for_text=["test_auc", "Finished"])
    assert run["dag_run_id"] in page


def test_one_new_batch_starts_exactly_one_training_run(services: Services) -> None:
    asset = services.api("GET", f"/assets?name_pattern={DATASET}_landing")["assets"][0]
    services.wait("the watcher to record what the landing area held", lambda: services.session.get(
        f"{services.airflow_url}/api/v2/assets/{asset['id']}/state-store/announced_batches", timeout=30).ok)
    before = len(services.runs(DAG_ID))
    landing = Path(services.env["DATA_DIR"]) / "landing" / DATASET
    staging = Path(services.env["DATA_DIR"]).parent / "staging"
    generate(rows=600, batches=1, start_date="2026-11-10", seed=6, data_dir=staging, dataset_name=DATASET)
    (staging / "landing" / DATASET / "date=2026-11-10" / SUCCESS_MARKER).unlink()
    (staging / "landing" / DATASET / "date=2026-11-10").rename(landing / "date=2026-11-10")
    time.sleep(POLL_S * 4)
    assert len(services.runs(DAG_ID)) == before, "a batch without its _SUCCESS marker started a run"

    (landing / "date=2026-11-10" / SUCCESS_MARKER).touch()
    new = services.wait("an asset-triggered run", lambda: services.runs(DAG_ID)[before:])
    assert [run["run_type"] for run in new] == ["asset_triggered"]
    services.wait(f"{new[0]['dag_run_id']} to start its tasks", lambda: services.api(
        "GET", run_path(DAG_ID, new[0]["dag_run_id"]))["state"] == "running")
    # (asked only once the run has started: Airflow 3.3 answers 500 for a run without a start date)
    events = services.api("GET", f"{run_path(DAG_ID, new[0]['dag_run_id'])}/upstreamAssetEvents")["asset_events"]
    assert [event["extra"]["payload"]["batches"] for event in events] == [["date=2026-11-10"]]
    time.sleep(POLL_S * 4)
    assert len(services.runs(DAG_ID)) == before + 1, "one batch, one run"
