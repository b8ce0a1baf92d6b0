"""drift_check end to end through `airflow dags test`, with the champion the training e2e tests trained: a drifted
day triggers training_pipeline exactly once and lands its labelled rows, the active-run guard (reading Airflow's own
runs) suppresses a later trigger with its reason, and the dataset's own DAG records an empty window. (No-drift checks,
their statistics, the cooldown and retraining once it has passed are covered by tests/monitoring.)"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from continuous_training.demo import generate_scoring, write_churn_spec
from continuous_training.monitoring.drift import DRIFT_FILE
from continuous_training.paths import MONITORING, run_dir_name
from e2e_workspace import Workspace, dag_run_finished

pytestmark = pytest.mark.e2e

WATCHED = "churn_watch"


def watched_spec(e2e: Workspace) -> Path:
    """The churn spec under another name, so its scored batches and labelled landing stay apart from churn's."""
    return write_churn_spec(e2e.root, WATCHED, model_name="churn_model")


def check(e2e: Workspace, spec: Path, logical_date: str) -> dict:
    """One drift_check run; its drift.json and the MLflow tags of the check."""
    result = e2e.airflow("dags", "test", "drift_check", logical_date, "--conf", json.dumps({"dataset": str(spec)}))
    finished = dag_run_finished(result.stdout + result.stderr)
    assert finished["state"] == "success", finished
    run_dir = e2e.data_dir / WATCHED / MONITORING / run_dir_name(finished["run_id"])
    drift = json.loads((run_dir / DRIFT_FILE).read_text())
    return {**drift, "tags": e2e.client().get_run(drift["mlflow_run_id"]).data.tags}


def triggered_runs(e2e: Workspace) -> list[tuple[str, str, dict]]:
    with sqlite3.connect(Path(e2e.env["AIRFLOW_HOME"]) / "airflow.db") as db:
        rows = db.execute("SELECT run_id, state, conf FROM dag_run WHERE dag_id = 'training_pipeline' "
                          "AND run_id LIKE 'drift_retrain__%' ORDER BY id").fetchall()
    return [(run_id, state, json.loads(conf) if isinstance(conf, str) else conf) for run_id, state, conf in rows]


def test_drift_triggers_retraining_once_and_the_active_run_guard_holds_the_next(e2e: Workspace) -> None:
    e2e.train("churn")
    spec = watched_spec(e2e)
    generate_scoring(days=1, rows_per_day=1_500, start_date="2026-11-06", seed=32, drift=1.0, data_dir=e2e.data_dir,
                     dataset_name=WATCHED)
    scored = e2e.airflow("dags", "test", "batch_scoring", "2026-11-06", "--conf", json.dumps({"dataset": str(spec)}))
    assert dag_run_finished(scored.stdout + scored.stderr)["state"] == "success"

    drifted = check(e2e, spec, "2026-11-06")

    assert drifted["outcome"] == "drift" and drifted["tags"]["retrain.triggered"] == "true"
    assert drifted["tags"]["retrain.reason"].startswith("drift: ")
    assert drifted["performance"]["status"] == "checked" and drifted["performance"]["rows_labelled"] > 1_000
    assert [batch["status"] for batch in drifted["labelled_batches"]] == ["landed"]
    assert (e2e.data_dir / "landing" / WATCHED / "labelled_for=2026-11-06" / "_SUCCESS").is_file()
    runs = triggered_runs(e2e)
    assert [(run_id, state) for run_id, state, _ in runs] == [(drifted["tags"]["retrain.run_id"], "queued")]
    assert runs[0][2]["dataset"] == str(spec) and "2026-11-06" in runs[0][2]["triggered_by"]

    guarded = check(e2e, spec, "2026-11-06")
    assert guarded["outcome"] == "drift" and guarded["tags"]["retrain.triggered"] == "false"
    assert guarded["tags"]["retrain.reason"].startswith("suppressed: a retraining run an earlier check triggered")
    assert len(triggered_runs(e2e)) == 1, "one run per trigger, none for the suppressed check"


def test_the_datasets_own_dag_records_an_empty_window(e2e: Workspace) -> None:
    result = e2e.airflow("dags", "test", "drift_check__churn", "2026-10-01")

    finished = dag_run_finished(result.stdout + result.stderr)
    assert finished["state"] == "success"
    drift = json.loads(next((e2e.data_dir / "churn" / MONITORING).glob(f"run_id=*/{DRIFT_FILE}")).read_text())
    assert drift["outcome"] == "nothing_to_check" and drift["window"]["dates"] == []
    tags = e2e.client().get_run(drift["mlflow_run_id"]).data.tags
    assert tags["check.outcome"] == "nothing_to_check" and tags["retrain.triggered"] == "false"
