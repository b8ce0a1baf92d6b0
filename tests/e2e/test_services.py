"""The local services for real: `scripts/services.py up` (what `make up` runs) starts the api-server, scheduler,
dag-processor, triggerer and an MLflow server; a training run triggered through the REST API with a login
succeeds under the scheduler (two Keras workers: the spec's `training.params` choose tensorflow), its task log
and its MLflow run are read back through the APIs (MLflow's also with a login); a batch landing starts exactly one
training run through the landing Asset's watcher, and not before its `_SUCCESS` marker (the run itself is the
pipeline the first test proved: `down` stops it mid-way); the grid, graph and MLflow run pages render in headless
Chromium; `down` leaves no process or listener behind."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest
import requests
import ui_pages
import yaml
from continuous_training.config import PROJECT_ROOT
from continuous_training.demo import generate
from continuous_training.paths import SUCCESS_MARKER

pytestmark = pytest.mark.e2e

DATASET = "fresh"
DAG_ID = f"training__{DATASET}"
POLL_S = 2
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", "mlflow")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def started_by(airflow_home: Path) -> list[str]:
    """Command lines of the processes whose environment names this AIRFLOW_HOME (the services and their tasks)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if process.environ().get("AIRFLOW_HOME") == str(airflow_home):
                found.append(" ".join(process.info["cmdline"] or []))
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


@dataclass
class Services:
    env: dict[str, str]
    airflow_url: str
    mlflow_url: str
    session: requests.Session

    @property
    def home(self) -> Path:
        return Path(self.env["AIRFLOW_HOME"])

    @property
    def mlflow_login(self) -> tuple[str, str]:
        return "admin", ui_pages.admin_password(self.home, ui_pages.MLFLOW_LOGINS_FILE)

    def services(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "services.py"), *args], env=self.env,
                              capture_output=True, text=True, timeout=300)

    def api(self, method: str, path: str, body: dict | None = None, expect: int = 200) -> dict:
        response = self.session.request(method, f"{self.airflow_url}/api/v2{path}", json=body, timeout=30)
        assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json() if response.content else {}

    def runs(self) -> list[dict]:
        return self.api("GET", f"/dags/{DAG_ID}/dagRuns?order_by=run_after")["dag_runs"]

    def wait(self, what: str, check, timeout: float = 900):
        deadline = time.monotonic() + timeout
        while not (found := check()):
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {name} ---\n" + "\n".join(
                    (self.home / "logs" / "services" / f"{name}.log").read_text(errors="replace").splitlines()[-30:])
                    for name in ("scheduler", "triggerer", "dag-processor"))
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
            time.sleep(POLL_S)
        return found

    def finished(self, run_id: str) -> dict:
        run = self.wait(f"run {run_id} to finish", lambda: (
            run if (run := self.api("GET", f"/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"))["state"]
            in ("success", "failed") else None))
        assert run["state"] == "success", self.failed_tasks(run_id)
        return run

    def failed_tasks(self, run_id: str) -> str:
        tasks = self.api("GET", f"/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances")["task_instances"]
        return ", ".join(f"{task['task_id']}={task['state']}" for task in tasks)

    def mlflow_runs(self, airflow_run_id: str) -> list[dict]:
        experiment = requests.get(f"{self.mlflow_url}/api/2.0/mlflow/experiments/get-by-name", timeout=30,
                                  auth=self.mlflow_login, params={"experiment_name": DATASET}).json()["experiment"]
        found = requests.post(f"{self.mlflow_url}/api/2.0/mlflow/runs/search", timeout=30, auth=self.mlflow_login,
                              json={
            "experiment_ids": [experiment["experiment_id"]],
            "filter": f"tags.`airflow.run_id` = '{airflow_run_id}'"}).json()
        return found.get("runs", [])


