"""Where a rank trains: the GPU Spark assigned it when this installation can, else the CPU, and use_gpu=true
fails fast with the reason; how many threads a rank uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from continuous_training.errors import PipelineError
from continuous_training.training.barrier import RankContext, rank_threads
from continuous_training.training.epochs import TrainConfig
from continuous_training.training.fit import gpu_build_problem
from continuous_training.training.tensorflow_rank import train_worker
from continuous_training.training.torch_rank import _select_device
from continuous_training.training.train import resolve_use_gpu

CPU_BUILD = gpu_build_problem() is not None


@pytest.fixture
def visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.mark.skipif(not CPU_BUILD, reason="checks the CPU installation's answers; this one can train on GPUs")
def test_the_cpu_installation_says_why_it_cannot_use_a_gpu():
    assert gpu_build_problem() == f"torch {torch.__version__} is built without CUDA"


@pytest.mark.skipif(not CPU_BUILD, reason="checks the CPU installation's answers; this one can train on GPUs")
def test_a_rank_sees_only_its_assigned_gpu_and_falls_back_to_cpu_unless_one_is_required(visible_devices):
    assigned = RankContext(rank=1, size=2, local_rank=1, local_size=2, host="h", gpu_addresses=["GPU-5f3c"])

    assert _select_device(assigned, require_gpu=False) == torch.device("cpu")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-5f3c"
    with pytest.raises(PipelineError, match=r"use_gpu=true: rank 1 cannot train on a GPU: torch .* without CUDA"):
        _select_device(assigned, require_gpu=True)


def test_a_rank_without_an_assigned_gpu_trains_on_cpu_unless_one_is_required(visible_devices):
    unassigned = RankContext(rank=0, size=1, local_rank=0, local_size=1, host="h")

    assert _select_device(unassigned, require_gpu=False) == torch.device("cpu")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    with pytest.raises(PipelineError, match="rank 0 cannot train on a GPU: Spark assigned it no GPU"):
        _select_device(unassigned, require_gpu=True)


@pytest.mark.skipif(gpu_build_problem("tensorflow") is None,
                    reason="checks the CPU TensorFlow's answers; this one is built with CUDA")
def test_a_tensorflow_worker_pins_its_gpu_and_fails_when_one_is_required_on_the_cpu_build(spark, monkeypatch):
    for name in ("CUDA_VISIBLE_DEVICES", "TF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assigned = RankContext(rank=1, size=2, local_rank=1, local_size=2, host="h", gpu_addresses=["GPU-5f3c"],
                           peers=["h:7001", "h:7002"])
    config = TrainConfig(featurize_dir="featurized", checkpoint_dir="checkpoints", task="regression", feature_dim=2,
                         num_classes=None, train_rows=8, framework="tensorflow")

    with pytest.raises(PipelineError, match=r"use_gpu=true: worker 1 cannot train on a GPU: tensorflow .* CUDA"):
        train_worker(assigned, config, require_gpu=True)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-5f3c"
    assert json.loads(os.environ["TF_CONFIG"]) == {"cluster": {"worker": ["h:7001", "h:7002"]},
                                                   "task": {"type": "worker", "index": 1}}
    with pytest.raises(PipelineError, match=r"needs the GPU installation \(make setup GPU=1\): tensorflow"):
        resolve_use_gpu("true", spark, "tensorflow")


@pytest.mark.skipif(not CPU_BUILD, reason="checks the CPU installation's answers; this one can train on GPUs")
def test_use_gpu_true_fails_before_any_rank_starts_on_a_cpu_installation(spark):
    with pytest.raises(PipelineError, match=r"needs the GPU installation \(make setup GPU=1\): torch"):
        resolve_use_gpu("true", spark)
    assert resolve_use_gpu("auto", spark) is False
    assert resolve_use_gpu("false", spark) is False


@pytest.mark.parametrize(("local_slots", "num_proc", "task_cpus", "threads"),
                         [(2, 1, 1, 2), (2, 2, 1, 1), (8, 3, 1, 2), (4, 2, 2, 4), (None, 2, 1, 1), (None, 2, 4, 4)])
def test_a_rank_uses_its_share_of_a_local_master_or_its_task_cpus_on_a_cluster(local_slots, num_proc, task_cpus,
                                                                               threads):
    assert rank_threads(local_slots, num_proc, task_cpus) == threads


SUBMITTED = """
import json
from continuous_training.spark import submitted_conf
from continuous_training.training.barrier import barrier_spark_conf
print("CONF" + json.dumps(barrier_spark_conf(True, submitted_conf())))
"""


@pytest.mark.integration
def test_the_train_job_keeps_the_gpu_amounts_the_cluster_was_submitted_with(tmp_path):
    script = tmp_path / "conf.py"
    script.write_text(SUBMITTED)
    submitted = subprocess.run(
        [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[1]",
         "--conf", "spark.executor.resource.gpu.amount=2", "--conf", "spark.ui.enabled=false", str(script)],
        capture_output=True, text=True, timeout=180, env={**os.environ, "PYSPARK_PYTHON": sys.executable})

    assert submitted.returncode == 0, submitted.stderr[-3000:]
    conf = json.loads(submitted.stdout.split("CONF", 1)[1])
    assert "spark.executor.resource.gpu.amount" not in conf, "the cluster's 2 GPUs per executor stay"
    assert conf["spark.task.resource.gpu.amount"] == "1"
