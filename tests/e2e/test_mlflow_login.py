"""MLflow as `scripts/services.py up` (what `make up` runs) starts it, for real on 127.0.0.1: its REST API refuses a
client without a login (401) and takes the generated one; the generated passwords and the service logs are their
user's only (0600), and no password is printed to the terminal or to a log."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from continuous_training.config import PROJECT_ROOT

pytestmark = pytest.mark.e2e

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=5"


@dataclass
class MlflowService:
    url: str
    home: Path
    output: str

    def password(self, file_name: str) -> str:
        return json.loads((self.home / file_name).read_text())["admin"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_service(tmp_path_factory, airflow_env) -> Iterator[MlflowService]:
    root = tmp_path_factory.mktemp("mlflow_login")
    port = free_port()
    env = airflow_env(root, MLFLOW_PORT=str(port), MLFLOW_UI_URL=f"http://127.0.0.1:{port}")

    def services(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "services.py"), *args], env=env,
                              capture_output=True, text=True, timeout=300)

    started = services("up", "--only", "mlflow", "--timeout", "240")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield MlflowService(f"http://127.0.0.1:{port}", Path(env["AIRFLOW_HOME"]), started.stdout + started.stderr)
    finally:
        stopped = services("down")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def test_mlflow_rest_refuses_a_client_without_login_and_takes_the_generated_one(
        mlflow_service: MlflowService) -> None:
    assert requests.get(f"{mlflow_service.url}/health", timeout=30).status_code == 200
    assert requests.get(f"{mlflow_service.url}{SEARCH}", timeout=30).status_code == 401
    assert requests.post(f"{mlflow_service.url}/api/2.0/mlflow/experiments/create", json={"name": "intruder"},
                         timeout=30).status_code == 401
    assert requests.get(f"{mlflow_service.url}{SEARCH}", auth=("admin", "wrong-password-123"),
                        timeout=30).status_code == 401
    login = ("admin", mlflow_service.password("mlflow_passwords.json.generated"))
    response = requests.get(f"{mlflow_service.url}{SEARCH}", auth=login, timeout=30)
    assert response.status_code == 200, response.text


def test_generated_passwords_and_service_logs_are_private_and_never_printed(mlflow_service: MlflowService) -> None:
    private = [mlflow_service.home / "mlflow_passwords.json.generated",
               mlflow_service.home / "simple_auth_manager_passwords.json.generated",
               mlflow_service.home / "mlflow_basic_auth.ini", mlflow_service.home / "logs" / "services" / "mlflow.log"]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    log = (mlflow_service.home / "logs" / "services" / "mlflow.log").read_text()
    for file_name in ("mlflow_passwords.json.generated", "simple_auth_manager_passwords.json.generated"):
        password = mlflow_service.password(file_name)
        assert password not in mlflow_service.output and password not in log, file_name


def test_a_user_store_without_its_password_file_is_refused_before_anything_starts(tmp_path, airflow_env) -> None:
    env = airflow_env(tmp_path, MLFLOW_PORT=str(free_port()))
    (tmp_path / "airflow").mkdir()
    (tmp_path / "airflow" / "mlflow_basic_auth.db").touch()
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "services.py"), "up", "--only", "mlflow"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "mlflow_passwords.json.generated does not" in result.stderr
    assert not (tmp_path / "airflow" / "run" / "mlflow.pid").exists()
