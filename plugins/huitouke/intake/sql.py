"""The SQL source: the shop's own order database, read through an Airflow Connection."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
from sqlalchemy import Engine, text

from huitouke import records
from huitouke.intake.files import parse_local_time
from huitouke.pii import get_logger

log = get_logger(__name__)

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class SqlOrderSource:
    """Runs the configured query with ``:start`` and ``:end`` bound to the business day.

    The bounds are shop-local times as ``'YYYY-MM-DD HH:MM:SS'`` strings (half-open interval),
    which SQLite, PostgreSQL and MySQL all compare correctly with their timestamp columns. The
    query must name its columns as the canonical record does (see docs/intake.md); unknown columns
    are dropped with a warning so a typo is visible.
    """

    def __init__(
        self, engine: Engine, query: str, timezone: str, name: str, watermark_query: str | None = None
    ) -> None:
        self.engine = engine
        self.query = text(query)
        self.watermark_query = text(watermark_query) if watermark_query else None
        self.tz = ZoneInfo(timezone)
        self.name = name

    def completeness(self, start: datetime, end: datetime, max_quiet_hours: float) -> str | None:
        """Why [start, end) may not be complete yet, or None: with a ``watermark_query``, the source's
        latest order update must be at most ``max_quiet_hours`` before ``end``."""
        if self.watermark_query is None:
            return None
        with self.engine.connect() as conn:
            latest = parse_local_time(conn.execute(self.watermark_query).scalar(), self.tz)
        if latest is None:
            return f"the {self.name} watermark query returned no time"
        needed = end - timedelta(hours=max_quiet_hours)
        if latest < needed:
            return (
                f"the source's latest order update is {latest.astimezone(self.tz):%Y-%m-%d %H:%M}, before "
                f"{needed.astimezone(self.tz):%Y-%m-%d %H:%M} shop time"
            )
        return None

    def read(self, start: datetime, end: datetime) -> pd.DataFrame:
        params = {
            "start": start.astimezone(self.tz).strftime(TIME_FORMAT),
            "end": end.astimezone(self.tz).strftime(TIME_FORMAT),
        }
        with self.engine.connect() as conn:
            result = conn.execute(self.query, params)
            columns = list(result.keys())
            frame = pd.DataFrame(result.fetchall(), columns=columns, dtype=object)
        missing = [c for c in records.REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(
                f"the {self.name} query returns no column {', '.join(missing)}: alias the shop's columns to "
                f"huitouke's names (it returned: {', '.join(columns)})"
            )
        unknown = [c for c in frame.columns if c not in records.ALL_COLUMNS]
        if unknown:
            log.warning("%s: ignoring columns huitouke does not know: %s", self.name, ", ".join(unknown))
            frame = frame.drop(columns=unknown)
        frame[records.SOURCE_REF_COLUMN] = [f"{self.name} row {i + 1}" for i in range(len(frame))]
        log.info("%s: %d rows for %s .. %s", self.name, len(frame), params["start"], params["end"])
        return frame
