"""Alerts reach a real SMTP server (aiosmtpd) and a real HTTP receiver on 127.0.0.1, sent by real `airflow dags test`
runs: each event arrives exactly once on each channel, with its Airflow and MLflow links. No channel configured sends
nothing; a channel that is down costs one warning line and never fails the sender."""

from __future__ import annotations

import email
import json
import logging
import runpy
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from continuous_training.config import PROJECT_ROOT, Settings
from continuous_training.demo import write_churn_spec
from continuous_training.orchestration.alerts import (
    Alert,
    AlertNotifier,
    failed_run_alert,
    promotion_alert,
    send,
)
from pydantic import SecretStr

pytestmark = pytest.mark.integration

AIRFLOW_UI, MLFLOW_UI = "http://airflow.test:8080", "http://mlflow.test:5000"

PROBE_DAGS = """
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param

from continuous_training.orchestration.alerts import on_promotion, on_run_failure
from continuous_training.orchestration.tasks import decide_retraining


def drifted_check(params, run_id):
    # What check_drift leaves for a drifted window: drift.json and the check's MLflow run.
    from continuous_training.monitoring.drift import DRIFT_FILE, REPORT_FILE, monitoring_experiment
    from continuous_training.paths import MONITORING, stage_dir, write_result
    from continuous_training.spec import load_spec
    from continuous_training.tracking import airflow_run, mlflow_client

    spec = load_spec(params["dataset"])
    out_dir = stage_dir(spec.name, MONITORING, run_id)
    check = airflow_run(mlflow_client(), monitoring_experiment(spec), run_id, "drift check").info.run_id
    write_result(out_dir / DRIFT_FILE, {
        "dataset": spec.name, "mlflow_run_id": check, "airflow_run_id": run_id, "drift_detected": True,
        "outcome": "drift", "reasons": ["4 of 9 features drifted"], "checked_for": "2026-11-06",
        "window": {"dates": ["2026-11-06"]}, "report": str(out_dir / REPORT_FILE)})


def gate(params, run_id):
    # What the promote job leaves for a candidate that beat the champion.
    from continuous_training.paths import PROMOTE, PROMOTION_FILE, PromotionDecision, stage_dir, write_result

    write_result(stage_dir("churn", PROMOTE, run_id) / PROMOTION_FILE, PromotionDecision(
        model_name="churn_classifier", version="7", metric="roc_auc", candidate_value=0.91, champion_version="6",
        champion_value=0.88, champion_version_at_evaluate="6", reevaluated=False, threshold=0.7,
        min_improvement=0.01, promoted=True, reason="beats champion version 6 by 0.03"))


with DAG("alert_probe", schedule=None, params={"dataset": Param("churn", type="string")},
         on_failure_callback=on_run_failure()):
    PythonOperator(task_id="check_drift", python_callable=drifted_check) >> decide_retraining()
    PythonOperator(task_id="promote", python_callable=gate, on_success_callback=on_promotion())
"""


def smtp_connection(port: int, **extra: object) -> str:
    """An Airflow SMTP connection (as an AIRFLOW_CONN_* value) to a plain-text server on 127.0.0.1."""
    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": {
        "disable_ssl": True, "disable_tls": True, "from_email": "airflow@example.com", **extra}})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SmtpSink:
    """aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def bodies(self) -> list[tuple[str, str]]:
        """(subject, HTML body) of each message received."""
        return [(str(message["Subject"]), "".join(part.get_payload(decode=True).decode() for part in message.walk()
                                                   if part.get_content_type() == "text/html"))
                for message in self.messages]


class HttpSink(ThreadingHTTPServer):
    """An HTTP server keeping the JSON body of every POST."""

    def __init__(self) -> None:
        self.posts: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(handler) -> None:
                self.posts.append(json.loads(handler.rfile.read(int(handler.headers["Content-Length"]))))
                handler.send_response(200)
                handler.end_headers()

            def log_message(handler, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def texts(self) -> list[str]:
        return [post["text"] for post in self.posts]


@pytest.fixture(scope="module")
def sinks() -> Iterator[tuple[SmtpSink, HttpSink, int]]:
    smtp, port = SmtpSink(), free_port()
    controller = Controller(smtp, hostname="127.0.0.1", port=port)
    controller.start()
    http = HttpSink()
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield smtp, http, port
    http.shutdown()
    controller.stop()


@pytest.fixture
def received(sinks) -> tuple[SmtpSink, HttpSink]:
    """The sinks, emptied for one test."""
    smtp, http, _ = sinks
    smtp.messages.clear()
    http.posts.clear()
    return smtp, http


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, airflow_env, sinks) -> tuple[dict[str, str], Path]:
    """An Airflow home (migrated once) whose DAGs are the real batch_scoring and the probe, alerting both sinks; and a
    churn spec named `late` whose batches never come."""
    _, http, smtp_port = sinks
    root = tmp_path_factory.mktemp("alerts")
    dags = root / "dags"
    dags.mkdir()
    (dags / "probe.py").write_text(PROBE_DAGS)
    (dags / "batch_scoring.py").symlink_to(PROJECT_ROOT / "dags" / "batch_scoring.py")
    env = airflow_env(
        root, AIRFLOW__CORE__DAGS_FOLDER=str(dags), AIRFLOW__API__BASE_URL=AIRFLOW_UI, MLFLOW_UI_URL=MLFLOW_UI,
        ALERT_EMAIL_TO="oncall@example.com, ml@example.com",
        ALERT_WEBHOOK_URL=f"http://127.0.0.1:{http.server_port}/hooks/T000/B000",
        AIRFLOW_CONN_SMTP_DEFAULT=smtp_connection(smtp_port, timeout=5, retry_limit=0))
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    return env, write_churn_spec(root, "late", model_name="never_trained")


def dags_test(env: dict[str, str], *args: str) -> tuple[str, str, str]:
    """One `airflow dags test` run: its run id, its state and the command's output."""
    done = subprocess.run(["airflow", "dags", "test", *args], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        run_id, state = db.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
                                   (args[0],)).fetchone()
    return run_id, state, done.stdout + done.stderr


