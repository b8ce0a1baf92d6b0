"""Training throughput of Horovod-in-barrier (1 and 2 ranks) against a plain in-memory PyTorch loop.

    .venv/bin/python benchmarks/training_throughput.py --rows 200000 --features 32

Writes one synthetic regression data set as featurized Parquet (the featurize stage's layout: `features`
array<float>, `label` float, train/ and validation/ with at least 8 files each, featurize.json), then measures
on the same rows, model (`build_mlp`), batch size and optimizer (Adam):

(a) a single-process PyTorch loop over tensors already in memory (no reader, no allreduce), with as many
    intra-op threads as `train_rank` gives a single rank (the CPU count), and again with one thread;
(b) `fit` with 1 Horovod rank in a Spark barrier stage (Petastorm feed, in memory by default; Horovod optimizer);
(c) `fit` with 2 ranks;
and the same for TensorFlow (`--frameworks`, default both): (d) a plain single-process Keras loop over the same
tensors (`build_keras_mlp`, Adam, one `tf.function` step that gathers its batch, as the workers do), (e) `fit` with
`framework="tensorflow"` and 1 worker, (f) with 2 workers; TensorFlow against PyTorch at the same worker count.

With `--gpu` (a GPU host; no JVM or Spark needed, only the wheels the project imports) the same comparisons run
on `cuda` and, on the same host, on the CPU: (a) the plain loop over tensors already on the device (on the GPU
this is the GPU-tensor limit), and (b) one rank of `train_rank`, the body every barrier task runs, launched in a
fresh process as a single Horovod rank that Spark would have assigned GPU "0". Two ranks need two GPUs, so (c) is
left out; GPU vs CPU ratios are added.

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
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from continuous_training.data.features import FEATURES, LABEL
from continuous_training.model.torch_mlp import build_mlp, loss_for
from continuous_training.paths import FEATURIZE, FEATURIZE_FILE, FeaturizeResult
from continuous_training.spark import build_spark_session
from continuous_training.training.barrier import RankContext, barrier_spark_conf
from continuous_training.training.epochs import TrainConfig
from continuous_training.training.fit import fit
from continuous_training.training.torch_rank import train_rank
from pyspark.sql import SparkSession

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
    parser.add_argument("--frameworks", default="torch,tensorflow",
                        help="Comma-separated frameworks to measure without --gpu (torch, tensorflow).")
    parser.add_argument("--gpu", action="store_true",
                        help="Compare on cuda and on the CPU of this host, one rank without Spark (see above).")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="Folder for the data and checkpoints (kept); default: a temporary folder, removed.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Where to write the JSON figures.")
    args = parser.parse_args(argv)
    if args.files < 2:
        parser.error("--files must be at least 2 (one row group per rank)")
    return args


def write_dataset(root: Path, args: argparse.Namespace) -> None:
    """Featurize-stage output of a noisy linear target over standard normal features (one row group per file)."""
    rng = np.random.default_rng(args.seed)
    weights = rng.normal(size=args.features).astype(np.float32)
    for split, rows in (("train", args.rows), ("validation", args.validation_rows)):
        features = rng.standard_normal((rows, args.features), dtype=np.float32)
        labels = features @ weights + 0.1 * rng.standard_normal(rows, dtype=np.float32)
        (root / split).mkdir(parents=True)
        for part, index in enumerate(np.array_split(np.arange(rows), args.files)):
            column = pa.ListArray.from_arrays(
                pa.array(np.arange(len(index) + 1, dtype=np.int32) * args.features),
                pa.array(features[index].ravel()))
            table = pa.table({FEATURES: column, LABEL: pa.array(labels[index])})
            pq.write_table(table, root / split / f"part-{part:05d}.parquet", row_group_size=len(index))
    meta = FeaturizeResult(dataset="synthetic", run_id="benchmark", task=TASK, feature_dim=args.features,
                           num_classes=None, classes=None,
                           rows={"train": args.rows, "validation": args.validation_rows, "test": 0},
                           numeric=[], categorical=[], data_fingerprint="")
    (root / FEATURIZE_FILE).write_text(json.dumps(asdict(meta)))


def load_tensors(path: Path, feature_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's features and labels as in-memory tensors (the baseline's input)."""
    table = pq.read_table(path)
    features = table.column(FEATURES).combine_chunks().flatten().to_numpy().reshape(-1, feature_dim)
    labels = table.column(LABEL).to_numpy().reshape(-1, 1)
    return torch.from_numpy(features.astype(np.float32)), torch.from_numpy(labels.astype(np.float32))


