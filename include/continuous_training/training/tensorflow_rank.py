"""The TensorFlow rank body: a Keras MLP trained by the workers of a `MultiWorkerMirroredStrategy` cluster, one
worker per task of the barrier stage (`barrier.py`; the cluster is its `peers`).

Same contract as `torch_rank.train_rank`: shards, steps per epoch and batch order (`feed.py`), learning rate
scaled by the worker count, gradients averaged over the workers, validation sums reduced over them, early stopping,
and a checkpoint after every epoch written by worker 0 that every worker of a retried stage resumes from. The
strategy's collectives reduce the gradients (ring over gRPC on CPUs, NCCL on GPUs): Horovod's TensorFlow
integration does not build against the pinned TensorFlow.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from continuous_training.errors import PipelineError
from continuous_training.model.keras_mlp import build_keras_mlp, keras_loss, keras_weights
from continuous_training.training.barrier import RankContext
from continuous_training.training.epochs import (
    RankTrainer,
    TrainConfig,
    check_epoch_losses,
    epoch_record,
    validation_record,
)
from continuous_training.training.feed import Shard, epoch_generator, epoch_order, read_shard

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.keras.npz"
CPU = torch.device("cpu")


def tensorflow_gpu_problem() -> str | None:
    """Why this installation cannot train TensorFlow on GPUs (TensorFlow built without CUDA), or None."""
    import tensorflow as tf

    return None if tf.test.is_built_with_cuda() else f"tensorflow {tf.__version__} is built without CUDA"


def train_worker(rank_context: RankContext, config: TrainConfig, require_gpu: bool = False) -> dict[str, Any]:
    """Body of one TensorFlow worker; worker 0 returns history and best weights, the others their device."""
    addresses = rank_context.gpu_addresses
    # TensorFlow reads these once, at import: the GPU Spark assigned (or none), and the worker cluster.
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(addresses) if addresses else "-1"
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": list(rank_context.peers)},
                                          "task": {"type": "worker", "index": rank_context.rank}})
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    problem = None
    if addresses:
        problem = tensorflow_gpu_problem() or (None if gpus else "CUDA is not usable here")
    if problem and require_gpu:
        raise PipelineError(f"use_gpu=true: worker {rank_context.rank} cannot train on a GPU: {problem}")
    if problem:
        log.warning("worker %d was assigned GPU(s) %s but trains on CPU: %s", rank_context.rank, addresses, problem)
    on_gpu = bool(addresses) and problem is None
    tf.config.set_visible_devices(gpus[:1] if on_gpu else [], "GPU")
    tf.config.threading.set_intra_op_parallelism_threads(rank_context.threads)
    tf.config.threading.set_inter_op_parallelism_threads(rank_context.threads)
    implementation = (tf.distribute.experimental.CommunicationImplementation.NCCL if on_gpu
                      else tf.distribute.experimental.CommunicationImplementation.RING)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(implementation=implementation))
    if strategy.num_replicas_in_sync != rank_context.size:
        raise RuntimeError(f"the TensorFlow cluster has {strategy.num_replicas_in_sync} replicas, the barrier "
                           f"stage started {rank_context.size} workers")
    return _KerasTrainer(config, strategy, rank_context.rank, rank_context.size,
                         "GPU:0" if on_gpu else "CPU:0").run()


class _KerasTrainer(RankTrainer):
    """One worker's model, optimizer, traced steps and checkpoint."""

    def __init__(self, config: TrainConfig, strategy, rank: int, size: int, device: str) -> None:
        import keras
        import tensorflow as tf

        super().__init__(config, rank, size, device, CPU)
        self.tf = tf
        self.strategy = strategy
        with strategy.scope():
            self.model = build_keras_mlp(config.feature_dim, config.task, config.num_classes, config.hidden,
                                         config.seed)
            self.optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate * size)
            self.optimizer.build(self.model.trainable_variables)
        self.loss_fn = keras_loss(config.task)
        self.checkpoint_path = Path(config.checkpoint_dir) / CHECKPOINT_FILE
        self.train_step = tf.function(self._train_step)
        self.train_indexed = tf.function(self._train_indexed)
        self.eval_step = tf.function(self._eval_step)
        self.all_sum = tf.function(self._all_sum)

    # Replica and cross-worker steps (traced once by tf.function).

    def _replica_step(self, features, labels):
        tf = self.tf
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(self.loss_fn(labels, self.model(features, training=True)))
            share = loss / self.strategy.num_replicas_in_sync
        gradients = tape.gradient(share, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables, strict=True))
        return loss

    def _train_step(self, features, labels):
        losses = self.strategy.run(self._replica_step, args=(features, labels))
        return self.strategy.experimental_local_results(losses)[0]

    def _train_indexed(self, features, labels, index):
        return self._train_step(self.tf.gather(features, index), self.tf.gather(labels, index))

    def _eval_step(self, features, labels):
        tf = self.tf
        outputs = self.model(features, training=False)
        loss_sum = tf.reduce_sum(self.loss_fn(labels, outputs))
        if self.config.task == "regression":
            extra = tf.reduce_sum(tf.square(outputs - labels))
        elif self.config.task == "binary_classification":
            extra = tf.reduce_sum(tf.cast(tf.cast(outputs > 0, labels.dtype) == labels, tf.float32))
        else:
            extra = tf.reduce_sum(tf.cast(tf.argmax(outputs, axis=1) == labels, tf.float32))
        return tf.stack([tf.cast(loss_sum, tf.float64), tf.cast(tf.shape(labels)[0], tf.float64),
                         tf.cast(extra, tf.float64)])

    def _all_sum(self, values):
        per_replica = self.strategy.run(self.tf.identity, args=(values,))
        return self.strategy.reduce(self.tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    # Epochs.

    def train_epoch(self, epoch: int, train: Any) -> dict[str, float]:
        """One epoch of steps; at its end the first non-finite loss, if any, fails the worker naming its step."""
        started = time.perf_counter()
        if self.in_memory:
            order = epoch_order(int(train.rows), self.steps * self.config.batch_size,
                                epoch_generator(self.config.seed, self.rank, epoch)).numpy()
            with self.tf.device(self.device):
                order = self.tf.constant(order.reshape(self.steps, self.config.batch_size))
            losses = [self.train_indexed(train.features, train.labels, order[step]) for step in range(self.steps)]
        else:
            losses = [self.train_step(*self.checked(*next(train))) for _ in range(self.steps)]
        losses = self.tf.stack(losses).numpy()
        elapsed = time.perf_counter() - started
        check_epoch_losses(self.config, losses, epoch, self.rank)
        samples = self.steps * self.config.batch_size
        totals = self.all_sum(self.tf.constant([float(losses.mean()), float(samples)], dtype=self.tf.float64))
        return epoch_record(epoch, *(float(value) for value in totals.numpy()), self.size, elapsed)

    def validate(self) -> dict[str, float]:
        tf = self.tf
        started = time.perf_counter()
        local = tf.zeros([3], dtype=tf.float64)
        for batch in self.validation_batches():
            local += self.eval_step(*batch)
        return validation_record(self.config, *(float(value) for value in self.all_sum(local).numpy()), started)

    def read_split(self, split: str) -> Shard:
        shard = read_shard(self.split_url(split), self.rank, self.size, CPU)
        with self.tf.device(self.device):
            return Shard(*self.checked(shard.features, shard.labels))

    def checked(self, features: torch.Tensor, labels: torch.Tensor):
        """TensorFlow tensors of the model's width; labels as class indices (multiclass) or a column of floats."""
        self.check_width(features)
        labels = labels.numpy()
        labels = labels.astype(np.int64) if self.config.task == "multiclass_classification" else labels.reshape(-1, 1)
        return self.tf.constant(features.numpy()), self.tf.constant(labels)

    def snapshot(self) -> list[np.ndarray]:
        return self.model.get_weights()

    def best_arrays(self) -> dict[str, np.ndarray]:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        return keras_weights(self.model)

    # Checkpoints: arrays in one .npz, the bookkeeping as JSON inside it.

    def save_checkpoint(self) -> None:
        """Atomic write by worker 0: a temporary file renamed over the checkpoint."""
        meta = {**self.progress(), "has_best": self.best_weights is not None}
        arrays = {"meta": np.array(json.dumps(meta))}
        arrays.update({f"model_{i}": value for i, value in enumerate(self.model.get_weights())})
        arrays.update({f"optimizer_{i}": np.asarray(v.numpy()) for i, v in enumerate(self.optimizer.variables)})
        arrays.update({f"best_{i}": value for i, value in enumerate(self.best_weights or [])})
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_name(f".{CHECKPOINT_FILE}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, self.checkpoint_path)

    def _restore(self) -> None:
        """Every worker loads the checkpoint if it was written for this model and data (the same file, so the
        same state everywhere)."""
        if not self.checkpoint_path.exists():
            return
        with np.load(self.checkpoint_path, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            if not self.resumable(meta, self.checkpoint_path):
                return
            self.model.set_weights([stored[f"model_{i}"] for i in range(len(self.model.weights))])
            for index, variable in enumerate(self.optimizer.variables):
                variable.assign(stored[f"optimizer_{index}"])
            if meta["has_best"]:
                self.best_weights = [stored[f"best_{i}"] for i in range(len(self.model.weights))]
        self.resume(meta)


__all__ = ["CHECKPOINT_FILE", "tensorflow_gpu_problem", "train_worker"]
