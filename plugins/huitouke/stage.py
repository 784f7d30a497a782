"""The shape every stage of the daily run has: a business day in, a result out.

Each stage is a package named after it with one entry for the business day,
``<stage>/daily.py: run_day(...)``, which reads what it needs, computes, and writes (intake, segments,
campaigns, render, evaluate; delivery will take its place between rendering and evaluation). It
returns a :class:`DayResult`: ``as_text()`` is the table the task log shows, ``as_dict()`` the small
summary Airflow keeps as XCom. :mod:`huitouke.pipeline` turns Airflow's data interval into a
:class:`DayInterval` and the configured Connections and files into each ``run_day``'s arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, Protocol

__all__ = ["DayInterval", "DayResult"]


class DayResult(Protocol):
    """What a stage's ``run_day`` returns."""

    def as_text(self) -> str:
        """The task log's text: the day's table."""
        ...

    def as_dict(self) -> dict[str, Any]:
        """The XCom summary: small and JSON-able."""
        ...


@dataclass(frozen=True)
class DayInterval:
    """A business day (a calendar day in the shop's timezone) and the interval it covers.

    Normally [00:00, next 00:00) shop time; an interval given by Airflow may span several days, of
    which ``day`` is the first and :attr:`last_day` the last.
    """

    day: date
    start: datetime
    end: datetime
    tz: tzinfo

    @classmethod
    def of_day(cls, day: date, tz: tzinfo) -> DayInterval:
        """The half-open interval [00:00, next 00:00) of ``day`` in the shop's timezone."""
        start = datetime(day.year, day.month, day.day, tzinfo=tz)
        return cls(day, start, start + timedelta(days=1), tz)

    @classmethod
    def of_interval(cls, start: datetime, end: datetime, tz: tzinfo) -> DayInterval:
        """The business days a data interval [start, end) covers."""
        return cls(start.astimezone(tz).date(), start, end, tz)

    @property
    def last_day(self) -> date:
        """The last business day the interval covers (``day`` for a one-day interval)."""
        return (self.end - timedelta(microseconds=1)).astimezone(self.tz).date()
