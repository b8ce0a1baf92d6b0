"""Building blocks the DAG files use, so that they stay a readable pipeline diagram."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

import jinja2
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.python import PythonOperator, ShortCircuitOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException

from continuous_training.config import get_settings
from continuous_training.errors import PipelineError
from continuous_training.paths import dated_path, local_matches, stage_dir
from continuous_training.spec import DatasetSpec, SpecError, load_spec

RESOLVE_SCORING_RUN = "resolve_scoring_run"
DECIDE_RETRAINING = "decide_retraining"
# The run's date: its logical date, or when it was queued for runs without one.
RUN_DATE = "{{ (logical_date or dag_run.run_after) | ds }}"
# One slot: registry moves (register, promote) of all runs and DAGs happen one at a time (make creates it).
REGISTRY_POOL = "mlflow_registry"
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*$"


def default_task_args() -> dict[str, Any]:
    """Retries with exponential backoff and an execution timeout for every task."""
    settings = get_settings()
    return {
        "retries": settings.task_retries,
        "retry_delay": timedelta(seconds=30),
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


def training_params(spec: DatasetSpec | None) -> dict[str, Param]:
    """The trigger form of a training run: a dataset's own DAG fixes `dataset` and takes its defaults from the
    spec's `training.params`; the generic DAG takes a name or a path."""
    defaults: dict[str, Any] = {
        "max_quarantine_fraction": get_settings().quarantine_max_fraction, "num_proc": 2, "use_gpu": "auto",
        "framework": "torch", "epochs": 10, "batch_size": None, "learning_rate": 0.001, "patience": 3, "seed": 42,
        "promotion_threshold": None, "min_improvement": 0.0,
        **(spec.training.params if spec and spec.training else {}),
    }
    if spec is None:
        dataset = Param("churn", type="string", minLength=1,
                        description="Dataset name (include/datasets/<name>.yaml) or path to a spec file.")
    else:
        dataset = Param(spec.name, type="string", enum=[spec.name], description="The dataset this DAG trains.")
    return {
        "dataset": dataset,
        "max_quarantine_fraction": Param(defaults["max_quarantine_fraction"], type="number", minimum=0, maximum=1,
                                         description="validate fails above this quarantined fraction."),
        "framework": Param(defaults["framework"], enum=["torch", "tensorflow"],
                           description="torch: Horovod ranks; tensorflow: Keras workers "
                                       "(MultiWorkerMirroredStrategy)."),
        "num_proc": Param(defaults["num_proc"], type="integer", minimum=1,
                          description="Ranks or workers (barrier tasks)."),
        "use_gpu": Param(defaults["use_gpu"], enum=["auto", "true", "false"],
                         description="auto: GPUs when the cluster schedules them; true: require; false: CPU."),
        "epochs": Param(defaults["epochs"], type="integer", minimum=1,
                        description="Maximum epochs (early stopping may end sooner)."),
        "batch_size": Param(defaults["batch_size"], type=["null", "integer"], minimum=1,
                            description="Rows per rank and step (the global batch is this × num_proc); empty: 512, "
                                        "fewer when an epoch would take less than 32 steps."),
        "learning_rate": Param(defaults["learning_rate"], type="number", exclusiveMinimum=0,
                               description="Base learning rate (scaled by the number of ranks)."),
        "patience": Param(defaults["patience"], type="integer", minimum=0,
                          description="Early-stopping patience in epochs."),
        "seed": Param(defaults["seed"], type="integer", description="Seed for weights and data order."),
        "promotion_threshold": Param(defaults["promotion_threshold"], type=["null", "number"],
                                     description="Absolute bar on the dataset's promotion metric (default: spec)."),
        "min_improvement": Param(defaults["min_improvement"], type="number", minimum=0,
                                 description="How much the candidate must beat the champion by."),
        "triggered_by": Param("", type="string", description="What started this run (a drift check that triggers "
                                                                "retraining says which check and batch); empty for a "
                                                                "run of new data: the batches are named instead."),
    }


def new_data(triggering_asset_events: Any) -> str:
    """The batches named by the landing Asset events that scheduled a run, "" for a run they did not schedule."""
    batches = [batch for events in (triggering_asset_events or {}).values() for event in events
               for batch in (event.extra or {}).get("payload", {}).get("batches", [])]
    return f"new data: {', '.join(batches)}" if batches else ""


def train_task() -> SparkSubmitOperator:
    """The distributed training job, with the run's params."""
    return spark_job(
        "train",
        "--framework", "{{ params.framework }}",
        "--num-proc", "{{ params.num_proc }}", "--use-gpu", "{{ params.use_gpu }}",
        "--epochs", "{{ params.epochs }}", "--batch-size", "{{ params.batch_size }}",
        "--learning-rate", "{{ params.learning_rate }}", "--patience", "{{ params.patience }}",
        "--seed", "{{ params.seed }}",
        "--airflow-dag-id", "{{ dag.dag_id }}", "--airflow-task-id", "{{ task.task_id }}",
        "--triggered-by", "{{ params.triggered_by or new_data(triggering_asset_events) }}",
    )


def check_spec() -> PythonOperator:
    """Fails the run in seconds, without retries, on an unknown dataset, an invalid spec or a source glob that
    matches nothing: user errors that no retry can fix."""
    return PythonOperator(task_id="check_spec", python_callable=_check_spec)


def _register(params: dict[str, Any], run_id: str) -> str:
    from continuous_training.registry import register_candidate

    version = register_candidate(load_spec(params["dataset"]), run_id)
    return version.version


def register_task() -> PythonOperator:
    """Registers the run's candidate as `@challenger` (MLflow client calls, no Spark), in the registry pool."""
    return PythonOperator(task_id="register", python_callable=_register, pool=REGISTRY_POOL)


