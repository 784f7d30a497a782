"""Running the daily DAG through Airflow for given business days (``dag.test``), for the demo,
the tests and a data engineer's quick check — without a scheduler.

The DAG's timetable gives each run the business day *before* its logical date when the run is
started by hand (a run "at" 12-13 00:00 covers 12-12), exactly like a manual trigger in the UI.
:func:`run_business_days` hides that: you name the days to process.
"""

from __future__ import annotations

import runpy
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from huitouke.config import load_settings, project_home
from huitouke.pii import get_logger

log = get_logger(__name__)

DAG_FILE = "dags/huitouke_daily.py"
DAG_ID = "huitouke_daily"


def load_daily_dag(dag_file: Path | None = None) -> Any:
    """The DAG object defined in ``dags/huitouke_daily.py``."""
    path = dag_file or project_home() / DAG_FILE
    namespace = runpy.run_path(str(path))
    for value in namespace.values():
        if getattr(value, "dag_id", None) == DAG_ID and hasattr(value, "test"):
            return value
    raise RuntimeError(f"{path} defines no DAG {DAG_ID!r}")


def logical_date_for(day: date, timezone: str) -> datetime:
    """The logical date of a manual run whose data interval is ``day`` (shop-local)."""
    following = day + timedelta(days=1)
    return datetime(following.year, following.month, following.day, tzinfo=ZoneInfo(timezone))


def run_business_days(days: Iterable[date], dag: Any = None, retries: bool = False) -> dict[date, str]:
    """Run the daily DAG once per day, in order, stopping at the first failure. Returns states.

    Without ``retries`` a failing task fails at once: ``dag.test`` would otherwise wait out the
    DAG's retry delays (minutes) in the foreground, which helps nobody at a terminal or in tests.
    """
    settings = load_settings()
    dag = dag or load_daily_dag()
    if not retries:
        for task in dag.tasks:
            task.retries = 0
    states: dict[date, str] = {}
    for day in days:
        run = dag.test(logical_date=logical_date_for(day, settings.shop.timezone))
        state = str(getattr(run, "state", "unknown"))
        states[day] = state.rsplit(".", 1)[-1].lower()
        log.info("huitouke_daily for %s: %s", day.isoformat(), states[day])
        if states[day] != "success":
            break
    return states


def days_between(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last``, both included."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
