"""
### training_pipeline

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
* **train**: `num_proc` Horovod ranks (PyTorch) in one Spark barrier stage, GPU-aware, fed by Petastorm;
  tracked in the MLflow experiment named after the dataset, with a pyfunc model taking raw columns.
* **evaluate**: scores the test split with the candidate and the current `@champion`.
* **register**: creates the model version, tags it, points `@challenger` at it.
* **promote**: moves `@champion` only if the candidate passes the threshold and beats the champion by
  `min_improvement` on the same rows; if `@champion` moved since `evaluate`, it scores the new champion first.
  Otherwise it tags the candidate rejected (the run stays green).

`register` and `promote` run in the one-slot pool `mlflow_registry` and under a lock per model, so registry
moves of different runs and DAGs never interleave.

Trigger with `{"dataset": "<name under include/datasets/ or path to a spec>"}`.
"""

from airflow.sdk import DAG, Param, chain
from continuous_training.config import get_settings
from continuous_training.dag_tasks import check_spec, default_task_args, promote_task, register_task, spark_job

with DAG(
    dag_id="training_pipeline",
    doc_md=__doc__,
    schedule=None,
    max_active_runs=1,
    catchup=False,
    default_args=default_task_args(),
    tags=["training", "spark", "horovod", "mlflow"],
    params={
        "dataset": Param("churn", type="string", minLength=1,
                         description="Dataset name (include/datasets/<name>.yaml) or path to a spec file."),
        "max_quarantine_fraction": Param(get_settings().quarantine_max_fraction, type="number", minimum=0,
                                         maximum=1, description="validate fails above this quarantined fraction."),
        "num_proc": Param(2, type="integer", minimum=1, description="Horovod ranks (barrier tasks)."),
        "use_gpu": Param("auto", enum=["auto", "true", "false"],
                         description="auto: GPUs when the cluster schedules them; true: require; false: CPU."),
        "epochs": Param(10, type="integer", minimum=1, description="Maximum epochs (early stopping may end sooner)."),
        "batch_size": Param(64, type="integer", minimum=1, description="Batch size per rank."),
        "learning_rate": Param(0.001, type="number", exclusiveMinimum=0,
                               description="Base learning rate (scaled by the number of ranks)."),
        "patience": Param(3, type="integer", minimum=0, description="Early-stopping patience in epochs."),
        "seed": Param(42, type="integer", description="Seed for weights and data order."),
        "promotion_threshold": Param(None, type=["null", "number"],
                                     description="Absolute bar on the dataset's promotion metric (default: spec)."),
        "min_improvement": Param(0.0, type="number", minimum=0,
                                 description="How much the candidate must beat the champion by."),
        "triggered_by": Param("", type="string", description="What started this run; drift checks that trigger "
                                                                "retraining say which check and batch."),
    },
):
    chain(
        check_spec(),
        spark_job("ingest"),
        spark_job("validate", "--max-quarantine-fraction", "{{ params.max_quarantine_fraction }}"),
        spark_job("stats"),
        spark_job("featurize"),
        spark_job(
            "train",
            "--num-proc", "{{ params.num_proc }}", "--use-gpu", "{{ params.use_gpu }}",
            "--epochs", "{{ params.epochs }}", "--batch-size", "{{ params.batch_size }}",
            "--learning-rate", "{{ params.learning_rate }}", "--patience", "{{ params.patience }}",
            "--seed", "{{ params.seed }}",
            "--airflow-dag-id", "{{ dag.dag_id }}", "--airflow-task-id", "{{ task.task_id }}",
            "--triggered-by", "{{ params.triggered_by }}",
        ),
        spark_job("evaluate"),
        register_task(),
        promote_task(),
    )