def run_url(dag_id: str, run_id: str) -> str:
    return f"{AIRFLOW_UI}/dags/{dag_id}/runs/{quote(run_id, safe='')}"


def test_a_scoring_batch_missing_past_its_deadline_alerts_it_and_the_failed_run_once_by_email_and_webhook(
        airflow, received) -> None:
    env, spec = airflow
    smtp, http = received

    run_id, state, output = dags_test(env, "batch_scoring", "2026-11-05", "--conf", json.dumps({"dataset": str(spec)}))

    assert state == "failed", output[-3000:]
    missing = (f"no batch to score for 2026-11-05: {Path(env['DATA_DIR'])}/incoming/late/date=2026-11-05/_SUCCESS "
               "did not appear by 2026-11-05T04:00:00+00:00 (scoring.deadline_hours: 4)")
    task_log = f"{run_url('batch_scoring', run_id)}/tasks/resolve_scoring_run?try_number=1"
    assert sorted(subject for subject, _ in smtp.bodies()) == [
        "[continuous-training] DAG run failed: batch_scoring",
        "[continuous-training] Scoring batch missing: batch_scoring"], output[-3000:]
    assert {message["To"] for message in smtp.messages} == {"oncall@example.com, ml@example.com"}
    texts = sorted(http.texts())
    assert len(texts) == 2, texts
    failed, late = texts
    assert failed.startswith("DAG run failed: batch_scoring\n")
    assert f"DAG batch_scoring run {run_id} failed (task_failure) at task resolve_scoring_run." in failed
    assert late.startswith("Scoring batch missing: batch_scoring\n") and missing in late
    for text in (failed, late):
        assert f"Airflow run: {run_url('batch_scoring', run_id)}" in text and task_log in text
    for _, body in smtp.bodies():
        assert f'href="{run_url("batch_scoring", run_id)}"' in body and task_log in body


def test_drift_found_and_a_promotion_alert_once_with_the_decision_the_metric_and_links(airflow, received) -> None:
    env, _ = airflow
    smtp, http = received

    run_id, state, output = dags_test(env, "alert_probe", "2026-11-06")

    assert state == "success", output[-3000:]
    assert sorted(subject for subject, _ in smtp.bodies()) == [
        "[continuous-training] Drift in churn for 2026-11-06",
        "[continuous-training] Model churn_classifier version 7 promoted to @champion"], output[-3000:]
    drift, promotion = sorted(http.texts())
    assert "Drift: 4 of 9 features drifted" in drift
    assert f"Retraining triggered: run drift_retrain__{run_id} of training__churn." in drift
    report = Path(env["DATA_DIR"]) / "churn" / "monitoring"
    assert f"Report: {report}/run_id=" in drift and drift.count("drift_report.html") == 1
    assert f"MLflow monitoring run: {MLFLOW_UI}/#/experiments/" in drift
    assert ("roc_auc: candidate 0.91, champion version 6: 0.88 (threshold 0.7, min improvement 0.01)."
            in promotion)
    assert f"MLflow model version: {MLFLOW_UI}/#/models/churn_classifier/versions/7" in promotion
    for text in (drift, promotion):
        assert f"Airflow run: {run_url('alert_probe', run_id)}" in text
    bodies = dict(smtp.bodies())
    assert f"{MLFLOW_UI}/#/models/churn_classifier/versions/7" in bodies[
        "[continuous-training] Model churn_classifier version 7 promoted to @champion"]


