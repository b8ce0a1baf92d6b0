"""Shared fixtures: the local Spark session (one at a time, of the flavour each module needs), isolated data dirs,
Airflow env."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from continuous_training.config import PROJECT_ROOT, Settings

# Spark reads the worker interpreter from PYSPARK_PYTHON when a session is built in-process.
os.environ["PYSPARK_PYTHON"] = sys.executable
# The tests' driver JVMs live seconds on tiny data: compiled by C1 alone they start faster (`make test` passes that
# and Spark's class archive through SPARK_SUBMIT_OPTS; a bare `pytest` gets C1 here).
if "TieredStopAtLevel" not in os.environ.get("SPARK_SUBMIT_OPTS", ""):
    os.environ["SPARK_SUBMIT_OPTS"] = f"{os.environ.get('SPARK_SUBMIT_OPTS', '')} -XX:TieredStopAtLevel=1".lstrip()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The e2e tests, the longest, first: under `pytest -n` their worker starts with them."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under `pytest -n`, one worker runs a whole module, or every module sharing the e2e workspace (tests/e2e but
    the two that start their own services), so module and workspace fixtures are set up once; with
    `--no-loadscope-reorder` scopes go out in collection order, so the workspace's modules and the distributed stack,
    the two longest, start at once on different workers."""
    from xdist.scheduler import LoadScopeScheduling

    own_services = {"tests/e2e/test_services.py", "tests/e2e/test_distributed_mode.py"}

    class ByWorkspace(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            shares_workspace = module.startswith("tests/e2e/") and module not in own_services
            return "tests/e2e (workspace)" if shares_workspace else module

    return ByWorkspace(config, log)


class LocalSparkSessions:
    """One real local Spark session (2 cores) at a time in the test process, of the flavour the current module asks
    for; built when the flavour changes (a worker runs whole modules, so that is at most once per module)."""

    def __init__(self) -> None:
        self.session = None
        self.barrier = None

    def get(self, barrier: bool):
        if self.session is not None and self.barrier == barrier:
            return self.session
        self.stop()
        from continuous_training.spark import build_spark_session
        from continuous_training.training.barrier import barrier_spark_conf

        self.session = build_spark_session("tests", {
            "spark.master": "local[2]", "spark.ui.enabled": "false",
            **(barrier_spark_conf(use_gpu=False) if barrier else {}),
            # Spark's barrier slot check gives up after 2 s here, so the test of that path stays short.
            "spark.scheduler.barrier.maxConcurrentTasksCheck.interval": "1s",
            "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures": "2",
        })
        self.session.sparkContext.setLogLevel("ERROR")
        self.barrier = barrier
        return self.session

    def stop(self) -> None:
        if self.session is not None:
            self.session.stop()
            self.session = None


@pytest.fixture(autouse=True, scope="module")
def no_active_mlflow_experiment_after_the_module():
    """A module that sets MLflow's active experiment (`mlflow.set_experiment`, process-wide) leaves none behind: a
    later module's `start_run(run_id=...)` of a run in another experiment would be refused."""
    yield
    import mlflow.tracking.fluent

    mlflow.tracking.fluent._active_experiment_id = None


@pytest.fixture(scope="session")
def spark_sessions():
    sessions = LocalSparkSessions()
    yield sessions
    sessions.stop()


@pytest.fixture(scope="module")
def spark(request, spark_sessions):
    """The local session of the module. A module marked `barrier` (it trains in barrier stages in-process) gets the
    training job's confs, a fresh Python worker per task; the others reuse Python workers, as the scoring and
    evaluate jobs do, so a model's framework is imported once per worker rather than once per task."""
    return spark_sessions.get(barrier=request.node.get_closest_marker("barrier") is not None)


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
