"""Killed jobs under real `airflow dags test` (which retries a failed task after its retry delay, as the scheduler
does), real Spark jobs through SparkSubmitOperator (`local[2]`), real MLflow on SQLite (issue 29, faults 1 and 3).

A kill is a SIGKILL of a job's driver: the spark-submit JVM (`org.apache.spark.deploy.SparkSubmit` running
`jobs/<stage>.py`) with everything it started (the Python driver, Python workers), stopped first so that none of
them runs a line of cleanup; only processes of this test's own `airflow` command are looked at."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
import psutil
import pytest
from continuous_training.config import PROJECT_ROOT, Settings
from continuous_training.data.features import SPLIT, SPLITS, feature_transform
from continuous_training.data.ingest import ingest
from continuous_training.data.validation import validate
from continuous_training.demo import generate, generate_scoring
from continuous_training.model.pyfunc import log_pyfunc_model
from continuous_training.model.torch_mlp import build_mlp, numpy_weights
from continuous_training.monitoring.retraining import ORPHAN_REASON_TAG
from continuous_training.paths import (
    FEATURIZE,
    FEATURIZE_FILE,
    INGEST,
    INGESTED_DATA,
    MANIFEST_FILE,
    QUARANTINE_DATA,
    VALID_DATA,
    VALIDATE,
    VALIDATION_FILE,
    run_dir_name,
    stage_dir,
    stage_for,
)
from continuous_training.pipeline import run_data_stages
from continuous_training.serving.batch import partition_dir, predictions_dir, resolve_model, score_batch
from continuous_training.serving.scored import SUMMARY_FILE
from continuous_training.spec import load_spec
from continuous_training.tracking import AIRFLOW_RUN_ID_TAG, CHAMPION, mlflow_client
from drift_probe import DRIFT_PROBE
from pyspark.ml import PipelineModel

pytestmark = pytest.mark.integration

SPARK_SUBMIT = "org.apache.spark.deploy.SparkSubmit"
DATASET, SCORED_FOR = "churn", "2026-11-05"
TRAINING_DAG, SCORING_DAG = "training__churn", "batch_scoring__churn"
AFTER_FEATURIZE = "train|evaluate|register|promote"


def staging_folders(root: Path) -> list[Path]:
    """What a writer leaves while it writes: Spark's `_temporary` and `.spark-staging-*` folders, `.partial` files."""
    found = []
    for folder, dirs, files in os.walk(root):
        found += [Path(folder) / name for name in [*dirs, *files]
                  if name == "_temporary" or name.startswith(".spark-staging") or name.endswith(".partial")]
        dirs[:] = [name for name in dirs if name != "_temporary" and not name.startswith(".spark-staging")]
    return found


def python_workers(driver: psutil.Process) -> bool:
    """Whether the driver runs Spark tasks in Python workers (`pyspark.daemon` / `pyspark.worker`)."""
    return any("pyspark.daemon" in part or "pyspark.worker" in part
               for child in driver.children(recursive=True) for part in _cmdline(child))


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


@dataclass
class Kill:
    """SIGKILL the driver of `jobs/<job>.py` once `when(driver)` holds; `at` and `pids` say when and what."""

    job: str
    when: Callable[[psutil.Process], bool]
    at: datetime | None = None
    pids: list[int] = field(default_factory=list)
    staging: list[str] = field(default_factory=list)


@dataclass
class Run:
    """One finished `airflow dags test`: its run id, state, output, and (task, try) → (state, start, end)."""

    run_id: str
    state: str
    output: str
    tries: dict[tuple[str, int], tuple[str, datetime, datetime]]

    def retry_start(self, task: str) -> datetime:
        return self.tries[(task, 2)][1]


