"""
### batch_scoring__&lt;dataset&gt; and batch_scoring

Scores a batch of new, unlabelled rows with the registered model that holds an alias (default `@champion`):

`resolve_scoring_run` → `ingest` → `validate` → `score`

* **resolve_scoring_run**: fixes the batch (the spec's `scoring.path` for the run's date, or the `input` param)
  and resolves the alias to one model version, once; every later task uses that version. It reads the batch only
  once its folder holds a `_SUCCESS` marker: a late batch is waited for, deferred in the triggerer, until
  `scoring.deadline_hours` (default 4) after the run's date; past it the run fails naming the date and marker.
* **ingest**, **validate**: the training jobs, spec and rules on the batch (`--for-scoring`: the label and
  non-feature columns may be absent); bad rows are quarantined with a reason.
* **score**: the pyfunc in Spark executors (Arrow batches, one model load per Python worker); predictions with
  lineage to `$DATA_DIR/<dataset>/predictions/scored_for=<date>/`, a rerun replaces that partition only; a
  summary beside it and as an MLflow run in experiment `<dataset>-scoring`.

One `batch_scoring__<dataset>` DAG exists per spec under `include/datasets/` with a `scoring` section, on that
section's schedule. `batch_scoring` takes any spec by name or path, and the batch with `input`.
"""

from airflow.sdk import DAG, chain
from continuous_training.dag_ids import SCORING, dag_display_name, dag_doc, dags
from continuous_training.orchestration.alerts import on_run_failure
from continuous_training.orchestration.params import scoring_params
from continuous_training.orchestration.tasks import SCORE, default_task_args, resolve_scoring_run, resolved, spark_job
from continuous_training.paths import INGEST, VALIDATE
from continuous_training.spec import DatasetSpec


def batch_scoring_dag(dag_id: str, spec: DatasetSpec | None) -> DAG:
    with DAG(
        dag_id=dag_id,
        dag_display_name=dag_display_name(SCORING, spec),
        doc_md=dag_doc(SCORING, spec, __doc__),
        schedule=spec.scoring.schedule if spec else None,
        max_active_runs=1,
        catchup=False,
        default_args=default_task_args(),
        on_failure_callback=on_run_failure(),
        tags=["scoring", "spark", "mlflow", *([spec.name] if spec else [])],
        params=scoring_params(spec),
    ) as dag:
        chain(
            resolve_scoring_run(),
            spark_job(INGEST, "--for-scoring", "--input", resolved("input")),
            spark_job(VALIDATE, "--for-scoring", "--max-quarantine-fraction", "{{ params.max_quarantine_fraction }}"),
            spark_job(SCORE, "--scored-for", resolved("scored_for"), "--model-version", resolved("model", "version"),
                      "--model-alias", "{{ params.model_alias }}"),
        )
    return dag


for dag_id, dataset_spec in dags(SCORING):
    globals()[dag_id] = batch_scoring_dag(dag_id, dataset_spec)
