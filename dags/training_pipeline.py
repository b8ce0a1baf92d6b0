"""
### training_pipeline

Takes one dataset from landing files to featurized train / validation / test data:

`ingest` → `validate` → `stats` → `featurize`

Each task is a `spark-submit` of `jobs/<stage>.py` against the `spark_default` connection and writes
`$DATA_DIR/<dataset>/<stage>/run_id=<this run>/`; rerunning a task overwrites its own output.

* **ingest**: reads the spec's landing files with its explicit schema, keeps malformed lines, writes compacted Parquet.
* **validate**: applies the spec's rules; bad rows go to `quarantine/` with a reason. Fails above
  `max_quarantine_fraction`.
* **stats**: `stats.json` (the drift reference) and `report.html`.
* **featurize**: fits the Spark ML feature pipeline on the train split, writes Petastorm-ready features.

Trigger with `{"dataset": "<name under include/datasets/ or path to a spec>"}`.
"""

from airflow.sdk import DAG, Param, chain

from continuous_training.config import get_settings
from continuous_training.dag_tasks import default_task_args, spark_job

with DAG(
    dag_id="training_pipeline",
    doc_md=__doc__,
    schedule=None,
    max_active_runs=1,
    catchup=False,
    default_args=default_task_args(),
    tags=["training", "spark"],
    params={
        "dataset": Param("churn", type="string", minLength=1,
                         description="Dataset name (include/datasets/<name>.yaml) or path to a spec file."),
        "max_quarantine_fraction": Param(get_settings().quarantine_max_fraction, type="number", minimum=0,
                                         maximum=1, description="validate fails above this quarantined fraction."),
    },
):
    chain(
        spark_job("ingest"),
        spark_job("validate", "--max-quarantine-fraction", "{{ params.max_quarantine_fraction }}"),
        spark_job("stats"),
        spark_job("featurize"),
    )