class Workspace:
    """An isolated Airflow home (SQLite, migrated once) whose DAGs folder holds the project's training and scoring
    DAG files and the drift probe; DATA_DIR with 1000 demo rows in 2 batches; MLflow on SQLite."""

    def __init__(self, root: Path, airflow_env: Callable[..., dict[str, str]]) -> None:
        dags = root / "dags"
        dags.mkdir()
        for name in ("training_pipeline.py", "batch_scoring.py"):
            (dags / name).symlink_to(PROJECT_ROOT / "dags" / name)
        (dags / "drift_probe.py").write_text(DRIFT_PROBE)
        self.env = airflow_env(root, AIRFLOW__CORE__DAGS_FOLDER=str(dags), TASK_RETRIES="1",
                               TASK_RETRY_DELAY_SECONDS="1")
        self.data_dir = Path(self.env["DATA_DIR"])
        self.settings = Settings(data_dir=self.data_dir, mlflow_tracking_uri=self.env["MLFLOW_TRACKING_URI"],
                                 mlflow_artifact_root=Path(self.env["MLFLOW_ARTIFACT_ROOT"]))
        self.spec = load_spec(DATASET, self.settings)
        subprocess.run(["airflow", "db", "migrate"], env=self.env, check=True, capture_output=True, timeout=300)
        generate(rows=1000, batches=2, bad_fraction=0.02, seed=3, data_dir=self.data_dir)

    def dags_test(self, dag_id: str, *args: str, kills: list[Kill] = (), on_run: Callable[[str], None] | None = None,
                  timeout: float = 600, **env: str) -> Run:
        """Run `airflow dags test dag_id *args` (`env` added to the workspace's), killing drivers as `kills` say, in
        order, each once; `on_run(run_id)` is called once the run exists."""
        log = self.data_dir.parent / f"{dag_id}.log"
        before = self._runs(dag_id)
        with log.open("w") as out:
            airflow = psutil.Popen(["airflow", "dags", "test", dag_id, *args], env={**self.env, **env}, stdout=out,
                                   stderr=subprocess.STDOUT)
            pending, killed, deadline = list(kills), set(), time.monotonic() + timeout
            while airflow.poll() is None:
                if time.monotonic() > deadline:
                    sigkill_tree(airflow)
                    pytest.fail(f"{dag_id} ran over {timeout} s:\n{log.read_text()[-3000:]}")
                if on_run and (new := set(self._runs(dag_id)) - set(before)):
                    on_run(new.pop())
                    on_run = None
                if pending and (driver := self._driver(airflow, pending[0].job, killed)) is not None:
                    kill = pending[0]
                    try:
                        if kill.when(driver):
                            kill.staging = [str(path) for path in staging_folders(self.data_dir)]
                            kill.pids, kill.at = sigkill_tree(driver), datetime.now(UTC)
                            killed.add(driver.pid)
                            pending.pop(0)
                    except psutil.NoSuchProcess:
                        pass
                time.sleep(0.05)
        output = log.read_text()
        assert not pending, f"never killed {[kill.job for kill in pending]}:\n{output[-3000:]}"
        return self._finished(dag_id, output)

    @staticmethod
    def _driver(airflow: psutil.Process, job: str, killed: set[int]) -> psutil.Process | None:
        """The spark-submit JVM of `jobs/<job>.py` among the command's processes, one not killed before."""
        try:
            children = airflow.children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        for child in children:
            cmdline = _cmdline(child)
            if (cmdline and Path(cmdline[0]).name == "java" and SPARK_SUBMIT in cmdline
                    and "org.apache.spark.launcher.Main" not in cmdline and child.pid not in killed
                    and any(arg.endswith(f"/jobs/{job}.py") for arg in cmdline)):
                return child
        return None

    def _runs(self, dag_id: str) -> list[str]:
        try:
            with sqlite3.connect(Path(self.env["AIRFLOW_HOME"]) / "airflow.db", timeout=1) as db:
                return [run for (run,) in db.execute("SELECT run_id FROM dag_run WHERE dag_id = ?", (dag_id,))]
        except sqlite3.OperationalError:
            return []

    def _finished(self, dag_id: str, output: str) -> Run:
        with sqlite3.connect(Path(self.env["AIRFLOW_HOME"]) / "airflow.db") as db:
            run_id, state = db.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
                                       (dag_id,)).fetchone()
            rows = db.execute(
                "SELECT task_id, try_number, state, start_date, end_date FROM task_instance WHERE dag_id = ? AND "
                "run_id = ? UNION ALL SELECT task_id, try_number, state, start_date, end_date FROM "
                "task_instance_history WHERE dag_id = ? AND run_id = ?", (dag_id, run_id, dag_id, run_id)).fetchall()
        return Run(run_id, state, output, {(task, number): (task_state, _utc(start), _utc(end))
                                           for task, number, task_state, start, end in rows})


