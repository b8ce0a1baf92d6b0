"""Shared fixtures: one local Spark session per test session, isolated data dirs, Airflow env."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from continuous_training.config import PROJECT_ROOT, Settings

# Spark reads the worker interpreter from PYSPARK_PYTHON when a session is built in-process.
os.environ["PYSPARK_PYTHON"] = sys.executable


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `pytest -n` (`--dist loadgroup --no-loadscope-reorder`), one worker runs a whole module, or every test
    of the e2e workspace, so module and e2e session fixtures are set up once; the e2e tests, the longest, go first."""
    for item in items:
        group = "e2e_workspace" if "e2e" in getattr(item, "fixturenames", ()) else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)


@pytest.fixture(scope="session")
def spark():
    """A real local Spark session (2 cores) shared by the whole test session."""
    from continuous_training.spark import build_spark_session
    from continuous_training.training.barrier import barrier_spark_conf

    session = build_spark_session("tests", {
        "spark.master": "local[2]", "spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false",
        **barrier_spark_conf(use_gpu=False),
        # Spark's barrier slot check gives up after 2 s here, so the test of that path stays short.
        "spark.scheduler.barrier.maxConcurrentTasksCheck.interval": "1s",
        "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures": "2",
    })
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings pointing DATA_DIR and MLflow at a fresh temporary folder."""
    return Settings(
        data_dir=tmp_path / "data",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        mlflow_artifact_root=tmp_path / "artifacts",
    )


def make_airflow_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for a real `airflow` CLI subprocess isolated under tmp_path (SQLite metadata DB)."""
    venv_bin = Path(sys.executable).parent
    env = dict(os.environ)
    env.update(
        PATH=f"{venv_bin}:{env.get('PATH', '')}",
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT_ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(PROJECT_ROOT / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type": "spark", "host": "local[2]"}',
        PYSPARK_PYTHON=sys.executable,
        DATA_DIR=str(tmp_path / "data"),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        MLFLOW_ARTIFACT_ROOT=str(tmp_path / "artifacts"),
        TASK_RETRIES="0",
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def airflow_env():
    """Factory: `airflow_env(root, **extra)` gives an isolated Airflow/MLflow/DATA_DIR environment."""
    return make_airflow_env
