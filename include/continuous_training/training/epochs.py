"""What the torch and Keras rank bodies share: the training config and result, the batch and step rules, early
stopping, the epoch and validation records, and `RankTrainer`, one rank's run through its epochs.

Each rank trains on `batch_size` rows a step, so a step covers `batch_size × ranks` rows (the global batch), and
Adam's learning rate is `learning_rate × ranks` (the gradients are averaged over the ranks). Without a
`batch_size`, a rank takes DEFAULT_RANK_BATCH rows, fewer when an epoch would otherwise take less than
MIN_STEPS_PER_EPOCH steps.

Every rank takes the same number of steps per epoch (a shard smaller than its share of the steps repeats).
Early stopping is decided from metrics reduced over the ranks, so every rank stops at the same epoch; rank 0
checkpoints after every epoch (and writes the epoch records so far to `history.json` beside the checkpoint, which
the driver reports as they come) and a retried stage resumes at the next epoch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from continuous_training.errors import PipelineError
from continuous_training.model.tasks import TASKS, output_dim
from continuous_training.paths import FEATURIZE_FILE, FeaturizeResult, read_featurize_result, write_text_atomic
from continuous_training.spec import FRAMEWORKS, TrainParams
from continuous_training.training.feed import (
    READER_WORKERS,
    eval_batches,
    shard_bytes,
    streamed_batches,
    streamed_eval_batches,
)

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
HISTORY_FILE = "history.json"  # beside the checkpoint: rank 0's epoch records so far, read by the driver
DEFAULT_RANK_BATCH = 512
MIN_STEPS_PER_EPOCH = 32
MIN_DELTA = 0.0  # how much the validation loss must fall to count as an improvement
_DEFAULTS = TrainParams()


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
    epochs: int = _DEFAULTS.epochs
    batch_size: int | None = _DEFAULTS.batch_size
    learning_rate: float = _DEFAULTS.learning_rate
    patience: int = _DEFAULTS.patience
    seed: int = _DEFAULTS.seed
    hidden: tuple[int, ...] = (64, 32)
    feed_memory_mb: int = 1024
    framework: str = _DEFAULTS.framework

    def __post_init__(self) -> None:
        output_dim(self.task, self.num_classes)
        if self.framework not in FRAMEWORKS:
            raise PipelineError(f"invalid training config values: framework={self.framework!r} "
                                f"(expected one of {', '.join(FRAMEWORKS)})")
        checks = {
            "feature_dim": self.feature_dim >= 1, "train_rows": self.train_rows >= 1, "epochs": self.epochs >= 1,
            "batch_size": self.batch_size is None or self.batch_size >= 1, "learning_rate": self.learning_rate > 0,
            "patience": self.patience >= 0, "feed_memory_mb": self.feed_memory_mb >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise PipelineError(f"invalid training config values: {values}")

    @classmethod
    def from_featurize(cls, featurize_dir: str | Path, checkpoint_dir: str | Path,
                       features: FeaturizeResult | None = None, **hyper: Any) -> TrainConfig:
        """Config for the output of the featurize stage (`features`, read from its featurize.json when not given);
        `hyper` sets the rest."""
        if features is None:
            try:
                features = read_featurize_result(Path(featurize_dir))
            except PipelineError as error:
                raise PipelineError(f"cannot read the featurize summary ({error})") from error
        if features.task not in TASKS:
            raise PipelineError(f"{Path(featurize_dir) / FEATURIZE_FILE}: unknown task {features.task!r}")
        if "hidden" in hyper:
            hyper["hidden"] = tuple(hyper["hidden"])
        return cls(featurize_dir=str(featurize_dir), checkpoint_dir=str(checkpoint_dir), task=features.task,
                   feature_dim=int(features.feature_dim), num_classes=features.num_classes,
                   train_rows=int(features.rows["train"]), validation_rows=int(features.rows.get("validation", 0)),
                   data_fingerprint=features.data_fingerprint, **hyper)

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
    feed: str
    gpu_addresses: dict[int, list[str]]

    @property
    def best_metrics(self) -> dict[str, float]:
        """The history entry of the best epoch."""
        return next(entry for entry in self.history if entry["epoch"] == self.best_epoch)


def dataset_url(path: str | Path) -> str:
    """A URL Petastorm and pyarrow accept: URLs pass through, local paths become absolute file:// URLs."""
    text = str(path)
    return text if "://" in text else f"file://{Path(text).resolve()}"


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
    """The bookkeeping after one epoch: improved on the best validation loss, epochs waited, stop now."""
    improved = record["val_loss"] < best_val_loss - MIN_DELTA
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


