"""Whether a drift check triggers retraining, recorded on the check's MLflow run.

A check that found drift triggers the dataset's own `training__<dataset>` DAG (a named spec with a `training`
section), else `training_pipeline` for it (`continuous_training.dag_ids`), unless:

* the active-run guard: a run of that training DAG or one an earlier check triggered is queued or running, or a
  training run of the dataset is RUNNING in MLflow (experiment `<dataset>`) while its Airflow task is active (a run
  whose task is not, killed without a Python exception, is closed as FAILED with the reason in `orphan.reason`);
* the cooldown: an earlier check triggered one less than `monitoring.cooldown_hours` before this logical date.

Suppressed triggers are recorded with their reason. The checks' MLflow runs are the ledger (tags
`retrain.triggered`, `retrain.run_id`, `retrain.logical_date`): a decided trigger is `pending` until
trigger_retraining has created (or found) its run, then `true`; only those count for the guard and the cooldown.
The triggered run id derives from the check's Airflow run id, so a retried or rerun check never starts a second run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from continuous_training import dag_ids
from continuous_training.config import Settings, get_settings
from continuous_training.monitoring.drift import DRIFT_FILE, RETRAIN_TRIGGERED_TAG, monitoring_experiment
from continuous_training.paths import MONITORING
from continuous_training.spec import DatasetSpec, Monitoring, load_spec
from continuous_training.tracking import AIRFLOW_DAG_ID_TAG, AIRFLOW_RUN_ID_TAG, AIRFLOW_TASK_ID_TAG, mlflow_client

log = logging.getLogger(__name__)

RETRAIN_RUN_ID_TAG, RETRAIN_DAG_ID_TAG, RETRAIN_REASON_TAG, RETRAIN_LOGICAL_DATE_TAG = (
    "retrain.run_id", "retrain.dag_id", "retrain.reason", "retrain.logical_date")
ORPHAN_REASON_TAG = "orphan.reason"
TRIGGER_PENDING = "pending"
ACTIVE_STATES = ("queued", "running")
# Airflow task states in which the task may still write its training run (a retry resumes the same MLflow run).
TASK_ACTIVE_STATES = ("scheduled", "queued", "running", "up_for_retry", "up_for_reschedule", "deferred", "restarting")


@dataclass(frozen=True)
class RetrainDecision:
    """What a check decided: trigger `run_id` of `dag_id` with `conf`, or not, and why."""

    trigger: bool
    reason: str
    dag_id: str = dag_ids.GENERIC_DAG[dag_ids.TRAINING]
    run_id: str | None = None
    conf: dict[str, Any] | None = None


def decide_retraining(spec: DatasetSpec, dataset_param: str, result: dict[str, Any], logical_date: datetime,
                      active_runs: Callable[[str, Sequence[str] | None], int],
                      task_state: Callable[[str, str, str], str | None],
                      settings: Settings | None = None) -> RetrainDecision:
    """Decide for one check result (drift.json) and record it; `active_runs(dag_id, run_ids)` counts those runs
    (all runs of the DAG for `None`) that are queued or running, `task_state(dag_id, run_id, task_id)` is the state
    of a task instance (None when Airflow has none). A trigger is recorded `pending` until `confirm_trigger`."""
    client = mlflow_client(settings)
    run_id = f"drift_retrain__{result['airflow_run_id']}"
    decision = _decide(client, spec, dataset_param, result, logical_date, active_runs, task_state, run_id)
    recorded = client.get_run(result["mlflow_run_id"]).data.tags.get(RETRAIN_TRIGGERED_TAG)
    triggered = (recorded if recorded == "true" else TRIGGER_PENDING) if decision.trigger else "false"
    tags = {RETRAIN_TRIGGERED_TAG: triggered, RETRAIN_REASON_TAG: decision.reason}
    if decision.trigger:
        tags |= {RETRAIN_RUN_ID_TAG: run_id, RETRAIN_LOGICAL_DATE_TAG: logical_date.isoformat(),
                 RETRAIN_DAG_ID_TAG: decision.dag_id}
    for key, value in tags.items():
        client.set_tag(result["mlflow_run_id"], key, value)
    log.info("retraining of %s %s: %s", spec.name, "triggered" if decision.trigger else "not triggered",
             decision.reason)
    return decision


def confirm_trigger(check_run_id: str, settings: Settings | None = None) -> None:
    """Record on a check's MLflow run that the training run it decided on exists (trigger_retraining created or
    found it): from now on it counts for the active-run guard and the cooldown."""
    mlflow_client(settings).set_tag(check_run_id, RETRAIN_TRIGGERED_TAG, "true")


def _decide(client, spec: DatasetSpec, dataset_param: str, result: dict[str, Any], logical_date: datetime,
            active_runs: Callable[[str, Sequence[str] | None], int],
            task_state: Callable[[str, str, str], str | None], run_id: str) -> RetrainDecision:
    if not result["drift_detected"]:
        return RetrainDecision(False, "no drift" if result["outcome"] == "no_drift" else result["message"])
    dag_id = dag_ids.dag_id(dag_ids.TRAINING, spec, dataset_param)
    trigger = RetrainDecision(True, "drift: " + "; ".join(result["reasons"]), dag_id=dag_id, run_id=run_id, conf={
        "dataset": dataset_param,
        "triggered_by": f"drift check of {spec.name} for {result['checked_for']} (run {result['airflow_run_id']}, "
                        f"window {', '.join(result['window']['dates'])})",
    })
    experiment = client.get_experiment_by_name(monitoring_experiment(spec))
    earlier = client.search_runs([experiment.experiment_id], f"tags.`{RETRAIN_TRIGGERED_TAG}` = 'true'",
                                 order_by=["attributes.start_time DESC"], max_results=100)
    triggered = [run.data.tags[RETRAIN_RUN_ID_TAG] for run in earlier if RETRAIN_RUN_ID_TAG in run.data.tags]
    if run_id in triggered:
        return trigger
    if dag_id != dag_ids.GENERIC_DAG[dag_ids.TRAINING] and active_runs(dag_id, None):
        return RetrainDecision(False, f"suppressed: a run of {dag_id} is already queued or running")
    if triggered and active_runs(dag_id, triggered):
        return RetrainDecision(False, f"suppressed: a retraining run an earlier check triggered for {spec.name} is "
                                      f"still queued or running ({dag_id})")
    training = client.get_experiment_by_name(spec.name)
    if training is not None:
        training_dags = {dag_ids.own_dag_id(dag_ids.TRAINING, spec), dag_ids.GENERIC_DAG[dag_ids.TRAINING]}
        for run in client.search_runs([training.experiment_id], "attributes.status = 'RUNNING'", max_results=100):
            if _still_training(client, run, training_dags, task_state, result["airflow_run_id"]):
                return RetrainDecision(False, f"suppressed: training run {run.info.run_id} of {spec.name} is in "
                                              "progress")
    hours = (spec.monitoring or Monitoring()).cooldown_hours
    for run in earlier:
        last = run.data.tags.get(RETRAIN_LOGICAL_DATE_TAG)
        if last and abs(logical_date - datetime.fromisoformat(last)) < timedelta(hours=hours):
            return RetrainDecision(False, f"suppressed: cooldown of {hours:g} h, retraining was "
                                          f"triggered for the check of {last} ({run.data.tags[RETRAIN_RUN_ID_TAG]})")
    return trigger


def _still_training(client, run, training_dags: set[str], task_state: Callable[[str, str, str], str | None],
                    check: str) -> bool:
    """Whether a RUNNING training run may still be written: its Airflow task is active, or it was not started by a
    training DAG (then only whoever started it can tell). Otherwise it is an orphan: closed as FAILED, reason tagged."""
    tags = run.data.tags
    dag_id, airflow_run_id, task_id = (tags.get(tag) for tag in (AIRFLOW_DAG_ID_TAG, AIRFLOW_RUN_ID_TAG,
                                                                  AIRFLOW_TASK_ID_TAG))
    if dag_id not in training_dags or not airflow_run_id or not task_id:
        return True
    state = task_state(dag_id, airflow_run_id, task_id)
    if state in TASK_ACTIVE_STATES:
        return True
    reason = (f"closed as FAILED by the drift check {check}: its Airflow task {dag_id}/{airflow_run_id}/{task_id} is "
              f"{state or 'unknown to Airflow'}, so nothing writes this run any more")
    client.set_tag(run.info.run_id, ORPHAN_REASON_TAG, reason)
    client.set_terminated(run.info.run_id, "FAILED")
    log.warning("training run %s: %s", run.info.run_id, reason)
    return False


def drift_checks(dataset: str, checked_for: date, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The drift.json of every check of one date, oldest first."""
    settings = settings or get_settings()
    spec = load_spec(dataset, settings)
    paths = sorted((settings.data_dir / spec.name / MONITORING).glob(f"run_id=*/{DRIFT_FILE}"),
                   key=lambda path: path.stat().st_mtime)
    of_date = [check for check in map(_readable_check, paths)
               if check is not None and check.get("checked_for") == checked_for.isoformat()]
    if not of_date:
        raise SystemExit(f"no drift check of {spec.name!r} for {checked_for}")
    return of_date


