"""Building blocks the DAG files use, so that they stay a readable pipeline diagram."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.python import PythonOperator, ShortCircuitOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from continuous_training.cli import mlflow_unreachable_message, tracking_server_unreachable
from continuous_training.config import get_settings
from continuous_training.errors import PipelineError
from continuous_training.monitoring.labels import batch_marker
from continuous_training.orchestration.alerts import drift_alert, missing_batch_alert, on_promotion, send
from continuous_training.orchestration.landing import BatchMarkerTrigger
from continuous_training.paths import MONITORING, PROMOTE, TRAIN, dated_path, local_matches, stage_dir
from continuous_training.spec import DatasetSpec, Scoring, SpecError, load_spec

# Task ids besides the stage names of `paths` (a Spark job's task id is the name of its jobs/<name>.py).
CHECK_SPEC, REGISTER, RESOLVE_SCORING_RUN = "check_spec", "register", "resolve_scoring_run"
SCORE, LAND_LABELS, CHECK_DRIFT = "score", "land_labels", "check_drift"
DECIDE_RETRAINING, TRIGGER_RETRAINING = "decide_retraining", "trigger_retraining"
# The run's date: its logical date, or when it was queued for runs without one.
RUN_DATE = "{{ (logical_date or dag_run.run_after) | ds }}"
# One slot: registry moves (register, promote) of all runs and DAGs happen one at a time (make creates it).
REGISTRY_POOL = "mlflow_registry"


def default_task_args() -> dict[str, Any]:
    """Retries with exponential backoff and an execution timeout for every task."""
    settings = get_settings()
    return {
        "retries": settings.task_retries,
        "retry_delay": timedelta(seconds=settings.task_retry_delay_seconds),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=settings.task_timeout_minutes),
    }


def spark_job(stage: str, *extra_args: str, **operator_kwargs: Any) -> SparkSubmitOperator:
    """A SparkSubmitOperator running jobs/<stage>.py for the run's dataset and run id."""
    settings = get_settings()
    return SparkSubmitOperator(
        task_id=stage,
        application=str(settings.jobs_dir / f"{stage}.py"),
        application_args=["--dataset", "{{ params.dataset }}", "--run-id", "{{ run_id }}", *extra_args],
        conn_id="spark_default",
        name=f"{stage}-{{{{ params.dataset }}}}",
        driver_memory=settings.spark_driver_memory,
        conf={"spark.pyspark.python": settings.pyspark_python},
        **operator_kwargs,
    )


def _check_spec(params: dict[str, Any]) -> None:
    try:
        spec = load_spec(params["dataset"])
    except SpecError as error:
        raise AirflowFailException(str(error)) from None
    source = spec.source_path()
    if local_matches(source) == []:
        raise AirflowFailException(f"no input files match {source} (source.path of dataset {spec.name!r})")


def new_data(triggering_asset_events: Any) -> str:
    """The batches named by the landing Asset events that scheduled a run, "" for a run they did not schedule."""
    batches = [batch for events in (triggering_asset_events or {}).values() for event in events
               for batch in (event.extra or {}).get("payload", {}).get("batches", [])]
    return f"new data: {', '.join(batches)}" if batches else ""


def train_task() -> SparkSubmitOperator:
    """The distributed training job, with the run's params."""
    return spark_job(
        TRAIN,
        "--framework", "{{ params.framework }}",
        "--num-proc", "{{ params.num_proc }}", "--use-gpu", "{{ params.use_gpu }}",
        "--epochs", "{{ params.epochs }}", "--batch-size", "{{ params.batch_size }}",
        "--learning-rate", "{{ params.learning_rate }}", "--patience", "{{ params.patience }}",
        "--seed", "{{ params.seed }}",
        "--airflow-dag-id", "{{ dag.dag_id }}", "--airflow-task-id", "{{ task.task_id }}",
        "--triggered-by", "{{ params.triggered_by or new_data(triggering_asset_events) }}",
    )


def check_spec() -> PythonOperator:
    """Fails the run at once, without retries, on an unknown dataset, an invalid spec or a source glob that
    matches nothing."""
    return PythonOperator(task_id=CHECK_SPEC, python_callable=_check_spec)


@contextmanager
def mlflow_reachable() -> Iterator[None]:
    """A call that cannot reach the MLflow server fails the task in one line, as the Spark jobs do (`cli.run_job`);
    the task's retry goes on."""
    try:
        yield
    except Exception as error:
        if (reason := tracking_server_unreachable(error)) is None:
            raise
        raise AirflowException(mlflow_unreachable_message(reason)) from None


def _register(params: dict[str, Any], run_id: str) -> str:
    from continuous_training.registry import register_candidate

    with mlflow_reachable():
        return register_candidate(load_spec(params["dataset"]), run_id).version


def register_task() -> PythonOperator:
    """Registers the run's candidate as `@challenger` (MLflow client calls, no Spark), in the registry pool."""
    return PythonOperator(task_id=REGISTER, python_callable=_register, pool=REGISTRY_POOL)


def promote_task() -> SparkSubmitOperator:
    """The gate (a Spark job: it re-scores the champion if `@champion` moved since evaluate), in the registry pool;
    its verdict, promotion or rejection, is alerted."""
    return spark_job(PROMOTE, "--promotion-threshold", "{{ params.promotion_threshold }}",
                     "--min-improvement", "{{ params.min_improvement }}", pool=REGISTRY_POOL,
                     on_success_callback=on_promotion())


