"""The local services for real: `scripts/services.py up` (what `make up` runs) starts the api-server, scheduler,
dag-processor, triggerer and an MLflow server; the REST API requires a login and refuses an invalid form without
creating a run; a batch landing starts exactly one training run through the landing Asset's watcher, and not before
its `_SUCCESS` marker (`down` stops that run mid-way); `down` leaves no process or listener behind. Runs under
these services, their task logs, MLflow runs, links and pages are checked on the same services in the distributed
stack (`test_distributed_mode.py`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from continuous_training.demo import generate, write_churn_spec
from continuous_training.paths import SUCCESS_MARKER
from services import IDLE_EXECUTOR_WORKER
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


def test_the_api_requires_a_login_and_refuses_an_invalid_form(services: Services) -> None:
    assert requests.get(f"{services.airflow_url}/api/v2/dags", timeout=30).status_code == 401
    services.unpause(DAG_ID)

    refused = services.api("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {"epochs": 0}},
                           expect=400)
    assert "epochs" in json.dumps(refused), refused
    assert services.runs(DAG_ID) == [], "an invalid form creates no run"


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


def idle_workers(pgid: int) -> list[psutil.Process]:
    """The idle LocalExecutor workers in a process group."""
    members = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == pgid and IDLE_EXECUTOR_WORKER in " ".join(process.info["cmdline"] or []):
                members.append(process)
    return members


def test_a_scheduler_killed_and_started_again_leaves_none_of_its_executor_workers(services: Services) -> None:
    """SIGKILL the scheduler alone (as a crash does): its LocalExecutor workers survive it in its process group.
    Pass: starting the scheduler again removes the idle ones, so a crash does not leak a worker pool per restart
    (a worker running a task is left to finish it)."""
    old = int((services.home / "run" / "scheduler.pid").read_text())
    workers = services.wait("the scheduler's idle executor workers", lambda: idle_workers(old) or None, timeout=120)
    os.kill(old, signal.SIGKILL)
    psutil.wait_procs([psutil.Process(old)], timeout=30)

    started = services.services("up", "--only", "scheduler", "--timeout", "180")

    assert started.returncode == 0, started.stdout + started.stderr
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert alive == [], f"{len(alive)} idle workers of the killed scheduler (group {old}) outlived its restart"
