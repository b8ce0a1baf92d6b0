"""The training model, its loss, and the pure helpers of the training package."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from continuous_training.errors import PipelineError
from continuous_training.model.keras_mlp import build_keras_mlp, keras_loss, keras_weights
from continuous_training.model.torch_mlp import build_mlp, loss_for
from continuous_training.paths import FEATURIZE_FILE, FeaturizeResult
from continuous_training.training.barrier import barrier_spark_conf, local_master_slots
from continuous_training.training.epochs import (
    DEFAULT_RANK_BATCH,
    MIN_STEPS_PER_EPOCH,
    TrainConfig,
    rank_batch_size,
    steps_per_epoch,
)
from torch import nn


@pytest.mark.parametrize(("task", "num_classes", "width"), [
    ("regression", None, 1), ("binary_classification", None, 1), ("multiclass_classification", 4, 4),
])
def test_output_width_follows_the_task(task, num_classes, width):
    model = build_mlp(5, task, num_classes, hidden=(8, 4), seed=1)
    assert model(torch.zeros(3, 5)).shape == (3, width)
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [8, 4, width]


@pytest.mark.parametrize(("task", "num_classes"), [
    ("regression", None), ("binary_classification", None), ("multiclass_classification", 4),
])
def test_the_keras_twin_computes_what_the_torch_mlp_does(task, num_classes):
    torch_model = build_mlp(5, task, num_classes, hidden=(8, 4), seed=1)
    keras_model = build_keras_mlp(5, task, num_classes, hidden=(8, 4), seed=1)
    linear = [m for m in torch_model if isinstance(m, nn.Linear)]
    keras_model.set_weights([array for m in linear for array in (m.weight.detach().numpy().T, m.bias.detach().numpy())])
    features = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    labels = (np.array([0, 1, 3, 2, 1, 0]) if task == "multiclass_classification"
              else np.array([[0.0], [1.0], [1.0], [0.0], [1.0], [0.0]], dtype=np.float32))

    torch_scores = torch_model(torch.from_numpy(features))
    keras_scores = np.asarray(keras_model(features))

    np.testing.assert_allclose(keras_scores, torch_scores.detach().numpy(), atol=1e-5)
    torch_loss = loss_for(task)(torch_scores, torch.from_numpy(labels)).item()
    keras_per_example = np.asarray(keras_loss(task)(labels, keras_scores))
    assert keras_per_example.shape == (6,)
    assert keras_per_example.mean() == pytest.approx(torch_loss, rel=1e-5)
    assert list(keras_weights(keras_model)) == [f"mlp/{layer}/{kind}" for layer in ("hidden_0", "hidden_1", "output")
                                                for kind in ("kernel", "bias")]


def test_same_seed_same_weights_without_touching_the_global_generator():
    before = torch.random.get_rng_state()
    first, second = build_mlp(3, "regression", seed=7), build_mlp(3, "regression", seed=7)
    other = build_mlp(3, "regression", seed=8)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(),
                                                  strict=True))
    assert not torch.equal(first[0].weight, other[0].weight)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="num_classes >= 2"):
        build_mlp(3, "multiclass_classification", None)
    with pytest.raises(ValueError, match="unknown task"):
        build_mlp(3, "ranking")
    with pytest.raises(ValueError, match="unknown task"):
        loss_for("ranking")


def test_losses_per_task():
    assert isinstance(loss_for("regression"), nn.MSELoss)
    assert isinstance(loss_for("binary_classification"), nn.BCEWithLogitsLoss)
    assert isinstance(loss_for("multiclass_classification"), nn.CrossEntropyLoss)
    assert loss_for("regression", reduction="sum").reduction == "sum"


def test_steps_per_epoch_is_the_same_for_every_rank_and_at_least_one():
    assert steps_per_epoch(1000, 2, 64) == 7
    assert steps_per_epoch(10, 4, 64) == 1


def test_a_given_batch_is_kept_and_the_default_batch_leaves_enough_steps_per_epoch():
    assert rank_batch_size(70_000, 2, 16) == 16
    assert rank_batch_size(100, 2, 4096) == 4096
    assert DEFAULT_RANK_BATCH == 512 and MIN_STEPS_PER_EPOCH == 32
    assert rank_batch_size(70_000, 2, None) == 512, "the demo's train split: the full default"
    assert rank_batch_size(2_100, 2, None) == 32
    assert steps_per_epoch(2_100, 2, rank_batch_size(2_100, 2, None)) == 32
    for rows, ranks in [(65_535, 2), (1_000, 3), (64, 2), (63, 2), (5, 4)]:
        batch = rank_batch_size(rows, ranks, None)
        if rows >= ranks * MIN_STEPS_PER_EPOCH:
            assert steps_per_epoch(rows, ranks, batch) >= MIN_STEPS_PER_EPOCH, (rows, ranks, batch)
        else:
            assert batch == 1, (rows, ranks)


@pytest.mark.parametrize(("master", "cpus", "slots"), [
    ("local", 1, 1), ("local[2]", 1, 2), ("local[4]", 2, 2), ("local[3, 2]", 1, 3), ("spark://h:7077", 1, None),
    ("yarn", 1, None),
])
def test_local_master_slots(master, cpus, slots):
    assert local_master_slots(master, cpus) == slots


def test_barrier_spark_conf():
    cpu = barrier_spark_conf(use_gpu=False)
    assert cpu["spark.python.worker.reuse"] == "false"
    assert "spark.task.resource.gpu.amount" not in cpu
    gpu = barrier_spark_conf(use_gpu=True, existing={"spark.executor.resource.gpu.amount": "4"})
    assert gpu["spark.task.resource.gpu.amount"] == "1"
    assert "spark.executor.resource.gpu.amount" not in gpu


def test_config_from_featurize_summary(tmp_path):
    (tmp_path / FEATURIZE_FILE).write_text(json.dumps(asdict(FeaturizeResult(
        dataset="d", run_id="r", task="multiclass_classification", feature_dim=6, num_classes=3,
        classes=["a", "b", "c"], rows={"train": 700, "validation": 150, "test": 150}, numeric=[], categorical=[],
        data_fingerprint="",
    ))))
    config = TrainConfig.from_featurize(tmp_path, tmp_path / "ckpt", epochs=2, hidden=[16])
    assert (config.feature_dim, config.num_classes, config.train_rows, config.hidden) == (6, 3, 700, (16,))
    with pytest.raises(PipelineError, match="learning_rate=0"):
        TrainConfig.from_featurize(tmp_path, tmp_path / "ckpt", learning_rate=0)
    with pytest.raises(PipelineError, match="cannot read the featurize summary"):
        TrainConfig.from_featurize(tmp_path / "missing", tmp_path / "ckpt")
