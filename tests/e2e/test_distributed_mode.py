"""The distributed stack without Docker, for real: PostgreSQL (started here) holds Airflow's metadata, under the
LocalExecutor, and MLflow's tracking and registry store; the tasks log through an `mlflow server` (with a login) that
serves the artifacts from its own root; every Spark job runs on a standalone master and worker. This is
`scripts/services.py up` with the configuration docs/operations.md gives for it.

The whole loop runs on it through the real scheduler, as the short soak (`scripts/soak.py`, one drifted day):
train, score the day, land its labels and find the drift, retrain. Faults are
injected on the way: a rank's Python worker SIGKILLed mid-epoch, the MLflow server stopped while score,
check_drift, register and promote run, the scheduler SIGKILLed mid-ingest and mid-train."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import mlflow
import psutil
import pytest
import requests
import ui_pages
from continuous_training.config import PROJECT_ROOT
from continuous_training.paths import CHECKPOINTS_DIR, INGEST, TRAIN, run_dir_name
from mlflow.tracking import MlflowClient
from postgres_server import BIN, as_postgres, postgres_server
from services_stack import POLL_S, Services, free_port, run_path, running_services
from spark_cluster import StandaloneCluster

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(BIN is None, reason="no Postgres server binaries (apt-get install postgresql)")]

DATASET = "dist"
TRAINING, SCORING, DRIFT, CLEANUP = "training_pipeline", "batch_scoring", "drift_check", "cleanup"
TRAIN_CONF = {"framework": "torch", "epochs": 4, "num_proc": 2, "seed": 7}
SCORING_ROWS = 1_000
RETRY_DELAY_S = 30
"""Long enough for the test to start the stopped MLflow server before the retry, most of the time (a loaded machine
may take longer: the second retry comes twice as late)."""
MLFLOW_FAILURE_BOUND_S = 90
"""A task whose MLflow server is stopped fails within this (its Spark start-up included), not after minutes of
client retries."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory, airflow_env, spark_cluster: StandaloneCluster) -> Iterator[Services]:
    """The running stack."""
    root = tmp_path_factory.mktemp("distributed")
    airflow_password, mlflow_password = secrets.token_hex(16), secrets.token_hex(16)
    with postgres_server(airflow_password) as postgres:
        created = as_postgres(["sh", str(PROJECT_ROOT / "docker" / "postgres" / "create-mlflow-db.sh")],
                              POSTGRES_USER="airflow", POSTGRES_DB="airflow", MLFLOW_DB_PASSWORD=mlflow_password,
                              **postgres.env)
        assert created.returncode == 0, created.stderr
        mlflow_port = free_port()
        (root / "tmp").mkdir()
        env = airflow_env(
            root, AIRFLOW_PORT=str(free_port()), MLFLOW_PORT=str(mlflow_port),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgres.url("airflow", airflow_password, "airflow"),
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            MLFLOW_TRACKING_URI=f"http://127.0.0.1:{mlflow_port}", MLFLOW_UI_URL=f"http://127.0.0.1:{mlflow_port}",
            MLFLOW_BACKEND_STORE_URI=postgres.url("mlflow", mlflow_password, "mlflow"),
            MLFLOW_ARTIFACT_ROOT=str(root / "mlflow-artifacts"),
            AIRFLOW_CONN_SPARK_DEFAULT=json.dumps({"conn_type": "spark", "host": spark_cluster.master_url}),
            TASK_RETRIES="2", TASK_RETRY_DELAY_SECONDS=str(RETRY_DELAY_S),
            TMPDIR=str(root / "tmp"), SPARK_LOCAL_DIRS=str(root / "tmp"),
            AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL="5", AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5")
        for args in (["db", "migrate"], ["pools", "set", "mlflow_registry", "1", "registry moves"]):
            done = subprocess.run(["airflow", *args], env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        with running_services(env) as services:
            for dag_id in (TRAINING, SCORING, DRIFT, CLEANUP):
                services.wait(f"{dag_id} to be parsed", lambda dag_id=dag_id: services.session.get(
                    f"{services.airflow_url}/api/v2/dags/{dag_id}", timeout=30).ok)
            yield services


def mlflow_pid(services: Services) -> int:
    return int((services.home / "run" / "mlflow.pid").read_text())


def stop_mlflow(services: Services) -> None:
    """SIGTERM the MLflow server's process group and wait until it is gone."""
    pid = mlflow_pid(services)
    os.killpg(pid, signal.SIGTERM)
    psutil.wait_procs([psutil.Process(pid)], timeout=60)


def start_mlflow(services: Services) -> None:
    started = services.services("up", "--only", "mlflow", "--timeout", "120")
    assert started.returncode == 0, started.stdout + started.stderr


def task(services: Services, dag_id: str, run_id: str, task_id: str) -> dict:
    return services.api("GET", f"{run_path(dag_id, run_id)}/taskInstances/{task_id}")


def with_mlflow_stopped(services: Services, dag_id: str, run_id: str, task_id: str,
                        when: str = "running") -> None:
    """Stop the MLflow server once `task_id` is running (or its upstream `when` succeeded), wait until that try
    ended, start the server again (the retry comes RETRY_DELAY_S later); assert the try failed in one line within
    MLFLOW_FAILURE_BOUND_S of the stop."""
    if when == "running":
        services.wait(f"{task_id} to run", lambda: task(services, dag_id, run_id, task_id)["state"] == "running",
                      timeout=1800)
    else:
        services.wait(f"{when} to succeed", lambda: task(services, dag_id, run_id, when)["state"] == "success",
                      timeout=1800)
    stopped_at = time.monotonic()
    stop_mlflow(services)
    attempt = services.wait(f"{task_id} to start its try", lambda: (
        instance["try_number"] if (instance := task(services, dag_id, run_id, task_id))["state"]
        in ("running", "up_for_retry", "failed", "success") else None), timeout=600)
    ended = services.wait(f"try {attempt} of {task_id} to end", lambda: (
        instance["state"] if (instance := task(services, dag_id, run_id, task_id))["state"] != "running"
        or instance["try_number"] > attempt else None), timeout=600)
    failed_after = time.monotonic() - stopped_at
    start_mlflow(services)
    assert ended in ("up_for_retry", "running", "queued", "scheduled"), f"try {attempt} of {task_id} ended {ended}"
    assert failed_after < MLFLOW_FAILURE_BOUND_S + POLL_S, f"{task_id} failed {failed_after:.0f} s after the stop"
    log = services.task_log(dag_id, run_id, task_id, attempt)
    assert "cannot be reached after 2 retries" in log, log[-3000:]


def python_workers_of_the_cluster() -> list[psutil.Process]:
    """The Python workers the standalone worker's executors forked (a barrier task's rank among them)."""
    workers = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "CoarseGrainedExecutorBackend" in cmdline:
            for child in process.children(recursive=True):
                if child.parent() and "pyspark.daemon" in " ".join(child.parent().cmdline()):
                    workers.append(child)
    return workers


def kill_a_rank_mid_epoch(services: Services, data_dir: Path, run_id: str) -> None:
    """Once the first epoch's checkpoint is written, SIGKILL one rank's Python worker."""
    checkpoints = data_dir / DATASET / TRAIN / run_dir_name(run_id) / CHECKPOINTS_DIR
    services.wait("the first checkpoint", lambda: checkpoints.is_dir() and any(checkpoints.iterdir()), timeout=900)
    ranks = services.wait("the ranks' Python workers", python_workers_of_the_cluster, timeout=120)
    os.kill(ranks[0].pid, signal.SIGKILL)


def client(services: Services) -> MlflowClient:
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = services.mlflow_login
    mlflow.set_tracking_uri(services.mlflow_url)
    return MlflowClient(services.mlflow_url, services.mlflow_url)


def soak_command(services: Services, report: Path) -> list[str]:
    return [sys.executable, str(PROJECT_ROOT / "scripts" / "soak.py"), "--dataset", DATASET, "--days", "1",
            "--drift-days", "1", "--start-date", "2026-11-06", "--initial-rows", "2000", "--landing-rows", "300",
            "--scoring-rows", str(SCORING_ROWS), "--train-conf", json.dumps(TRAIN_CONF), "--report", str(report)]


def nth_run(services: Services, dag_id: str, index: int) -> str:
    """The run id of the DAG's `index`-th run (0: the first), once it exists."""
    runs = services.wait(f"run {index + 1} of {dag_id}", lambda: (
        runs if len(runs := services.runs(dag_id)) > index else None), timeout=1800)
    return runs[index]["dag_run_id"]


def kill_scheduler_while(services: Services, dag_id: str, run_id: str, task_id: str) -> None:
    """SIGKILL the scheduler (its process alone) while `task_id` runs, then start it again."""
    services.wait(f"{task_id} to run", lambda: task(services, dag_id, run_id, task_id)["state"] == "running",
                  timeout=1800)
    os.kill(int((services.home / "run" / "scheduler.pid").read_text()), signal.SIGKILL)
    time.sleep(POLL_S)
    started = services.services("up", "--only", "scheduler", "--timeout", "180")
    assert started.returncode == 0, started.stdout + started.stderr


def tries(services: Services, dag_id: str, run_id: str, task_id: str) -> list[dict]:
    return services.api("GET", f"{run_path(dag_id, run_id)}/taskInstances/{task_id}/tries")["task_instances"]


@pytest.mark.timeout(3600)
def test_a_soak_on_the_distributed_stack_survives_killed_ranks_a_killed_scheduler_and_a_stopped_mlflow(
        stack: Services, tmp_path: Path) -> None:
    """A simulated day through scripts/soak.py (what `make soak` runs for thirty), drifted, while faults are
    injected. Pass: the soak's own checks hold (each day scored once, each labelled row landed once,
    retraining exactly for the drifted day, nothing left behind); the training run whose rank was SIGKILLed
    mid-epoch failed that try and its retry resumed from the checkpoint (start epoch > 1), with one FINISHED MLflow
    run; each task whose MLflow server was stopped (score, check_drift, register, promote) failed its try in one line
    within MLFLOW_FAILURE_BOUND_S of the stop and its retry succeeded, leaving one scoring run per date, one
    monitoring run per check, one model version per training run; with the scheduler SIGKILLed mid-ingest and
    mid-train of the retraining run and started again, the run finished, no two tries of a task overlapped, and its
    ingest read every row of its inputs."""
    services = stack
    report, output = tmp_path / "soak.json", tmp_path / "soak.log"
    with output.open("w") as log:
        soak = subprocess.Popen(soak_command(services, report), env=services.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        trained = nth_run(services, TRAINING, 0)
        kill_a_rank_mid_epoch(services, Path(services.env["DATA_DIR"]), trained)
        with_mlflow_stopped(services, SCORING, nth_run(services, SCORING, 0), "score")
        with_mlflow_stopped(services, DRIFT, nth_run(services, DRIFT, 0), "check_drift")
        retrained = nth_run(services, TRAINING, 1)
        kill_scheduler_while(services, TRAINING, retrained, "ingest")
        kill_scheduler_while(services, TRAINING, retrained, "train")
        with_mlflow_stopped(services, TRAINING, retrained, "register", when="evaluate")
        with_mlflow_stopped(services, TRAINING, retrained, "promote", when="register")
        soak.wait(timeout=3600)
    finally:
        if soak.poll() is None:
            soak.kill()
    assert soak.returncode == 0, output.read_text()[-6000:]
    figures = json.loads(report.read_text())
    assert [day["retraining_run"] for day in figures["days"]] == [None]
    assert [run["run_id"] for run in figures["training_runs"]] == [trained, retrained]

    assert task(services, TRAINING, trained, "train")["try_number"] == 2, "the killed try failed and the retry ran"
    mlflow_client = client(services)
    experiment = mlflow_client.get_experiment_by_name(DATASET).experiment_id
    for run_id in (trained, retrained):
        runs = mlflow_client.search_runs([experiment], f"tags.`airflow.run_id` = '{run_id}'")
        assert [run.info.status for run in runs] == ["FINISHED"], run_id
        if run_id == trained:
            assert int(runs[0].data.tags["start_epoch"]) > 1, "the retry resumed from the checkpoint"
    assert len(mlflow_client.search_model_versions(f"name = '{DATASET}_model'")) == 2
    for name, dag_id in ((f"{DATASET}-scoring", SCORING), (f"{DATASET}-monitoring", DRIFT)):
        experiment = mlflow_client.get_experiment_by_name(name).experiment_id
        for run in services.runs(dag_id):
            found = mlflow_client.search_runs([experiment], f"tags.`airflow.run_id` = '{run['dag_run_id']}'")
            assert [found.info.status for found in found] == ["FINISHED"], (name, run["dag_run_id"])

    assert services.api("GET", run_path(TRAINING, retrained))["state"] == "success"
    for task_id in ("ingest", "train"):
        spans = sorted((attempt["start_date"], attempt["end_date"]) for attempt in
                       tries(services, TRAINING, retrained, task_id) if attempt["start_date"])
        assert all(end <= next_start for (_, end), (next_start, _) in pairwise(spans)), (task_id, spans)
    manifest = json.loads((Path(services.env["DATA_DIR"]) / DATASET / INGEST / run_dir_name(retrained)
                           / "manifest.json").read_text())
    assert manifest["rows"] == 2_000 + 300 + SCORING_ROWS, manifest


def test_a_run_of_the_stack_is_traced_from_its_task_log_and_links_to_mlflow_and_its_pages_render(
        stack: Services) -> None:
    """The first training run of the soak, read back as a user would: its train log through the REST API (with a
    login), its MLflow run and model version through MLflow's API (with a login), the promote task's links, and the
    grid, graph and MLflow run pages rendered in headless Chromium."""
    services = stack
    assert requests.get(f"{services.airflow_url}/api/v2/dags", timeout=30).status_code == 401
    assert requests.get(f"{services.mlflow_url}/api/2.0/mlflow/experiments/search", timeout=30).status_code == 401
    run_id = services.runs(TRAINING)[0]["dag_run_id"]
    attempts = tries(services, TRAINING, run_id, "train")
    text = services.task_log(TRAINING, run_id, "train", attempts[-1]["try_number"])
    assert "spark-submit" in text or "SparkSubmit" in text, text[:2000]
    [mlflow_run] = services.mlflow_runs(DATASET, run_id)
    tags = {tag["key"]: tag["value"] for tag in mlflow_run["data"]["tags"]}
    params = {param["key"]: param["value"] for param in mlflow_run["data"]["params"]}
    assert mlflow_run["info"]["status"] == "FINISHED" and tags["airflow.dag_id"] == TRAINING
    assert params["framework"] == "torch" and tags["horovod.size"] == "2"

    assert ui_pages.CHROMIUM.exists(), "the UI checks need Chromium: bash scripts/install_chromium.sh"
    token = services.session.headers["Authorization"].removeprefix("Bearer ")
    grid = ui_pages.render_airflow_run(services.airflow_url, token, TRAINING, run_id,
                                       wait_for_text=["check_spec", "train", "promote", "Success"])
    assert run_id in grid
    ui_pages.render_airflow_run(services.airflow_url, token, TRAINING, run_id, view="graph",
                                wait_for_text=["ingest", "train", "promote"])
    links = services.api("GET", f"{run_path(TRAINING, run_id)}/taskInstances/promote/links")["extra_links"]
    assert links["MLflow run"] == ui_pages.mlflow_run_url(services.mlflow_url, mlflow_run["info"]["experiment_id"],
                                                          mlflow_run["info"]["run_id"])
    assert links["MLflow model version"] == f"{services.mlflow_url}/#/models/{DATASET}_model/versions/1"
    version = services.mlflow("GET", "model-versions/get", params={"name": f"{DATASET}_model", "version": "1"})
    assert version["model_version"]["run_id"] == mlflow_run["info"]["run_id"]
    page = ui_pages.render(links["MLflow run"], headers=ui_pages.basic_auth_header(services.mlflow_login),
                           local_storage=ui_pages.MLFLOW_UI_STATE, wait_for_text=["test_auc", "Finished"])
    assert run_id in page
