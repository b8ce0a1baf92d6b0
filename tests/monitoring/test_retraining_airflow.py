"""decide_retraining → trigger_retraining under real `airflow dags test` (real metadata DB, real MLflow): a training
run left RUNNING by a killed train task is closed as FAILED from its task's state in Airflow, a trigger that fails is
left pending and starts no cooldown, and a trigger that creates its run is confirmed."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from continuous_training.config import PROJECT_ROOT, Settings
from continuous_training.monitoring.drift import DRIFT_FILE
from continuous_training.paths import MONITORING, read_result, stage_dir
from continuous_training.tracking import ensure_experiment, mlflow_client
from drift_probe import DRIFT_PROBE

pytestmark = pytest.mark.integration

PROBE_DAGS = DRIFT_PROBE + """
from airflow.providers.standard.operators.bash import BashOperator

# The dataset's own training DAG; its train task dies as a killed Spark job does.
with DAG("training__churn", schedule=None):
    BashOperator(task_id="train", bash_command="exit 1")
"""


def airflow(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(["airflow", *args], env=env, capture_output=True, text=True, timeout=600, check=False)
    return done.stdout + done.stderr


def dag_runs(env: dict[str, str], dag_id: str) -> list[tuple[str, str]]:
    """(run id, state) of every run of a DAG in Airflow's metadata DB, oldest first."""
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        return db.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id", (dag_id,)).fetchall()


def probe(env: dict[str, str], settings: Settings, logical_date: str, *conf: str) -> tuple[str, str, dict, str]:
    """One drift_probe run: its run id, state, the tags of its check's MLflow run, and the command's output."""
    output = airflow(env, "dags", "test", "drift_probe", logical_date, *conf)
    run_id, state = dag_runs(env, "drift_probe")[-1]
    check = read_result(stage_dir("churn", MONITORING, run_id, settings) / DRIFT_FILE, dict)["mlflow_run_id"]
    return run_id, state, mlflow_client(settings).get_run(check).data.tags, output


def test_a_killed_training_run_is_closed_and_a_failed_trigger_starts_no_cooldown(tmp_path, airflow_env):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "probe.py").write_text(PROBE_DAGS)
    env = airflow_env(tmp_path, AIRFLOW__CORE__DAGS_FOLDER=str(dags))
    settings = Settings(data_dir=Path(env["DATA_DIR"]), mlflow_tracking_uri=env["MLFLOW_TRACKING_URI"],
                        mlflow_artifact_root=Path(env["MLFLOW_ARTIFACT_ROOT"]))
    client = mlflow_client(settings)
    airflow(env, "db", "migrate")
    airflow(env, "dags", "test", "training__churn")
    [(killed_training, state)] = dag_runs(env, "training__churn")
    assert state == "failed"
    killed = client.create_run(ensure_experiment(client, "churn", settings), tags={
        "airflow.dag_id": "training__churn", "airflow.run_id": killed_training, "airflow.task_id": "train"})

    # A spec given by path retrains through training_pipeline, which this Airflow does not have: the trigger fails.
    spec_path = str(PROJECT_ROOT / "include" / "datasets" / "churn.yaml")
    _, state, tags, output = probe(env, settings, "2026-11-06T00:00:00+00:00", "--conf",
                                   json.dumps({"dataset": spec_path}))
    orphan = client.get_run(killed.info.run_id)
    assert orphan.info.status == "FAILED", output[-3000:]
    assert f"training__churn/{killed_training}/train is failed" in orphan.data.tags["orphan.reason"]
    assert state == "failed" and tags["retrain.triggered"] == "pending", f"{tags}\n{output[-3000:]}"

    # Twelve hours later, within the cooldown of the failed trigger: it counts for nothing, the own DAG is triggered.
    later, state, tags, output = probe(env, settings, "2026-11-06T12:00:00+00:00")
    assert state == "success" and tags["retrain.triggered"] == "true", f"{tags}\n{output[-3000:]}"
    assert dag_runs(env, "training__churn")[-1] == (f"drift_retrain__{later}", "queued")
