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
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from continuous_training.config import PROJECT_ROOT, Settings
from continuous_training.paths import FEATURIZE, stage_dir
from continuous_training.pipeline import run_data_stages
from continuous_training.spec import load_spec
from continuous_training.tracking import find_airflow_run
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from spark_cluster import GPU_ADDRESSES, StandaloneCluster, java_available, standalone_cluster, tail

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not java_available(),
                       reason="Java is not installed: the Spark standalone master and worker need a JVM (17+)"),
]

VENV_BIN = Path(sys.executable).parent
DATASET = "gpu_smoke"
RUN_ID = "manual__2026-11-21T12:00:00+00:00"
ROWS = 600
JOB_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[StandaloneCluster]:
    """A standalone master and one worker (2 cores, 2 fake GPUs) on 127.0.0.1 for the module, stopped at its end."""
    with standalone_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


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
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _run_train_job(submit_args: list[str], job_args: list[str], env: dict[str, str], log_path: Path) -> None:
    """spark-submit jobs/train.py; its output goes to `log_path`, whose tail is shown when it fails."""
    command = [str(VENV_BIN / "spark-submit"), *submit_args, "jobs/train.py", *job_args]
    with log_path.open("wb") as log_file:
        completed = subprocess.run(command, env=env, cwd=PROJECT_ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                                   timeout=JOB_TIMEOUT_S, check=False)
    assert completed.returncode == 0, f"train exited {completed.returncode}:\n{tail(log_path, 60)}"


@pytest.fixture(scope="module")
def featurized(tmp_path_factory) -> tuple[Path, Settings]:
    """The spec file, and settings whose DATA_DIR holds the featurize output of RUN_ID (real ingest,
    validate and featurize on a local[2] session), shared by the module's tests (each trains its own run id)."""
    tmp_path = tmp_path_factory.mktemp("featurized")
    spec_path = _write_spec(tmp_path, _write_landing(tmp_path))
    spec = load_spec(str(spec_path))
    settings = Settings(data_dir=tmp_path / "data", mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                        mlflow_artifact_root=tmp_path / "artifacts")
    active = SparkSession.getActiveSession()
    spark = active or (SparkSession.builder.master("local[2]").appName("test_standalone_gpu")
                       .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4")
                       .getOrCreate())
    if active is None:
        spark.sparkContext.setLogLevel("ERROR")
    try:
        run_data_stages(spark, spec, RUN_ID, settings, max_quarantine_fraction=0.0)
    finally:
        if active is None:
            spark.stop()
    return spec_path, settings


@pytest.mark.parametrize(("framework", "run_id", "devices"), [
    ("torch", RUN_ID, ["cpu", "cpu"]),
    ("tensorflow", "manual__2026-11-21T13:00:00+00:00", ["CPU:0", "CPU:0"]),
])
def test_train_job_gets_one_scheduled_gpu_per_rank(featurized: tuple[Path, Settings], cluster: StandaloneCluster,
                                                   tmp_path: Path, framework: str, run_id: str, devices: list[str]):
    """Each rank (Horovod or Keras worker) gets its own GPU address; the CPU builds installed here then train on
    the CPU, as `use_gpu=auto` allows."""
    spec_path, settings = featurized
    if run_id != RUN_ID:
        shutil.copytree(stage_dir(DATASET, FEATURIZE, RUN_ID, settings),
                        stage_dir(DATASET, FEATURIZE, run_id, settings), dirs_exist_ok=True)
    env = {
        **os.environ,
        "DATA_DIR": str(settings.data_dir),
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "MLFLOW_ARTIFACT_ROOT": str(settings.mlflow_artifact_root),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    conf = {
        "spark.executor.resource.gpu.amount": str(len(GPU_ADDRESSES)),
        "spark.executor.resource.gpu.discoveryScript": str(cluster.discovery_script),
        "spark.task.resource.gpu.amount": "1",
        "spark.executor.cores": "2",
        "spark.cores.max": "2",
        "spark.executor.memory": "1g",
        "spark.ui.enabled": "false",
    }
    submit_args = ["--master", cluster.master_url, *[arg for key, value in conf.items()
                                                     for arg in ("--conf", f"{key}={value}")]]
    started = time.monotonic()
    job_args = ["--dataset", str(spec_path), "--run-id", run_id, "--num-proc", "2", "--epochs", "2",
                "--batch-size", "16", "--use-gpu", "auto", "--framework", framework]
    _run_train_job(submit_args, job_args, env, tmp_path / "train.log")
    print(f"train job on {cluster.master_url}: {time.monotonic() - started:.1f} s")

    run = find_airflow_run(MlflowClient(settings.mlflow_tracking_uri), DATASET, run_id)
    assert run is not None, f"no MLflow run tagged airflow.run_id={run_id} in experiment {DATASET!r}"
    tags, params = run.data.tags, run.data.params
    assert tags["spark.barrier"] == "true" and params["framework"] == framework
    assert tags["horovod.size" if framework == "torch" else "tensorflow.workers"] == "2"
    assigned = json.loads(tags["gpu.addresses"])
    assert sorted(assigned) == ["0", "1"], assigned
    assert all(len(addresses) == 1 for addresses in assigned.values()), assigned
    addresses = {rank_addresses[0] for rank_addresses in assigned.values()}
    assert len(addresses) == 2 and addresses <= set(GPU_ADDRESSES), assigned
    assert json.loads(tags["devices"]) == devices
    assert params["spark_master"] == cluster.master_url
    assert params["num_proc"] == "2"
    assert run.info.status == "FINISHED"
