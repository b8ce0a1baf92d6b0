"""The same dataset from two DAG runs at once, through real Airflow processes started together that share one
DATA_DIR and one MLflow store (each has its own Airflow metadata DB). Outside the scheduler pools and
`max_active_runs` do not apply, so only the project's locks protect the pair: the registry lock per model
(`registry.registry_lock`) and the stage locks (`paths.stage_lock`).

* Training: a new-data run and a drift-triggered run of `training__churn`, trained already (real ingest, validate
  and featurize folders; MLflow training runs with candidates; evaluated), run `register`, then `promote`, both at
  once (`airflow tasks test`). The test holds the registry lock, as a third writer would, until both registers and
  then both promotes wait on it, so the moves really contend. Pass: one model version per training run; the moves
  did not interleave (one promote decided against the old champion, the other against the first one's outcome,
  re-scoring it); `@champion` is the better candidate by the gate; no version approved twice.
* Scoring: `batch_scoring` (dataset=churn) and `batch_scoring__churn` score one date at once (`airflow dags test`,
  one retry). Pass: a score that ran while the other held the date's predictions lock failed at once naming it;
  the second writer (that retry, or a score that came later) found the date scored and did not score it again; the
  date has one set of prediction files, one row per input row, all from one run, and one MLflow scoring run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from continuous_training import demo
from continuous_training.config import Settings
from continuous_training.data.features import SPLIT, feature_transform
from continuous_training.data.ingest import ingest
from continuous_training.data.validation import validate
from continuous_training.model.pyfunc import log_pyfunc_model
from continuous_training.paths import (
    FEATURIZE,
    INGEST,
    INGESTED_DATA,
    PROMOTE,
    PROMOTION_FILE,
    RAW_SPLITS_DATA,
    VALID_DATA,
    VALIDATE,
    stage_dir,
    stage_lock_path,
)
from continuous_training.registry import promote_candidate, register_candidate, registry_lock_path
from continuous_training.serving.scored import PREDICTIONS, SUMMARY_FILE, partition_dir
from continuous_training.spec import load_spec
from continuous_training.tracking import (
    AIRFLOW_RUN_ID_TAG,
    CANDIDATE_MODEL_TAG,
    CHAMPION,
    mlflow_client,
    start_training_run,
)
from continuous_training.training.evaluate import evaluate_candidate
from filelock import FileLock

pytestmark = pytest.mark.integration

OLD = "manual__2026-11-30T06:00:00+00:00"
NEW_DATA = "new_data__2026-12-01T06:00:00+00:00"
DRIFT = "drift_retrain__scheduled__2026-12-01T06:00:00+00:00"
"""The champion's training run; a run of new data and one a drift check triggered (its run id as the check makes it)."""
DROPPED = {OLD: 3, NEW_DATA: 1, DRIFT: 0}
"""Each candidate is the fitted logistic regression without its this many strongest weights: the more, the worse."""
WAITING = "waiting for the registry lock"
SCORED_FOR = "2026-11-05"
ONE_RETRY = {"TASK_RETRIES": "1"}
"""Every task gets one retry, after the default delay (30 to 60 s): a score that found the date's lock held retries
once the other has written it (the DAGs are serialised with these settings)."""