@pytest.fixture(scope="module")
def services(tmp_path_factory, airflow_env) -> Iterator[Services]:
    root = tmp_path_factory.mktemp("services")
    spec = yaml.safe_load((PROJECT_ROOT / "include" / "datasets" / "churn.yaml").read_text())
    spec = {key: value for key, value in spec.items() if key not in ("scoring", "monitoring")}
    spec |= {"name": DATASET, "model_name": f"{DATASET}_model",
             "source": {**spec["source"], "path": f"landing/{DATASET}/*/*.csv"},
             "training": {"on_new_data": True,
                          "params": {"framework": "tensorflow", "epochs": 1, "num_proc": 2, "batch_size": 128}}}
    datasets = root / "datasets"
    datasets.mkdir()
    (datasets / f"{DATASET}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    airflow_port, mlflow_port = free_port(), free_port()
    env = airflow_env(root, DATASETS_DIR=str(datasets), AIRFLOW_PORT=str(airflow_port),
                      MLFLOW_PORT=str(mlflow_port), MLFLOW_UI_URL=f"http://127.0.0.1:{mlflow_port}",
                      LANDING_POLL_SECONDS=str(POLL_S), AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL="5",
                      AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5")
    generate(rows=2_000, batches=2, seed=5, data_dir=root / "data", dataset_name=DATASET)
    for args in (["db", "migrate"], ["pools", "set", "mlflow_registry", "1", "registry moves"]):
        subprocess.run(["airflow", *args], env=env, check=True, capture_output=True, timeout=600)
    running = Services(env, f"http://127.0.0.1:{airflow_port}", f"http://127.0.0.1:{mlflow_port}", requests.Session())
    started = running.services("up", "--timeout", "240")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield running
    finally:
        stopped = running.services("down")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        for name in COMPONENTS:
            assert not (running.home / "run" / f"{name}.pid").exists(), name
        assert not listening(airflow_port) and not listening(mlflow_port), "a service still listens after down"
        assert not started_by(running.home), "a process started by the services outlived down"


def test_the_api_requires_a_login_and_a_triggered_run_is_traced_to_mlflow(services: Services) -> None:
    assert requests.get(f"{services.airflow_url}/api/v2/dags", timeout=30).status_code == 401
    password = json.loads((services.home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    login = requests.post(f"{services.airflow_url}/auth/token", json={"username": "admin", "password": password},
                          timeout=30)
    assert login.status_code == 201, login.text
    services.session.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
    services.wait(f"{DAG_ID} to be parsed", lambda: requests.get(
        f"{services.airflow_url}/api/v2/dags/{DAG_ID}", headers=services.session.headers, timeout=30).ok)
    services.api("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})

    refused = services.api("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {"epochs": 0}},
                           expect=400)
    assert "epochs" in json.dumps(refused), refused
    assert services.runs() == [], "an invalid form creates no run"

    run = services.api("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {"seed": 7}})
    finished = services.finished(run["dag_run_id"])

    assert finished["run_type"] == "manual" and finished["conf"]["seed"] == 7
    log = services.api("GET", f"/dags/{DAG_ID}/dagRuns/{quote(run['dag_run_id'], safe='')}/taskInstances/train/"
                              "logs/1?full_content=true")
    text = json.dumps(log)
    assert "spark-submit" in text or "SparkSubmit" in text, text[:2000]
    [mlflow_run] = services.mlflow_runs(run["dag_run_id"])
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

    links = services.api("GET", f"/dags/{DAG_ID}/dagRuns/{quote(run['dag_run_id'], safe='')}/taskInstances/promote/"
                                "links")["extra_links"]
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
    before = len(services.runs())
    landing = Path(services.env["DATA_DIR"]) / "landing" / DATASET
    staging = Path(services.env["DATA_DIR"]).parent / "staging"
    generate(rows=600, batches=1, start_date="2026-11-10", seed=6, data_dir=staging, dataset_name=DATASET)
    (staging / "landing" / DATASET / "date=2026-11-10" / SUCCESS_MARKER).unlink()
    (staging / "landing" / DATASET / "date=2026-11-10").rename(landing / "date=2026-11-10")
    time.sleep(POLL_S * 4)
    assert len(services.runs()) == before, "a batch without its _SUCCESS marker started a run"

    (landing / "date=2026-11-10" / SUCCESS_MARKER).touch()
    new = services.wait("an asset-triggered run", lambda: [run for run in services.runs()[before:]])
    assert [run["run_type"] for run in new] == ["asset_triggered"]
    services.wait(f"{new[0]['dag_run_id']} to start its tasks", lambda: services.api(
        "GET", f"/dags/{DAG_ID}/dagRuns/{quote(new[0]['dag_run_id'], safe='')}")["state"] == "running")
    # (asked only once the run has started: Airflow 3.3 answers 500 for a run without a start date)
    events = services.api("GET", f"/dags/{DAG_ID}/dagRuns/{quote(new[0]['dag_run_id'], safe='')}/"
                                 "upstreamAssetEvents")["asset_events"]
    assert [event["extra"]["payload"]["batches"] for event in events] == [["date=2026-11-10"]]
    time.sleep(POLL_S * 4)
    assert len(services.runs()) == before + 1, "one batch, one run"