def _utc(stamp: str | None) -> datetime | None:
    return None if stamp is None else datetime.fromisoformat(stamp).replace(tzinfo=UTC)


def sigkill_tree(process: psutil.Process) -> list[int]:
    """Stop a process and its descendants, then SIGKILL them all: none runs cleanup code."""
    tree = [process, *process.children(recursive=True)]
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.suspend()
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    return [member.pid for member in tree]


def once_staging(root: Callable[[], Path]) -> Callable[[psutil.Process], bool]:
    """Kill once a staging folder appears under the folder `root()` names (the stage's folder of all runs)."""
    return lambda driver: bool(staging_folders(root()))


def ids(folder: Path, column: str = "customer_id") -> list[str]:
    return sorted(map(str, pd.read_parquet(folder, columns=[column])[column]))


def document(path: Path, run_id: str, data_dir: Path) -> dict:
    """A stage's JSON result with its run's id and folder, and DATA_DIR, replaced by placeholders."""
    text = path.read_text().replace(run_dir_name(run_id), "RUN_DIR").replace(run_id, "RUN_ID")
    return json.loads(text.replace(str(data_dir), "DATA_DIR"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, airflow_env) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("killed_jobs"), airflow_env)


@pytest.fixture(scope="module")
def clean(workspace, spark) -> str:
    """The clean run to compare with: the same landing files through the library's data stages, run id `clean`."""
    run_data_stages(spark, workspace.spec, "clean", workspace.settings)
    return "clean"


def test_a_killed_data_job_is_retried_and_its_outputs_equal_a_clean_run(workspace, clean) -> None:
    """Pass: each of ingest, validate, featurize of one training run, its spark-submit SIGKILLed once its staging
    folder appeared, was retried (try 2 succeeded); its manifests, row counts and sorted ids equal the clean run's;
    no staging folder is left under DATA_DIR; the next stage started only after the retry finished, and read whole
    outputs (its counts equal the clean run's). The tasks after featurize are marked done, not run."""
    def stage(name: str) -> Callable[[], Path]:
        return lambda: workspace.data_dir / DATASET / name

    kills = {name: Kill(name, once_staging(stage(name))) for name in (INGEST, VALIDATE, FEATURIZE)}
    run = workspace.dags_test(TRAINING_DAG, "--mark-success-pattern", "check_spec|stats|" + AFTER_FEATURIZE,
                              kills=list(kills.values()))
    assert run.state == "success", run.output[-3000:]
    data_dir, spec = workspace.data_dir, workspace.spec
    for stage, following in ((INGEST, VALIDATE), (VALIDATE, FEATURIZE), (FEATURIZE, None)):
        kill = kills[stage]
        assert kill.staging, f"{stage}: killed before any staging folder appeared"
        assert run.tries[(stage, 1)][0] == "failed" and run.tries[(stage, 2)][0] == "success", run.tries
        assert run.retry_start(stage) > kill.at
        assert following is None or run.tries[(following, 1)][1] >= run.tries[(stage, 2)][2], \
            f"{following} started before {stage} ended"
        print(f"{stage}: killed with {kill.staging[0]} there; retry started "
              f"{(run.retry_start(stage) - kill.at).total_seconds():.1f} s after the kill")
    assert staging_folders(data_dir) == [], "a staging folder was left behind"

    def out(stage: str, run_id: str) -> Path:
        return stage_dir(spec.name, stage, run_id, workspace.settings)

    for stage, result in ((INGEST, MANIFEST_FILE), (VALIDATE, VALIDATION_FILE), (FEATURIZE, FEATURIZE_FILE)):
        assert document(out(stage, run.run_id) / result, run.run_id, data_dir) == \
            document(out(stage, clean) / result, clean, data_dir), f"{stage}/{result} differs from the clean run's"
    for stage, data in ((INGEST, INGESTED_DATA), (VALIDATE, VALID_DATA), (VALIDATE, QUARANTINE_DATA)):
        assert ids(out(stage, run.run_id) / data) == ids(out(stage, clean) / data), f"{stage}/{data}"
    for split in SPLITS:
        killed_split = pd.read_parquet(out(FEATURIZE, run.run_id) / "raw_splits", filters=[(SPLIT, "=", split)])
        clean_split = pd.read_parquet(out(FEATURIZE, clean) / "raw_splits", filters=[(SPLIT, "=", split)])
        assert sorted(killed_split["customer_id"]) == sorted(clean_split["customer_id"]), split
        assert len(pd.read_parquet(out(FEATURIZE, run.run_id) / split)) == len(clean_split), split


