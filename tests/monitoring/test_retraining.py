"""Where a drift check sends retraining, the active-run guard, the cooldown counting only triggers whose run exists,
and training runs left RUNNING by a killed task (real MLflow; Airflow's answers as the callbacks give them)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from continuous_training.dag_ids import TRAINING, dag_id
from continuous_training.monitoring.drift import DRIFT_FILE, RETRAIN_TRIGGERED_TAG, monitoring_experiment
from continuous_training.monitoring.retraining import (
    ORPHAN_REASON_TAG,
    TRIGGER_PENDING,
    RetrainDecision,
    confirm_trigger,
    decide_retraining,
    triggered_run,
)
from continuous_training.paths import MONITORING, stage_dir, write_result
from continuous_training.spec import load_spec
from continuous_training.tracking import ensure_experiment, mlflow_client

CHECKED = datetime(2026, 11, 6, tzinfo=UTC)


def drift_result(client, spec, settings) -> dict:
    """A drifted check's result, with its MLflow run in the monitoring experiment."""
    experiment = ensure_experiment(client, monitoring_experiment(spec), settings)
    run = client.create_run(experiment)
    return {"mlflow_run_id": run.info.run_id, "airflow_run_id": "scheduled__2026-11-06T06:00:00+00:00",
            "drift_detected": True, "outcome": "drift", "reasons": ["4 of 9 features drifted"],
            "checked_for": "2026-11-06", "window": {"dates": ["2026-11-06"]}}


def test_a_named_spec_with_a_training_section_retrains_through_its_own_dag() -> None:
    churn, plan = load_spec("churn"), load_spec("churn_plan")
    assert dag_id(TRAINING, churn, "churn") == "training__churn"
    assert dag_id(TRAINING, churn, "/specs/churn.yaml") == "training_pipeline"
    assert dag_id(TRAINING, plan, "churn_plan") == "training_pipeline"


def no_task(dag_id: str, run_id: str, task_id: str) -> None:
    """Airflow's answer for a task instance it has no record of."""
    return None


def test_any_active_run_of_the_own_dag_suppresses_the_trigger(settings) -> None:
    spec, client = load_spec("churn"), mlflow_client(settings)
    asked: list[tuple[str, object]] = []

    def one_active_run(dag_id, run_ids):
        asked.append((dag_id, run_ids))
        return 1

    result = drift_result(client, spec, settings)
    decision = decide_retraining(spec, "churn", result, CHECKED, one_active_run, no_task, settings)

    assert not decision.trigger
    assert decision.reason == "suppressed: a run of training__churn is already queued or running"
    assert asked == [("training__churn", None)]
    assert client.get_run(result["mlflow_run_id"]).data.tags[RETRAIN_TRIGGERED_TAG] == "false"

    free = decide_retraining(spec, "churn", drift_result(client, spec, settings), CHECKED, lambda *_: 0, no_task,
                             settings)
    assert free.trigger and free.dag_id == "training__churn"
    assert free.conf["dataset"] == "churn" and "2026-11-06" in free.conf["triggered_by"]


def test_an_earlier_trigger_guards_while_active_then_the_cooldown_then_retrains(settings) -> None:
    spec, client = load_spec("churn"), mlflow_client(settings)
    path = "/specs/churn.yaml"  # a spec given by path retrains through training_pipeline
    first = drift_result(client, spec, settings)
    triggered = decide_retraining(spec, path, first, CHECKED, lambda *_: 0, no_task, settings)
    assert triggered.trigger and triggered.dag_id == "training_pipeline"
    assert client.get_run(first["mlflow_run_id"]).data.tags[RETRAIN_TRIGGERED_TAG] == TRIGGER_PENDING
    confirm_trigger(first["mlflow_run_id"], settings)
    assert decide_retraining(spec, path, first, CHECKED, lambda *_: 1, no_task, settings).trigger, \
        "a rerun check finds its own trigger and repeats it (the run id is the same, so no second run starts)"

    def active(*counted: str):
        return lambda dag_id, run_ids: int(run_ids is not None and bool(set(run_ids) & set(counted)))

    def check(run_id: str, logical_date: datetime, active_runs) -> RetrainDecision:
        result = {**drift_result(client, spec, settings), "airflow_run_id": run_id}
        decision = decide_retraining(spec, path, result, logical_date, active_runs, no_task, settings)
        if decision.trigger:
            confirm_trigger(result["mlflow_run_id"], settings)
        return decision

    guarded = check("scheduled__2", CHECKED, active(triggered.run_id))
    assert not guarded.trigger and guarded.reason.startswith("suppressed: a retraining run an earlier check")
    cooled = check("scheduled__3", CHECKED + timedelta(hours=12), active())
    assert not cooled.trigger and cooled.reason.startswith("suppressed: cooldown of 24 h")
    later = check("scheduled__4", CHECKED + timedelta(days=2), active())
    assert later.trigger and later.run_id == "drift_retrain__scheduled__4"
    tags = client.get_run(first["mlflow_run_id"]).data.tags
    assert tags[RETRAIN_TRIGGERED_TAG] == "true" and tags["retrain.logical_date"] == CHECKED.isoformat()


