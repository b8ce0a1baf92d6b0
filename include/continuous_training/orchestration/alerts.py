"""Alerts: a failed DAG run, drift found, a promotion or a rejection, a scoring batch missing past its deadline.

Each alert goes to every channel the settings configure: email to `ALERT_EMAIL_TO` through the SMTP provider's hook
(Airflow connection `ALERT_SMTP_CONN_ID`), and a JSON POST `{"text": ...}` to `ALERT_WEBHOOK_URL`. No channel
configured: nothing is sent. Sending never raises: a channel that fails logs one warning line (never the webhook URL)
and the task that sent it carries on. The text holds names, values, paths and links, never a credential.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseNotifier

from continuous_training.config import Settings, get_settings
from continuous_training.paths import PROMOTE, PROMOTION_FILE, PromotionDecision, read_result, stage_dir
from continuous_training.spec import load_spec
from continuous_training.tracking import mlflow_run_url

if TYPE_CHECKING:
    from continuous_training.monitoring.retraining import RetrainDecision

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "[continuous-training]"


@dataclass(frozen=True)
class Alert:
    """One notification: a title, what happened, and links (name → URL)."""

    title: str
    lines: tuple[str, ...] = ()
    links: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        return "\n".join([self.title, *self.lines, *(f"{name}: {url}" for name, url in self.links.items())])

    def html(self) -> str:
        links = "".join(f'<li>{html.escape(name)}: <a href="{html.escape(url)}">{html.escape(url)}</a></li>'
                        for name, url in self.links.items())
        lines = "".join(f"<p>{html.escape(line)}</p>" for line in self.lines)
        return f"<h3>{html.escape(self.title)}</h3>{lines}<ul>{links}</ul>"


def airflow_run_url(dag_id: str, run_id: str) -> str:
    """The DAG run's page in the Airflow UI (`[api] base_url`, as the task instances' log URLs use)."""
    from airflow.sdk.configuration import conf

    base_url = conf.get("api", "base_url", fallback="http://localhost:8080/").rstrip("/")
    return f"{base_url}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def mlflow_model_version_url(name: str, version: str, settings: Settings | None = None) -> str:
    ui_url = (settings or get_settings()).mlflow_ui_url.rstrip("/")
    return f"{ui_url}/#/models/{quote(name, safe='')}/versions/{quote(version, safe='')}"


def send(compose: Callable[[], Alert | None], settings: Settings | None = None) -> None:
    """Send the alert `compose()` makes (None: nothing to say) to every configured channel; never raises."""
    settings = settings or get_settings()
    if not settings.alert_email_to and settings.alert_webhook_url is None:
        return
    try:
        alert = compose()
    except Exception as error:
        log.warning("No alert sent: composing it failed: %s: %s", type(error).__name__, error)
        return
    if alert is None:
        return
    if settings.alert_email_to:
        try:
            _email(alert, settings)
        except Exception as error:
            log.warning("Alert %r not emailed (connection %s): %s: %s", alert.title, settings.alert_smtp_conn_id,
                        type(error).__name__, error)
    if settings.alert_webhook_url is not None:
        try:
            _post(alert, settings)
        except Exception as error:
            # httpx errors can name the URL, which may hold a token: only the host and the status or error type.
            host = urlsplit(settings.alert_webhook_url.get_secret_value()).hostname
            status = getattr(getattr(error, "response", None), "status_code", None)
            log.warning("Alert %r not posted to the webhook on %s: %s", alert.title, host,
                        f"HTTP {status}" if status else type(error).__name__)


def _email(alert: Alert, settings: Settings) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    recipients = [address.strip() for address in settings.alert_email_to.split(",") if address.strip()]
    with SmtpHook(smtp_conn_id=settings.alert_smtp_conn_id) as hook:
        hook.send_email_smtp(to=recipients, subject=f"{SUBJECT_PREFIX} {alert.title}", html_content=alert.html())


def _post(alert: Alert, settings: Settings) -> None:
    import httpx

    response = httpx.post(settings.alert_webhook_url.get_secret_value(), json={"text": alert.text()},
                          timeout=settings.alert_timeout_seconds)
    response.raise_for_status()


class AlertNotifier(BaseNotifier):
    """An Airflow notifier (DAG or task callback) that sends the alert `compose(context)` makes; never raises."""

    def __init__(self, compose: Callable[[Any], Alert | None]):
        super().__init__()
        self.compose = compose

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing to render (no template fields); `dags test` hands DAG callbacks a serialized DAG without the
        template environment the base class would ask it for."""

    def notify(self, context: Any) -> None:
        send(lambda: self.compose(context))


