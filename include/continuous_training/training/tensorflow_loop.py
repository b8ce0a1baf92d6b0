"""The TensorFlow rank body: a Keras MLP trained by the workers of a `MultiWorkerMirroredStrategy` cluster, one
worker per task of the same barrier stage the PyTorch ranks use (`barrier.py`; the cluster is its `peers`).

It keeps the PyTorch body's contract (`loop.train_rank`): the same shards, steps per epoch and batch order
(`feed.py`), the learning rate scaled by the worker count with gradients summed over workers of losses divided by
it (an average, as Horovod does), losses kept on the device until the epoch ends, validation sums reduced over
the workers, the same early-stopping rule, and a checkpoint after every epoch written by worker 0 that every
worker of a retried stage resumes from. Horovod's TensorFlow integration does not build against the pinned
TensorFlow, so the strategy's own collectives reduce the gradients (ring over gRPC on CPUs, NCCL on GPUs).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from continuous_training.errors import PipelineError
from continuous_training.training.barrier import RankContext
from continuous_training.training.feed import (
    EVAL_BATCH_ROWS,
    epoch_generator,
    epoch_order,
    read_shard,
    streamed_batches,
    streamed_eval_batches,
)
from continuous_training.training.keras_model import build_keras_mlp, keras_loss
from continuous_training.training.loop import (
    CHECKPOINT_FORMAT,
    TrainConfig,
    check_epoch_losses,
    dataset_url,
    early_stopping_decision,
    epoch_record,
    gpu_build_problem,
    steps_per_epoch,
    validation_record,
)

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.keras.npz"
CPU = torch.device("cpu")


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
        problem = gpu_build_problem("tensorflow") or (None if gpus else "CUDA is not usable here")
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


class _KerasTrainer:
    """State of one worker's training run."""

    def __init__(self, config: TrainConfig, strategy, rank: int, size: int, device: str) -> None:
        import keras
        import tensorflow as tf

        self.tf = tf
        self.config = config
        self.strategy = strategy
        self.rank, self.size, self.device = rank, size, device
        self.steps = steps_per_epoch(config.train_rows, size, config.batch_size)
        self.in_memory = config.fits_in_memory(size)
        with strategy.scope():
            self.model = build_keras_mlp(config.feature_dim, config.task, config.num_classes, config.hidden,
                                         config.seed)
            self.optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate * size)
            self.optimizer.build(self.model.trainable_variables)
        self.loss_fn = keras_loss(config.task)
        self.checkpoint_path = Path(config.checkpoint_dir) / CHECKPOINT_FILE
        self.history: list[dict[str, float]] = []
        self.best_weights: list[np.ndarray] | None = None
        self.best_epoch = 0
        self.best_val_loss = math.inf
        self.wait = 0
        self.stopped_early = False
        self.completed_epochs = 0
        self.validation = None
        self.train_step = tf.function(self._train_step)
        self.train_indexed = tf.function(self._train_indexed)
        self.eval_step = tf.function(self._eval_step)
        self.all_sum = tf.function(self._all_sum)

    def run(self) -> dict[str, Any]:
        self._restore()
        start_epoch = self.completed_epochs + 1
        if not self._finished():
            self._train_epochs(start_epoch)
        if self.rank != 0:
            return {"rank": self.rank, "device": self.device}
        best = self.best_weights if self.best_weights is not None else self.model.get_weights()
        paths = [weight.path for weight in self.model.weights]
        return {
            "rank": 0, "device": self.device, "history": self.history, "best_epoch": self.best_epoch,
            "best_state": dict(zip(paths, best, strict=True)), "stopped_early": self.stopped_early,
            "start_epoch": start_epoch, "steps_per_epoch": self.steps,
            "feed": "in_memory" if self.in_memory else "streamed",
        }

    def _finished(self) -> bool:
        return self.stopped_early or self.completed_epochs >= self.config.epochs

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

    def _train_epochs(self, start_epoch: int) -> None:
        config = self.config
        if self.in_memory:
            train = self._read_shard("train")
            self.validation = self._read_shard("validation")
        else:
            streamed = streamed_batches(self._split_url("train"), self.rank, self.size, config.batch_size,
                                        config.seed + start_epoch, config.reader_workers, CPU)
        try:
            for epoch in range(start_epoch, config.epochs + 1):
                record = (self._train_epoch_in_memory(epoch, *train) if self.in_memory else
                          self._train_epoch(epoch, lambda _: self.train_step(*self._checked(*next(streamed)))))
                record.update(self._validate())
                self._apply(early_stopping_decision(config, epoch, record, self.best_val_loss, self.wait))
                if self.rank == 0:
                    self._save_checkpoint()
                    log.info("epoch %d: %s", epoch, json.dumps(record))
                if self.stopped_early:
                    break
        finally:
            if not self.in_memory:
                streamed.close()

    def _train_epoch_in_memory(self, epoch: int, features, labels) -> dict[str, float]:
        order = epoch_order(int(features.shape[0]), self.steps * self.config.batch_size,
                            epoch_generator(self.config.seed, self.rank, epoch)).numpy()
        with self.tf.device(self.device):
            order = self.tf.constant(order.reshape(self.steps, self.config.batch_size))
        return self._train_epoch(epoch, lambda step: self.train_indexed(features, labels, order[step]))

    def _train_epoch(self, epoch: int, step_fn: Callable[[int], Any]) -> dict[str, float]:
        """One epoch of `step_fn(step)` calls, each returning its loss on the device; the first non-finite loss,
        read once at the end, fails the worker naming its step."""
        started = time.perf_counter()
        losses = [step_fn(step) for step in range(self.steps)]
        losses = self.tf.stack(losses).numpy()
        elapsed = time.perf_counter() - started
        check_epoch_losses(self.config, losses, epoch, self.rank)
        samples = self.steps * self.config.batch_size
        totals = self.all_sum(self.tf.constant([float(losses.mean()), float(samples)], dtype=self.tf.float64))
        return epoch_record(epoch, *(float(value) for value in totals.numpy()), self.size, elapsed)

    def _validate(self) -> dict[str, float]:
        tf = self.tf
        started = time.perf_counter()
        if self.in_memory:
            features, labels = self.validation
            rows = int(features.shape[0])
            batches = ((features[start:start + EVAL_BATCH_ROWS], labels[start:start + EVAL_BATCH_ROWS])
                       for start in range(0, rows, EVAL_BATCH_ROWS))
        else:
            batches = (self._checked(*batch) for batch in streamed_eval_batches(
                self._split_url("validation"), self.rank, self.size, self.config.reader_workers, CPU))
        local = tf.zeros([3], dtype=tf.float64)
        for batch in batches:
            local += self.eval_step(*batch)
        return validation_record(self.config, *(float(value) for value in self.all_sum(local).numpy()), started)

    def _read_shard(self, split: str):
        shard = read_shard(self._split_url(split), self.rank, self.size, CPU)
        with self.tf.device(self.device):
            return self._checked(shard.features, shard.labels)

    def _checked(self, features: torch.Tensor, labels: torch.Tensor):
        """TensorFlow tensors of the model's width; labels as class indices (multiclass) or a column of floats."""
        if features.ndim != 2 or features.shape[1] != self.config.feature_dim:
            raise PipelineError(f"features have shape {tuple(features.shape)}, expected "
                                f"(batch, {self.config.feature_dim})")
        labels = labels.numpy()
        labels = labels.astype(np.int64) if self.config.task == "multiclass_classification" else labels.reshape(-1, 1)
        return self.tf.constant(features.numpy()), self.tf.constant(labels)

    def _apply(self, decision: dict[str, Any]) -> None:
        self.history.append(decision["record"])
        self.completed_epochs = decision["epoch"]
        self.wait = decision["wait"]
        self.stopped_early = decision["stop"]
        if decision["improved"]:
            self.best_val_loss = decision["record"]["val_loss"]
            self.best_epoch = decision["epoch"]
            self.best_weights = self.model.get_weights()

    def _split_url(self, split: str) -> str:
        return f"{dataset_url(self.config.featurize_dir)}/{split}"

    # Checkpoints: arrays in one .npz, the bookkeeping as JSON inside it.

    def _save_checkpoint(self) -> None:
        """Atomic write by worker 0: a temporary file renamed over the checkpoint."""
        meta = {"format": CHECKPOINT_FORMAT, "signature": self.config.signature(), "epoch": self.completed_epochs,
                "best_epoch": self.best_epoch, "best_val_loss": self.best_val_loss, "wait": self.wait,
                "stopped_early": self.stopped_early, "history": self.history,
                "has_best": self.best_weights is not None}
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
        same state everywhere); a checkpoint of other data or another model shape is not resumed."""
        if not self.checkpoint_path.exists():
            return
        with np.load(self.checkpoint_path, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            if meta.get("format") != CHECKPOINT_FORMAT or meta.get("signature") != self.config.signature():
                log.warning("not resuming from %s: it was written for %s, this attempt trains %s; starting at "
                            "epoch 1", self.checkpoint_path, meta.get("signature"), self.config.signature())
                return
            self.model.set_weights([stored[f"model_{i}"] for i in range(len(self.model.weights))])
            for index, variable in enumerate(self.optimizer.variables):
                variable.assign(stored[f"optimizer_{index}"])
            if meta["has_best"]:
                self.best_weights = [stored[f"best_{i}"] for i in range(len(self.model.weights))]
        self.best_epoch = meta["best_epoch"]
        self.best_val_loss = meta["best_val_loss"]
        self.wait = meta["wait"]
        self.stopped_early = meta["stopped_early"]
        self.history = list(meta["history"])
        self.completed_epochs = meta["epoch"]


__all__ = ["train_worker"]
