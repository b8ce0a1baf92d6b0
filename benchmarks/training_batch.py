"""Quality and training time of per-rank batch sizes and learning rates, on the demo datasets.

    .venv/bin/python benchmarks/training_batch.py --rows 100000 --configs 64:0.001 auto:0.001 512:0.003

Generates demo data, runs ingest → validate → featurize through the library for each dataset (churn, churn_plan,
churn_value), then for each `batch:learning_rate` config (`auto`: no batch_size, the trainer's default) trains with
`fit` (real barrier ranks on a local master) and scores the test split with the best epoch's weights. Prints, per
dataset and config, the per-rank batch used, steps per epoch, best epoch, the dataset's test metric (AUC,
accuracy or R²) and the fit's seconds with its ratio to the first config's, and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from continuous_training.config import Settings
from continuous_training.demo import generate
from continuous_training.model.torch_mlp import build_mlp
from continuous_training.paths import FEATURIZE, stage_dir
from continuous_training.pipeline import run_data_stages
from continuous_training.spark import build_spark_session
from continuous_training.spec import load_spec
from continuous_training.training.epochs import TrainConfig
from continuous_training.training.fit import fit
from pyspark.sql import SparkSession
from sklearn.metrics import accuracy_score, r2_score, roc_auc_score

DATASETS = {"churn": 10, "churn_plan": 10, "churn_value": 8}  # dataset: epochs (churn_value's spec trains 8)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "training_batch.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="Rows of demo data.")
    parser.add_argument("--configs", nargs="+", default=["64:0.001", "auto:0.001"],
                        help="batch:learning_rate per run (batch `auto`: the trainer's default); the first is the "
                             "baseline of the time ratios.")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--num-proc", type=int, default=2, help="Ranks (barrier tasks).")
    parser.add_argument("--master", default="local[2]", help="Spark master.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Where to write the JSON figures.")
    return parser.parse_args(argv)


def parse_config(text: str) -> tuple[int | None, float]:
    batch, learning_rate = text.split(":")
    return (None if batch == "auto" else int(batch)), float(learning_rate)


def prepare(spark: SparkSession, settings: Settings, rows: int, datasets: list[str]) -> None:
    """Demo data through ingest, validate and featurize for each dataset (run id `bench`)."""
    generate(rows=rows, batches=4, data_dir=settings.data_dir, bad_fraction=0.01)
    for name in datasets:
        run_data_stages(spark, load_spec(name, settings), "bench", settings, max_quarantine_fraction=0.5)


def score_test_split(config: TrainConfig, weights: dict[str, np.ndarray]) -> tuple[str, float]:
    """The model's test AUC (binary), accuracy (multiclass) or R² (regression) on the featurized test split."""
    table = pq.read_table(f"{config.featurize_dir}/test")
    features = torch.tensor(np.stack(table.column("features").to_numpy(zero_copy_only=False)), dtype=torch.float32)
    labels = table.column("label").to_numpy()
    model = build_mlp(config.feature_dim, config.task, config.num_classes, config.hidden)
    model.load_state_dict({name: torch.from_numpy(np.asarray(value)) for name, value in weights.items()})
    with torch.no_grad():
        scores = model(features).numpy()
    if config.task == "regression":
        return "r2", float(r2_score(labels, scores[:, 0]))
    if config.task == "binary_classification":
        return "auc", float(roc_auc_score(labels, scores[:, 0]))
    return "accuracy", float(accuracy_score(labels, scores.argmax(axis=1)))


def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    settings = Settings(data_dir=data_dir)
    spark = build_spark_session("training-batch-benchmark", {"spark.master": args.master}, settings)
    spark.sparkContext.setLogLevel("ERROR")
    results = []
    try:
        prepare(spark, settings, args.rows, args.datasets)
        for name in args.datasets:
            featurize_dir = stage_dir(name, FEATURIZE, "bench", settings)
            baseline_s = None
            for index, text in enumerate(args.configs):
                batch, learning_rate = parse_config(text)
                config = TrainConfig.from_featurize(featurize_dir, data_dir / "checkpoints" / f"{name}-{index}",
                                                    epochs=DATASETS[name], batch_size=batch,
                                                    learning_rate=learning_rate)
                started = time.perf_counter()
                result = fit(spark, config, args.num_proc)
                seconds = time.perf_counter() - started
                baseline_s = baseline_s or seconds
                metric, value = score_test_split(config, result.best_state)
                results.append({"dataset": name, "config": text, "rank_batch_size": result.batch_size,
                                "steps_per_epoch": result.steps_per_epoch, "best_epoch": result.best_epoch,
                                "metric": metric, "value": round(value, 4), "fit_seconds": round(seconds, 1),
                                "time_ratio": round(seconds / baseline_s, 2)})
                print(json.dumps(results[-1]), flush=True)
    finally:
        spark.stop()
    return {"timestamp": datetime.now(UTC).isoformat(timespec="seconds"), "rows": args.rows,
            "num_proc": args.num_proc, "master": args.master, "results": results}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ct-training-batch-") as tmp:
        figures = run(args, Path(tmp))
    print(f"{'dataset':<12}{'config':>14}{'batch':>7}{'steps':>7}{'best':>6}{'metric':>16}{'fit s':>8}{'x first':>9}")
    for row in figures["results"]:
        print(f"{row['dataset']:<12}{row['config']:>14}{row['rank_batch_size']:>7}{row['steps_per_epoch']:>7}"
              f"{row['best_epoch']:>6}{row['metric']:>9} {row['value']:.4f}{row['fit_seconds']:>8.1f}"
              f"{row['time_ratio']:>9.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