def plain_loop(features: torch.Tensor, labels: torch.Tensor, config: TrainConfig, threads: int) -> dict[str, Any]:
    """(a): the training steps of `torch_rank._TorchTrainer` with `threads` intra-op threads, no reader, Horovod or
    Spark, on the device the tensors are on."""
    torch.manual_seed(config.seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    device = features.device
    model = build_mlp(config.feature_dim, config.task, config.num_classes, config.hidden, config.seed).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_fn = loss_for(config.task)
    setup_s = time.perf_counter() - started
    batch_size = config.batch_size
    steps = max(1, len(features) // batch_size)
    epochs = []
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(features), device=device)
        epoch_started = time.perf_counter()
        losses = torch.empty(steps, device=device)
        for step in range(steps):
            index = order[step * batch_size:(step + 1) * batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(features[index]), labels[index])
            loss.backward()
            optimizer.step()
            losses[step] = loss.detach()
        losses = losses.cpu()
        seconds = time.perf_counter() - epoch_started
        if not torch.isfinite(losses).all():
            raise FloatingPointError("training loss is not finite")
        epochs.append({"epoch_seconds": seconds, "samples_per_s": steps * batch_size / seconds,
                       "train_loss": losses.mean().item()})
    torch.set_num_threads(previous_threads)
    summary = summarize(epochs, steps * batch_size, overhead_s=setup_s)
    summary["torch_threads"] = threads
    return summary


def plain_keras_loop(features: np.ndarray, labels: np.ndarray, config: TrainConfig, threads: int) -> dict[str, Any]:
    """(d): the Keras workers' training step (`tensorflow_rank._KerasTrainer`) in one process with `threads`
    intra-op threads: batches gathered inside one `tf.function` step, no reader, strategy or Spark."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras
    from continuous_training.model.keras_mlp import build_keras_mlp, keras_loss

    started = time.perf_counter()
    model = build_keras_mlp(config.feature_dim, config.task, config.num_classes, config.hidden, config.seed)
    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
    loss_fn = keras_loss(config.task)
    all_features, all_labels = tf.constant(features), tf.constant(labels)

    @tf.function
    def step(index):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(loss_fn(tf.gather(all_labels, index), model(tf.gather(all_features, index),
                                                                                training=True)))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables,
                                      strict=True))
        return loss

    setup_s = time.perf_counter() - started
    batch_size = config.batch_size
    steps = max(1, len(features) // batch_size)
    rng = np.random.default_rng(config.seed)
    epochs = []
    for _ in range(config.epochs):
        order = tf.constant(rng.permutation(len(features))[:steps * batch_size].reshape(steps, batch_size))
        epoch_started = time.perf_counter()
        losses = tf.stack([step(order[index]) for index in range(steps)]).numpy()
        seconds = time.perf_counter() - epoch_started
        if not np.isfinite(losses).all():
            raise FloatingPointError("training loss is not finite")
        epochs.append({"epoch_seconds": seconds, "samples_per_s": steps * batch_size / seconds,
                       "train_loss": float(losses.mean())})
    summary = summarize(epochs, steps * batch_size, overhead_s=setup_s)
    summary["threads"] = threads
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


def direct_rank(config: TrainConfig, gpu: bool) -> dict[str, Any]:
    """(b) with `--gpu`: `train_rank` as the single rank of a fresh process (what a barrier task runs), given
    GPU "0" or none; overhead = process wall time − epoch and validation time."""
    context = RankContext(rank=0, size=1, local_rank=0, local_size=1, host="localhost",
                          gpu_addresses=["0"] if gpu else [], threads=os.cpu_count() or 1)
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        value = pool.apply(train_rank, (context, config), {"require_gpu": gpu})
    wall_s = time.perf_counter() - started
    history = value["history"]
    in_epochs = sum(entry["epoch_seconds"] + entry["val_seconds"] for entry in history)
    summary = summarize(history, value["steps_per_epoch"] * config.batch_size, overhead_s=wall_s - in_epochs)
    summary.update(num_proc=1, feed=value["feed"], device=value["device"], wall_s=wall_s,
                   final_val_loss=history[-1]["val_loss"])
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


def measure_barrier(args: argparse.Namespace, work: Path, config: TrainConfig) -> tuple[dict, dict]:
    """Per framework: the plain loop on the CPU, then 1 and 2 ranks in Spark barrier stages; results and ratios."""
    # A driver started by `python` (not spark-submit) launches its Python workers with PYSPARK_PYTHON only.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    frameworks = args.frameworks.split(",")
    features, labels = load_tensors(work / FEATURIZE / "train", args.features)
    # The plain loops use the intra-op threads `train_rank` gives a single rank; torch's once more with one thread.
    cpus = os.cpu_count() or 1
    results = {}
    if "torch" in frameworks:
        results["a_plain_pytorch"] = plain_loop(features, labels, config, cpus)
        results["a_plain_pytorch_1_thread"] = plain_loop(features, labels, config, 1)
    if "tensorflow" in frameworks:
        results["d_plain_keras"] = plain_keras_loop(features.numpy(), labels.numpy(), config, cpus)
    for key, row in results.items():
        print(f"({key[0]}) {key}: {row['samples_per_s']:,.0f} samples/s")
    spark = build_spark_session("training-throughput", {
        "spark.master": args.master, "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "8",
        **barrier_spark_conf(use_gpu=False),
    })
    spark.sparkContext.setLogLevel("ERROR")
    variants = {"torch": (("b_horovod_barrier_1", 1), ("c_horovod_barrier_2", 2)),
                "tensorflow": (("e_tensorflow_barrier_1", 1), ("f_tensorflow_barrier_2", 2))}
    try:
        for framework in frameworks:
            for key, num_proc in variants[framework]:
                fresh = replace(config, checkpoint_dir=str(work / f"checkpoints_{key}"), framework=framework)
                results[key] = barrier_fit(spark, fresh, num_proc)
                print(f"({key[0]}) {key}: {results[key]['samples_per_s']:,.0f} samples/s, "
                      f"overhead {results[key]['overhead_s']:.1f} s")
    finally:
        spark.stop()
    ratios = {}
    for measure, suffix in (("steady_samples_per_s", ""), ("samples_per_s", " (all epochs)")):
        value = {key: row[measure] for key, row in results.items()}
        pairs = {"b/a": ("b_horovod_barrier_1", "a_plain_pytorch"), "c/a": ("c_horovod_barrier_2", "a_plain_pytorch"),
                 "c/b": ("c_horovod_barrier_2", "b_horovod_barrier_1"),
                 "c/a_1_thread": ("c_horovod_barrier_2", "a_plain_pytorch_1_thread"),
                 "e/d": ("e_tensorflow_barrier_1", "d_plain_keras"), "f/d": ("f_tensorflow_barrier_2", "d_plain_keras"),
                 "f/e": ("f_tensorflow_barrier_2", "e_tensorflow_barrier_1"),
                 "d/a": ("d_plain_keras", "a_plain_pytorch"), "e/b": ("e_tensorflow_barrier_1", "b_horovod_barrier_1"),
                 "f/c": ("f_tensorflow_barrier_2", "c_horovod_barrier_2")}
        ratios.update({f"{name}{suffix}": value[top] / value[bottom] for name, (top, bottom) in pairs.items()
                       if top in value and bottom in value})
    return results, ratios


def measure_gpu(args: argparse.Namespace, work: Path, config: TrainConfig) -> tuple[dict, dict]:
    """(a) and (b) on cuda, then the same on the CPU of this host; results and ratios."""
    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs a usable CUDA device: torch.cuda.is_available() is False")
    features, labels = load_tensors(work / FEATURIZE / "train", args.features)
    cpus = os.cpu_count() or 1
    results = {}
    for device in ("cuda", "cpu"):
        results[f"a_plain_pytorch_{device}"] = plain_loop(features.to(device), labels.to(device), config, cpus)
        fresh = replace(config, checkpoint_dir=str(work / f"checkpoints_{device}"))
        results[f"b_horovod_rank_{device}"] = direct_rank(fresh, gpu=device == "cuda")
        for key in (f"a_plain_pytorch_{device}", f"b_horovod_rank_{device}"):
            print(f"({key[0]}) {key}: {results[key]['samples_per_s']:,.0f} samples/s")
    ratios = {}
    for measure, suffix in (("steady_samples_per_s", ""), ("samples_per_s", " (all epochs)")):
        a_gpu, b_gpu, a_cpu, b_cpu = (results[key][measure] for key in (
            "a_plain_pytorch_cuda", "b_horovod_rank_cuda", "a_plain_pytorch_cpu", "b_horovod_rank_cpu"))
        ratios.update({f"b/a cuda{suffix}": b_gpu / a_gpu, f"b/a cpu{suffix}": b_cpu / a_cpu,
                       f"b cuda/b cpu{suffix}": b_gpu / b_cpu, f"a cuda/a cpu{suffix}": a_gpu / a_cpu})
    return results, ratios


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="training_throughput_"))
    featurize_dir = work / FEATURIZE
    load_before = load_average()
    try:
        started = time.perf_counter()
        write_dataset(featurize_dir, args)
        print(f"wrote {args.rows:,} + {args.validation_rows:,} rows x {args.features} features to "
              f"{featurize_dir} in {time.perf_counter() - started:.1f} s")
        config = TrainConfig.from_featurize(featurize_dir, work / "checkpoints", epochs=args.epochs,
                                            batch_size=args.batch_size, learning_rate=args.learning_rate,
                                            patience=0, seed=args.seed, feed_memory_mb=args.feed_memory_mb)
        results, ratios = (measure_gpu if args.gpu else measure_barrier)(args, work, config)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results, ratios)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
               "torch": torch.__version__, "load_average_before": load_before, "load_average_after": load_average()}
    if args.gpu:
        machine["gpu"] = torch.cuda.get_device_name(0)
    report = {
        "benchmark": "training_throughput",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "config": {"rows": args.rows, "validation_rows": args.validation_rows, "features": args.features,
                   "files_per_split": args.files, "epochs": args.epochs, "batch_size": args.batch_size,
                   "learning_rate": args.learning_rate, "hidden": list(config.hidden),
                   "master": None if args.gpu else args.master, "feed_memory_mb": args.feed_memory_mb,
                   "gpu": args.gpu, "frameworks": ["torch"] if args.gpu else args.frameworks.split(",")},
        "results": results,
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
