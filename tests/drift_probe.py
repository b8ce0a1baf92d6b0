"""A stand-in for the drift check in test DAG folders: `drift_probe` leaves what check_drift leaves for a drifted
window (drift.json and the check's MLflow run), then runs the real decide_retraining and trigger_retraining tasks."""

DRIFT_PROBE = """
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param

from continuous_training.orchestration.tasks import decide_retraining, trigger_retraining


def drifted_check(params, run_id):
    from continuous_training.monitoring.drift import DRIFT_FILE, monitoring_experiment
    from continuous_training.paths import MONITORING, stage_dir, write_result
    from continuous_training.spec import load_spec
    from continuous_training.tracking import airflow_run, mlflow_client

    spec = load_spec(params["dataset"])
    check = airflow_run(mlflow_client(), monitoring_experiment(spec), run_id, "drift check").info.run_id
    write_result(stage_dir(spec.name, MONITORING, run_id) / DRIFT_FILE, {
        "mlflow_run_id": check, "airflow_run_id": run_id, "drift_detected": True, "outcome": "drift",
        "reasons": ["4 of 9 features drifted"], "checked_for": "2026-11-06", "window": {"dates": ["2026-11-06"]}})


with DAG("drift_probe", schedule=None, params={"dataset": Param("churn", type="string")}):
    PythonOperator(task_id="check_drift", python_callable=drifted_check) >> decide_retraining() >> trigger_retraining()
"""
