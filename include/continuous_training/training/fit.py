"""Data-parallel training of the MLP in one Spark barrier stage: one rank per barrier task (Horovod for torch,
`torch_rank`; a MultiWorkerMirroredStrategy cluster for tensorflow, `tensorflow_rank`), each fed its Petastorm
shard; the result comes from rank 0."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

from pyspark.sql import SparkSession

from continuous_training.errors import PipelineError
from continuous_training.training.barrier import run_in_barrier
from continuous_training.training.epochs import TrainConfig, TrainResult, dataset_url, rank_batch_size
from continuous_training.training.tensorflow_rank import tensorflow_gpu_problem, train_worker
from continuous_training.training.torch_rank import torch_gpu_problem, train_rank

log = logging.getLogger(__name__)

RANK_BODIES = {"torch": train_rank, "tensorflow": train_worker}


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


def gpu_build_problem(framework: str = "torch") -> str | None:
    """Why this installation cannot train `framework` on GPUs (torch without CUDA, Horovod without NCCL,
    TensorFlow without CUDA), or None."""
    return tensorflow_gpu_problem() if framework == "tensorflow" else torch_gpu_problem()


def fit(spark: SparkSession, config: TrainConfig, num_proc: int, use_gpu: bool = False,
        require_gpu: bool = False) -> TrainResult:
    """Train with `num_proc` ranks in one Spark barrier stage; the result comes from rank 0. Without a
    `config.batch_size`, each rank takes `rank_batch_size`'s default for `num_proc` ranks (the result's
    `batch_size`).

    With `use_gpu` the ranks ask Spark for a GPU each and train on it when CUDA works there (else on the CPU, or,
    with `require_gpu`, the stage fails with the reason).

    Fitting again with the same `checkpoint_dir` resumes after its last finished epoch (the folder must be
    reachable from every executor, since rank 0 may run on another host the next time).
    """
    check_shardable(config, num_proc)
    config = replace(config, batch_size=rank_batch_size(config.train_rows, num_proc, config.batch_size))
    body = RANK_BODIES[config.framework]
    started = time.perf_counter()
    results = run_in_barrier(spark, num_proc, partial(body, config=config, require_gpu=require_gpu),
                             use_gpu=use_gpu)
    elapsed = time.perf_counter() - started
    chief = results[0].value
    result = TrainResult(
        history=chief["history"], best_epoch=chief["best_epoch"], best_state=chief["best_state"],
        stopped_early=chief["stopped_early"], start_epoch=chief["start_epoch"], num_proc=num_proc,
        devices=[r.value["device"] for r in results], batch_size=config.batch_size,
        steps_per_epoch=chief["steps_per_epoch"], elapsed_s=elapsed, feed=chief["feed"],
        gpu_addresses={r.rank: list(r.gpu_addresses) for r in results},
    )
    log.info("trained %d epochs (from epoch %d) on %d ranks in %.1f s; best epoch %d",
             len(result.history), result.start_epoch, num_proc, elapsed, result.best_epoch)
    return result


__all__ = ["check_shardable", "count_row_groups", "fit", "gpu_build_problem"]
