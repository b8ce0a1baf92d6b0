"""The PyTorch rank body: one Horovod rank per barrier task, fed its Petastorm shard as whole batches (`feed.py`),
from memory on the rank's device when the shard fits `feed_memory_mb`, else streamed. Rank 0 decides early
stopping and broadcasts the decision; every rank starts from rank 0's checkpoint."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from continuous_training.errors import PipelineError
from continuous_training.model.torch_mlp import build_mlp, loss_for, numpy_weights
from continuous_training.training.barrier import RankContext
from continuous_training.training.epochs import (
    RankTrainer,
    TrainConfig,
    check_epoch_losses,
    epoch_record,
    validation_record,
)
from continuous_training.training.feed import Shard, epoch_generator, in_memory_batches, read_shard

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"


def train_rank(rank_context: RankContext, config: TrainConfig, require_gpu: bool = False) -> dict[str, Any]:
    """Body of one Horovod rank; rank 0 returns history and best weights, the others their device."""
    import horovod.torch as hvd

    device = _select_device(rank_context, require_gpu)
    torch.set_num_threads(rank_context.threads)
    hvd.init()
    if hvd.size() != rank_context.size or hvd.rank() != rank_context.rank:
        raise RuntimeError(f"Horovod sees rank {hvd.rank()}/{hvd.size()}, the barrier stage assigned "
                           f"{rank_context.rank}/{rank_context.size}")
    result = _TorchTrainer(config, hvd, device).run()
    hvd.shutdown()
    return result


def torch_gpu_problem() -> str | None:
    """Why this installation cannot train torch on GPUs (torch without CUDA, Horovod without NCCL), or None."""
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
        problem = torch_gpu_problem() or (None if torch.cuda.is_available() else "CUDA is not usable here")
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


class _TorchTrainer(RankTrainer):
    """One Horovod rank's model, optimizer and checkpoint."""

    def __init__(self, config: TrainConfig, hvd: Any, device: torch.device) -> None:
        super().__init__(config, hvd.rank(), hvd.size(), device, device)
        self.hvd = hvd
        torch.manual_seed(config.seed + self.rank)
        self.model = build_mlp(config.feature_dim, config.task, config.num_classes, config.hidden,
                               config.seed).to(device)
        self.loss_fn = loss_for(config.task)
        self.sum_loss_fn = loss_for(config.task, reduction="sum")
        adam = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate * self.size)
        self.optimizer = hvd.DistributedOptimizer(adam, named_parameters=self.model.named_parameters())
        self.checkpoint_path = Path(config.checkpoint_dir) / CHECKPOINT_FILE

    def agreed_decision(self, epoch: int, record: dict[str, float]) -> dict[str, Any]:
        """Rank 0's decision, broadcast to every rank."""
        decision = super().agreed_decision(epoch, record) if self.rank == 0 else None
        return self.hvd.broadcast_object(decision, root_rank=0, name=f"decision.{epoch}")

    def train_epoch(self, epoch: int, train: Any) -> dict[str, float]:
        """One epoch of steps; at its end the first non-finite loss, if any, fails the rank naming its step."""
        config, hvd = self.config, self.hvd
        batches = (in_memory_batches(train, config.batch_size, self.steps,
                                     epoch_generator(config.seed, self.rank, epoch))
                   if self.in_memory else train)
        self.model.train()
        started = time.perf_counter()
        losses = torch.empty(self.steps, device=self.device)
        samples = 0
        for step in range(self.steps):
            features, labels = self.checked(*next(batches))
            self.optimizer.zero_grad()
            loss = self.loss_fn(self.model(features), labels)
            loss.backward()
            self.optimizer.step()
            losses[step] = loss.detach()
            samples += features.shape[0]
        losses = losses.cpu().numpy()
        elapsed = time.perf_counter() - started
        check_epoch_losses(config, losses, epoch, self.rank)
        totals = hvd.allreduce(torch.tensor([losses.mean(), float(samples)], dtype=torch.float64),
                               op=hvd.Sum, name=f"train.{epoch}")
        return epoch_record(epoch, totals[0].item(), totals[1].item(), self.size, elapsed)

    def validate(self) -> dict[str, float]:
        self.model.eval()
        started = time.perf_counter()
        loss_sum = count = extra = 0.0
        with torch.no_grad():
            for features, labels in self.validation_batches():
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

    def read_split(self, split: str) -> Shard:
        shard = read_shard(self.split_url(split), self.rank, self.size, self.device)
        return Shard(*self.checked(shard.features, shard.labels))

    def checked(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of the model's width; labels shaped for the loss (class index, or a column of floats)."""
        self.check_width(features)
        if self.config.task == "multiclass_classification":
            return features, labels.to(torch.long)
        return features, labels.reshape(-1, 1)

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().cpu().clone() for name, t in self.model.state_dict().items()}

    def best_arrays(self) -> dict[str, np.ndarray]:
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        return numpy_weights(self.model)

    def save_checkpoint(self) -> None:
        """Atomic write by rank 0: a temporary file renamed over checkpoint.pt."""
        state = {**self.progress(), "model": {name: t.detach().cpu() for name, t in self.model.state_dict().items()},
                 "optimizer": self.optimizer.state_dict(), "best_state": self.best_weights}
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_name(f".{CHECKPOINT_FILE}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)

    def _restore(self) -> None:
        """Rank 0 loads the checkpoint if it was written for this model and data; every rank then starts from
        rank 0's state."""
        hvd = self.hvd
        state = None
        if self.rank == 0 and self.checkpoint_path.exists():
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
            if not self.resumable(state, self.checkpoint_path):
                state = None
        state = hvd.broadcast_object(state, root_rank=0, name="checkpoint")
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.best_weights = state["best_state"]
            self.resume(state)
        hvd.broadcast_parameters(self.model.state_dict(), root_rank=0)
        hvd.broadcast_optimizer_state(self.optimizer, root_rank=0)


__all__ = ["CHECKPOINT_FILE", "torch_gpu_problem", "train_rank"]
