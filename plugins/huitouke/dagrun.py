"""Running the daily DAG through Airflow for given business days (``dag.test``), for the demo,
the tests and a data engineer's quick check — without a scheduler.

The DAG's timetable gives each run the business day *before* its logical date when the run is
started by hand (a run "at" 12-13 00:00 covers 12-12), exactly like a manual trigger in the UI.
:func:`run_business_days` hides that: you name the days to process.
"""

from __future__ import annotations

import json
import logging
import runpy
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from huitouke.config import load_settings, project_home
from huitouke.pii import get_logger

log = get_logger(__name__)

DAG_FILE = "dags/huitouke_daily.py"
DAG_ID = "huitouke_daily"


def load_daily_dag(dag_file: Path | None = None, deadlines: bool = False) -> Any:
    """The DAG object defined in ``dags/huitouke_daily.py``, for ``dag.test``: without its
    Deadline Alerts unless ``deadlines`` (docs/operations.md). ``dag.test`` runs no scheduler, so
    nothing would evaluate them; and Airflow 3.3.2's ``dag.test`` fails a run of a DAG with
    Deadline Alerts when the run succeeds (it looks the alerts up in the metadata database by the
    ids its own deserialized copy of the DAG does not have)."""
    path = dag_file or project_home() / DAG_FILE
    namespace = runpy.run_path(str(path))
    for value in namespace.values():
        if getattr(value, "dag_id", None) == DAG_ID and hasattr(value, "test"):
            if not deadlines:
                value.deadline = None
            return value
    raise RuntimeError(f"{path} defines no DAG {DAG_ID!r}")


def logical_date_for(day: date, timezone: str) -> datetime:
    """The logical date of a manual run whose data interval is ``day`` (shop-local)."""
    following = day + timedelta(days=1)
    return datetime(following.year, following.month, following.day, tzinfo=ZoneInfo(timezone))


def run_business_days(
    days: Iterable[date],
    dag: Any = None,
    retries: bool = False,
    conf_of: Callable[[date], dict[str, Any] | None] | None = None,
) -> dict[date, str]:
    """Run the daily DAG once per day, in order, stopping at the first failure. Returns states.

    Without ``retries`` a failing task fails at once: ``dag.test`` would otherwise wait out the
    DAG's retry delays (minutes) in the foreground, which helps nobody at a terminal or in tests.
    ``conf_of(day)``: the run's conf (the demo's season passes its simulated clock this way).
    Each run is recorded as it really happened, so the Airflow UI shows it right: its start time
    (``dag.test`` records the logical date) and every task's log in Airflow's log folder
    (:func:`task_logs_in_log_folder`).
    """
    settings = load_settings()
    dag = dag or load_daily_dag()
    if not retries:
        for task in dag.tasks:
            task.retries = 0
    states: dict[date, str] = {}
    for day in days:
        started = datetime.now(UTC)
        with task_logs_in_log_folder():
            run = dag.test(
                logical_date=logical_date_for(day, settings.shop.timezone),
                run_conf=conf_of(day) if conf_of else None,
            )
        _record_start(run, started)
        state = str(getattr(run, "state", "unknown"))
        states[day] = state.rsplit(".", 1)[-1].lower()
        log.info("huitouke_daily for %s: %s", day.isoformat(), states[day])
        if states[day] != "success":
            break
    return states


def _record_start(run: Any, started: datetime) -> None:
    """Give a ``dag.test`` run its real start time (Airflow records its logical date there, so a
    run for last month's day would show a duration of a month)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    if run is None:
        return
    with create_session() as session:
        session.query(DagRun).filter(DagRun.id == run.id).update(
            {DagRun.start_date: started, DagRun.queued_at: started}, synchronize_session=False
        )


@contextmanager
def task_logs_in_log_folder() -> Iterator[None]:
    """While ``dag.test`` runs tasks in this process, write each task's log where Airflow's UI
    reads it: ``[logging] base_log_folder`` / the ``log_filename_template`` path of the task
    instance and attempt, one JSON record per line as Airflow's own task runner writes them.

    ``dag.test`` runs each task through ``airflow.sdk.definitions.dag._run_task`` and leaves the
    logs on the console; wrapping that one function (for the duration of the call only) is the
    smallest way to give them the file a scheduled run would have. Output still goes to the
    console too.
    """
    import airflow.sdk.definitions.dag as dag_module

    original = dag_module._run_task

    def run_task(*, ti: Any, task: Any, run_triggerer: bool = False) -> Any:
        with _log_file_of(ti):
            return original(ti=ti, task=task, run_triggerer=run_triggerer)

    dag_module._run_task = run_task
    try:
        yield
    finally:
        dag_module._run_task = original


@contextmanager
def _log_file_of(ti: Any) -> Iterator[None]:
    """Every log record (any logger) goes to ``ti``'s log file too while the block runs."""
    path = task_log_path(ti)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _JsonLinesHandler(path)
    # A task log has the INFO records a scheduled run's has, whatever levels the caller set.
    loggers = [logging.root, logging.getLogger("huitouke")]
    levels = [logger.level for logger in loggers]
    logging.root.addHandler(handler)
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(min(level or logging.INFO, logging.INFO))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        logging.root.removeHandler(handler)
        handler.close()


def task_log_path(ti: Any) -> Path:
    """Where Airflow's file task handler keeps (and the UI reads) this task attempt's log."""
    from airflow.configuration import conf
    from airflow.utils.log.file_task_handler import FileTaskHandler

    folder = Path(conf.get("logging", "base_log_folder")).expanduser()
    return folder / FileTaskHandler(str(folder))._render_filename(ti, ti.try_number)


class _JsonLinesHandler(logging.FileHandler):
    """Log records as Airflow's structured log lines: timestamp, level, logger, event."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8")  # the file exists even for a silent task
        self.setLevel(logging.INFO)

    def format(self, record: logging.LogRecord) -> str:
        event = record.getMessage()
        if record.exc_info:
            event += "\n" + logging.Formatter().formatException(record.exc_info)
        return json.dumps(
            {
                "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
                "level": record.levelname.lower(),
                "logger": record.name,
                "event": event,
            },
            ensure_ascii=False,
        )


def days_between(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last``, both included."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
