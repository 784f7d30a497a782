"""The daily run's deadlines (``operations.deadlines``, shop time on the morning after the
business day), as Airflow 3 Deadline Alerts on the DAG run:

* ``run_finished_by``: the run has not succeeded by then (still running, or failed: Airflow
  prunes a run's deadlines only when it succeeds) → :func:`run_not_finished` alerts;
* ``sending_started_by``: Deadline Alerts measure only whether a *run* finished, not whether a
  task started; so this one is a Deadline Alert at that time whose callback,
  :func:`sending_not_started`, then looks in the CRM store whether any of the day's messages
  has left ``queued`` (claimed: sent, failed, suppressed, being sent, listed) and alerts only
  when none has. A run already finished by then has sent what it had (its alert never fires).

Both references are the run's logical date, which for the daily timetable is the business day's
00:00 shop time: the deadline is that plus one day plus the configured time (in a timezone with
daylight saving, an hour off on the two days it changes). Deadline callbacks run on the executor
(LocalExecutor and CeleryExecutor run them) with ``context`` = the run as the REST API shows it.
Only scheduled runs alert: a backfill's or a manual run's logical date is not its day's morning.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

from huitouke.pii import get_logger

__all__ = ["deadline_alerts", "run_not_finished", "sending_not_started"]

log = get_logger(__name__)

STARTED = ("sending", "sent", "failed", "unknown", "suppressed", "listed")


def _after_day_start(at: time) -> timedelta:
    """From the business day's 00:00 to ``at`` on the next morning."""
    return timedelta(days=1, hours=at.hour, minutes=at.minute)


def deadline_alerts(deadlines: Any) -> list[Any]:
    """The DAG's ``deadline=``: one DeadlineAlert per configured time (``operations.deadlines``)."""
    from airflow.sdk.definitions.callback import SyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    alerts = []
    for name, at, callback in (
        ("run_finished_by", deadlines.run_finished_by, run_not_finished),
        ("sending_started_by", deadlines.sending_started_by, sending_not_started),
    ):
        if at is None:
            continue
        alerts.append(
            DeadlineAlert(
                reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
                interval=_after_day_start(at),
                callback=SyncCallback(callback, kwargs={"by": at.strftime("%H:%M")}),
                name=f"huitouke {name}",
            )
        )
    return alerts


def _run_facts(context: Mapping[str, Any] | None) -> tuple[dict[str, Any], date | None]:
    """The run (as the REST API returns it) and its business day (shop time)."""
    from huitouke.config import load_settings

    run = dict((context or {}).get("dag_run") or {})
    start = run.get("data_interval_start")
    if isinstance(start, str):
        start = datetime.fromisoformat(start)
    day = start.astimezone(load_settings().tz).date() if isinstance(start, datetime) else None
    return run, day


def _alerting(run: Mapping[str, Any]) -> bool:
    run_type = str(run.get("run_type") or "")
    if run_type != "scheduled":
        log.info("deadline missed by a %s run: no alert (only scheduled runs have deadlines)", run_type)
        return False
    return True


def _state(run: Mapping[str, Any]) -> str:
    """The run's state for a summary: a run that failed before its deadline is not pruned (only
    a success prunes them), so the alert says which it is."""
    return f"; the run is {run['state']}" if run.get("state") else ""


def run_not_finished(context: Mapping[str, Any] | None = None, by: str = "") -> bool:
    """Deadline callback: the day's run had not finished by ``by`` (shop time). True if alerted."""
    from huitouke.ops.alerts import Alert, send_alert

    run, day = _run_facts(context)
    if not _alerting(run):
        return False
    alert = Alert(
        kind="run_deadline",
        summary=f"the run for business day {day} had not succeeded by {by} shop time{_state(run)}",
        dag_id=run.get("dag_id"),
        run_id=run.get("dag_run_id") or run.get("run_id"),
        business_date=day.isoformat() if day else None,
        details={"deadline": by, "state": run.get("state")},
    )
    return send_alert(alert)


def day_sending(day: date, settings: Any = None) -> dict[str, int]:
    """The business day's outbox rows by status (what :func:`sending_not_started` reads)."""
    from sqlalchemy import func, select

    from huitouke.config import load_settings
    from huitouke.store.connection import engine_for
    from huitouke.store.schema import outbox

    settings = settings or load_settings()
    o = outbox.c
    query = select(o.status, func.count()).where(o.business_date == day).group_by(o.status)
    with engine_for(settings.store.conn_id).connect() as conn:
        return {str(status): int(n) for status, n in conn.execute(query).all()}


def sending_not_started(context: Mapping[str, Any] | None = None, by: str = "") -> bool:
    """Deadline callback: the run had not finished by ``by``; alert when none of its business
    day's messages has left ``queued`` yet (a dry run sends nothing: no alert). True if alerted."""
    from huitouke.ops.alerts import Alert, send_alert

    run, day = _run_facts(context)
    if not _alerting(run) or day is None:
        return False
    if (run.get("conf") or {}).get("dry_run"):
        log.info("deadline for sending passed in a dry run: nothing is sent, no alert")
        return False
    by_status = day_sending(day)
    started = sum(n for status, n in by_status.items() if status in STARTED)
    if started:
        log.info("sending of business day %s had started by %s: %d messages claimed", day, by, started)
        return False
    queued = by_status.get("queued", 0)
    alert = Alert(
        kind="send_deadline",
        summary=(
            f"sending for business day {day} had not started by {by} shop time "
            f"({queued:,} messages queued){_state(run)}"
        ),
        dag_id=run.get("dag_id"),
        run_id=run.get("dag_run_id") or run.get("run_id"),
        business_date=day.isoformat(),
        details={"deadline": by, "queued": queued, "state": run.get("state")},
    )
    return send_alert(alert)