def latest_drift_check(dataset: str, checked_for: date, settings: Settings | None = None) -> dict[str, Any]:
    """The drift.json of the latest check of one date."""
    return drift_checks(dataset, checked_for, settings)[-1]


def _readable_check(path: Path) -> dict[str, Any] | None:
    """A drift.json, None (and a warning naming it) when a kill or a full disk left it damaged."""
    try:
        check = json.loads(path.read_text())
        if isinstance(check, dict):
            return check
        problem = "not a JSON object"
    except (OSError, ValueError) as error:
        problem = str(error)
    log.warning("skipping the damaged drift check %s: %s", path, problem)
    return None


@dataclass(frozen=True)
class TriggeredRun:
    """A training run a drift check of a date triggered, and why the latest check of that date started none."""

    dag_id: str
    run_id: str
    by_latest_check: bool
    latest_reason: str


def triggered_run(dataset: str, checked_for: date, settings: Settings | None = None) -> TriggeredRun | None:
    """The training run the latest check of a date triggered; when that check started none (the cooldown or the
    active-run guard after an earlier check of the date), the one the newest earlier check triggered; None if no
    check of the date triggered one."""
    client = mlflow_client(settings)
    checks = [client.get_run(check["mlflow_run_id"]).data.tags
              for check in reversed(drift_checks(dataset, checked_for, settings))]
    latest_reason = checks[0].get(RETRAIN_REASON_TAG, "not decided")
    for index, tags in enumerate(checks):
        if tags.get(RETRAIN_TRIGGERED_TAG) == "true":
            return TriggeredRun(tags[RETRAIN_DAG_ID_TAG], tags[RETRAIN_RUN_ID_TAG], index == 0, latest_reason)
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the DAG id and run id of the training run that the latest "
                                                 "drift check of a date triggered, else the one an earlier check of "
                                                 "the date triggered, saying so (nothing if none).")
    parser.add_argument("--dataset", required=True, help="Dataset name or spec path.")
    parser.add_argument("--checked-for", type=date.fromisoformat, required=True, metavar="DATE",
                        help="The date the drift check checked.")
    args = parser.parse_args(argv)
    run = triggered_run(args.dataset, args.checked_for)
    if run and not run.by_latest_check:
        print(f"the latest drift check of {args.dataset} for {args.checked_for} started no retraining "
              f"({run.latest_reason}); an earlier check of that date started {run.run_id}", file=sys.stderr)
    if run:
        print(run.dag_id, run.run_id)


if __name__ == "__main__":
    main()
