"""Applying and checking the CRM store's Alembic migrations.

``huitouke db upgrade`` applies them; the daily DAG calls :func:`ensure_current` before it writes,
so a store that lags behind the code fails loudly instead of half-working.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from huitouke.pii import get_logger

log = get_logger(__name__)

# Our own version table, so the store may share a database with other tools without a clash.
VERSION_TABLE = "huitouke_alembic_version"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class StoreNotCurrentError(RuntimeError):
    """The store's schema is not at the revision this code expects: ``current`` (None for an
    empty database), ``head``, and the ``command`` that fixes it."""

    def __init__(self, message: str, *, current: str | None, head: str, command: str) -> None:
        super().__init__(message)
        self.current = current
        self.head = head
        self.command = command


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


@cache
def head_revision() -> str:
    """The newest migration this code ships (read once: the migrations ship with the code)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the store is at (None for an empty database), read from the version table
    itself: what Alembic's context reads, without its log lines on every check (the UI checks on
    every page)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Apply migrations up to ``revision``; safe to run again. Returns the revision reached."""
    before = current_revision(engine)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    after = current_revision(engine)
    if before != after:
        log.info("CRM store migrated from %s to %s", before or "empty", after)
    return after or ""


def ensure_current(engine: Engine, conn_id: str = "crm_db") -> str:
    """Raise :class:`StoreNotCurrentError` unless the store is at the head revision."""
    head = head_revision()
    current = current_revision(engine)
    if current != head:
        where = engine.url.render_as_string(hide_password=True)
        fix = f"huitouke db upgrade --conn {conn_id}"
        raise StoreNotCurrentError(
            f"The CRM store ({conn_id}: {where}) is at revision {current or 'none (empty)'}, this code "
            f"needs {head}: run `{fix}`",
            current=current,
            head=head,
            command=fix,
        )
    return current