def test_a_train_driver_killed_on_its_last_attempt_is_closed_failed_by_one_check_that_retrains(
        workspace, clean) -> None:
    """Pass: with train's driver SIGKILLed on its last attempt (no retries) the DAG run fails and its MLflow run is
    left RUNNING (nothing ran its cleanup); the first drift check after it closes that run FAILED with the reason
    and, in the same check, triggers retraining (a queued run of training__churn). The data stages are marked done:
    the run's featurize folder is the clean run's, copied under the run's id as soon as the run exists."""
    featurized = stage_dir(DATASET, FEATURIZE, clean, workspace.settings)

    def featurize_for(run_id: str) -> None:
        shutil.copytree(featurized, stage_dir(DATASET, FEATURIZE, run_id, workspace.settings))

    run = workspace.dags_test(TRAINING_DAG, "--conf", json.dumps({"epochs": 1, "num_proc": 2}),
                              "--mark-success-pattern", f"check_spec|{INGEST}|{VALIDATE}|stats|{FEATURIZE}",
                              kills=[Kill("train", python_workers)], on_run=featurize_for, TASK_RETRIES="0")
    assert run.tries[("train", 1)][0] == "failed" and run.state == "failed", run.tries
    client = mlflow_client(workspace.settings)
    experiment = client.get_experiment_by_name(DATASET).experiment_id
    [training] = client.search_runs([experiment], f"tags.`{AIRFLOW_RUN_ID_TAG}` = '{run.run_id}'")
    assert training.info.status == "RUNNING", "the killed driver closed its own run"

    check = workspace.dags_test("drift_probe", "--conf", json.dumps({"dataset": DATASET}))

    closed = client.get_run(training.info.run_id)
    assert closed.info.status == "FAILED", check.output[-3000:]
    assert f"{TRAINING_DAG}/{run.run_id}/train is failed" in closed.data.tags[ORPHAN_REASON_TAG]
    assert check.state == "success", check.output[-3000:]
    with sqlite3.connect(Path(workspace.env["AIRFLOW_HOME"]) / "airflow.db") as db:
        retrain = db.execute("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?",
                             (TRAINING_DAG, f"drift_retrain__{check.run_id}")).fetchall()
    assert retrain == [("queued",)], check.output[-3000:]


def champion(workspace: Workspace, clean: str) -> str:
    """A registered, approved `@champion`: a small pyfunc with random weights over the clean run's fitted pipeline."""
    spec, settings = workspace.spec, workspace.settings
    featurize_dir = stage_dir(spec.name, FEATURIZE, clean, settings)
    transform = feature_transform(PipelineModel.load(str(featurize_dir / "pipeline")), spec)
    example = pd.read_parquet(featurize_dir / "raw_splits", columns=list(spec.feature_columns)).head(3)
    client = mlflow_client(settings)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    try:
        mlflow.set_experiment(experiment_id=client.create_experiment(
            "champions", artifact_location=settings.mlflow_artifact_root.as_uri()))
        with mlflow.start_run():
            info = log_pyfunc_model(
                weights=numpy_weights(build_mlp(transform.feature_dim, spec.task, None, hidden=(8,), seed=1)),
                transform=transform, task=spec.task, feature_dim=transform.feature_dim, num_classes=None,
                hidden=(8,), classes=["0", "1"], input_example=example)
        version = str(mlflow.register_model(info.model_uri, spec.registered_model_name).version)
    finally:
        mlflow.set_tracking_uri(previous)
    client.set_model_version_tag(spec.registered_model_name, version, "validation_status", "approved")
    client.set_registered_model_alias(spec.registered_model_name, CHAMPION, version)
    return version


