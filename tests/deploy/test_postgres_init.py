"""docker/postgres/create-mlflow-db.sh on a real Postgres, initialised as the compose service's image does (the
superuser and database `airflow`): MLflow's role owns MLflow's database and cannot connect to Airflow's."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from continuous_training.config import PROJECT_ROOT
from postgres_server import BIN, as_postgres, postgres_server

SCRIPT = PROJECT_ROOT / "docker" / "postgres" / "create-mlflow-db.sh"
MLFLOW_DB_PASSWORD = "test-mlflow-db-password"  # pragma: allowlist secret

pytestmark = pytest.mark.skipif(BIN is None, reason="no Postgres server binaries (apt-get install postgresql)")


@pytest.fixture(scope="module")
def postgres() -> Iterator[dict[str, str]]:
    with postgres_server("test-airflow-db-password") as server:  # pragma: allowlist secret
        yield server.env


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
