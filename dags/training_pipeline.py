"""
### training__&lt;dataset&gt; and training_pipeline

Takes one dataset from landing files to a registered, gated model:

`check_spec` → `ingest` → `validate` → `stats` → `featurize` → `train` → `evaluate` → `register` → `promote`

Spark stages are `spark-submit`s of `jobs/<stage>.py` against the `spark_default` connection; each writes
`$DATA_DIR/<dataset>/<stage>/run_id=<this run>/` and a rerun overwrites its own output.

* **check_spec**: fails the run in seconds, without retries, on an unknown dataset, an invalid spec or a source
  glob that matches nothing.
* **ingest**: pins the run's input files on its first attempt (later attempts read exactly those), reads them
  with the spec's explicit schema, keeps malformed lines, writes compacted Parquet.
* **validate**: applies the spec's rules; bad rows go to `quarantine/` with a reason. Fails above
  `max_quarantine_fraction`.
* **stats**: `stats.json` (the drift reference) and `report.html`.
* **featurize**: fits the Spark ML feature pipeline on the train split, writes Petastorm-ready features.
* **train**: `num_proc` ranks in one Spark barrier stage, GPU-aware, fed by Petastorm: Horovod ranks with
  `framework` torch (default), Keras workers of a MultiWorkerMirroredStrategy cluster with tensorflow; tracked in
  the MLflow experiment named after the dataset, with a pyfunc model taking raw columns.
* **evaluate**: scores the test split with the candidate and the current `@champion`.
* **register**: creates the model version, tags it, points `@challenger` at it.
* **promote**: moves `@champion` only if the candidate passes the threshold and beats the champion by
  `min_improvement` on the same rows; if `@champion` moved since `evaluate`, it scores the new champion first.
  Otherwise it tags the candidate rejected (the run stays green).

`register` and `promote` run in the one-slot pool `mlflow_registry` and under a lock per model, so registry
moves of different runs and DAGs never interleave.

One `training__<dataset>` DAG exists per spec under `include/datasets/` with a `training` section: on its
`schedule`, and/or **on new data** (`on_new_data: true`): a new complete batch in the dataset's landing area (a
subfolder with a `_SUCCESS` marker) starts one run, through the landing Asset that the triggerer watches. Its
trigger form takes the spec's `training.params` as defaults. Drift checks retrain through it.

`training_pipeline` takes any spec by name or path: trigger with
`{"dataset": "<name under include/datasets/ or path to a spec>"}`.
"""

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, chain
from continuous_training.dag_ids import TRAINING, dag_display_name, dag_doc, dags
from continuous_training.orchestration.alerts import on_run_failure
from continuous_training.orchestration.landing import landing_asset
from continuous_training.orchestration.params import training_params
from continuous_training.orchestration.tasks import (
    check_spec,
    default_task_args,
    new_data,
    promote_task,
    register_task,
    spark_job,
    train_task,
)
from continuous_training.paths import EVALUATE, FEATURIZE, INGEST, STATS, VALIDATE
from continuous_training.spec import DatasetSpec


def training_schedule(spec: DatasetSpec | None):
    """The spec's cron or preset, its landing Asset (on new data), both, or None (triggered runs only)."""
    training = spec.training if spec else None
    if training is None:
        return None
    if not training.on_new_data:
        return training.schedule
    if training.schedule is None:
        return [landing_asset(spec)]
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(training.schedule, timezone="UTC"),
                               assets=[landing_asset(spec)])


def training_dag(dag_id: str, spec: DatasetSpec | None) -> DAG:
    with DAG(
        dag_id=dag_id,
        dag_display_name=dag_display_name(TRAINING, spec),
        doc_md=dag_doc(TRAINING, spec, __doc__),
        schedule=training_schedule(spec),
        max_active_runs=1,
        catchup=False,
        default_args=default_task_args(),
        on_failure_callback=on_run_failure(),
        tags=["training", "spark", "horovod", "mlflow", *([spec.name] if spec else [])],
        params=training_params(spec),
        user_defined_macros={"new_data": new_data},
    ) as dag:
        chain(
            check_spec(),
            spark_job(INGEST),
            spark_job(VALIDATE, "--max-quarantine-fraction", "{{ params.max_quarantine_fraction }}"),
            spark_job(STATS),
            spark_job(FEATURIZE),
            train_task(),
            spark_job(EVALUATE),
            register_task(),
            promote_task(),
        )
    return dag


for dag_id, dataset_spec in dags(TRAINING):
    globals()[dag_id] = training_dag(dag_id, dataset_spec)
