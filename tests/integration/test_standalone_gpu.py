"""GPU-aware scheduling of the train job on a real Spark standalone cluster with a fake GPU discovery script.

The test starts a master and a worker from the pip-installed pyspark; the worker advertises two "GPUs" (the
addresses a discovery script prints), so Spark assigns one address to each task of the barrier stage. The
machine needs no GPU: the ranks find CUDA unusable and train on the CPU, but the addresses Spark scheduled are
recorded on the MLflow run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyspark
import pytest
import yaml
from continuous_training.config import PROJECT_ROOT
from continuous_training.tracking import find_training_run
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.integration

SPARK_HOME = Path(pyspark.__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
DATASET = "gpu_smoke"
RUN_ID = "manual__2026-11-21T12:00:00+00:00"
ROWS = 600
GPU_ADDRESSES = ("0", "1")
REGISTRATION_TIMEOUT_S = 60
JOB_TIMEOUT_S = 240


@dataclass(frozen=True)
class Cluster:
    """A running standalone master with one registered worker."""

    master_url: str
    discovery_script: Path


def _java_available() -> bool:
    java_home = os.environ.get("JAVA_HOME")
    return shutil.which("java") is not None or bool(java_home and (Path(java_home) / "bin" / "java").exists())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_discovery_script(root: Path) -> Path:
    """A GPU discovery script in Spark's format that reports two GPUs on any machine."""
    script = root / "fake_gpu_discovery.sh"
    addresses = json.dumps({"name": "gpu", "addresses": list(GPU_ADDRESSES)})
    script.write_text(f"#!/usr/bin/env bash\necho '{addresses}'\n")
    script.chmod(0o755)
    return script


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _stop(process: subprocess.Popen) -> None:
    """Terminate a daemon's process group, then kill it if it does not exit promptly."""
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _alive_workers(webui_port: int) -> list[dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{webui_port}/json", timeout=2) as response:
            state = json.load(response)
    except OSError:
        return []
    return [worker for worker in state.get("workers", []) if worker.get("state") == "ALIVE"]


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Cluster:
    """A standalone master and one worker (2 cores, 2 fake GPUs) on 127.0.0.1, stopped at teardown."""
    if not _java_available():
        pytest.skip("Java is not installed: the Spark standalone master and worker need a JVM (Java 17+)")
    root = tmp_path / "cluster"
    (root / "conf").mkdir(parents=True)
    (root / "work").mkdir()
    script = _write_discovery_script(root)
    port, master_ui, worker_ui = _free_port(), _free_port(), _free_port()
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_CONF_DIR": str(root / "conf"),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(root),
        "PYSPARK_PYTHON": sys.executable,
    }
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    master_url = f"spark://127.0.0.1:{port}"
    commands = {
        "master": ([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(port), "--webui-port", str(master_ui)], {}),
        "worker": ([spark_class, "org.apache.spark.deploy.worker.Worker", master_url, "--host", "127.0.0.1",
                    "--cores", "2", "--memory", "2g", "--webui-port", str(worker_ui),
                    "--work-dir", str(root / "work")],
                   {"SPARK_WORKER_OPTS": f"-Dspark.worker.resource.gpu.amount={len(GPU_ADDRESSES)} "
                                         f"-Dspark.worker.resource.gpu.discoveryScript={script}"}),
    }
    logs = {}
    for name, (command, extra_env) in commands.items():
        logs[name] = root / f"{name}.log"
        with logs[name].open("wb") as log_file:
            process = subprocess.Popen(command, env={**env, **extra_env}, stdout=log_file,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        request.addfinalizer(lambda process=process: _stop(process))
    deadline = time.monotonic() + REGISTRATION_TIMEOUT_S
    while not _alive_workers(master_ui):
        if time.monotonic() > deadline:
            pytest.fail(f"no worker registered with {master_url} within {REGISTRATION_TIMEOUT_S} s\n"
                        f"master log:\n{_tail(logs['master'])}\nworker log:\n{_tail(logs['worker'])}")
        time.sleep(0.5)
    worker = _alive_workers(master_ui)[0]
    assert worker["cores"] == 2
    return Cluster(master_url=master_url, discovery_script=script)


def _write_landing(root: Path) -> Path:
    """A small regression CSV: y depends on three numeric columns and one category."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(ROWS, 3))
    plans = rng.choice(["basic", "pro", "team"], size=ROWS)
    y = 2.0 * x[:, 0] - x[:, 1] + 0.5 * x[:, 2] + (plans == "pro") * 1.5 + rng.normal(scale=0.1, size=ROWS)
    landing = root / "landing"
    landing.mkdir(parents=True)
    lines = ["id,x0,x1,x2,plan,y"] + [
        f"r{i},{x[i, 0]:.5f},{x[i, 1]:.5f},{x[i, 2]:.5f},{plans[i]},{y[i]:.5f}" for i in range(ROWS)
    ]
    (landing / "batch.csv").write_text("\n".join(lines) + "\n")
    return landing


def _write_spec(root: Path, landing: Path) -> Path:
    spec = {
        "name": DATASET,
        "task": "regression",
        "label": "y",
        "id_column": "id",
        "source": {"path": str(landing / "*.csv"), "format": "csv", "options": {"header": True}},
        "schema": {"id": "string", "x0": "double", "x1": "double", "x2": "double", "plan": "string", "y": "double"},
        "features": {"numeric": ["x0", "x1", "x2"], "categorical": ["plan"]},
        "rules": {"id": {"not_null": True, "unique": True}},
    }
    path = root / f"{DATASET}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _spark_submit(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.CompletedProcess:
    with log_path.open("wb") as log_file:
        return subprocess.run([str(VENV_BIN / "spark-submit"), *args], env=env, cwd=PROJECT_ROOT,
                              stdout=log_file, stderr=subprocess.STDOUT, timeout=JOB_TIMEOUT_S, check=False)


def _run_stage(job: str, args: list[str], env: dict[str, str], root: Path) -> None:
    log_path = root / f"{job}.log"
    completed = _spark_submit(args, env, log_path)
    assert completed.returncode == 0, f"{job} exited {completed.returncode}:\n{_tail(log_path, 60)}"


def test_train_job_gets_one_scheduled_gpu_per_rank(cluster: Cluster, tmp_path: Path):
    spec_path = _write_spec(tmp_path, _write_landing(tmp_path))
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_CONF_DIR": str(tmp_path / "cluster" / "conf"),
    }
    stage_args = ["--dataset", str(spec_path), "--run-id", RUN_ID]
    local = ["--master", "local[2]", "--conf", "spark.ui.enabled=false"]
    for job in ("ingest", "validate", "featurize"):
        _run_stage(job, [*local, f"jobs/{job}.py", *stage_args], env, tmp_path)

    gpu_conf = {
        "spark.executor.resource.gpu.amount": str(len(GPU_ADDRESSES)),
        "spark.executor.resource.gpu.discoveryScript": str(cluster.discovery_script),
        "spark.task.resource.gpu.amount": "1",
        "spark.executor.cores": "2",
        "spark.cores.max": "2",
        "spark.executor.memory": "1g",
        "spark.ui.enabled": "false",
    }
    conf_args = [arg for key, value in gpu_conf.items() for arg in ("--conf", f"{key}={value}")]
    started = time.monotonic()
    _run_stage("train", ["--master", cluster.master_url, *conf_args, "jobs/train.py", *stage_args,
                         "--num-proc", "2", "--epochs", "2", "--batch-size", "16", "--use-gpu", "auto"],
               env, tmp_path)
    print(f"train job on {cluster.master_url}: {time.monotonic() - started:.1f} s")

    client = MlflowClient(tracking_uri)
    run = find_training_run(client, DATASET, RUN_ID)
    assert run is not None, f"no MLflow run tagged airflow.run_id={RUN_ID} in experiment {DATASET!r}"
    tags, params = run.data.tags, run.data.params
    assert tags["spark.barrier"] == "true"
    assert tags["horovod.size"] == "2"
    assigned = json.loads(tags["gpu.addresses"])
    assert sorted(assigned) == ["0", "1"], assigned
    assert all(len(addresses) == 1 for addresses in assigned.values()), assigned
    flat = {addresses[0] for addresses in assigned.values()}
    assert len(flat) == 2 and flat <= set(GPU_ADDRESSES), assigned
    assert json.loads(tags["devices"]) == ["cpu", "cpu"]
    assert params["spark_master"].startswith("spark://")
    assert params["num_proc"] == "2"
    assert run.info.status == "FINISHED"
