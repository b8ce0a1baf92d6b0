"""Data-parallel training of the MLP: one rank per barrier task, each fed its Petastorm shard as whole batches
(`feed.py`): from memory, on the rank's device, when the shard fits `feed_memory_mb`, else streamed. The PyTorch
rank body (`train_rank`, Horovod) is here; the TensorFlow one (`tensorflow_loop.train_worker`) shares the launcher,
the config, the feed and the early-stopping rule.

Every rank takes the same number of steps per epoch (a shard smaller than its share of the steps repeats), so
gradient allreduces never wait on a rank that ran out of data. Rank 0 decides early stopping from allreduced metrics,
broadcasts the decision, and checkpoints after every epoch so that a retried stage resumes at the next epoch.

Each rank trains on `batch_size` rows a step, so a step covers `batch_size × ranks` rows (the global batch), and
Adam's learning rate is `learning_rate × ranks` (the gradients are averaged over the ranks). Without a
`batch_size`, a rank takes DEFAULT_RANK_BATCH rows, fewer when an epoch would otherwise take less than
MIN_STEPS_PER_EPOCH steps: large enough to keep a GPU, or a CPU's vector units, busy, small enough that a small
training split still gets enough updates.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyspark.sql import SparkSession

from continuous_training.errors import PipelineError
from continuous_training.training.barrier import RankContext, run_in_barrier
from continuous_training.training.feed import (
    Shard,
    epoch_generator,
    eval_batches,
    in_memory_batches,
    read_shard,
    shard_bytes,
    streamed_batches,
    streamed_eval_batches,
)
from continuous_training.training.model import build_mlp, loss_for
from continuous_training.training.tasks import TASKS, output_dim

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
FRAMEWORKS = ("torch", "tensorflow")
DEFAULT_RANK_BATCH = 512
MIN_STEPS_PER_EPOCH = 32


@dataclass(frozen=True)
class TrainConfig:
    """Everything a rank needs to train (picklable: it travels to the executors)."""

    featurize_dir: str
    checkpoint_dir: str
    task: str
    feature_dim: int
    num_classes: int | None
    train_rows: int
    validation_rows: int = 0
    data_fingerprint: str = ""
    epochs: int = 10
    batch_size: int | None = None
    learning_rate: float = 1e-3
    patience: int = 3
    min_delta: float = 0.0
    seed: int = 42
    hidden: tuple[int, ...] = (64, 32)
    feed_memory_mb: int = 1024
    reader_workers: int = 2
    framework: str = "torch"

    def __post_init__(self) -> None:
        output_dim(self.task, self.num_classes)
        if self.framework not in FRAMEWORKS:
            raise PipelineError(f"invalid training config values: framework={self.framework!r} "
                                f"(expected one of {', '.join(FRAMEWORKS)})")
        checks = {
            "feature_dim": self.feature_dim >= 1, "train_rows": self.train_rows >= 1, "epochs": self.epochs >= 1,
            "batch_size": self.batch_size is None or self.batch_size >= 1, "learning_rate": self.learning_rate > 0,
            "patience": self.patience >= 0, "min_delta": self.min_delta >= 0,
            "feed_memory_mb": self.feed_memory_mb >= 0, "reader_workers": self.reader_workers >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise PipelineError(f"invalid training config values: {values}")

    @classmethod
    def from_featurize(cls, featurize_dir: str | Path, checkpoint_dir: str | Path, **hyper: Any) -> TrainConfig:
        """Config for the output of the featurize stage (reads its featurize.json); `hyper` sets the rest."""
        meta_path = Path(featurize_dir) / "featurize.json"
        try:
            meta = json.loads(meta_path.read_text())
            task, feature_dim, train_rows = meta["task"], int(meta["feature_dim"]), int(meta["rows"]["train"])
            validation_rows = int(meta["rows"].get("validation", 0))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise PipelineError(f"cannot read the featurize summary {meta_path}: {error}") from error
        if task not in TASKS:
            raise PipelineError(f"{meta_path}: unknown task {task!r}")
        if "hidden" in hyper:
            hyper["hidden"] = tuple(hyper["hidden"])
        return cls(featurize_dir=str(featurize_dir), checkpoint_dir=str(checkpoint_dir), task=task,
                   feature_dim=feature_dim, num_classes=meta.get("num_classes"), train_rows=train_rows,
                   validation_rows=validation_rows,
                   data_fingerprint=meta.get("data_fingerprint", ""), **hyper)

    def fits_in_memory(self, size: int) -> bool:
        """Whether a rank's shards of train and validation together fit `feed_memory_mb`."""
        needed = (shard_bytes(self.train_rows, size, self.feature_dim)
                  + shard_bytes(self.validation_rows, size, self.feature_dim))
        return needed <= self.feed_memory_mb * 2**20

    def signature(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed by this config: the model's shape and the data it saw."""
        return {"task": self.task, "feature_dim": self.feature_dim, "num_classes": self.num_classes,
                "hidden": list(self.hidden), "data_fingerprint": self.data_fingerprint, "framework": self.framework}


@dataclass
class TrainResult:
    """Outcome of `fit` on the driver."""

    history: list[dict[str, float]]
    best_epoch: int
    best_state: dict[str, np.ndarray]
    stopped_early: bool
    start_epoch: int
    num_proc: int
    devices: list[str]
    batch_size: int
    steps_per_epoch: int
    elapsed_s: float
    feed: str = "in_memory"
    rank_hosts: list[str] = field(default_factory=list)
    gpu_addresses: dict[int, list[str]] = field(default_factory=dict)

    @property
    def best_metrics(self) -> dict[str, float]:
        """The history entry of the best epoch."""
        return next(entry for entry in self.history if entry["epoch"] == self.best_epoch)


def dataset_url(path: str | Path) -> str:
    """A URL Petastorm and pyarrow accept: URLs pass through, local paths become absolute file:// URLs."""
    text = str(path)
    return text if "://" in text else f"file://{Path(text).resolve()}"


def count_row_groups(path: str | Path) -> int:
    """Number of Parquet row groups under a folder (from file footers only)."""
    import pyarrow.dataset as pads

    dataset = pads.dataset(dataset_url(path), format="parquet")
    return sum(fragment.metadata.num_row_groups for fragment in dataset.get_fragments())


def check_shardable(config: TrainConfig, num_proc: int) -> None:
    """Raise PipelineError unless train/ and validation/ each have at least one row group per rank."""
    for split in ("train", "validation"):
        path = f"{config.featurize_dir.rstrip('/')}/{split}"
        try:
            groups = count_row_groups(path)
        except (OSError, ValueError) as error:
            raise PipelineError(f"cannot read the {split} split at {path}: {error}") from error
        if groups < num_proc:
            raise PipelineError(
                f"{path} has {groups} Parquet row groups, fewer than num_proc={num_proc}: every rank needs "
                f"its own row groups; write the split as at least {num_proc} files or lower num_proc"
            )


def rank_batch_size(train_rows: int, size: int, batch_size: int | None) -> int:
    """The rows each of `size` ranks trains on per step: `batch_size` when given; else DEFAULT_RANK_BATCH, lowered
    (down to 1) so that one pass over `train_rows` takes at least MIN_STEPS_PER_EPOCH steps."""
    if batch_size is not None:
        return batch_size
    return max(1, min(DEFAULT_RANK_BATCH, train_rows // (size * MIN_STEPS_PER_EPOCH)))


def steps_per_epoch(train_rows: int, size: int, batch_size: int) -> int:
    """Steps every rank takes per epoch: one pass over the training rows in global batches, at least 1."""
    return max(1, train_rows // (size * batch_size))


def early_stopping_decision(config: TrainConfig, epoch: int, record: dict[str, float], best_val_loss: float,
                            wait: int) -> dict[str, Any]:
    """Rank 0's bookkeeping after one epoch: improved on the best validation loss, epochs waited, stop now."""
    improved = record["val_loss"] < best_val_loss - config.min_delta
    wait = 0 if improved else wait + 1
    return {
        "record": record, "epoch": epoch, "improved": improved, "wait": wait,
        "stop": config.patience > 0 and wait >= config.patience and epoch < config.epochs,
    }


def check_epoch_losses(config: TrainConfig, losses: np.ndarray, epoch: int, rank: int) -> None:
    """Fail naming the epoch and step of the first non-finite loss of a rank's epoch."""
    non_finite = np.flatnonzero(~np.isfinite(losses))
    if len(non_finite):
        step = int(non_finite[0])
        raise FloatingPointError(
            f"training loss is {losses[step]} at epoch {epoch}, step {step + 1} (rank {rank}): "
            f"lower learning_rate (now {config.learning_rate}) or check the features for extreme values"
        )


def epoch_record(epoch: int, loss_sum: float, samples: float, size: int, elapsed: float) -> dict[str, float]:
    """The history entry of an epoch from the ranks' summed mean losses and samples."""
    return {"epoch": epoch, "train_loss": loss_sum / size, "samples_per_s": samples / elapsed if elapsed > 0 else 0.0,
            "epoch_seconds": elapsed}


def validation_record(config: TrainConfig, loss_sum: float, count: float, extra: float,
                      started: float) -> dict[str, float]:
    """Validation metrics from the sums over all ranks: loss, and RMSE (regression) or accuracy."""
    if count == 0:
        raise PipelineError("the validation split is empty: no rank read any validation rows")
    record = {"val_loss": loss_sum / count, "val_seconds": time.perf_counter() - started}
    if not math.isfinite(record["val_loss"]):
        raise FloatingPointError(f"validation loss is {record['val_loss']}: lower learning_rate "
                                 f"(now {config.learning_rate})")
    if config.task == "regression":
        record["val_rmse"] = math.sqrt(extra / count)
    else:
        record["val_accuracy"] = extra / count
    return record


def fit(spark: SparkSession, config: TrainConfig, num_proc: int, use_gpu: bool = False,
        require_gpu: bool = False) -> TrainResult:
    """Train with `num_proc` ranks (Horovod for torch, a MultiWorkerMirroredStrategy cluster for tensorflow) in
    one Spark barrier stage; the result comes from rank 0. Without a `config.batch_size`, each rank takes
    `rank_batch_size`'s default for `num_proc` ranks (the result's `batch_size`).

    With `use_gpu` the ranks ask Spark for a GPU each and train on it when CUDA works there (else on the CPU, or,
    with `require_gpu`, the stage fails with the reason).

    Fitting again with the same `checkpoint_dir` resumes after its last finished epoch (the folder must be
    reachable from every executor, since rank 0 may run on another host the next time).
    """
    check_shardable(config, num_proc)
    config = replace(config, batch_size=rank_batch_size(config.train_rows, num_proc, config.batch_size))
    if config.framework == "tensorflow":
        from continuous_training.training.tensorflow_loop import train_worker as body
    else:
        body = train_rank
    started = time.perf_counter()
    results = run_in_barrier(spark, num_proc, partial(body, config=config, require_gpu=require_gpu),
                             use_gpu=use_gpu)
    elapsed = time.perf_counter() - started
    chief = results[0].value
    result = TrainResult(
        history=chief["history"], best_epoch=chief["best_epoch"], best_state=chief["best_state"],
        stopped_early=chief["stopped_early"], start_epoch=chief["start_epoch"], num_proc=num_proc,
        devices=[r.value["device"] for r in results], batch_size=config.batch_size,
        steps_per_epoch=chief["steps_per_epoch"],
        elapsed_s=elapsed, feed=chief["feed"], rank_hosts=[r.host for r in results],
        gpu_addresses={r.rank: list(r.gpu_addresses) for r in results},
    )
    log.info("trained %d epochs (from epoch %d) on %d ranks in %.1f s; best epoch %d",
             len(result.history), result.start_epoch, num_proc, elapsed, result.best_epoch)
    return result


def train_rank(rank_context: RankContext, config: TrainConfig, require_gpu: bool = False) -> dict[str, Any]:
    """Body of one Horovod rank; rank 0 returns history and best weights, the others their device."""
    import horovod.torch as hvd

    device = _select_device(rank_context, require_gpu)
    torch.set_num_threads(rank_context.threads)
    hvd.init()
    if hvd.size() != rank_context.size or hvd.rank() != rank_context.rank:
        raise RuntimeError(f"Horovod sees rank {hvd.rank()}/{hvd.size()}, the barrier stage assigned "
                           f"{rank_context.rank}/{rank_context.size}")
    result = _Trainer(config, hvd, device).run()
    hvd.shutdown()
    return result


def gpu_build_problem(framework: str = "torch") -> str | None:
    """Why this installation cannot train `framework` on GPUs (torch without CUDA, Horovod without NCCL,
    TensorFlow without CUDA), or None."""
    if framework == "tensorflow":
        import tensorflow as tf

        return None if tf.test.is_built_with_cuda() else f"tensorflow {tf.__version__} is built without CUDA"
    import horovod.torch as hvd

    if not torch.backends.cuda.is_built():
        return f"torch {torch.__version__} is built without CUDA"
    if not hvd.nccl_built():
        return "Horovod is built without NCCL (HOROVOD_GPU_OPERATIONS is a build flag, not a run-time setting)"
    return None


def _select_device(rank_context: RankContext, require_gpu: bool) -> torch.device:
    """The GPU Spark assigned this rank, made the only one it sees (CUDA_VISIBLE_DEVICES takes any address
    form), when CUDA works and Horovod has NCCL; else the CPU, or with `require_gpu` an error saying why."""
    addresses = rank_context.gpu_addresses
    if addresses:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(addresses)
        problem = gpu_build_problem() or (None if torch.cuda.is_available() else "CUDA is not usable here")
    else:
        problem = "Spark assigned it no GPU"
    if problem is None:
        torch.cuda.set_device(0)
        return torch.device("cuda:0")
    if require_gpu:
        raise PipelineError(f"use_gpu=true: rank {rank_context.rank} cannot train on a GPU: {problem}")
    if addresses:
        log.warning("rank %d was assigned GPU(s) %s but trains on CPU: %s", rank_context.rank, addresses, problem)
    return torch.device("cpu")


class _Trainer:
    """State of one rank's training run."""

    def __init__(self, config: TrainConfig, hvd: Any, device: torch.device) -> None:
        self.config = config
        self.hvd = hvd
        self.device = device
        self.rank, self.size = hvd.rank(), hvd.size()
        self.steps = steps_per_epoch(config.train_rows, self.size, config.batch_size)
        self.in_memory = config.fits_in_memory(self.size)
        self.validation: Shard | None = None
        torch.manual_seed(config.seed + self.rank)
        self.model = build_mlp(config.feature_dim, config.task, config.num_classes, config.hidden,
                               config.seed).to(device)
        self.loss_fn = loss_for(config.task)
        self.sum_loss_fn = loss_for(config.task, reduction="sum")
        adam = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate * self.size)
        self.optimizer = hvd.DistributedOptimizer(adam, named_parameters=self.model.named_parameters())
        self.checkpoint_path = Path(config.checkpoint_dir) / CHECKPOINT_FILE
        self.history: list[dict[str, float]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = 0
        self.best_val_loss = math.inf
        self.wait = 0
        self.stopped_early = False
        self.completed_epochs = 0

    def run(self) -> dict[str, Any]:
        self._restore()
        start_epoch = self.completed_epochs + 1
        if not self._finished():
            self._train_epochs(start_epoch)
        if self.rank != 0:
            return {"rank": self.rank, "device": str(self.device)}
        best = self.best_state if self.best_state is not None else self.model.state_dict()
        return {
            "rank": 0, "device": str(self.device), "history": self.history, "best_epoch": self.best_epoch,
            "best_state": {name: tensor.detach().cpu().numpy() for name, tensor in best.items()},
            "stopped_early": self.stopped_early, "start_epoch": start_epoch, "steps_per_epoch": self.steps,
            "feed": "in_memory" if self.in_memory else "streamed",
        }

    def _finished(self) -> bool:
        return self.stopped_early or self.completed_epochs >= self.config.epochs

    def _train_epochs(self, start_epoch: int) -> None:
        config, hvd = self.config, self.hvd
        if self.in_memory:
            train = self._read_shard("train")
            self.validation = self._read_shard("validation")
        else:
            streamed = streamed_batches(self._split_url("train"), self.rank, self.size, config.batch_size,
                                        config.seed + start_epoch, config.reader_workers, self.device)
        try:
            for epoch in range(start_epoch, config.epochs + 1):
                batches = (in_memory_batches(train, config.batch_size, self.steps,
                                             epoch_generator(config.seed, self.rank, epoch))
                           if self.in_memory else streamed)
                record = self._train_epoch(epoch, batches)
                record.update(self._validate())
                decision = hvd.broadcast_object(self._decide(epoch, record) if self.rank == 0 else None,
                                                root_rank=0, name=f"decision.{epoch}")
                self._apply(decision)
                if self.rank == 0:
                    self._save_checkpoint()
                    log.info("epoch %d: %s", epoch, json.dumps(record))
                if self.stopped_early:
                    break
        finally:
            if not self.in_memory:
                streamed.close()

    def _train_epoch(self, epoch: int, batches: Any) -> dict[str, float]:
        """One epoch of steps; the losses stay on the device until its end (no host sync per step), then the
        first non-finite one, if any, fails the rank naming its step."""
        hvd = self.hvd
        self.model.train()
        started = time.perf_counter()
        losses = torch.empty(self.steps, device=self.device)
        samples = 0
        for step in range(self.steps):
            features, labels = self._checked(*next(batches))
            self.optimizer.zero_grad()
            loss = self.loss_fn(self.model(features), labels)
            loss.backward()
            self.optimizer.step()
            losses[step] = loss.detach()
            samples += features.shape[0]
        losses = losses.cpu().numpy()
        elapsed = time.perf_counter() - started
        check_epoch_losses(self.config, losses, epoch, self.rank)
        totals = hvd.allreduce(torch.tensor([losses.mean(), float(samples)], dtype=torch.float64),
                               op=hvd.Sum, name=f"train.{epoch}")
        return epoch_record(epoch, totals[0].item(), totals[1].item(), self.size, elapsed)

    def _validate(self) -> dict[str, float]:
        self.model.eval()
        started = time.perf_counter()
        loss_sum = count = extra = 0.0
        batches = (eval_batches(self.validation) if self.validation is not None else
                   streamed_eval_batches(self._split_url("validation"), self.rank, self.size,
                                         self.config.reader_workers, self.device))
        with torch.no_grad():
            for batch in batches:
                features, labels = self._checked(*batch)
                outputs = self.model(features)
                loss_sum += self.sum_loss_fn(outputs, labels).item()
                count += features.shape[0]
                extra += self._extra_metric_sum(outputs, labels)
        totals = self.hvd.allreduce(torch.tensor([loss_sum, count, extra], dtype=torch.float64),
                                    op=self.hvd.Sum, name="validation")
        return validation_record(self.config, *(value.item() for value in totals), started)

    def _extra_metric_sum(self, outputs: torch.Tensor, labels: torch.Tensor) -> float:
        """Squared error (regression) or number of correct predictions (classification) of one batch."""
        if self.config.task == "regression":
            return torch.sum((outputs - labels) ** 2).item()
        if self.config.task == "binary_classification":
            return torch.sum((outputs > 0).to(labels.dtype) == labels).item()
        return torch.sum(outputs.argmax(dim=1) == labels).item()

    def _read_shard(self, split: str) -> Shard:
        shard = read_shard(self._split_url(split), self.rank, self.size, self.device)
        features, labels = self._checked(shard.features, shard.labels)
        return Shard(features, labels)

    def _checked(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of the model's width; labels shaped for the loss (class index, or a column of floats)."""
        if features.ndim != 2 or features.shape[1] != self.config.feature_dim:
            raise PipelineError(f"features have shape {tuple(features.shape)}, expected "
                                f"(batch, {self.config.feature_dim})")
        if self.config.task == "multiclass_classification":
            return features, labels.to(torch.long)
        return features, labels.reshape(-1, 1)

    def _decide(self, epoch: int, record: dict[str, float]) -> dict[str, Any]:
        return early_stopping_decision(self.config, epoch, record, self.best_val_loss, self.wait)

    def _apply(self, decision: dict[str, Any]) -> None:
        self.history.append(decision["record"])
        self.completed_epochs = decision["epoch"]
        self.wait = decision["wait"]
        self.stopped_early = decision["stop"]
        if decision["improved"]:
            self.best_val_loss = decision["record"]["val_loss"]
            self.best_epoch = decision["epoch"]
            self.best_state = {name: t.detach().cpu().clone() for name, t in self.model.state_dict().items()}

    def _split_url(self, split: str) -> str:
        return f"{dataset_url(self.config.featurize_dir)}/{split}"

    def _state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "signature": self.config.signature(), "epoch": self.completed_epochs,
            "model": {name: t.detach().cpu() for name, t in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(), "best_state": self.best_state,
            "best_epoch": self.best_epoch, "best_val_loss": self.best_val_loss, "wait": self.wait,
            "stopped_early": self.stopped_early, "history": self.history,
        }

    def _save_checkpoint(self) -> None:
        """Atomic write by rank 0: a temporary file renamed over checkpoint.pt."""
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_name(f".{CHECKPOINT_FILE}.tmp")
        torch.save(self._state(), tmp)
        os.replace(tmp, self.checkpoint_path)

    def _restore(self) -> None:
        """Rank 0 loads the checkpoint if it was written for this model and data; every rank then starts from
        rank 0's state. A checkpoint of other data or another model shape is not resumed: training starts over."""
        hvd = self.hvd
        state = None
        if self.rank == 0 and self.checkpoint_path.exists():
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
            if state.get("format") != CHECKPOINT_FORMAT or state.get("signature") != self.config.signature():
                log.warning("not resuming from %s: it was written for %s, this attempt trains %s; starting at epoch 1",
                            self.checkpoint_path, state.get("signature"), self.config.signature())
                state = None
        state = hvd.broadcast_object(state, root_rank=0, name="checkpoint")
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.best_state = state["best_state"]
            self.best_epoch = state["best_epoch"]
            self.best_val_loss = state["best_val_loss"]
            self.wait = state["wait"]
            self.stopped_early = state["stopped_early"]
            self.history = list(state["history"])
            self.completed_epochs = state["epoch"]
        hvd.broadcast_parameters(self.model.state_dict(), root_rank=0)
        hvd.broadcast_optimizer_state(self.optimizer, root_rank=0)


__all__ = ["FRAMEWORKS", "TrainConfig", "TrainResult", "check_epoch_losses", "check_shardable", "count_row_groups",
           "dataset_url", "early_stopping_decision", "epoch_record", "fit", "steps_per_epoch", "train_rank",
           "validation_record"]