@dataclass(frozen=True)
class ScoringBatch:
    """What a scoring run reads: the batch for its date, the marker that says it is complete, and until when the
    run waits for that marker."""

    spec: DatasetSpec
    scored_for: date
    source: str
    marker: Path
    deadline: datetime
    deadline_hours: float

    @classmethod
    def of(cls, params: dict[str, Any], logical_date: datetime | None, dag_run: Any) -> ScoringBatch:
        """The batch of a run: the `input` param or the spec's `scoring.path`, rendered for the run's date."""
        run_date = logical_date or dag_run.run_after
        spec = load_spec(params["dataset"])
        template = params["input"] or (spec.scoring.path if spec.scoring else None)
        if template is None:
            raise SpecError(f"dataset {spec.name!r} has no scoring section: give the batch with the `input` param")
        source = dated_path(template, run_date.date())
        hours = spec.scoring.deadline_hours if spec.scoring else Scoring.model_fields["deadline_hours"].default
        return cls(spec, run_date.date(), source, batch_marker(source), run_date + timedelta(hours=hours), hours)

    def missing(self) -> str:
        """The one line a run past its deadline fails with."""
        return (f"no batch to score for {self.scored_for}: {self.marker} did not appear by "
                f"{self.deadline.isoformat()} (scoring.deadline_hours: {self.deadline_hours:g})")


class ResolveScoringRun(BaseOperator):
    """Fixes what a scoring run reads and which model version scores it, once, at its start (XCom for the rest).
    It reads a batch only once the `_SUCCESS` marker of its folder is there: until `scoring.deadline_hours` after the
    run's date it waits for it deferred, in the triggerer. User errors (no marker by the deadline, no batch, no model
    under the alias, a bad spec) fail at once without retries."""

    def execute(self, context: Any) -> dict[str, Any]:
        from continuous_training.serving.batch import resolve_model

        params = context["params"]
        try:
            batch = ScoringBatch.of(params, context.get("logical_date"), context["dag_run"])
            if not batch.marker.is_file():
                if datetime.now(UTC) >= batch.deadline:
                    send(lambda: missing_batch_alert(batch.missing(), context))
                    raise PipelineError(batch.missing())
                self.defer(trigger=BatchMarkerTrigger(str(batch.marker), batch.deadline.isoformat(),
                                                      get_settings().landing_poll_seconds),
                           method_name="execute_complete")
            if local_matches(batch.source) == []:
                raise PipelineError(f"no batch to score for {batch.scored_for}: nothing matches {batch.source}")
            model = resolve_model(batch.spec, params["model_alias"])
        except (SpecError, PipelineError) as error:
            raise AirflowFailException(str(error)) from None
        return {"input": batch.source, "scored_for": batch.scored_for.isoformat(), "model": asdict(model)}

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """The marker appeared or the deadline passed: look again."""
        return self.execute(context)


def resolve_scoring_run() -> ResolveScoringRun:
    """The first task of a scoring run (`ResolveScoringRun`)."""
    return ResolveScoringRun(task_id=RESOLVE_SCORING_RUN)


def resolved(*keys: str) -> str:
    """A template of one field the run's `resolve_scoring_run` task resolved, e.g. `resolved("model", "version")`."""
    path = "".join(f"['{key}']" for key in keys)
    return f"{{{{ ti.xcom_pull(task_ids='{RESOLVE_SCORING_RUN}'){path} }}}}"


def _decide_retraining(params: dict[str, Any], run_id: str, logical_date: datetime | None, dag_run: Any,
                       ti: Any) -> dict[str, Any] | None:
    from continuous_training.monitoring.drift import DRIFT_FILE
    from continuous_training.monitoring.retraining import ACTIVE_STATES, decide_retraining

    spec = load_spec(params["dataset"])
    result = json.loads((stage_dir(spec.name, MONITORING, run_id) / DRIFT_FILE).read_text())
    with mlflow_reachable():
        decision = decide_retraining(
            spec, params["dataset"], result, logical_date or dag_run.run_after,
            lambda dag_id, run_ids: ti.get_dr_count(dag_id=dag_id, states=list(ACTIVE_STATES),
                                                    run_ids=None if run_ids is None else list(run_ids)),
            lambda dag_id, task_run_id, task_id: ti.get_task_states(
                dag_id=dag_id, run_ids=[task_run_id], task_ids=[task_id]).get(task_run_id, {}).get(task_id))
    send(lambda: drift_alert(result, decision, dag_run.dag_id, run_id))
    if not decision.trigger:
        return None
    return {"dag_id": decision.dag_id, "run_id": decision.run_id, "conf": decision.conf,
            "check_run_id": result["mlflow_run_id"]}


def decide_retraining() -> ShortCircuitOperator:
    """Decides and records whether the check triggers retraining (`continuous_training.monitoring.retraining`);
    drift found is alerted, with the decision."""
    return ShortCircuitOperator(task_id=DECIDE_RETRAINING, python_callable=_decide_retraining)


def trigger_retraining() -> TriggerDagRunOperator:
    """Starts the training run decide_retraining named (a retry does not start a second); once the run exists
    (created, or found by a retry) it confirms the trigger on the check's MLflow run, so that a trigger that failed
    counts for no cooldown."""
    decided = f"ti.xcom_pull(task_ids='{DECIDE_RETRAINING}')"

    def confirm(context: Any) -> None:
        from continuous_training.monitoring.retraining import confirm_trigger

        with mlflow_reachable():
            confirm_trigger(context["ti"].xcom_pull(task_ids=DECIDE_RETRAINING)["check_run_id"])

    return TriggerDagRunOperator(
        task_id=TRIGGER_RETRAINING, trigger_dag_id=f"{{{{ {decided}['dag_id'] }}}}",
        trigger_run_id=f"{{{{ {decided}['run_id'] }}}}",
        conf={key: f"{{{{ {decided}['conf']['{key}'] }}}}" for key in ("dataset", "triggered_by")},
        logical_date=None, skip_when_already_exists=True, on_success_callback=confirm, on_skipped_callback=confirm,
    )
