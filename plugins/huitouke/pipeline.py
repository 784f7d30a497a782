"""The daily run's stages as plain functions: what each DAG task calls, in one line.

They take the run's data interval, read settings and Connections themselves, and return small
JSON-able summaries (which Airflow keeps as XCom). Nothing here needs a running Airflow, except
that Connections are looked up through Airflow's secrets backends (environment variables included).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from huitouke.config import Settings, load_settings
from huitouke.pii import get_logger

log = get_logger(__name__)


def business_date_of(start: datetime, settings: Settings) -> date:
    """The shop-local calendar day a data interval starting at ``start`` covers."""
    return start.astimezone(settings.tz).date()


def day_bounds(day: date, settings: Settings) -> tuple[datetime, datetime]:
    """The half-open interval [00:00, next 00:00) of a business day in the shop's timezone."""
    start = datetime(day.year, day.month, day.day, tzinfo=settings.tz)
    return start, start + timedelta(days=1)


def check_crm_schema(settings: Settings | None = None) -> str:
    """Fail unless the CRM store is at the schema revision this code needs."""
    from huitouke.store.connection import engine_for
    from huitouke.store.migrate import ensure_current

    settings = settings or load_settings()
    revision = ensure_current(engine_for(settings.store.conn_id), settings.store.conn_id)
    log.info("CRM store %s is current (revision %s)", settings.store.conn_id, revision)
    return revision


def intake_orders(start: datetime, end: datetime, settings: Settings | None = None) -> dict[str, Any]:
    """Stage 1: read [start, end) from the configured source, validate, upsert; log a summary."""
    from huitouke.intake.load import load_batch
    from huitouke.intake.sources import build_source
    from huitouke.intake.validate import validate
    from huitouke.store.connection import engine_for

    settings = settings or load_settings()
    day = business_date_of(start, settings)
    last_day = business_date_of(end - timedelta(microseconds=1), settings)
    source = build_source(settings)
    raw = source.read(start, end)
    batch = validate(raw, settings.tz, day)
    summary = load_batch(engine_for(settings.store.conn_id), batch, source.name, day, last_day)
    log.info("\n%s", summary.as_text())
    return summary.as_dict()
