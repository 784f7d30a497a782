"""Backfilling business days in shop time: Airflow's ``backfill create`` with the flags that make
it do what was asked.

Airflow reads naive dates as UTC and selects runs by their logical date (the start of the data
interval), runs up to ten days at once whatever the DAG's ``max_active_runs`` says, and skips days
that already have a run. So ``huitouke backfill --from D --to D`` passes each day's start in the
shop's timezone with its offset, one run at a time (the days build on each other), and
``--reprocess-behavior completed`` (a day that ran is run again, the calendar's re-run). Backfilled
runs have run type ``backfill``: they recompute and never send.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from zoneinfo import ZoneInfo

__all__ = ["DAG_ID", "backfill_args"]

DAG_ID = "huitouke_daily"


def _day_start(day: date, timezone: str) -> str:
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone)).isoformat()


def backfill_args(
    first: date, last: date, timezone: str, *, accept_incomplete: bool = False, dry_run: bool = False
) -> list[str]:
    """The ``airflow backfill create`` command line for business days ``first`` .. ``last``."""
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    args = [
        "airflow",
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        _day_start(first, timezone),
        "--to-date",
        _day_start(last, timezone),
        "--reprocess-behavior",
        "completed",
        "--max-active-runs",
        "1",
    ]
    if accept_incomplete:
        args += ["--dag-run-conf", json.dumps({"accept_incomplete_day": True})]
    if dry_run:
        args.append("--dry-run")
    return args