def test_every_dag_alerts_a_failed_run_and_the_promote_task_its_verdict() -> None:
    for file in sorted((PROJECT_ROOT / "dags").glob("*.py")):
        dags = [value for value in runpy.run_path(str(file)).values() if type(value).__name__ == "DAG"]
        assert dags, file
        for dag in dags:
            assert isinstance(dag.on_failure_callback, AlertNotifier), dag.dag_id
            assert dag.on_failure_callback.compose is failed_run_alert, dag.dag_id
            if "promote" in dag.task_dict:
                [notifier] = dag.get_task("promote").on_success_callback
                assert notifier.compose is promotion_alert, dag.dag_id


def test_no_channel_sends_nothing_and_a_channel_down_logs_one_line_and_never_fails(
        tmp_path, monkeypatch, caplog) -> None:
    composed: list[bool] = []

    def compose() -> Alert:
        composed.append(True)
        return Alert("Drift in churn", ("Drift: 1 of 9 features drifted",), {"Airflow run": run_url("d", "r")})

    send(compose, Settings(data_dir=tmp_path, alert_email_to=None, alert_webhook_url=None))
    assert composed == []

    closed = free_port()
    monkeypatch.setenv("AIRFLOW_CONN_DOWN_SMTP", smtp_connection(closed, timeout=2, retry_limit=0))
    down = Settings(data_dir=tmp_path, alert_email_to="oncall@example.com", alert_smtp_conn_id="down_smtp",
                    alert_webhook_url=SecretStr(f"http://127.0.0.1:{closed}/hooks/SECRET-TOKEN"),
                    alert_timeout_seconds=2)
    with caplog.at_level(logging.WARNING, logger="continuous_training.orchestration.alerts"):
        send(compose, down)

    assert composed == [True]
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("Alert 'Drift in churn' not emailed (connection down_smtp): ")
    assert warnings[1] == "Alert 'Drift in churn' not posted to the webhook on 127.0.0.1: ConnectError"
    assert all("\n" not in line and "SECRET-TOKEN" not in line for line in warnings)


def test_a_rejection_alerts_once_with_the_metric_and_no_champion_from_the_promote_callback(
        tmp_path, monkeypatch, sinks, received) -> None:
    from airflow.sdk import DAG
    from continuous_training.config import get_settings
    from continuous_training.paths import PROMOTE, PROMOTION_FILE, PromotionDecision, stage_dir, write_result

    _, http, smtp_port = sinks
    smtp, _ = received
    for name, value in {"DATA_DIR": str(tmp_path), "MLFLOW_UI_URL": MLFLOW_UI, "AIRFLOW__API__BASE_URL": AIRFLOW_UI,
                        "ALERT_EMAIL_TO": "oncall@example.com",
                        "ALERT_WEBHOOK_URL": f"http://127.0.0.1:{http.server_port}/hooks/T000/B000",
                        "AIRFLOW_CONN_SMTP_DEFAULT": smtp_connection(smtp_port)}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        write_result(stage_dir("churn", PROMOTE, "manual__1") / PROMOTION_FILE, PromotionDecision(
            model_name="churn_classifier", version="1", metric="roc_auc", candidate_value=0.55,
            champion_version=None, champion_value=None, champion_version_at_evaluate=None, reevaluated=False,
            threshold=0.7, min_improvement=0.0, promoted=False, reason="roc_auc 0.55 is below the threshold 0.7"))
        AlertNotifier(promotion_alert)({"params": {"dataset": "churn"}, "run_id": "manual__1",
                                        "dag": DAG("training__churn", schedule=None)})
    finally:
        get_settings.cache_clear()

    [(subject, body)] = smtp.bodies()
    assert subject == "[continuous-training] Model churn_classifier version 1 rejected"
    [text] = http.texts()
    assert ("roc_auc: candidate 0.55, no champion before (threshold 0.7, min improvement 0)." in text
            and "Reason: roc_auc 0.55 is below the threshold 0.7" in text), text
    for link in (f"{MLFLOW_UI}/#/models/churn_classifier/versions/1", run_url("training__churn", "manual__1")):
        assert link in text and f'href="{link}"' in body
