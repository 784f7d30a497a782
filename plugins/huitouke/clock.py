"""The pipeline's clock: the real one, or, for the demo's simulated season only, the real one
shifted onto a simulated day.

A season of the demo runs the daily DAG for past days as if each ran on the morning after its
business day, so that delivery sends (a day older than yesterday never does) inside the send window.
Such a run carries ``simulated_clock`` in its conf: ``{"offset_seconds": S}``, added to the real time.
Time still flows during the run; only its origin moves.

The one rule: a simulated clock is accepted only by a CRM store marked as the demo's
(``store_marks``: ``purpose = demo``, written by ``huitouke demo`` on the fresh store it creates).
Any other store refuses the run at its first task and says why, so a real deployment cannot switch
the clock on by accident (a stray conf key, a copied trigger). Every task that reads the time goes
through :func:`clock_for`, where the rule is checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from huitouke.errors import UserInputError
from huitouke.store.schema import store_marks

CONF_KEY = "simulated_clock"
PURPOSE = "purpose"
DEMO = "demo"
# A season is months in the past; anything beyond this is a mistake, not a simulation.
MAX_OFFSET = timedelta(days=3660)


class ClockRefused(UserInputError):
    """A run asked for a simulated clock where none may run."""


@dataclass(frozen=True)
class Clock:
    """Now, shifted by ``offset`` (zero: the real clock)."""

    offset: timedelta = timedelta(0)

    @property
    def simulated(self) -> bool:
        return self.offset != timedelta(0)

    def now(self) -> datetime:
        """The current moment, timezone-aware UTC."""
        return datetime.now(UTC) + self.offset

    def utcnow(self) -> datetime:
        """The current moment as naive UTC (what the store keeps)."""
        return self.now().replace(tzinfo=None)


REAL = Clock()


def simulated_offset(conf: Mapping[str, Any] | None) -> timedelta | None:
    """The offset a run's conf asks for; None when it asks for none. Raises on a malformed one."""
    value = (conf or {}).get(CONF_KEY)
    if value is None:
        return None
    seconds = value.get("offset_seconds") if isinstance(value, Mapping) else None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ClockRefused(
            f'conf {CONF_KEY}: expected {{"offset_seconds": <number>}}, got {type(value).__name__}'
        )
    offset = timedelta(seconds=seconds)
    if abs(offset) > MAX_OFFSET:
        raise ClockRefused(f"conf {CONF_KEY}.offset_seconds: {seconds:.0f} s is more than ten years")
    return offset


def clock_for(conn: Connection, conf: Mapping[str, Any] | None, store_name: str = "crm_db") -> Clock:
    """The clock a run works with: the real one, or the simulated one its conf asks for if, and
    only if, the store is the demo's."""
    offset = simulated_offset(conf)
    if offset is None:
        return REAL
    if not is_demo_store(conn):
        raise ClockRefused(
            f"this run's conf carries {CONF_KEY}, a simulated clock for the demo's season; the CRM store "
            f"{store_name} is not the demo's store, so the run is refused. Trigger it without {CONF_KEY}."
        )
    return Clock(offset)


def is_demo_store(conn: Connection) -> bool:
    """Whether the store was created by the demo (``store_marks``: purpose = demo)."""
    found = conn.execute(select(store_marks.c.value).where(store_marks.c.name == PURPOSE)).scalar()
    return found == DEMO


def mark_demo_store(conn: Connection, when: datetime) -> None:
    """Mark a store the demo has just created (idempotent)."""
    from huitouke.store.rows import upsert

    upsert(conn, store_marks, [{"name": PURPOSE, "value": DEMO, "marked_at": when}], ["name"])