class AirflowDb:
    """One Airflow metadata DB, migrated with the DAGs serialised and the two training runs triggered (queued: no
    scheduler runs them), prepared in the background; each process of a test gets its own copy."""

    def __init__(self, root: Path, airflow_env) -> None:
        self.root, self.airflow_env = root, airflow_env
        env = airflow_env(root, AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{root / 'airflow.db'}",
                          **ONE_RETRY)
        drift_conf = json.dumps({"triggered_by": "drift check of churn for 2026-12-01"})
        self.setup = subprocess.Popen(
            ["bash", "-ec", "airflow db migrate; airflow dags reserialize; "
                            f"airflow dags trigger training__churn --run-id {NEW_DATA}; "
                            f"airflow dags trigger training__churn --run-id {DRIFT} --conf '{drift_conf}'"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def envs(self, root: Path) -> tuple[dict[str, str], dict[str, str]]:
        """The two processes' environments: own Airflow home and metadata DB, one DATA_DIR and MLflow store."""
        output, _ = self.setup.communicate(timeout=600)
        assert self.setup.returncode == 0, output[-4000:]
        envs = []
        for home in ("first", "second"):
            shutil.copyfile(self.root / "airflow.db", root / f"{home}.db")
            envs.append(self.airflow_env(root, AIRFLOW_HOME=str(root / home), **ONE_RETRY,
                                         AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{root / f'{home}.db'}"))
        return envs[0], envs[1]


@pytest.fixture(scope="module")
def airflow_db(tmp_path_factory, airflow_env) -> AirflowDb:
    return AirflowDb(tmp_path_factory.mktemp("two_dags_airflow"), airflow_env)


def shared_settings(env: dict[str, str]) -> Settings:
    return Settings(data_dir=env["DATA_DIR"], mlflow_tracking_uri=env["MLFLOW_TRACKING_URI"],
                    mlflow_artifact_root=env["MLFLOW_ARTIFACT_ROOT"])


class Process:
    """A real `airflow` CLI process whose output lines are collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(["airflow", *args], env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def count(self, text: str) -> int:
        return self.output.count(text)

    def finish(self, timeout: float = 300) -> str:
        try:
            self.process.wait(timeout=timeout)
        finally:
            self.process.kill()
        self.reader.join(timeout=10)
        return self.output


def wait_for(condition: Callable[[], bool], what: str, processes: list[Process], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or any(p.process.poll() is not None for p in processes):
            tails = "\n=====\n".join(p.output[-4000:] for p in processes)
            pytest.fail(f"gave up waiting for {what}:\n{tails}")
        time.sleep(0.1)


def dag_run_state(output: str) -> str:
    found = re.findall(r"DagRun Finished: .*?state=(\w+)", output)
    assert found, output[-4000:]
    return found[-1]


def task_state(output: str) -> str:
    """The state a task instance ended in, as `airflow tasks test` logs it."""
    found = re.findall(r"Task instance state updated .*?new_state=(\w+)", output)
    assert found, output[-4000:]
    return found[-1]


# --- training: register and promote of two runs at once ------------------------------------------------------------


def fit_logistic(features: np.ndarray, labels: np.ndarray, steps: int = 300) -> tuple[np.ndarray, float]:
    """A logistic regression by gradient descent: the weights a well-trained candidate has."""
    weight, bias = np.zeros(features.shape[1]), 0.0
    for _ in range(steps):
        error = 1 / (1 + np.exp(-(features @ weight + bias))) - labels
        weight -= 0.5 * features.T @ error / len(labels)
        bias -= 0.5 * error.mean()
    return weight, bias


def copy_run_folders(settings: Settings, source: str, target: str) -> None:
    """Another run over the same pinned landing files: the same ingest, validate and featurize output."""
    for stage in (INGEST, VALIDATE, FEATURIZE):
        shutil.copytree(stage_dir("churn", stage, source, settings), stage_dir("churn", stage, target, settings))


@pytest.fixture(scope="module")
def trained(spark, airflow_db, tmp_path_factory) -> tuple[dict[str, str], dict[str, str]]:
    """Demo data; the run folders of three training runs over it (real ingest, validate, featurize); their MLflow
    training runs, each with a candidate pyfunc (a fitted logistic regression less some of its weights); the oldest
    registered and promoted, the other two evaluated against it, as their evaluate tasks leave them."""
    from continuous_training.data.features import featurize
    from pyspark.ml import PipelineModel

    root = tmp_path_factory.mktemp("two_trainings")
    settings = shared_settings(airflow_db.airflow_env(root))
    spec = load_spec("churn", settings)
    demo.generate(rows=800, batches=2, seed=3, data_dir=settings.data_dir)
    ingested = ingest(spark, spec, OLD, stage_dir(spec.name, INGEST, OLD, settings), settings)
    validate(spark.read.parquet(str(stage_dir(spec.name, INGEST, OLD, settings) / INGESTED_DATA)), spec, OLD,
             stage_dir(spec.name, VALIDATE, OLD, settings), max_quarantine_fraction=0.1)
    featurize_dir = stage_dir(spec.name, FEATURIZE, OLD, settings)
    featurize(spark.read.parquet(str(stage_dir(spec.name, VALIDATE, OLD, settings) / VALID_DATA)), spec, OLD,
              featurize_dir, ingested.input_fingerprint, settings)
    for other in (NEW_DATA, DRIFT):
        copy_run_folders(settings, OLD, other)
    transform = feature_transform(PipelineModel.load(str(featurize_dir / "pipeline")), spec)
    train = pd.read_parquet(featurize_dir / RAW_SPLITS_DATA / f"{SPLIT}=train")
    weight, bias = fit_logistic(transform.transform(train).astype(np.float64), train[spec.label].to_numpy())
    strongest = np.argsort(-np.abs(weight))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = mlflow_client(settings)
    try:
        for run, dropped in DROPPED.items():
            kept = weight.copy()
            kept[strongest[:dropped]] = 0.0
            training_run = start_training_run(client, spec.name, run, {"dataset": spec.name}, settings)
            with mlflow.start_run(run_id=training_run.info.run_id):
                info = log_pyfunc_model(
                    weights={"0.weight": kept[None, :].astype(np.float32), "0.bias": np.float32([bias])},
                    transform=transform, task=spec.task, feature_dim=transform.feature_dim, num_classes=None,
                    hidden=(), classes=["0", "1"], input_example=train.head(3))
            client.set_tag(training_run.info.run_id, CANDIDATE_MODEL_TAG, info.model_uri)
        evaluate_candidate(spark, spec, OLD, settings)
        register_candidate(spec, OLD, settings)
        assert promote_candidate(spark, spec, OLD, threshold=0.0, settings=settings).promoted
        auc = {run: evaluate_candidate(spark, spec, run, settings).metrics for run in (NEW_DATA, DRIFT)}
    finally:
        mlflow.set_tracking_uri(previous)
    assert auc[DRIFT]["test_auc"] > auc[NEW_DATA]["test_auc"] > auc[NEW_DATA]["champion_test_auc"], auc
    assert auc[NEW_DATA]["test_auc"] >= spec.promotion.threshold, auc
    return airflow_db.envs(root)


def task_test(env: dict[str, str], task_id: str, run: str) -> Process:
    return Process(["tasks", "test", "training__churn", task_id, run], env)


def test_a_new_data_run_and_a_drift_triggered_run_register_and_promote_one_at_a_time(trained):
    """Both runs' register, then both runs' promote, start while another writer holds the registry lock, so each
    pair contends for it. Pass: one model version per training run; the moves did not interleave (one promote
    decided against the old champion, the other against the first one's outcome, re-scoring it); `@champion` is the
    better candidate; no version approved twice; both tasks succeed."""
    envs, settings = trained, shared_settings(trained[0])
    spec = load_spec("churn", settings)
    lock = FileLock(registry_lock_path(spec.registered_model_name, settings))
    runs = {NEW_DATA: envs[0], DRIFT: envs[1]}
    lock.acquire()
    try:
        registers = [task_test(env, "register", run) for run, env in runs.items()]
        wait_for(lambda: all(p.count(WAITING) for p in registers), "both registers waiting on the lock", registers)
        lock.release()
        register_outputs = [p.finish() for p in registers]
        lock.acquire(timeout=0)
        promotes = [task_test(env, "promote", run) for run, env in runs.items()]
        wait_for(lambda: all(p.count(WAITING) for p in promotes), "both promotes waiting on the lock", promotes)
        lock.release()
        promote_outputs = [p.finish() for p in promotes]
    finally:
        if lock.is_locked:
            lock.release()

    for output in register_outputs + promote_outputs:
        assert task_state(output) == "success", output[-4000:]
    client = mlflow_client(settings)
    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{spec.registered_model_name}'")}
    by_run = {v.tags[AIRFLOW_RUN_ID_TAG]: version for version, v in versions.items()}
    assert len(versions) == 3 and set(by_run) == {OLD, NEW_DATA, DRIFT}, "one version per training run"
    decisions = {run: json.loads((stage_dir(spec.name, PROMOTE, run, settings) / PROMOTION_FILE).read_text())
                 for run in runs}
    first, second = sorted(decisions.values(), key=lambda decision: decision["champion_version"] != by_run[OLD])
    assert first["champion_version"] == by_run[OLD] and not first["reevaluated"], decisions
    champion_then = first["version"] if first["promoted"] else by_run[OLD]
    assert second["champion_version"] == champion_then and second["reevaluated"], \
        f"the second promote did not decide against the first one's outcome: {decisions}"
    champion = client.get_model_version_by_alias(spec.registered_model_name, CHAMPION)
    assert str(champion.version) == by_run[DRIFT], decisions
    assert [v.current_stage for v in versions.values()].count("Production") == 1
    promoted = [decision["version"] for decision in decisions.values() if decision["promoted"]]
    assert len(promoted) == len(set(promoted)), "no version approved twice"
    new_data = versions[by_run[NEW_DATA]]
    assert new_data.tags["validation_status"] == ("approved" if decisions[NEW_DATA]["promoted"] else "rejected")


# --- scoring: two scoring DAGs on one date -------------------------------------------------------------------------


def test_two_scoring_dags_on_one_date_write_one_batch_and_one_scoring_run(trained):
    """`batch_scoring__churn` and `batch_scoring` (dataset=churn) score one date at the same time (one retry
    each). Pass: both runs succeed; a score that ran while the other held the date's predictions lock failed at once
    naming it, and its retry found the date scored rather than scoring it again; the date has one set of prediction
    files, one row per input row, all from one run, and one MLflow scoring run."""
    settings = shared_settings(trained[0])
    spec = load_spec("churn", settings)
    batch = demo.generate_scoring(days=1, rows_per_day=200, start_date=SCORED_FOR, seed=8,
                                  data_dir=settings.data_dir)
    lock = stage_lock_path(spec.name, PREDICTIONS, SCORED_FOR, settings)
    runs = [Process(["dags", "test", "batch_scoring__churn", SCORED_FOR], trained[0]),
            Process(["dags", "test", "batch_scoring", SCORED_FOR, "--conf", json.dumps({"dataset": "churn"})],
                    trained[1])]
    outputs = [p.finish(timeout=600) for p in runs]

    assert [dag_run_state(output) for output in outputs] == ["success", "success"], \
        "\n=====\n".join(output[-4000:] for output in outputs)
    locked_out = [output for output in outputs if f"holds the lock {lock}" in output]
    print(f"scores that found the predictions lock held: {len(locked_out)}")
    assert len(locked_out) <= 1
    for output in locked_out:
        assert output.count("[DAG TEST] end task task_id=score") == 2, "the locked-out score was retried"
    found_done = [output for output in outputs if "is already scored from the same input files" in output]
    assert len(found_done) == 1 and found_done == (locked_out or found_done), "the second writer did not rescore"
    second_run = re.findall(r"DagRun Finished: .*?run_id=([^,]+)", found_done[0])[-1]
    partition = partition_dir(spec, pd.Timestamp(SCORED_FOR).date(), settings)
    summary = json.loads((partition / SUMMARY_FILE).read_text())
    predictions = pd.read_parquet(partition)
    inputs = pd.read_csv(batch.batches[0])
    assert summary["rows_in"] == summary["scored"] == len(predictions) == len(inputs) == 200
    assert predictions["customer_id"].is_unique and set(predictions["customer_id"]) == set(inputs["customer_id"])
    assert set(predictions["airflow_run_id"]) == {summary["airflow_run_id"]} != {second_run}, "one run's rows only"
    client = mlflow_client(settings)
    experiment = client.get_experiment_by_name(f"{spec.name}-scoring")
    scoring_runs = client.search_runs([experiment.experiment_id], f"tags.scored_for = '{SCORED_FOR}'")
    assert [run.info.run_id for run in scoring_runs] == [summary["mlflow_run_id"]], "one MLflow scoring run"
