"""The services `scripts/services.py up` starts (what `make up` runs), driven as a user does: the REST APIs with the
generated logins. `running_services` starts them and, on exit, stops them with `down` and asserts that nothing they
started outlives it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest
import requests
import ui_pages
from continuous_training.config import PROJECT_ROOT

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


def run_path(dag_id: str, run_id: str) -> str:
    return f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"


@dataclass
class Services:
    env: dict[str, str]
    airflow_url: str
    mlflow_url: str
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def home(self) -> Path:
        return Path(self.env["AIRFLOW_HOME"])

    @property
    def mlflow_login(self) -> tuple[str, str]:
        return "admin", ui_pages.admin_password(self.home, ui_pages.MLFLOW_LOGINS_FILE)

    def services(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "services.py"), *args], env=self.env,
                              capture_output=True, text=True, timeout=300)

    def log_in(self) -> None:
        """Take a token for the admin with the generated password; later API calls carry it."""
        password = json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        login = requests.post(f"{self.airflow_url}/auth/token", json={"username": "admin", "password": password},
                              timeout=30)
        assert login.status_code == 201, login.text
        self.session.headers["Authorization"] = f"Bearer {login.json()['access_token']}"

    def api(self, method: str, path: str, body: dict | None = None, expect: int = 200) -> dict:
        response = self.session.request(method, f"{self.airflow_url}/api/v2{path}", json=body, timeout=30)
        assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json() if response.content else {}

    def unpause(self, dag_id: str) -> None:
        self.wait(f"{dag_id} to be parsed", lambda: self.session.get(
            f"{self.airflow_url}/api/v2/dags/{dag_id}", timeout=30).ok)
        self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict, logical_date: str | None = None) -> str:
        return self.api("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": logical_date, "conf": conf})["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns?order_by=run_after&limit=1000")["dag_runs"]

    def wait(self, what: str, check: Callable[[], object], timeout: float = 900):
        deadline = time.monotonic() + timeout
        while not (found := check()):
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {name} ---\n" + "\n".join(
                    (self.home / "logs" / "services" / f"{name}.log").read_text(errors="replace").splitlines()[-30:])
                    for name in ("scheduler", "triggerer", "dag-processor"))
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
            time.sleep(POLL_S)
        return found

    def finished(self, dag_id: str, run_id: str, timeout: float = 900) -> dict:
        run = self.wait(f"run {run_id} to finish", lambda: (
            run if (run := self.api("GET", run_path(dag_id, run_id)))["state"] in ("success", "failed") else None),
            timeout)
        assert run["state"] == "success", self.task_states(dag_id, run_id)
        return run

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"{run_path(dag_id, run_id)}/taskInstances")["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> str:
        return ", ".join(f"{task['task_id']}={task['state']}" for task in self.task_instances(dag_id, run_id))

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        return json.dumps(self.api("GET", f"{run_path(dag_id, run_id)}/taskInstances/{task_id}/logs/{try_number}"
                                          "?full_content=true"))

    def mlflow(self, method: str, path: str, **kwargs) -> dict:
        response = requests.request(method, f"{self.mlflow_url}/api/2.0/mlflow/{path}", timeout=30,
                                    auth=self.mlflow_login, **kwargs)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json()

    def mlflow_runs(self, experiment_name: str, airflow_run_id: str) -> list[dict]:
        experiment = self.mlflow("GET", "experiments/get-by-name",
                                 params={"experiment_name": experiment_name})["experiment"]
        return self.mlflow("POST", "runs/search", json={
            "experiment_ids": [experiment["experiment_id"]],
            "filter": f"tags.`airflow.run_id` = '{airflow_run_id}'"}).get("runs", [])


@contextmanager
def running_services(env: dict[str, str]) -> Iterator[Services]:
    """`up` with `env` (its AIRFLOW_PORT and MLFLOW_PORT), yield, then `down`: no pid file, listener or process
    started by the services may remain."""
    airflow_port, mlflow_port = int(env["AIRFLOW_PORT"]), int(env["MLFLOW_PORT"])
    running = Services(env, f"http://127.0.0.1:{airflow_port}", f"http://127.0.0.1:{mlflow_port}")
    started = running.services("up", "--timeout", "240")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        running.log_in()
        yield running
    finally:
        stopped = running.services("down")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        for name in COMPONENTS:
            assert not (running.home / "run" / f"{name}.pid").exists(), name
        assert not listening(airflow_port) and not listening(mlflow_port), "a service still listens after down"
        assert not started_by(running.home), "a process started by the services outlived down"