def failed_run_alert(context: Any) -> Alert:
    """A DAG run failed: which, why, the task that failed and its log."""
    dag_id, run_id, ti = context["dag"].dag_id, context["run_id"], context.get("ti")
    lines = [f"DAG {dag_id} run {run_id} failed ({context.get('reason') or 'failed'})"
             + (f" at task {ti.task_id}." if ti else ".")]
    links = {"Airflow run": airflow_run_url(dag_id, run_id)}
    if ti:
        links["Failed task log"] = ti.log_url
    return Alert(f"DAG run failed: {dag_id}", tuple(lines), links)


def promotion_alert(context: Any) -> Alert:
    """The gate's verdict (promotion.json of the run's promote stage): the metric against the champion."""
    spec = load_spec(context["params"]["dataset"])
    run_id = context["run_id"]
    decision = read_result(stage_dir(spec.name, PROMOTE, run_id) / PROMOTION_FILE, PromotionDecision)
    verdict = "promoted to @champion" if decision.promoted else "rejected"
    champion = (f"champion version {decision.champion_version}: {decision.champion_value:.6g}"
                if decision.champion_version is not None and decision.champion_value is not None
                else "no champion before")
    return Alert(
        f"Model {decision.model_name} version {decision.version} {verdict}",
        (f"{decision.metric}: candidate {decision.candidate_value:.6g}, {champion} (threshold "
         f"{decision.threshold if decision.threshold is not None else 'none'}, min improvement "
         f"{decision.min_improvement:g}).", f"Reason: {decision.reason}"),
        {"MLflow model version": mlflow_model_version_url(decision.model_name, decision.version),
         "Airflow run": airflow_run_url(context["dag"].dag_id, run_id)},
    )


def drift_alert(result: dict[str, Any], decision: RetrainDecision, dag_id: str, run_id: str) -> Alert | None:
    """A check that found drift (its drift.json): the verdict, the report, and whether it retrains or why not."""
    if not result["drift_detected"]:
        return None
    from continuous_training.tracking import mlflow_client

    experiment_id = mlflow_client().get_run(result["mlflow_run_id"]).info.experiment_id
    retraining = (f"Retraining triggered: run {decision.run_id} of {decision.dag_id}." if decision.trigger
                  else f"Retraining not triggered: {decision.reason}.")
    return Alert(
        f"Drift in {result['dataset']} for {result['checked_for']}",
        (*(f"Drift: {line}" for line in result["reasons"]), retraining, f"Report: {result['report']}"),
        {"MLflow monitoring run": mlflow_run_url(experiment_id, result["mlflow_run_id"]),
         "Airflow run": airflow_run_url(dag_id, run_id)},
    )


def missing_batch_alert(line: str, context: Any) -> Alert:
    """A scoring batch did not arrive by its deadline: the one line the run fails with."""
    dag_id, run_id = context["dag"].dag_id, context["run_id"]
    return Alert(f"Scoring batch missing: {dag_id}", (line,),
                 {"Airflow run": airflow_run_url(dag_id, run_id), "Task log": context["ti"].log_url})


def on_run_failure() -> AlertNotifier:
    """The DAG-level `on_failure_callback` of every DAG."""
    return AlertNotifier(failed_run_alert)


def on_promotion() -> AlertNotifier:
    """The promote task's `on_success_callback` (it succeeds on a promotion and on a rejection)."""
    return AlertNotifier(promotion_alert)
