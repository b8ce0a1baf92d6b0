"""Distributed training: Horovod ranks inside one Spark barrier stage, fed by Petastorm."""

from continuous_training.training.barrier import (
    BarrierStageError,
    RankContext,
    RankResult,
    barrier_spark_conf,
    run_in_barrier,
)
from continuous_training.training.loop import TrainConfig, TrainResult, fit, train_rank
from continuous_training.training.model import build_mlp, loss_for

__all__ = [
    "BarrierStageError",
    "RankContext",
    "RankResult",
    "TrainConfig",
    "TrainResult",
    "barrier_spark_conf",
    "build_mlp",
    "fit",
    "loss_for",
    "run_in_barrier",
    "train_rank",
]