def test_a_killed_score_job_is_retried_and_its_partition_equals_a_clean_run(workspace, clean, spark,
                                                                              tmp_path) -> None:
    """Pass: score's spark-submit SIGKILLed once a staging folder appeared under the predictions is retried (try 2
    succeeded); the partition's rows, sorted ids, predictions and summary equal a clean scoring of the same batch
    with the same version; no staging folder is left; one MLflow scoring run for the Airflow run."""
    version = champion(workspace, clean)
    spec = workspace.spec
    generate_scoring(days=1, rows_per_day=300, start_date=SCORED_FOR, seed=6, data_dir=workspace.data_dir)
    kill = Kill("score", once_staging(lambda: predictions_dir(spec, workspace.settings)))

    run = workspace.dags_test(SCORING_DAG, SCORED_FOR, kills=[kill])

    assert run.state == "success", run.output[-3000:]
    assert run.tries[("score", 1)][0] == "failed" and run.tries[("score", 2)][0] == "success", run.tries
    print(f"score: killed with {kill.staging[0]} there; retry started "
          f"{(run.retry_start('score') - kill.at).total_seconds():.1f} s after the kill")
    assert staging_folders(workspace.data_dir) == [], "a staging folder was left behind"

    elsewhere = Settings(data_dir=tmp_path / "data", mlflow_tracking_uri=workspace.settings.mlflow_tracking_uri,
                         mlflow_artifact_root=workspace.settings.mlflow_artifact_root)
    batch = generate_scoring(days=1, rows_per_day=300, start_date=SCORED_FOR, seed=6, data_dir=elsewhere.data_dir)
    ingested = ingest(spark, spec, "clean", stage_dir(spec.name, stage_for(INGEST, True), "clean", elsewhere),
                      elsewhere, source=str(batch.batches[0]), scoring=True)
    validate_dir = stage_dir(spec.name, stage_for(VALIDATE, True), "clean", elsewhere)
    validate(spark.read.parquet(ingested.output), spec, "clean", validate_dir, 0.05, labelled=False)
    model = resolve_model(spec, CHAMPION, elsewhere)
    assert model.version == version
    score_batch(spark.read.parquet(str(validate_dir / VALID_DATA)), spec, model,
                datetime.fromisoformat(SCORED_FOR).date(), "clean", elsewhere)

    day = datetime.fromisoformat(SCORED_FOR).date()
    killed_part, clean_part = partition_dir(spec, day, workspace.settings), partition_dir(spec, day, elsewhere)
    killed_rows = pd.read_parquet(killed_part).sort_values("customer_id").reset_index(drop=True)
    clean_rows = pd.read_parquet(clean_part).sort_values("customer_id").reset_index(drop=True)
    assert len(killed_rows) == len(clean_rows) > 0
    pd.testing.assert_frame_equal(killed_rows.drop(columns=["airflow_run_id"]),
                                  clean_rows.drop(columns=["airflow_run_id"]))
    summaries = [json.loads((part / SUMMARY_FILE).read_text()) for part in (killed_part, clean_part)]
    for summary, data_dir in zip(summaries, (workspace.data_dir, elsewhere.data_dir), strict=True):
        for run_specific in ("mlflow_run_id", "airflow_run_id", "input_fingerprint"):  # the last: of the paths read
            summary.pop(run_specific, None)
        summary["predictions"] = summary["predictions"].replace(str(data_dir), "DATA_DIR")
    assert summaries[0] == summaries[1]
    scoring = mlflow_client(workspace.settings).get_experiment_by_name(f"{spec.name}-scoring").experiment_id
    assert len(mlflow_client(workspace.settings).search_runs(
        [scoring], f"tags.`{AIRFLOW_RUN_ID_TAG}` = '{run.run_id}'")) == 1
