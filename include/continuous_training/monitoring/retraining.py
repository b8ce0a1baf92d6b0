"""Whether a drift check triggers retraining, recorded on the check's MLflow run.

A check that found drift triggers the dataset's own `training__<dataset>` DAG (a named spec with a `training`
section), else `training_pipeline` for it, unless:

* a run of the dataset's own training DAG (whatever started it: new data, its schedule, a user) or a run an
  earlier check triggered is still queued or running, or a training run of the dataset is in progress in MLflow
  (experiment `<dataset>`, status RUNNING): the active-run guard;
* an earlier check triggered one less than `monitoring.cooldown_hours` before this check's logical date.

Suppressed triggers are recorded with their reason. The checks' MLflow runs are the ledger (tags
`retrain.triggered`, `retrain.run_id`, `retrain.logical_date`); the triggered run id derives from the check's
Airflow run id, so a retried or rerun check finds its own trigger and never starts a second run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from continuous_training.config import Settings, get_settings
from continuous_training.monitoring.drift import RETRAIN_TRIGGERED_TAG, monitoring_experiment
from continuous_training.spec import DatasetSpec, Monitoring
from continuous_training.tracking import mlflow_client
from mlflow.entities import RunStatus

log = logging.getLogger(__name__)

GENERIC_TRAINING_DAG = "training_pipeline"
RETRAIN_RUN_ID_TAG, RETRAIN_DAG_ID_TAG, RETRAIN_REASON_TAG, RETRAIN_LOGICAL_DATE_TAG = (
    "retrain.run_id", "retrain.dag_id", "retrain.reason", "retrain.logical_date")
ACTIVE_STATES = ("queued", "running")


@dataclass(frozen=True)
class RetrainDecision:
    """What a check decided: trigger `run_id` of `dag_id` with `conf`, or not, and why."""

    trigger: bool
    reason: str
    dag_id: str = GENERIC_TRAINING_DAG
    run_id: str | None = None
    conf: dict[str, Any] | None = None


def retrain_run_id(check_run_id: str) -> str:
    return f"drift_retrain__{check_run_id}"


def training_dag_id(spec: DatasetSpec, dataset_param: str) -> str:
    """`training__<name>` for a named spec with a `training` section, else `training_pipeline`."""
    named = spec.training is not None and dataset_param == spec.name
    return f"training__{spec.name}" if named else GENERIC_TRAINING_DAG


def decide_retraining(spec: DatasetSpec, dataset_param: str, result: dict[str, Any], logical_date: datetime,
                      active_runs: Callable[[str, Sequence[str] | None], int],
                      settings: Settings | None = None) -> RetrainDecision:
    """Decide for one check result (drift.json) and record it; `active_runs(dag_id, run_ids)` counts those runs
    (all runs of the DAG for `None`) that are queued or running."""
    settings = settings or get_settings()
    client = mlflow_client(settings)
    check_run_id = result["mlflow_run_id"]
    run_id = retrain_run_id(result["airflow_run_id"])
    decision = _decide(client, spec, dataset_param, result, logical_date, active_runs, run_id,
                       spec.monitoring or Monitoring())
    tags = {RETRAIN_TRIGGERED_TAG: str(decision.trigger).lower(), RETRAIN_REASON_TAG: decision.reason}
    if decision.trigger:
        tags |= {RETRAIN_RUN_ID_TAG: run_id, RETRAIN_LOGICAL_DATE_TAG: logical_date.isoformat(),
                 RETRAIN_DAG_ID_TAG: decision.dag_id}
    for key, value in tags.items():
        client.set_tag(check_run_id, key, value)
    log.info("retraining of %s %s: %s", spec.name, "triggered" if decision.trigger else "not triggered",
             decision.reason)
    return decision


def _decide(client, spec: DatasetSpec, dataset_param: str, result: dict[str, Any], logical_date: datetime,
            active_runs: Callable[[str, Sequence[str] | None], int], run_id: str, monitoring: Monitoring
            ) -> RetrainDecision:
    if not result["drift_detected"]:
        return RetrainDecision(False, "no drift" if result["outcome"] == "no_drift" else result["message"])
    dag_id = training_dag_id(spec, dataset_param)
    trigger = RetrainDecision(True, "drift: " + "; ".join(result["reasons"]), dag_id=dag_id, run_id=run_id, conf={
        "dataset": dataset_param,
        "triggered_by": f"drift check of {spec.name} for {result['checked_for']} (run {result['airflow_run_id']}, "
                        f"window {', '.join(result['window']['dates'])})",
    })
    experiment = client.get_experiment_by_name(monitoring_experiment(spec))
    earlier = client.search_runs([experiment.experiment_id], f"tags.`{RETRAIN_TRIGGERED_TAG}` = 'true'",
                                 order_by=["attributes.start_time DESC"], max_results=100)
    if any(run.data.tags.get(RETRAIN_RUN_ID_TAG) == run_id for run in earlier):
        return trigger
    if dag_id != GENERIC_TRAINING_DAG and active_runs(dag_id, None):
        return RetrainDecision(False, f"suppressed: a run of {dag_id} is already queued or running")
    triggered = [run.data.tags[RETRAIN_RUN_ID_TAG] for run in earlier if RETRAIN_RUN_ID_TAG in run.data.tags]
    if triggered and active_runs(dag_id, triggered):
        return RetrainDecision(False, f"suppressed: a retraining run an earlier check triggered for {spec.name} is "
                                      f"still queued or running ({dag_id})")
    training = client.get_experiment_by_name(spec.name)
    if training is not None:
        in_progress = client.search_runs([training.experiment_id],
                                         f"attributes.status = '{RunStatus.to_string(RunStatus.RUNNING)}'",
                                         max_results=1)
        if in_progress:
            return RetrainDecision(False, f"suppressed: training run {in_progress[0].info.run_id} of {spec.name} is "
                                          "in progress")
    cooldown = timedelta(hours=monitoring.cooldown_hours)
    for run in earlier:
        last = run.data.tags.get(RETRAIN_LOGICAL_DATE_TAG)
        if last and abs(logical_date - datetime.fromisoformat(last)) < cooldown:
            return RetrainDecision(False, f"suppressed: cooldown of {monitoring.cooldown_hours:g} h, retraining was "
                                          f"triggered for the check of {last} ({run.data.tags[RETRAIN_RUN_ID_TAG]})")
    return trigger
