"""Stage 1 of a business day: the day's orders from the configured source, validated, upserted.

:func:`run_day` reads the interval from the source (SQL, files or HTTP: :mod:`huitouke.intake.sources`),
validates it in one place (:mod:`huitouke.intake.validate`: bad rows become quarantine rows with
their reason) and upserts the good orders by order id in one transaction
(:mod:`huitouke.intake.load`). The result's table says rows read, inserted, updated, unchanged and
quarantined by reason.
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Engine

from huitouke.config import PlausibilitySettings
from huitouke.intake import persist
from huitouke.intake.freshness import FreshnessRules, StaleDay, floor_problem, stale_message
from huitouke.intake.load import IntakeSummary, load_batch
from huitouke.intake.sources import OrderSource
from huitouke.intake.validate import validate
from huitouke.pii import get_logger
from huitouke.stage import DayInterval

__all__ = ["run_day"]

log = get_logger(__name__)


def run_day(
    engine: Engine,
    interval: DayInterval,
    source: OrderSource,
    freshness: FreshnessRules | None = None,
    accept_incomplete: bool = False,
    plausibility: PlausibilitySettings | None = None,
) -> IntakeSummary:
    """Extract ``interval`` from ``source``, validate, and load it into the store.

    With ``freshness``, a day whose data does not look complete raises :class:`StaleDay` before
    anything is written, unless ``accept_incomplete`` (then it is logged and loaded as it is).
    ``plausibility`` (``intake.plausibility``; default: its defaults) is what validation accepts;
    times are checked around every business day the interval covers.
    """
    raw = source.read(interval.start, interval.end)
    if freshness is not None:
        problems = _completeness_problems(engine, interval, source, raw, freshness)
        if problems and not accept_incomplete:
            raise StaleDay(stale_message(interval.day, problems))
        if problems:
            log.warning(
                "Business day %s accepted as complete (override): %s", interval.day, "; ".join(problems)
            )
    policy = plausibility or PlausibilitySettings()
    window = policy.window(interval.day, interval.last_day)
    batch = validate(raw, interval.tz, interval.day, window=window, policy=policy)
    return load_batch(engine, batch, source.name, interval.day, interval.last_day)


def _completeness_problems(
    engine: Engine, interval: DayInterval, source: OrderSource, raw: pd.DataFrame, rules: FreshnessRules
) -> list[str]:
    """What says the day is not complete yet: the source's own sign, then the floor on orders."""
    signal = source.completeness(interval.start, interval.end, rules.max_quiet_hours)
    with engine.connect() as conn:
        trailing = persist.daily_orders_before(conn, source.name, interval.day, rules.trailing_days)
    orders = int(raw["order_id"].dropna().nunique()) if "order_id" in raw.columns else 0
    floor = floor_problem(orders, trailing, rules)
    return [problem for problem in (signal, floor) if problem]
