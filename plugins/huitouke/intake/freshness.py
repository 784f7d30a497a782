"""Is the business day's source data complete? Asked before intake writes anything.

A day without its data looks like a quiet day: zero orders in, and the segments would age every
customer by a day, the planner would send win-back messages to customers who only look churned.
So a day counts as complete only when

- the source says so: the day's export is there (files with ``{ds}`` in their pattern), the
  source's latest update is close enough to the day's end (SQL with a ``watermark_query``);
- and it has orders: at least one, and at least ``min_share_of_median`` of the median of the
  trailing days' orders once the store has ``min_history_days`` of them.

A stale day stops intake with :class:`StaleDay`, whose message says what was seen and how to
accept the day anyway (a shop that really had no orders): the ``accept_incomplete_day`` param of a
manual run, or ``--accept-incomplete-day`` on the command line.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

__all__ = ["OVERRIDE_HINT", "FreshnessRules", "StaleDay", "floor_problem", "stale_message"]

OVERRIDE_HINT = (
    "if the shop really had no (or few) orders that day, run it again with the param "
    "accept_incomplete_day=true (Trigger DAG w/ config) or `--accept-incomplete-day`"
)


class StaleDay(RuntimeError):
    """The day's source data does not look complete: nothing was written."""


@dataclass(frozen=True)
class FreshnessRules:
    """The floor on the day's orders (see :class:`huitouke.config.FreshnessSettings`)."""

    min_share_of_median: float = 0.2
    trailing_days: int = 28
    min_history_days: int = 7
    max_quiet_hours: float = 6.0


def floor_problem(orders: int, trailing: Sequence[int], rules: FreshnessRules) -> str | None:
    """Why ``orders`` is too few for a complete day, or None. ``trailing``: the earlier days'
    orders (the latest ``rules.trailing_days`` are used)."""
    if orders == 0:
        return "the source returned no order for the day"
    recent = list(trailing)[-rules.trailing_days :]
    if len(recent) < rules.min_history_days:
        return None
    median = statistics.median(recent)
    floor = rules.min_share_of_median * median
    if orders < floor:
        return (
            f"{orders} orders, under {rules.min_share_of_median:.0%} of the median of the last "
            f"{len(recent)} days ({median:g})"
        )
    return None


def stale_message(day: date, problems: Sequence[str]) -> str:
    """The one-line reason a day stops (no personal data: counts, dates, file names)."""
    return f"business day {day} looks incomplete: {'; '.join(problems)}. Nothing was written; {OVERRIDE_HINT}"
