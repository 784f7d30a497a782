"""The send window as an Airflow sensor that waits on the triggerer: outside the playbook's
``send_window`` (shop time) the task defers until the window opens, holding no worker slot.

A run that will not send does not wait: a backfill, or a business day older than yesterday (its
delivery task only marks the day's rows ``stale``), or a day the calendar or the freshness guard
stopped (its delivery task is skipped), or a dry run (the ``dry_run`` param). Kept free of heavy imports: the DAG file
imports this class at parse time.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseSensorOperator

__all__ = ["CHANNELS", "SendWindowSensor"]

CHANNELS = ("sms", "email", "call")  # what the delivery task is mapped over, one task each


class SendWindowSensor(BaseSensorOperator):
    """Succeeds inside the send window; otherwise defers to a DateTimeTrigger at its next opening.
    Returns the channels delivery is mapped over (:data:`CHANNELS`)."""

    ui_color = "#fdf2d0"

    def execute(self, context: Any) -> list[str]:
        from huitouke.campaigns.playbook import load_playbook
        from huitouke.config import load_settings
        from huitouke.deliver.policy import next_window_open, run_verdict

        settings = load_settings()
        run = context["dag_run"]
        clock = _clock(settings, run.conf)
        now = clock.now()
        day = context["data_interval_start"].astimezone(settings.tz).date()
        verdict = run_verdict(run.run_type, day, now.astimezone(settings.tz).date())
        if not verdict.sends:
            self.log.info("no wait: %s", verdict.reason)
            return list(CHANNELS)
        if (run.conf or {}).get("dry_run") is True:
            self.log.info("no wait: a dry run sends nothing (its delivery tasks skip)")
            return list(CHANNELS)
        if not _day_computed(settings, day):
            self.log.info("no wait: business day %s did not run its stages, nothing of it is sent", day)
            return list(CHANNELS)
        window = load_playbook().shop.send_window
        opens = next_window_open(now, window.start, window.end, settings.tz)
        if opens is None:
            self.log.info("inside the send window (%s-%s shop time)", window.start, window.end)
            return list(CHANNELS)
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        self.log.info("outside the send window: deferred until %s", opens.isoformat())
        moment = opens - clock.offset  # the triggerer waits on the real clock
        self.defer(trigger=DateTimeTrigger(moment=moment), method_name="execute_complete")

    def execute_complete(self, context: Any, event: Any = None) -> list[str]:
        """The window opened."""
        return list(CHANNELS)


def _clock(settings: Any, conf: Any) -> Any:
    """The run's clock: the real one, or the demo season's (huitouke.clock, checked there)."""
    from huitouke.pipeline import run_clock

    return run_clock(conf, settings)


def _day_computed(settings: Any, day: Any) -> bool:
    from huitouke.calendar.persist import day_computed
    from huitouke.store.connection import engine_for

    with engine_for(settings.store.conn_id).connect() as conn:
        return day_computed(conn, day)
