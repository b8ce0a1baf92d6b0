"""Horovod ranks and TensorFlow workers in a Spark barrier stage on local[2], trained from Petastorm shards of
Spark-written Parquet."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
from continuous_training.errors import PipelineError
from continuous_training.paths import FEATURIZE_FILE, FeaturizeResult
from continuous_training.training import barrier as barrier_module
from continuous_training.training.barrier import BarrierStageError, run_in_barrier
from continuous_training.training.epochs import MIN_STEPS_PER_EPOCH, TrainConfig
from continuous_training.training.fit import fit
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

pytestmark = [pytest.mark.integration, pytest.mark.barrier]

FEATURE_DIM = 4
ROWS = {"train": 384, "validation": 128, "test": 0}


def _write_featurized(spark: SparkSession, root: Path, task: str) -> Path:
    """Featurize-stage output: train/ and validation/ as 4 Parquet files each, plus featurize.json."""
    for offset, split in enumerate(("train", "validation")):
        rows = spark.range(ROWS[split]).select(
            *[(F.rand(seed=10 * offset + i) * 2 - 1).alias(f"x{i}") for i in range(FEATURE_DIM)]
        )
        if task == "regression":
            label = 2.0 * F.col("x0") - 1.5 * F.col("x1") + 0.5 * F.col("x2") * F.col("x3") + 0.3
        elif task == "binary_classification":
            label = F.when(F.col("x0") + F.col("x1") > 0, 1).otherwise(0)
        else:
            label = (F.when(F.col("x0") > F.greatest("x1", "x2"), 0)
                     .when(F.col("x1") > F.col("x2"), 1).otherwise(2))
        frame = rows.select(
            F.array(*[F.col(f"x{i}").cast("float") for i in range(FEATURE_DIM)]).alias("features"),
            label.cast("float").alias("label"),
        )
        frame.repartition(4).write.mode("overwrite").parquet(str(root / split))
    meta = FeaturizeResult(dataset="synthetic", run_id="test", task=task, feature_dim=FEATURE_DIM,
                           num_classes=3 if task == "multiclass_classification" else None, classes=None,
                           rows=ROWS, numeric=[], categorical=[], data_fingerprint="")
    (root / FEATURIZE_FILE).write_text(json.dumps(dataclasses.asdict(meta)))
    return root


@pytest.fixture(scope="module")
def regression_dir(spark, tmp_path_factory) -> Path:
    return _write_featurized(spark, tmp_path_factory.mktemp("featurize_regression"), "regression")


@pytest.fixture(scope="module")
def multiclass_dir(spark, tmp_path_factory) -> Path:
    return _write_featurized(spark, tmp_path_factory.mktemp("featurize_multiclass"), "multiclass_classification")


@pytest.fixture(scope="module")
def binary_dir(spark, tmp_path_factory) -> Path:
    return _write_featurized(spark, tmp_path_factory.mktemp("featurize_binary"), "binary_classification")


def test_two_ranks_see_each_other_through_horovod(spark):
    def rank_fn(ctx):
        import horovod.torch as hvd
        import torch

        hvd.init()
        total = hvd.allreduce(torch.tensor([float(ctx.rank + 1)]), op=hvd.Sum).item()
        seen = (hvd.rank(), hvd.size(), hvd.local_rank(), total)
        hvd.shutdown()
        return seen

    results = run_in_barrier(spark, 2, rank_fn, use_gpu=False)

    assert [r.rank for r in results] == [0, 1]
    assert [r.value for r in results] == [(0, 2, 0, 3.0), (1, 2, 1, 3.0)]
    assert all(r.size == 2 and r.gpu_addresses == [] for r in results)


@pytest.mark.parametrize(("feed_memory_mb", "feed"), [(1024, "in_memory"), (0, "streamed")])
def test_two_rank_regression_reduces_loss(spark, regression_dir, tmp_path, feed_memory_mb, feed):
    config = TrainConfig.from_featurize(regression_dir, tmp_path / "ckpt", epochs=6, batch_size=16,
                                        learning_rate=0.005, patience=0, hidden=(32, 16),
                                        feed_memory_mb=feed_memory_mb)
    started = time.perf_counter()
    result = fit(spark, config, num_proc=2)
    print(f"2-rank regression fit ({feed}): {time.perf_counter() - started:.1f} s, history {result.history}")

    assert [entry["epoch"] for entry in result.history] == [1, 2, 3, 4, 5, 6]
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]
    assert result.best_metrics["val_loss"] < 0.5 * result.history[0]["val_loss"]
    assert result.best_metrics["val_rmse"] ** 2 == pytest.approx(result.best_metrics["val_loss"], rel=1e-6)
    assert result.devices == ["cpu", "cpu"] and result.feed == feed
    assert result.steps_per_epoch == ROWS["train"] // (2 * 16)
    assert result.best_state["0.weight"].shape == (32, FEATURE_DIM)
    assert (tmp_path / "ckpt" / "checkpoint.pt").exists()


def test_two_rank_multiclass_learns_with_the_default_batch(spark, multiclass_dir, tmp_path):
    config = TrainConfig.from_featurize(multiclass_dir, tmp_path / "ckpt", epochs=6, learning_rate=0.01, patience=0)
    result = fit(spark, config, num_proc=2)

    assert result.batch_size == ROWS["train"] // (2 * MIN_STEPS_PER_EPOCH), "a small split lowers the default batch"
    assert result.steps_per_epoch == MIN_STEPS_PER_EPOCH
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_metrics["val_accuracy"] > 0.7
    assert result.best_state["4.weight"].shape == (3, 32)


def test_resume_continues_at_next_epoch(spark, regression_dir, tmp_path):
    hyper = {"batch_size": 32, "learning_rate": 0.005, "patience": 0}
    first = fit(spark, TrainConfig.from_featurize(regression_dir, tmp_path, epochs=2, **hyper), num_proc=2)
    resumed = fit(spark, TrainConfig.from_featurize(regression_dir, tmp_path, epochs=3, **hyper), num_proc=2)
    finished = fit(spark, TrainConfig.from_featurize(regression_dir, tmp_path, epochs=3, **hyper), num_proc=2)

    assert first.start_epoch == 1 and [e["epoch"] for e in first.history] == [1, 2]
    assert resumed.start_epoch == 3
    assert [e["epoch"] for e in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == first.history
    assert finished.start_epoch == 4 and finished.history == resumed.history


def test_a_checkpoint_of_other_data_is_not_resumed(spark, regression_dir, tmp_path):
    hyper = {"batch_size": 32, "learning_rate": 0.005, "patience": 0, "epochs": 2}
    first = TrainConfig.from_featurize(regression_dir, tmp_path, **hyper)
    changed = dataclasses.replace(first, data_fingerprint="other input files")
    fit(spark, first, num_proc=2)

    retrained = fit(spark, changed, num_proc=2)

    assert retrained.start_epoch == 1 and [e["epoch"] for e in retrained.history] == [1, 2]


def test_a_failing_rank_fails_the_stage_with_its_traceback(spark):
    def rank_fn(ctx):
        if ctx.rank == 1:
            raise ValueError("rank 1 cannot read its shard")
        return "ok"

    with pytest.raises(BarrierStageError) as caught:
        run_in_barrier(spark, 2, rank_fn, use_gpu=False)

    message = str(caught.value)
    assert "Traceback (most recent call last)" in message
    assert "ValueError: rank 1 cannot read its shard" in message
    assert "in rank_fn" in message


def test_non_finite_loss_names_epoch_and_step(spark, regression_dir, tmp_path):
    config = TrainConfig.from_featurize(regression_dir, tmp_path, epochs=2, batch_size=16, learning_rate=1e30)
    with pytest.raises(BarrierStageError, match=r"FloatingPointError: training loss is (inf|nan) at epoch 1, step"):
        fit(spark, config, num_proc=2)


def test_more_ranks_than_local_slots_fails_fast(spark, regression_dir, tmp_path):
    started = time.perf_counter()
    with pytest.raises(PipelineError, match="num_proc=3 needs 3 concurrent task slots"):
        fit(spark, TrainConfig.from_featurize(regression_dir, tmp_path, epochs=1), num_proc=3)
    assert time.perf_counter() - started < 5


def test_spark_slot_check_gives_up(spark, monkeypatch):
    monkeypatch.setattr(barrier_module, "local_master_slots", lambda master, task_cpus=1: None)
    started = time.perf_counter()
    with pytest.raises(PipelineError, match="cluster offers fewer"):
        run_in_barrier(spark, 3, lambda ctx: None, use_gpu=False)
    assert time.perf_counter() - started < 30


def test_too_few_row_groups_for_the_ranks(spark, tmp_path):
    for split in ("train", "validation"):
        spark.range(8).select(F.array(F.col("id").cast("float")).alias("features"),
                              F.col("id").cast("float").alias("label")).coalesce(1).write.parquet(
            str(tmp_path / split))
    config = TrainConfig(featurize_dir=str(tmp_path), checkpoint_dir=str(tmp_path / "ckpt"), task="regression",
                         feature_dim=1, num_classes=None, train_rows=8)
    with pytest.raises(PipelineError, match="has 1 Parquet row groups, fewer than num_proc=2"):
        fit(spark, config, num_proc=2)


@pytest.mark.parametrize(("task", "feed_memory_mb", "feed"), [
    ("regression", 1024, "in_memory"), ("regression", 0, "streamed"),
    ("binary_classification", 1024, "in_memory"), ("multiclass_classification", 1024, "in_memory"),
])
def test_two_tensorflow_workers_learn(spark, request, tmp_path, task, feed_memory_mb, feed):
    featurize_dir = request.getfixturevalue({"regression": "regression_dir", "binary_classification": "binary_dir",
                                             "multiclass_classification": "multiclass_dir"}[task])
    config = TrainConfig.from_featurize(featurize_dir, tmp_path / "ckpt", epochs=6, batch_size=16,
                                        learning_rate=0.01, patience=0, feed_memory_mb=feed_memory_mb,
                                        framework="tensorflow")
    started = time.perf_counter()
    result = fit(spark, config, num_proc=2)
    print(f"2-worker TensorFlow {task} fit ({feed}): {time.perf_counter() - started:.1f} s, {result.history}")

    assert [entry["epoch"] for entry in result.history] == [1, 2, 3, 4, 5, 6]
    assert result.history[-1]["train_loss"] < 0.7 * result.history[0]["train_loss"]
    assert result.devices == ["CPU:0", "CPU:0"] and result.feed == feed
    assert result.steps_per_epoch == ROWS["train"] // (2 * 16)
    classes = {"regression": 1, "binary_classification": 1, "multiclass_classification": 3}[task]
    assert result.best_state["mlp/hidden_0/kernel"].shape == (FEATURE_DIM, 64)
    assert result.best_state["mlp/output/kernel"].shape == (32, classes)
    if task == "regression":
        assert result.best_metrics["val_loss"] < 0.5 * result.history[0]["val_loss"]
        assert result.best_metrics["val_rmse"] ** 2 == pytest.approx(result.best_metrics["val_loss"], rel=1e-6)
    else:
        assert result.best_metrics["val_accuracy"] > 0.8
    assert (tmp_path / "ckpt" / "checkpoint.keras.npz").exists()


def test_tensorflow_workers_resume_after_a_failed_worker(spark, regression_dir, tmp_path):
    from continuous_training.training.tensorflow_rank import train_worker

    hyper = {"batch_size": 32, "learning_rate": 0.01, "patience": 0, "framework": "tensorflow"}
    two_epochs = TrainConfig.from_featurize(regression_dir, tmp_path, epochs=2, **hyper)

    def dies_after_two_epochs(ctx):
        value = train_worker(ctx, two_epochs)
        if ctx.rank == 1:
            raise RuntimeError("worker 1 lost its executor")
        return value

    with pytest.raises(BarrierStageError, match="worker 1 lost its executor"):
        run_in_barrier(spark, 2, dies_after_two_epochs, use_gpu=False)
    retried = fit(spark, TrainConfig.from_featurize(regression_dir, tmp_path, epochs=4, **hyper), num_proc=2)

    assert retried.start_epoch == 3
    assert [entry["epoch"] for entry in retried.history] == [1, 2, 3, 4]
    assert retried.history[3]["val_loss"] < retried.history[0]["val_loss"]
    torch_config = TrainConfig.from_featurize(regression_dir, tmp_path, epochs=1, **{**hyper, "framework": "torch"})
    assert fit(spark, torch_config, num_proc=2).start_epoch == 1, "a torch run starts over beside a Keras checkpoint"


def test_tensorflow_non_finite_loss_names_epoch_and_step(spark, regression_dir, tmp_path):
    config = TrainConfig.from_featurize(regression_dir, tmp_path, epochs=2, batch_size=16, learning_rate=1e30,
                                        framework="tensorflow")
    with pytest.raises(BarrierStageError, match=r"FloatingPointError: training loss is (inf|nan) at epoch 1, step"):
        fit(spark, config, num_proc=2)
