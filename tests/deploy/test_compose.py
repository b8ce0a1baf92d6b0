"""docker-compose.yaml describes the whole stack, publishes only on 127.0.0.1 and holds no secrets."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from continuous_training.config import PROJECT_ROOT

PROJECT_SERVICES = {"mlflow", "spark-master", "spark-worker", "airflow"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yaml").read_text())


def env_of(service: dict) -> dict[str, str]:
    return {key: str(value) for key, value in service.get("environment", {}).items()}


def command_of(service: dict) -> str:
    command = service.get("command", [])
    return " ".join(command) if isinstance(command, list) else command


def test_the_stack_has_every_service(compose: dict) -> None:
    assert set(compose["services"]) == {"postgres"} | PROJECT_SERVICES


def test_ports_are_published_on_loopback_only(compose: dict) -> None:
    published = [port for service in compose["services"].values() for port in service.get("ports", [])]
    assert published
    for port in published:
        assert isinstance(port, str) and port.startswith("127.0.0.1:"), port
    assert "127.0.0.1:5000:5000" in compose["services"]["mlflow"]["ports"]


def test_project_services_share_the_image_and_data(compose: dict) -> None:
    for name in PROJECT_SERVICES:
        service = compose["services"][name]
        assert service["build"] == {"context": ".", "dockerfile": "docker/Dockerfile"}, name
        assert "data:/data" in service["volumes"], name
        assert env_of(service)["DATA_DIR"] == "/data", name
        assert env_of(service)["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
    assert "data" in compose["volumes"]


def test_spark_cluster_and_airflow_connection(compose: dict) -> None:
    services = compose["services"]
    assert command_of(services["spark-master"]).startswith("spark-class org.apache.spark.deploy.master.Master")
    assert command_of(services["spark-worker"]).startswith(
        "spark-class org.apache.spark.deploy.worker.Worker spark://spark-master:7077")
    airflow_env = env_of(services["airflow"])
    assert json.loads(airflow_env["AIRFLOW_CONN_SPARK_DEFAULT"]) == {
        "conn_type": "spark", "host": "spark://spark-master", "port": 7077}
    assert airflow_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert "@postgres:5432/airflow" in airflow_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert airflow_env["AIRFLOW__CORE__PLUGINS_FOLDER"] == "/opt/project/plugins"


def test_mlflow_server_restricts_hosts_and_keeps_artifacts(compose: dict) -> None:
    mlflow = compose["services"]["mlflow"]
    command = command_of(mlflow)
    assert command.startswith("mlflow server")
    allowed = re.search(r"--allowed-hosts[= ](\S+)", command).group(1).split(",")
    assert {"mlflow:5000", "localhost:5000", "127.0.0.1:5000"} <= set(allowed)
    destination = re.search(r"--artifacts-destination[= ](\S+)", command).group(1)
    assert any(volume.endswith(f":{destination}") for volume in mlflow["volumes"])


def test_no_secret_is_written_in_the_file(compose: dict) -> None:
    required = r"\$\{POSTGRES_PASSWORD:\?[^}]+\}"
    urls_with_credentials = 0
    for service in compose["services"].values():
        for key, value in env_of(service).items():
            if "PASSWORD" in key:
                assert re.fullmatch(required, value), key
            if re.search(r"://[^/]*@", value):
                urls_with_credentials += 1
                assert re.match(rf"postgresql\+psycopg2://airflow:{required}@postgres:5432/\w+$", value), key
    assert urls_with_credentials == 2
    example = (PROJECT_ROOT / "docker" / ".env.example").read_text()
    assert "POSTGRES_PASSWORD=" in example


def test_dockerfile_builds_the_project_image() -> None:
    dockerfile = (PROJECT_ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    for needed in ("openjdk-17-jre-headless", "requirements.txt", "scripts/install_horovod.sh", "pip install",
                   "-e ."):
        assert needed in dockerfile, needed