class RankTrainer:
    """One rank's training run: resume from the checkpoint, train the epochs left (early stopping; rank 0 writes a
    checkpoint after each), and return rank 0's history and best weights.

    A subclass supplies the framework's part: `_restore` and `save_checkpoint` (the checkpoint with `progress`),
    `read_split` (the rank's whole shard, checked, on its device), `checked` (a batch as the model takes it),
    `train_epoch` and `validate` (records from sums reduced over the ranks), `snapshot` (a copy of the weights) and
    `best_arrays` (the best weights as numpy arrays by name, what the logged model stores)."""

    def __init__(self, config: TrainConfig, rank: int, size: int, device: Any, feed_device: torch.device) -> None:
        self.config = config
        self.rank, self.size = rank, size
        self.device = device
        self.feed_device = feed_device
        self.steps = steps_per_epoch(config.train_rows, size, config.batch_size)
        self.in_memory = config.fits_in_memory(size)
        self.validation: Any = None
        self.history: list[dict[str, float]] = []
        self.best_weights: Any = None
        self.best_epoch = 0
        self.best_val_loss = math.inf
        self.wait = 0
        self.stopped_early = False
        self.completed_epochs = 0

    def run(self) -> dict[str, Any]:
        """Train; rank 0 returns history and best weights (numpy arrays by name), the others their device."""
        self._restore()
        start_epoch = self.completed_epochs + 1
        if not (self.stopped_early or self.completed_epochs >= self.config.epochs):
            self._train_epochs(start_epoch)
        if self.rank != 0:
            return {"rank": self.rank, "device": str(self.device)}
        return {
            "rank": 0, "device": str(self.device), "history": self.history, "best_epoch": self.best_epoch,
            "best_state": self.best_arrays(), "stopped_early": self.stopped_early, "start_epoch": start_epoch,
            "steps_per_epoch": self.steps, "feed": "in_memory" if self.in_memory else "streamed",
        }

    def _train_epochs(self, start_epoch: int) -> None:
        config = self.config
        if self.in_memory:
            train = self.read_split("train")
            self.validation = self.read_split("validation")
        else:
            train = streamed_batches(self.split_url("train"), self.rank, self.size, config.batch_size,
                                     config.seed + start_epoch, READER_WORKERS, self.feed_device)
        try:
            for epoch in range(start_epoch, config.epochs + 1):
                record = self.train_epoch(epoch, train)
                record.update(self.validate())
                self._apply(self.agreed_decision(epoch, record))
                if self.rank == 0:
                    self.save_checkpoint()
                    write_text_atomic(Path(config.checkpoint_dir) / HISTORY_FILE, json.dumps(self.history))
                if self.stopped_early:
                    break
        finally:
            if not self.in_memory:
                train.close()

    def _apply(self, decision: dict[str, Any]) -> None:
        self.history.append(decision["record"])
        self.completed_epochs = decision["epoch"]
        self.wait = decision["wait"]
        self.stopped_early = decision["stop"]
        if decision["improved"]:
            self.best_val_loss = decision["record"]["val_loss"]
            self.best_epoch = decision["epoch"]
            self.best_weights = self.snapshot()

    def agreed_decision(self, epoch: int, record: dict[str, float]) -> dict[str, Any]:
        """The early-stopping decision every rank applies: here each rank decides from the same reduced record."""
        return early_stopping_decision(self.config, epoch, record, self.best_val_loss, self.wait)

    def split_url(self, split: str) -> str:
        return f"{dataset_url(self.config.featurize_dir)}/{split}"

    def check_width(self, features: Any) -> None:
        """Fail unless `features` is a batch of the model's input width."""
        if features.ndim != 2 or features.shape[1] != self.config.feature_dim:
            raise PipelineError(f"features have shape {tuple(features.shape)}, expected "
                                f"(batch, {self.config.feature_dim})")

    def validation_batches(self) -> Iterator[tuple[Any, Any]]:
        """The rank's validation shard in checked batches: from memory, or streamed onto the feed device."""
        if self.in_memory:
            return eval_batches(self.validation)
        streamed = streamed_eval_batches(self.split_url("validation"), self.rank, self.size, READER_WORKERS,
                                         self.feed_device)
        return (self.checked(*batch) for batch in streamed)

    def progress(self) -> dict[str, Any]:
        """The bookkeeping a checkpoint stores beside the weights."""
        return {"format": CHECKPOINT_FORMAT, "signature": self.config.signature(), "epoch": self.completed_epochs,
                "best_epoch": self.best_epoch, "best_val_loss": self.best_val_loss, "wait": self.wait,
                "stopped_early": self.stopped_early, "history": self.history}

    def resumable(self, stored: dict[str, Any], path: Path) -> bool:
        """Whether a checkpoint was written for this model and data; training starts over when it was not."""
        if stored.get("format") == CHECKPOINT_FORMAT and stored.get("signature") == self.config.signature():
            return True
        log.warning("not resuming from %s: it was written for %s, this attempt trains %s; starting at epoch 1",
                    path, stored.get("signature"), self.config.signature())
        return False

    def resume(self, stored: dict[str, Any]) -> None:
        """Take the bookkeeping of a resumable checkpoint (`progress`)."""
        self.best_epoch = stored["best_epoch"]
        self.best_val_loss = stored["best_val_loss"]
        self.wait = stored["wait"]
        self.stopped_early = stored["stopped_early"]
        self.history = list(stored["history"])
        self.completed_epochs = stored["epoch"]
