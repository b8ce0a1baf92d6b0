"""A real scoring run seeded with canary secrets (an MLflow login in the tasks' environment, a password in the Spark
connection every Spark task uses and in another Airflow connection) leaves none of them in its captured task logs:
neither a canary string nor anything detect-secrets finds. The run scores with MLflow's pickle deserialization off,
as every launcher sets it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from continuous_training.demo import generate_scoring
from detect_secrets import SecretsCollection
from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.settings import transient_settings
from e2e_workspace import Workspace, dag_run_finished

pytestmark = pytest.mark.e2e

MLFLOW_CANARY = "canary-mlflow-7f3a9c1e5b2d4e6f"  # pragma: allowlist secret
SPARK_CONNECTION_CANARY = "canary-spark-0b8d2f4a6c1e3g5h"  # pragma: allowlist secret
CONNECTION_CANARY = "canary-warehouse-9e7c5a3b1d2f4h6j"  # pragma: allowlist secret
# Every detect-secrets plugin but the two entropy ones: task logs are full of run ids and digests (hex, base64),
# and the canaries, the high-entropy secrets here, are searched for as they are.
PLUGINS = sorted(plugin.__name__ for plugin in get_mapping_from_secret_type_to_class().values()
                 if "HighEntropy" not in plugin.__name__)


def detected_secrets(path: Path) -> list[str]:
    with transient_settings({"plugins_used": [{"name": name} for name in PLUGINS]}):
        found = SecretsCollection()
        found.scan_file(str(path))
    return [f"{secret.type} at line {secret.line_number}" for _, secret in found]


def test_captured_task_logs_of_a_run_seeded_with_canary_secrets_hold_none(e2e: Workspace, tmp_path: Path) -> None:
    e2e.train("churn")
    generate_scoring(days=1, rows_per_day=200, start_date="2026-11-09", seed=11, data_dir=e2e.data_dir)
    spark = {**json.loads(e2e.env["AIRFLOW_CONN_SPARK_DEFAULT"]), "login": "ct", "password": SPARK_CONNECTION_CANARY}
    warehouse = {"conn_type": "generic", "host": "warehouse.invalid", "login": "ct", "password": CONNECTION_CANARY}
    env = {**e2e.env, "MLFLOW_TRACKING_USERNAME": "ct", "MLFLOW_TRACKING_PASSWORD": MLFLOW_CANARY,
           "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(spark), "AIRFLOW_CONN_WAREHOUSE": json.dumps(warehouse),
           "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    logs = Path(e2e.env["AIRFLOW_HOME"]) / "logs"
    before = {path for path in logs.rglob("*") if path.is_file()} if logs.exists() else set()

    result = e2e.airflow("dags", "test", "batch_scoring__churn", "2026-11-09", env=env)

    assert dag_run_finished(result.stdout + result.stderr)["state"] == "success"
    task_logs = sorted(path for path in logs.rglob("*") if path.is_file() and path not in before)
    captured = tmp_path / "captured.log"
    captured.write_text(result.stdout + result.stderr
                        + "".join(path.read_text(errors="replace") for path in task_logs))
    text = captured.read_text()
    assert "spark-submit" in text or "SparkSubmit" in text, "the capture holds the Spark tasks' logs"
    for canary in (MLFLOW_CANARY, SPARK_CONNECTION_CANARY, CONNECTION_CANARY):
        assert canary not in text, f"a canary secret is in the task logs ({len(task_logs)} files and the output)"
    assert detected_secrets(captured) == []
