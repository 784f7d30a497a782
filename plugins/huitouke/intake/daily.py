"""Stage 1 of a business day: the day's orders from the configured source, validated, upserted.

:func:`run_day` reads the interval from the source (SQL, files or HTTP: :mod:`huitouke.intake.sources`),
validates it in one place (:mod:`huitouke.intake.validate`: bad rows become quarantine rows with
their reason) and upserts the good orders by order id in one transaction
(:mod:`huitouke.intake.load`). The result's table says rows read, inserted, updated, unchanged and
quarantined by reason.
"""

from __future__ import annotations

from sqlalchemy import Engine

from huitouke.intake.load import IntakeSummary, load_batch
from huitouke.intake.sources import OrderSource
from huitouke.intake.validate import validate
from huitouke.stage import DayInterval

__all__ = ["run_day"]


def run_day(engine: Engine, interval: DayInterval, source: OrderSource) -> IntakeSummary:
    """Extract ``interval`` from ``source``, validate, and load it into the store."""
    raw = source.read(interval.start, interval.end)
    batch = validate(raw, interval.tz, interval.day)
    return load_batch(engine, batch, source.name, interval.day, interval.last_day)