def promote_task() -> SparkSubmitOperator:
    """The gate (a Spark job: it re-scores the champion if `@champion` moved since evaluate), in the registry pool."""
    return spark_job("promote", "--promotion-threshold", "{{ params.promotion_threshold }}",
                     "--min-improvement", "{{ params.min_improvement }}", pool=REGISTRY_POOL)


def scoring_params(spec: DatasetSpec | None) -> dict[str, Param]:
    """The form of a scoring run: a dataset's own DAG fixes `dataset`; the generic DAG takes a name or a path."""
    scoring = spec.scoring if spec else None
    if spec is None:
        dataset = Param("churn", type="string", minLength=1,
                        description="Dataset name (include/datasets/<name>.yaml) or path to a spec file.")
    else:
        dataset = Param(spec.name, type="string", enum=[spec.name], description="The dataset this DAG scores.")
    return {
        "dataset": dataset,
        "input": Param(None, type=["null", "string"], minLength=1,
                       description="File or glob of the batch to score (relative to DATA_DIR, may use {{ ds }}); "
                                   "default: the spec's scoring.path for the run's date."),
        "model_alias": Param(scoring.model_alias if scoring else "champion", type="string", pattern=ALIAS_PATTERN,
                             description="Registered model alias to score with (resolved once, at the start)."),
        "max_quarantine_fraction": Param(get_settings().quarantine_max_fraction, type="number", minimum=0,
                                         maximum=1, description="validate fails above this quarantined fraction."),
    }


def _resolve_scoring_run(params: dict[str, Any], logical_date: datetime | None, dag_run: Any) -> dict[str, Any]:
    from continuous_training.serving.batch import resolve_model

    scored_for = (logical_date or dag_run.run_after).date()
    try:
        spec = load_spec(params["dataset"])
        template = params["input"] or (spec.scoring.path if spec.scoring else None)
        if template is None:
            raise SpecError(f"dataset {spec.name!r} has no scoring section: give the batch with the `input` param")
        source = dated_path(template, scored_for)
        if local_matches(source) == []:
            raise PipelineError(f"no batch to score for {scored_for}: nothing matches {source}")
        model = resolve_model(spec, params["model_alias"])
    except (SpecError, PipelineError, jinja2.TemplateError) as error:
        raise AirflowFailException(str(error)) from None
    return {"input": source, "scored_for": scored_for.isoformat(), "model": asdict(model)}


def resolve_scoring_run() -> PythonOperator:
    """Fixes what a scoring run reads and which model version scores it, once, at its start (XCom for the rest).
    User errors (no model under the alias, no batch, a bad spec) fail at once without retries."""
    return PythonOperator(task_id=RESOLVE_SCORING_RUN, python_callable=_resolve_scoring_run)


def resolved(*keys: str) -> str:
    """A template of one field the run's `resolve_scoring_run` task resolved, e.g. `resolved("model", "version")`."""
    path = "".join(f"['{key}']" for key in keys)
    return f"{{{{ ti.xcom_pull(task_ids='{RESOLVE_SCORING_RUN}'){path} }}}}"


def drift_params(spec: DatasetSpec | None) -> dict[str, Param]:
    """The form of a drift check: a dataset's own DAG fixes `dataset`; the generic DAG takes a name or a path."""
    if spec is None:
        dataset = Param("churn", type="string", minLength=1,
                        description="Dataset name (include/datasets/<name>.yaml) or path to a spec file.")
    else:
        dataset = Param(spec.name, type="string", enum=[spec.name], description="The dataset this DAG checks.")
    window = spec.monitoring.window if spec and spec.monitoring else 1
    return {
        "dataset": dataset,
        "window": Param(window, type="integer", minimum=1,
                        description="Scored dates checked: the last N up to the run's date."),
    }


def _decide_retraining(params: dict[str, Any], run_id: str, logical_date: datetime | None, dag_run: Any,
                       ti: Any) -> dict[str, Any] | None:
    from continuous_training.monitoring.drift import DRIFT_FILE, MONITORING_STAGE
    from continuous_training.monitoring.retraining import ACTIVE_STATES, decide_retraining

    spec = load_spec(params["dataset"])
    result = json.loads((stage_dir(spec.name, MONITORING_STAGE, run_id) / DRIFT_FILE).read_text())
    decision = decide_retraining(
        spec, params["dataset"], result, logical_date or dag_run.run_after,
        lambda dag_id, run_ids: ti.get_dr_count(dag_id=dag_id, run_ids=None if run_ids is None else list(run_ids),
                                                states=list(ACTIVE_STATES)))
    return {"dag_id": decision.dag_id, "run_id": decision.run_id, "conf": decision.conf} if decision.trigger else None


def decide_retraining() -> ShortCircuitOperator:
    """Triggers retraining only on drift, never while a triggered run is active nor within the cooldown; records
    the decision and its reason on the check's MLflow run (`continuous_training.monitoring.retraining`)."""
    return ShortCircuitOperator(task_id=DECIDE_RETRAINING, python_callable=_decide_retraining)


def trigger_retraining() -> TriggerDagRunOperator:
    """Starts the training run decide_retraining named, of the DAG it named (a retry finds it and does not start a
    second)."""
    decided = f"ti.xcom_pull(task_ids='{DECIDE_RETRAINING}')"
    return TriggerDagRunOperator(
        task_id="trigger_retraining", trigger_dag_id=f"{{{{ {decided}['dag_id'] }}}}",
        trigger_run_id=f"{{{{ {decided}['run_id'] }}}}",
        conf={key: f"{{{{ {decided}['conf']['{key}'] }}}}" for key in ("dataset", "triggered_by")},
        logical_date=None, skip_when_already_exists=True,
    )
