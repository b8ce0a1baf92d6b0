"""Training throughput of Horovod-in-barrier (1 and 2 ranks) against a plain in-memory PyTorch loop.

    .venv/bin/python benchmarks/training_throughput.py --rows 200000 --features 32

Writes one synthetic regression data set as featurized Parquet (the featurize stage's layout: `features`
array<float>, `label` float, train/ and validation/ with at least 8 files each, featurize.json), then measures
on the same rows, model (`build_mlp`), batch size and optimizer (Adam):

(a) a single-process PyTorch loop over tensors already in memory (no reader, no allreduce), with as many
    intra-op threads as `train_rank` gives a single rank (the CPU count), and again with one thread;
(b) `fit` with 1 Horovod rank in a Spark barrier stage (Petastorm feed, in memory by default; Horovod optimizer);
(c) `fit` with 2 ranks.

Throughput is training samples per second of the epochs' training loops (validation excluded), over all
epochs and over the steady state (the epochs after the first, which also warms the reader up); the headline
ratios use the steady state, the same ratios over all epochs are listed too. The fixed overhead of (b) and (c)
is the stage's wall time minus the time spent in epochs and validation passes: Python worker start, imports,
rendezvous, `hvd.init`, weight broadcast, reader start and checkpoints. Prints a
table and the ratios, and writes them as JSON (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from continuous_training.data.features import FEATURES, LABEL
from continuous_training.spark import build_spark_session
from continuous_training.training.barrier import barrier_spark_conf
from continuous_training.training.loop import TrainConfig, fit
from continuous_training.training.model import build_mlp, loss_for
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

TASK = "regression"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "training_throughput.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="Training rows.")
    parser.add_argument("--validation-rows", type=int, default=20_000, help="Validation rows.")
    parser.add_argument("--features", type=int, default=32, help="Float features per row.")
    parser.add_argument("--files", type=int, default=8, help="Parquet files per split (at least 2).")
    parser.add_argument("--epochs", type=int, default=3, help="Epochs of every variant.")
    parser.add_argument("--batch-size", type=int, default=128, help="Per-rank batch size of every variant.")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (per rank).")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the data and the model.")
    parser.add_argument("--feed-memory-mb", type=int, default=1024,
                        help="TrainConfig.feed_memory_mb of (b) and (c): 0 streams the shards.")
    parser.add_argument("--master", default="local[2]", help="Spark master (needs 2 task slots).")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="Folder for the data and checkpoints (kept); default: a temporary folder, removed.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Where to write the JSON figures.")
    args = parser.parse_args(argv)
    if args.files < 2:
        parser.error("--files must be at least 2 (one row group per rank)")
    return args


def write_dataset(spark: SparkSession, root: Path, args: argparse.Namespace) -> None:
    """Featurize-stage output of a noisy linear target over standard normal features."""
    weights = np.random.default_rng(args.seed).normal(size=args.features)
    for offset, (split, rows) in enumerate((("train", args.rows), ("validation", args.validation_rows))):
        seed = args.seed + 1000 * offset
        columns = [F.randn(seed=seed + i).alias(f"x{i}") for i in range(args.features)]
        frame = spark.range(rows).select(*columns)
        target = sum((float(w) * F.col(f"x{i}") for i, w in enumerate(weights)), F.lit(0.0))
        frame.select(
            F.array(*[F.col(f"x{i}").cast("float") for i in range(args.features)]).alias(FEATURES),
            (target + 0.1 * F.randn(seed=seed - 1)).cast("float").alias(LABEL),
        ).repartition(args.files).write.mode("overwrite").parquet(str(root / split))
    meta = {"task": TASK, "feature_dim": args.features, "num_classes": None,
            "rows": {"train": args.rows, "validation": args.validation_rows, "test": 0}}
    (root / "featurize.json").write_text(json.dumps(meta))


def load_tensors(path: Path, feature_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's features and labels as in-memory tensors (the baseline's input)."""
    table = pq.read_table(path)
    features = table.column(FEATURES).combine_chunks().flatten().to_numpy().reshape(-1, feature_dim)
    labels = table.column(LABEL).to_numpy().reshape(-1, 1)
    return torch.from_numpy(features.astype(np.float32)), torch.from_numpy(labels.astype(np.float32))


