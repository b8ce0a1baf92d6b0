"""The train stage: fit a candidate in a Spark barrier stage (Horovod ranks for torch, MultiWorkerMirroredStrategy
workers for tensorflow) and record everything in its MLflow run."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession

from continuous_training.config import Settings, get_settings
from continuous_training.data.features import check_serving_parity, feature_transform
from continuous_training.errors import PipelineError
from continuous_training.model.pyfunc import log_pyfunc_model
from continuous_training.model.transform import FeatureTransform
from continuous_training.paths import (
    CHECKPOINTS_DIR,
    FEATURIZE,
    FEATURIZE_FILE,
    STATS,
    STATS_FILE,
    STATS_REPORT_FILE,
    TRAIN,
    FeaturizeResult,
    read_featurize_result,
    stage_dir,
)
from continuous_training.spark import col
from continuous_training.spec import DatasetSpec, Framework, TrainParams, UseGpu
from continuous_training.tracking import (
    AIRFLOW_DAG_ID_TAG,
    AIRFLOW_TASK_ID_TAG,
    CANDIDATE_MODEL_TAG,
    mlflow_client,
    start_training_run,
)
from continuous_training.training.epochs import HISTORY_FILE, TrainConfig, TrainResult
from continuous_training.training.evaluate import read_test_split
from continuous_training.training.fit import fit, gpu_build_problem

log = logging.getLogger(__name__)

DATA_FINGERPRINT_PARAM = "data_fingerprint"


@dataclass(frozen=True)
class AirflowContext:
    """Which Airflow task produced a run (tags on the MLflow run)."""

    dag_id: str = "manual"
    task_id: str = "train"
    triggered_by: str = ""


def resolve_use_gpu(mode: UseGpu, spark: SparkSession, framework: Framework = "torch") -> bool:
    """`true` demands GPUs from a cluster manager; `auto` uses them when the cluster config requests them."""
    requested = spark.conf.get("spark.task.resource.gpu.amount", None) is not None
    if mode == "true" and (problem := gpu_build_problem(framework)):
        raise PipelineError(f"use_gpu=true needs the GPU installation (make setup GPU=1): {problem}")
    if mode == "true" and spark.sparkContext.master.startswith("local"):
        raise PipelineError(
            f"use_gpu=true needs a cluster manager that schedules GPUs; master {spark.sparkContext.master} "
            "does not (use a standalone/YARN/Kubernetes master with a GPU discovery script, or use_gpu=auto)"
        )
    return mode == "true" or (mode == "auto" and requested)


def train_candidate(spark: SparkSession, spec: DatasetSpec, run_id: str, params: TrainParams,
                    airflow: AirflowContext, settings: Settings | None = None) -> str:
    """Train, log params/metrics/tags/artifacts and the pyfunc model; returns the MLflow run id.

    Rerunning for the same Airflow run reuses its MLflow run and resumes from the last checkpoint of the same
    data (the run's `start_epoch` tag: the epoch its last attempt started at); a rerun whose data fingerprint
    differs from the MLflow run's is refused. A failure marks the run FAILED.
    """
    settings = settings or get_settings()
    featurize_dir = stage_dir(spec.name, FEATURIZE, run_id, settings)
    features = read_featurize_result(featurize_dir)
    use_gpu = resolve_use_gpu(params.use_gpu, spark, params.framework)
    config = TrainConfig.from_featurize(
        featurize_dir, stage_dir(spec.name, TRAIN, run_id, settings) / CHECKPOINTS_DIR, features,
        epochs=params.epochs, batch_size=params.batch_size, learning_rate=params.learning_rate,
        patience=params.patience, seed=params.seed, feed_memory_mb=settings.train_feed_memory_mb,
        framework=params.framework,
    )
    client = mlflow_client(settings)
    run = start_training_run(client, spec.name, run_id, {
        AIRFLOW_DAG_ID_TAG: airflow.dag_id, AIRFLOW_TASK_ID_TAG: airflow.task_id, "dataset": spec.name,
        **({"triggered_by": airflow.triggered_by} if airflow.triggered_by else {}),
    }, settings)
    mlflow_run_id = run.info.run_id
    _check_same_data(run.data.params, config.data_fingerprint, mlflow_run_id)
    if run.info.status != "RUNNING":
        client.update_run(mlflow_run_id, status="RUNNING")
    try:
        _train_and_log(spark, client, run, spec, run_id, params, config, features, use_gpu, settings)
    except BaseException:
        client.set_terminated(mlflow_run_id, "FAILED")
        raise
    client.set_terminated(mlflow_run_id, "FINISHED")
    return mlflow_run_id


def _check_same_data(logged: dict[str, str], data_fingerprint: str, mlflow_run_id: str) -> None:
    """A rerun of an Airflow run must train on the data its MLflow run was started on."""
    previous = logged.get(DATA_FINGERPRINT_PARAM)
    if previous is not None and previous != data_fingerprint:
        raise PipelineError(
            f"the data of this Airflow run changed since its MLflow run {mlflow_run_id} was trained "
            f"({DATA_FINGERPRINT_PARAM} {previous} → {data_fingerprint}: other input files, spec or features); "
            "a rerun cannot replace what that run recorded: trigger a new run"
        )


def _train_and_log(spark: SparkSession, client, run, spec: DatasetSpec, run_id: str, params: TrainParams,
                   config: TrainConfig, features: FeaturizeResult, use_gpu: bool, settings: Settings) -> None:
    mlflow_run_id = run.info.run_id
    featurize_dir = Path(config.featurize_dir)
    for key, value in {
        "framework": params.framework, "num_proc": params.num_proc, "epochs": params.epochs,
        "batch_size": "auto" if params.batch_size is None else params.batch_size,
        "learning_rate": params.learning_rate, "patience": params.patience,
        "seed": params.seed, "use_gpu": params.use_gpu, "dataset": spec.name, "data_run_id": run_id,
        "spark_master": spark.sparkContext.master, "feature_dim": features.feature_dim,
        "hidden_units": json.dumps(list(config.hidden)), DATA_FINGERPRINT_PARAM: config.data_fingerprint,
    }.items():
        if str(run.data.params.get(key, value)) != str(value):
            raise PipelineError(f"MLflow run {mlflow_run_id} was started with {key}={run.data.params[key]}; a rerun "
                                f"of the same Airflow run cannot change it to {value} (trigger a new run)")
        client.log_param(mlflow_run_id, key, value)
    transform = _checked_serving_transform(spark, spec, featurize_dir)
    reporter = EpochReporter(client, mlflow_run_id, config.epochs)
    with reporter.following(Path(config.checkpoint_dir) / HISTORY_FILE):
        result = fit(spark, config, params.num_proc, use_gpu, require_gpu=params.use_gpu == "true")
    reporter.report(result.history)
    client.log_param(mlflow_run_id, "rank_batch_size", result.batch_size)
    size_tag = "horovod.size" if params.framework == "torch" else "tensorflow.workers"
    gpu_addresses = json.dumps(result.gpu_addresses) if any(result.gpu_addresses.values()) else "none"
    for key, value in {size_tag: str(result.num_proc), "spark.barrier": "true", "gpu.addresses": gpu_addresses,
                       "devices": json.dumps(result.devices), "feed": result.feed,
                       "best_epoch": str(result.best_epoch), "start_epoch": str(result.start_epoch)}.items():
        client.set_tag(mlflow_run_id, key, value)
    _log_data_artifacts(client, mlflow_run_id, spec, run_id, settings)
    if CANDIDATE_MODEL_TAG not in run.data.tags:
        model_uri = _log_model(spark, spec, featurize_dir, transform, features, config, result, mlflow_run_id)
        client.set_tag(mlflow_run_id, CANDIDATE_MODEL_TAG, model_uri)


class EpochReporter:
    """Reports each finished epoch once: its metrics to the MLflow run (step = epoch) and a line of the task's log.
    Epochs an earlier attempt reported are skipped."""

    def __init__(self, client, mlflow_run_id: str, epochs: int) -> None:
        self.client, self.mlflow_run_id, self.epochs = client, mlflow_run_id, epochs
        self.reported = {metric.step for metric in client.get_metric_history(mlflow_run_id, "train_loss")}

    def report(self, history: list[dict[str, float]]) -> None:
        for entry in history:
            epoch = int(entry["epoch"])
            if epoch in self.reported:
                continue
            values = {key: float(value) for key, value in entry.items() if key != "epoch"}
            for key, value in values.items():
                self.client.log_metric(self.mlflow_run_id, key, value, step=epoch)
            log.info("epoch %d/%d (rank 0): %s", epoch, self.epochs,
                     ", ".join(f"{key}={value:.4g}" for key, value in values.items()))
            self.reported.add(epoch)

    @contextmanager
    def following(self, history_file: Path, poll_s: float = 0.2) -> Iterator[None]:
        """While the block runs, report the epochs rank 0 writes to `history_file` as they appear."""
        stop = threading.Event()

        def follow() -> None:
            while not stop.wait(poll_s):
                try:
                    history = json.loads(history_file.read_text())
                except (OSError, ValueError):  # not written yet
                    continue
                self.report(history)

        thread = threading.Thread(target=follow, name="epoch-reporter", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _log_data_artifacts(client, mlflow_run_id: str, spec: DatasetSpec, run_id: str, settings: Settings) -> None:
    stats_dir = stage_dir(spec.name, STATS, run_id, settings)
    featurize_dir = stage_dir(spec.name, FEATURIZE, run_id, settings)
    for path in (stats_dir / STATS_FILE, stats_dir / STATS_REPORT_FILE, featurize_dir / FEATURIZE_FILE):
        if path.is_file():
            client.log_artifact(mlflow_run_id, str(path), "data")
    client.log_artifacts(mlflow_run_id, str(featurize_dir / "pipeline"), "feature_pipeline")


def _checked_serving_transform(spark: SparkSession, spec: DatasetSpec, featurize_dir: Path) -> FeatureTransform:
    """The pyfunc's feature transform, checked against the fitted Spark pipeline on a sample of the test split
    before any training (a mismatch above 1e-5 fails the task, naming the column and the row)."""
    pipeline = PipelineModel.load(str(featurize_dir / "pipeline"))
    transform = feature_transform(pipeline, spec)
    checked = check_serving_parity(read_test_split(spark, featurize_dir), pipeline, transform, spec)
    log.info("serving transform matches the Spark feature pipeline on %d test rows", checked)
    return transform


def _log_model(spark: SparkSession, spec: DatasetSpec, featurize_dir: Path, transform: FeatureTransform,
               features: FeaturizeResult, config: TrainConfig, result: TrainResult, mlflow_run_id: str) -> str:
    import mlflow

    example = read_test_split(spark, featurize_dir).select(*[col(c) for c in spec.feature_columns]).limit(5)
    example = example.toPandas()
    with mlflow.start_run(run_id=mlflow_run_id):
        info = log_pyfunc_model(
            weights=result.best_state, framework=config.framework, transform=transform, task=spec.task,
            feature_dim=features.feature_dim, num_classes=features.num_classes, hidden=config.hidden,
            classes=features.classes, input_example=example,
        )
    log.info("logged candidate model %s (best epoch %d: %s)", info.model_uri, result.best_epoch,
             result.best_metrics)
    return info.model_uri