def test_the_run_a_check_triggered_is_found_from_the_latest_check_of_its_date(settings) -> None:
    spec, client = load_spec("churn"), mlflow_client(settings)
    result = drift_result(client, spec, settings)
    write_result(stage_dir(spec.name, MONITORING, result["airflow_run_id"], settings) / DRIFT_FILE, result)
    assert triggered_run("churn", CHECKED.date(), settings) is None

    decision = decide_retraining(spec, "churn", result, CHECKED, lambda *_: 0, no_task, settings)
    assert decision.trigger
    assert triggered_run("churn", CHECKED.date(), settings) is None, "decided, but the run does not exist yet"
    confirm_trigger(result["mlflow_run_id"], settings)
    found = triggered_run("churn", CHECKED.date(), settings)
    assert (found.dag_id, found.run_id, found.by_latest_check) == ("training__churn", decision.run_id, True)


def test_a_check_the_cooldown_suppressed_leads_to_the_retraining_an_earlier_check_of_its_date_started(
        settings) -> None:
    """`make demo` run twice: the second drift check of the drifted date finds the drift again and the cooldown
    suppresses its trigger; the retraining to follow is the one the first check started, with the reason no new one
    started."""
    spec, client = load_spec("churn"), mlflow_client(settings)
    first = drift_result(client, spec, settings)
    first_file = stage_dir(spec.name, MONITORING, first["airflow_run_id"], settings) / DRIFT_FILE
    write_result(first_file, first)
    started = decide_retraining(spec, "churn", first, CHECKED, lambda *_: 0, no_task, settings)
    confirm_trigger(first["mlflow_run_id"], settings)
    second = {**drift_result(client, spec, settings), "airflow_run_id": "manual__2026-12-07T10:00:00+00:00"}
    suppressed = decide_retraining(spec, "churn", second, CHECKED, lambda *_: 0, no_task, settings)
    write_result(stage_dir(spec.name, MONITORING, second["airflow_run_id"], settings) / DRIFT_FILE, second)
    os.utime(first_file, (first_file.stat().st_mtime - 60,) * 2)

    found = triggered_run("churn", CHECKED.date(), settings)

    assert not suppressed.trigger and suppressed.reason.startswith("suppressed: cooldown of 24 h")
    assert (found.dag_id, found.run_id, found.by_latest_check) == ("training__churn", started.run_id, False)
    assert found.latest_reason == suppressed.reason


def test_a_failed_trigger_starts_no_cooldown(settings) -> None:
    spec, client = load_spec("churn"), mlflow_client(settings)
    first = drift_result(client, spec, settings)
    assert decide_retraining(spec, "churn", first, CHECKED, lambda *_: 0, no_task, settings).trigger
    # trigger_retraining failed: the training run never existed, so nothing confirmed the trigger.
    later = {**drift_result(client, spec, settings), "airflow_run_id": "scheduled__2"}
    retried = decide_retraining(spec, "churn", later, CHECKED + timedelta(hours=12), lambda *_: 0, no_task, settings)
    assert retried.trigger, retried.reason
    assert client.get_run(first["mlflow_run_id"]).data.tags[RETRAIN_TRIGGERED_TAG] == TRIGGER_PENDING

    confirm_trigger(later["mlflow_run_id"], settings)
    third = {**drift_result(client, spec, settings), "airflow_run_id": "scheduled__3"}
    cooled = decide_retraining(spec, "churn", third, CHECKED + timedelta(hours=13), lambda *_: 0, no_task, settings)
    assert not cooled.trigger and cooled.reason.startswith("suppressed: cooldown of 24 h"), cooled.reason


def training_run(client, spec, settings, tags: dict[str, str]) -> str:
    """A training run left RUNNING in MLflow (as one whose process was killed without a Python exception)."""
    return client.create_run(ensure_experiment(client, spec.name, settings), tags=tags).info.run_id


def airflow_tags(dag_id: str, run_id: str) -> dict[str, str]:
    return {"airflow.dag_id": dag_id, "airflow.task_id": "train", "airflow.run_id": run_id}


def test_a_training_run_killed_without_an_exception_no_longer_suppresses_retraining(settings) -> None:
    spec, client = load_spec("churn"), mlflow_client(settings)
    killed = training_run(client, spec, settings, airflow_tags("training__churn", "manual__killed"))
    asked = []

    def failed_task(dag_id, run_id, task_id):
        asked.append((dag_id, run_id, task_id))
        return "failed"

    decision = decide_retraining(spec, "churn", drift_result(client, spec, settings), CHECKED, lambda *_: 0,
                                 failed_task, settings)

    assert decision.trigger, decision.reason
    assert asked == [("training__churn", "manual__killed", "train")]
    closed = client.get_run(killed)
    assert closed.info.status == "FAILED"
    assert "training__churn/manual__killed/train is failed" in closed.data.tags[ORPHAN_REASON_TAG]


def test_a_training_run_suppresses_retraining_while_its_airflow_task_is_active(settings) -> None:
    spec, client = load_spec("churn"), mlflow_client(settings)
    running = training_run(client, spec, settings, airflow_tags("training_pipeline", "manual__running"))
    for state in ("running", "up_for_retry"):
        decision = decide_retraining(spec, "churn", drift_result(client, spec, settings), CHECKED, lambda *_: 0,
                                     lambda *_, state=state: state, settings)
        assert decision.reason == f"suppressed: training run {running} of churn is in progress"
    assert client.get_run(running).info.status == "RUNNING"


def test_a_training_run_not_started_by_a_training_dag_keeps_suppressing_retraining(settings) -> None:
    spec, client = load_spec("churn"), mlflow_client(settings)
    manual = training_run(client, spec, settings, airflow_tags("manual", "by-hand"))
    decision = decide_retraining(spec, "churn", drift_result(client, spec, settings), CHECKED, lambda *_: 0, no_task,
                                 settings)
    assert decision.reason == f"suppressed: training run {manual} of churn is in progress"
    assert client.get_run(manual).info.status == "RUNNING"