def plain_loop(features: torch.Tensor, labels: torch.Tensor, config: TrainConfig, threads: int) -> dict[str, Any]:
    """(a): the training steps of `loop._Trainer` with `threads` intra-op threads, no reader, Horovod or Spark."""
    torch.manual_seed(config.seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    model = build_mlp(config.feature_dim, config.task, config.num_classes, config.hidden, config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_fn = loss_for(config.task)
    setup_s = time.perf_counter() - started
    batch_size = config.batch_size
    steps = max(1, len(features) // batch_size)
    epochs = []
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(features))
        epoch_started = time.perf_counter()
        loss_total = 0.0
        for step in range(steps):
            index = order[step * batch_size:(step + 1) * batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(features[index]), labels[index])
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"training loss is {value}")
            loss.backward()
            optimizer.step()
            loss_total += value
        seconds = time.perf_counter() - epoch_started
        epochs.append({"epoch_seconds": seconds, "samples_per_s": steps * batch_size / seconds,
                       "train_loss": loss_total / steps})
    torch.set_num_threads(previous_threads)
    summary = summarize(epochs, steps * batch_size, overhead_s=setup_s)
    summary["torch_threads"] = threads
    return summary


def barrier_fit(spark: SparkSession, config: TrainConfig, num_proc: int) -> dict[str, Any]:
    """(b)/(c): `fit` with `num_proc` ranks; overhead = stage wall time − epoch and validation time."""
    started = time.perf_counter()
    result = fit(spark, config, num_proc)
    wall_s = time.perf_counter() - started
    in_epochs = sum(entry["epoch_seconds"] + entry["val_seconds"] for entry in result.history)
    samples = result.steps_per_epoch * num_proc * config.batch_size
    summary = summarize(result.history, samples, overhead_s=result.elapsed_s - in_epochs)
    summary.update(num_proc=num_proc, feed=result.feed, fit_wall_s=wall_s, stage_s=result.elapsed_s,
                   validation_s=sum(entry["val_seconds"] for entry in result.history))
    return summary


def summarize(epochs: list[dict[str, float]], samples_per_epoch: int, overhead_s: float) -> dict[str, Any]:
    """Overall and steady-state (epochs after the first) samples/s of one variant."""
    seconds = [entry["epoch_seconds"] for entry in epochs]
    steady = seconds[1:] or seconds
    return {
        "samples_per_epoch": samples_per_epoch,
        "samples_per_s": samples_per_epoch * len(seconds) / sum(seconds),
        "steady_samples_per_s": samples_per_epoch * len(steady) / sum(steady),
        "first_epoch_s": seconds[0],
        "overhead_s": overhead_s,
        "final_train_loss": epochs[-1]["train_loss"],
        "epochs": [{key: float(value) for key, value in entry.items()} for entry in epochs],
    }


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def print_table(results: dict[str, dict[str, Any]], ratios: dict[str, float]) -> None:
    print(f"\n{'variant':<22}{'all epochs/s':>13}{'steady/s':>12}{'1st epoch s':>13}{'overhead s':>12}"
          f"{'final loss':>12}")
    for name, row in results.items():
        print(f"{name:<22}{row['samples_per_s']:>13,.0f}{row['steady_samples_per_s']:>12,.0f}"
              f"{row['first_epoch_s']:>13.2f}{row['overhead_s']:>12.2f}{row['final_train_loss']:>12.4f}")
    for name, value in ratios.items():
        print(f"{name:<28}{value:>8.3f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="training_throughput_"))
    featurize_dir = work / "featurize"
    load_before = load_average()
    # A driver started by `python` (not spark-submit) launches its Python workers with PYSPARK_PYTHON only.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = build_spark_session("training-throughput", {
        "spark.master": args.master, "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "8",
        **barrier_spark_conf(use_gpu=False),
    })
    spark.sparkContext.setLogLevel("ERROR")
    try:
        started = time.perf_counter()
        write_dataset(spark, featurize_dir, args)
        print(f"wrote {args.rows:,} + {args.validation_rows:,} rows x {args.features} features to "
              f"{featurize_dir} in {time.perf_counter() - started:.1f} s")
        config = TrainConfig.from_featurize(featurize_dir, work / "checkpoints", epochs=args.epochs,
                                            batch_size=args.batch_size, learning_rate=args.learning_rate,
                                            patience=0, seed=args.seed, feed_memory_mb=args.feed_memory_mb)
        features, labels = load_tensors(featurize_dir / "train", args.features)
        # (a) uses the intra-op threads `train_rank` gives a single rank; a second run uses one thread.
        cpus = os.cpu_count() or 1
        results = {"a_plain_pytorch": plain_loop(features, labels, config, cpus)}
        results["a_plain_pytorch_1_thread"] = plain_loop(features, labels, config, 1)
        for key in ("a_plain_pytorch", "a_plain_pytorch_1_thread"):
            print(f"(a) plain PyTorch, {results[key]['torch_threads']} thread(s): "
                  f"{results[key]['samples_per_s']:,.0f} samples/s")
        for key, num_proc in (("b_horovod_barrier_1", 1), ("c_horovod_barrier_2", 2)):
            fresh = replace(config, checkpoint_dir=str(work / f"checkpoints_{num_proc}"))
            results[key] = barrier_fit(spark, fresh, num_proc)
            print(f"({key[0]}) {num_proc} rank(s): {results[key]['samples_per_s']:,.0f} samples/s, "
                  f"overhead {results[key]['overhead_s']:.1f} s")
    finally:
        spark.stop()
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    ratios = {}
    for measure, suffix in (("steady_samples_per_s", ""), ("samples_per_s", " (all epochs)")):
        a, b, c = (results[key][measure] for key in ("a_plain_pytorch", "b_horovod_barrier_1", "c_horovod_barrier_2"))
        ratios.update({f"b/a{suffix}": b / a, f"c/a{suffix}": c / a, f"c/b{suffix}": c / b})
        ratios[f"c/a_1_thread{suffix}"] = c / results["a_plain_pytorch_1_thread"][measure]
    print_table(results, ratios)
    report = {
        "benchmark": "training_throughput",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "torch": torch.__version__, "load_average_before": load_before,
                    "load_average_after": load_average()},
        "config": {"rows": args.rows, "validation_rows": args.validation_rows, "features": args.features,
                   "files_per_split": args.files, "epochs": args.epochs, "batch_size": args.batch_size,
                   "learning_rate": args.learning_rate, "hidden": list(config.hidden), "master": args.master,
                   "feed_memory_mb": args.feed_memory_mb},
        "results": results,
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
