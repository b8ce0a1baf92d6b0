"""
### drift_check__&lt;dataset&gt; and drift_check

Checks a dataset's recently scored batches for drift and sends it back to training when the world moved:

`land_labels` → `check_drift` → `decide_retraining` → `trigger_retraining`

* **land_labels**: scored dates whose delayed labels feed is complete (a `_SUCCESS` marker, or
  `monitoring.labels_complete_after_days` after the date) land their labelled rows as a new batch in the dataset's
  training landing area (`monitoring.labelled_batches`); labels arriving later land as a follow-up batch, each
  labelled row once; rows without a label stay out and are counted.
* **check_drift**: the last `window` dates the scoring schedule fires on, up to the run's date (those not scored
  are named as missing), against the reference of the model version that scored them (its training run's
  profiles): PSI and KS per numeric feature, PSI and unseen share per categorical, null-rate change of every column,
  the same for the predictions, and the promotion metric on the rows whose labels arrived. An MLflow run in
  `<dataset>-monitoring` with every metric, tags `drift.detected`, `retrain.triggered` and `window.missing`,
  `drift.json` and an HTML report. Nothing scored yet: a recorded "nothing to check".
* **decide_retraining**: on drift, retrains unless a run an earlier check triggered is still queued or running, a
  training run of the dataset is in progress, or the spec's cooldown has not passed; the reason is recorded.
* **trigger_retraining**: triggers the dataset's own `training__<dataset>` DAG, or `training_pipeline` for a spec
  without one (skipped without a decision to retrain).

One `drift_check__<dataset>` DAG exists per spec under `include/datasets/` with a `monitoring` section, on that
section's schedule (default 06:00 UTC daily, after scoring). `drift_check` takes any spec by name or path.
"""

from airflow.sdk import DAG, chain
from continuous_training.dag_ids import DRIFT, dag_display_name, dag_doc, dags
from continuous_training.orchestration.alerts import on_run_failure
from continuous_training.orchestration.params import drift_params
from continuous_training.orchestration.tasks import (
    CHECK_DRIFT,
    LAND_LABELS,
    RUN_DATE,
    decide_retraining,
    default_task_args,
    spark_job,
    trigger_retraining,
)
from continuous_training.spec import DatasetSpec


def drift_check_dag(dag_id: str, spec: DatasetSpec | None) -> DAG:
    with DAG(
        dag_id=dag_id,
        dag_display_name=dag_display_name(DRIFT, spec),
        doc_md=dag_doc(DRIFT, spec, __doc__),
        schedule=spec.monitoring.schedule if spec else None,
        max_active_runs=1,
        catchup=False,
        default_args=default_task_args(),
        on_failure_callback=on_run_failure(),
        tags=["monitoring", "spark", "mlflow", *([spec.name] if spec else [])],
        params=drift_params(spec),
    ) as dag:
        chain(
            spark_job(LAND_LABELS, "--up-to", RUN_DATE),
            spark_job(CHECK_DRIFT, "--checked-for", RUN_DATE, "--window", "{{ params.window }}"),
            decide_retraining(),
            trigger_retraining(),
        )
    return dag


for dag_id, dataset_spec in dags(DRIFT):
    globals()[dag_id] = drift_check_dag(dag_id, dataset_spec)
