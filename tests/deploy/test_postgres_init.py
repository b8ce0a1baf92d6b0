"""docker/postgres/create-mlflow-db.sh on a real Postgres, initialised as the compose service's image does (the
superuser and database `airflow`): MLflow's role owns MLflow's database and cannot connect to Airflow's."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from continuous_training.config import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "docker" / "postgres" / "create-mlflow-db.sh"
BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
MLFLOW_DB_PASSWORD = "test-mlflow-db-password"  # pragma: allowlist secret

pytestmark = pytest.mark.skipif(BIN is None, reason="no Postgres server binaries (apt-get install postgresql)")


def as_postgres(command: list[str], **env: str) -> subprocess.CompletedProcess:
    """Run a command as the `postgres` user when root (Postgres refuses to run as root), else as this user."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, "env", *(f"{key}={value}" for key, value in env.items()), *command],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def postgres() -> Iterator[dict[str, str]]:
    root = Path(tempfile.mkdtemp(prefix="ct-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(root, pwd.getpwnam("postgres").pw_uid)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    data = str(root / "data")
    initdb = as_postgres([str(BIN / "initdb"), "-D", data, "-U", "airflow", "--auth-local=trust",
                          "--auth-host=scram-sha-256"])
    assert initdb.returncode == 0, initdb.stderr
    started = as_postgres([str(BIN / "pg_ctl"), "-D", data, "-w", "-l", str(root / "log"), "-o",
                           f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"])
    assert started.returncode == 0, started.stdout + started.stderr
    env = {"PGHOST": str(root), "PGPORT": port}
    try:
        created = as_postgres(["psql", "-U", "airflow", "-d", "postgres", "-c", "CREATE DATABASE airflow"], **env)
        assert created.returncode == 0, created.stderr
        yield env
    finally:
        as_postgres([str(BIN / "pg_ctl"), "-D", data, "-m", "fast", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def test_mlflows_role_owns_its_database_and_cannot_connect_to_airflows(postgres: dict[str, str]) -> None:
    ran = as_postgres(["sh", str(SCRIPT)], POSTGRES_USER="airflow", POSTGRES_DB="airflow",
                      MLFLOW_DB_PASSWORD=MLFLOW_DB_PASSWORD, **postgres)
    assert ran.returncode == 0, ran.stderr

    def connect(database: str, query: str) -> subprocess.CompletedProcess:
        return as_postgres(["psql", "-At", "-h", "127.0.0.1", "-U", "mlflow", "-d", database, "-c", query],
                           PGPORT=postgres["PGPORT"], PGPASSWORD=MLFLOW_DB_PASSWORD)

    own = connect("mlflow", "SELECT current_user, pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'mlflow'")
    assert own.returncode == 0 and own.stdout.strip() == "mlflow|mlflow", own.stderr
    assert connect("mlflow", "CREATE TABLE runs (id int)").returncode == 0
    airflow = connect("airflow", "SELECT 1")
    assert airflow.returncode != 0 and "permission denied for database" in airflow.stderr
    owner = as_postgres(["psql", "-At", "-U", "airflow", "-d", "airflow", "-c",
                         "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'airflow'"], **postgres)
    assert owner.stdout.strip() == "airflow"
