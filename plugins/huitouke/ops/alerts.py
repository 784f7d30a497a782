"""Alerts to the people who run huitouke: a task that failed, a day whose delivery failed above
the configured share, a run that missed its deadline (``operations.alerts`` in
``include/huitouke.yaml``; docs/operations.md).

An :class:`Alert` carries ids and counts only (the DAG, run, task, business day, how many
messages): never a phone number, an e-mail address or a name, nor an exception's text (its type
only; the task log has the rest). It goes out through one Airflow Connection, by one of two
notifiers (Airflow 3's ``BaseNotifier``): :class:`WebhookNotifier` posts the alert as JSON to an
HTTP Connection; ``email`` sends it through the SMTP provider's ``SmtpNotifier``.
:class:`TaskFailureNotifier` is the DAG's ``on_failure_callback`` (``default_args``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import BaseNotifier

from huitouke.pii import get_logger

__all__ = [
    "Alert",
    "TaskFailureNotifier",
    "WebhookNotifier",
    "delivery_failure_alert",
    "failure_share",
    "send_alert",
]

log = get_logger(__name__)

WEBHOOK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Alert:
    """One alert: ``kind`` (task_failed, delivery_failures, run_deadline, send_deadline), a
    one-line ``summary`` and the ids and counts behind it."""

    kind: str
    summary: str
    dag_id: str | None = None
    run_id: str | None = None
    business_date: str | None = None
    task_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": "huitouke",
            "kind": self.kind,
            "summary": self.summary,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "business_date": self.business_date,
            "task_id": self.task_id,
            "details": self.details,
        }

    def subject(self) -> str:
        return f"[huitouke] {self.summary}"

    def html(self) -> str:
        rows = "".join(
            f"<tr><th align='left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in self.as_dict().items()
            if k not in ("summary", "details") and v is not None
        )
        details = "".join(
            f"<tr><th align='left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in self.details.items()
        )
        return f"<p>{html.escape(self.summary)}</p><table>{rows}{details}</table>"


# ------------------------------------------------------------------------------ the notifiers


class WebhookNotifier(BaseNotifier):
    """Posts an alert as JSON to an HTTP Connection: ``host`` the URL (or host, port and
    ``schema``/``extra.path`` as the SMS webhook's Connection), ``password`` sent as a bearer
    token when set. A non-2xx answer raises."""

    template_fields = ()

    def __init__(self, conn_id: str, alert: Alert | None = None):
        super().__init__()
        self.conn_id, self.alert = conn_id, alert

    def notify(self, context: Any) -> None:
        import requests

        from huitouke.deliver.providers.webhook import base_url_from_connection
        from huitouke.store.connection import airflow_connection

        conn = airflow_connection(self.conn_id)
        alert = self.alert or alert_of_task_failure(context)
        headers = {"Authorization": f"Bearer {conn.password}"} if conn.password else {}
        response = requests.post(
            base_url_from_connection(conn), json=alert.as_dict(), headers=headers, timeout=WEBHOOK_TIMEOUT_S
        )
        response.raise_for_status()


def _email_notifier(alert: Alert, settings: Any) -> BaseNotifier:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    alerts = settings.operations.alerts
    return SmtpNotifier(
        to=list(alerts.to),
        from_email=alerts.from_email,
        subject=alert.subject(),
        html_content=alert.html(),
        smtp_conn_id=alerts.conn_id,
    )


def send_alert(alert: Alert, settings: Any = None, context: Mapping[str, Any] | None = None) -> bool:
    """Send ``alert`` through the configured notifier; False (and a log line) when none is
    configured. The alert's summary is logged either way."""
    from huitouke.config import load_settings

    settings = settings or load_settings()
    alerts = settings.operations.alerts
    log.warning("alert %s: %s", alert.kind, alert.summary)
    if alerts.notifier == "none":
        log.info("no notifier configured (operations.alerts.notifier: none): the alert is only logged")
        return False
    if alerts.notifier == "webhook":
        notifier: BaseNotifier = WebhookNotifier(alerts.conn_id, alert)
    else:
        notifier = _email_notifier(alert, settings)
    notifier.notify(dict(context or {}))
    return True


class TaskFailureNotifier(BaseNotifier):
    """The DAG's ``on_failure_callback``: an alert naming the failed task (its id, map index, try,
    the exception's type) through the configured notifier. Reads the configuration when it
    fires, not when the DAG is parsed. A notifier that fails is logged, never raised: the task has
    failed already."""

    template_fields = ()

    def notify(self, context: Any) -> None:
        try:
            send_alert(alert_of_task_failure(context), context=context)
        except Exception as exc:  # noqa: BLE001 - an alert must not hide the failure it reports
            log.error("sending the failure alert failed: %s", type(exc).__name__)


def _business_date(context: Mapping[str, Any]) -> str | None:
    from huitouke.config import load_settings

    start = context.get("data_interval_start")
    if start is None:
        return None
    return start.astimezone(load_settings().tz).date().isoformat()


def alert_of_task_failure(context: Mapping[str, Any]) -> Alert:
    """The alert of a failed task from its Airflow context."""
    ti = context.get("ti") or context.get("task_instance")
    run = context.get("dag_run")
    error = context.get("exception")
    task_id = getattr(ti, "task_id", None)
    map_index = getattr(ti, "map_index", -1)
    shown = f"{task_id}[{map_index}]" if map_index is not None and map_index >= 0 else str(task_id)
    day = _business_date(context)
    return Alert(
        kind="task_failed",
        summary=f"task {shown} failed" + (f" for business day {day}" if day else ""),
        dag_id=getattr(ti, "dag_id", None),
        run_id=getattr(run, "run_id", None) or getattr(ti, "run_id", None),
        business_date=day,
        task_id=task_id,
        details={
            "map_index": map_index,
            "try_number": getattr(ti, "try_number", None),
            "error_type": type(error).__name__ if error is not None else None,
        },
    )


# ------------------------------------------------------------------------------ the day's delivery


def failure_share(outcomes: Mapping[str, int]) -> tuple[int, int]:
    """``(failed, attempted)`` of a delivery summary's ``outcomes``: attempted are the messages
    handed to a provider this run (sent, failed, or of unknown fate); suppressed, expired, stale
    and retried-then-requeued ones are not counted."""
    failed = int(outcomes.get("failed", 0))
    attempted = failed + sum(int(outcomes.get(k, 0)) for k in ("sent", "unknown", "unsettled"))
    return failed, attempted


def delivery_failure_alert(
    summary: Mapping[str, Any], channel: str, max_share: float, min_attempted: int
) -> Alert | None:
    """An alert when a channel's delivery failed for more than ``max_share`` of the messages it
    attempted (at least ``min_attempted`` of them: a handful of failures is no signal); None else."""
    failed, attempted = failure_share(summary.get("outcomes") or {})
    if attempted < min_attempted or failed <= max_share * attempted:
        return None
    day = summary.get("business_date")
    return Alert(
        kind="delivery_failures",
        summary=(
            f"delivery of {channel} for business day {day}: {failed:,} of {attempted:,} messages failed "
            f"({failed / attempted:.0%}, above {max_share:.0%})"
        ),
        business_date=day,
        task_id="deliver_messages",
        details={"channel": channel, "failed": failed, "attempted": attempted, "max_share": max_share},
    )
