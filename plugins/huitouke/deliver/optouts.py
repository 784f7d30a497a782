"""Opt-outs recorded from outside a send: an imported opt-out list (``huitouke optouts import``)
and an e-mail's one-click unsubscribe link (the UI plugin's ``/huitouke/unsubscribe``).

Both end in :func:`huitouke.deliver.persist.record_opt_outs`, so an opt-out is recorded once per
customer and channel (the first stands) and the customers' flags are set for planning and
rendering. Results count; they never carry a number, an address or a name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, select

from huitouke.deliver import persist
from huitouke.deliver.feeds import customers_at, naive_utc
from huitouke.deliver.imports import read_optouts
from huitouke.store.rows import chunks, lock_writers
from huitouke.store.schema import opt_outs, outbox

__all__ = [
    "IMPORT_SOURCE",
    "LINK_SOURCE",
    "LinkOptOut",
    "OptOutImport",
    "import_optouts",
    "opt_out_by_link",
]

IMPORT_SOURCE = "import"
LINK_SOURCE = "link"
SOURCE_MAX = 16  # opt_outs.source
CHANNEL_CHOICES = ("sms", "email", "all")
_ERRORS_SHOWN = 20


@dataclass
class OptOutImport:
    """What one import did. ``recorded`` are new opt-outs (customer, channel); ``already`` were
    recorded before (by a reply, a link, an earlier import); ``not_matched`` are numbers or
    addresses of no customer. ``errors`` are the reader's row errors (file:line: column: reason,
    values masked)."""

    file: str
    lines: int = 0
    entries: int = 0
    recorded: int = 0
    already: int = 0
    not_matched: int = 0
    errors: list[str] = field(default_factory=list)

    def as_text(self) -> str:
        lines = [
            f"opt-out import {self.file}",
            f"  rows read:                 {self.lines:,} ({self.entries:,} numbers or addresses)",
            f"  opt-outs recorded (new):   {self.recorded:,}",
            f"  already opted out:         {self.already:,}",
            f"  not matched to a customer: {self.not_matched:,}",
            f"  row errors:                {len(self.errors):,}",
        ]
        lines += [f"    {e}" for e in self.errors[:_ERRORS_SHOWN]]
        if len(self.errors) > _ERRORS_SHOWN:
            lines.append(f"    … and {len(self.errors) - _ERRORS_SHOWN:,} more")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "rows": self.lines,
            "entries": self.entries,
            "recorded": self.recorded,
            "already": self.already,
            "not_matched": self.not_matched,
            "errors": list(self.errors),
        }


def check_source(source: str) -> str:
    """A source label as ``opt_outs.source`` keeps it: 1 to 16 letters, digits, ``_`` or ``-``."""
    if not re.fullmatch(rf"[A-Za-z0-9_-]{{1,{SOURCE_MAX}}}", source or ""):
        raise ValueError(f"--source must be 1 to {SOURCE_MAX} ASCII letters, digits, '_' or '-'")
    return source


def _owners(conn: Connection, frame: pd.DataFrame) -> list[set[str]]:
    """The customers of each entry: phones through the SMS recipients and profiles (E.164; calls
    go to the same numbers), addresses through the e-mail recipients and profiles."""
    phones = [p for p in frame["phone"] if isinstance(p, str)]
    emails = [e for e in frame["email"] if isinstance(e, str)]
    by_phone = customers_at(conn, "sms", phones)
    for number, ids in customers_at(conn, "call", phones).items():
        by_phone.setdefault(number, set()).update(ids)
    by_email = customers_at(conn, "email", emails)
    return [
        by_phone.get(p, set()) if isinstance(p, str) else by_email.get(e, set())
        for p, e in zip(frame["phone"], frame["email"], strict=True)
    ]


def _stored_pairs(conn: Connection, ids: list[str]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for chunk in chunks(ids):
        found.update(
            (r.customer_id, r.channel)
            for r in conn.execute(
                select(opt_outs.c.customer_id, opt_outs.c.channel).where(opt_outs.c.customer_id.in_(chunk))
            )
        )
    return found


def _covered(row: dict[str, Any], stored: set[tuple[str, str]]) -> bool:
    """Already opted out of this channel, or of every channel."""
    return (row["customer_id"], row["channel"]) in stored or (row["customer_id"], "all") in stored


def _rows(frame: pd.DataFrame, owners: list[set[str]], channel: str | None, source: str, now: datetime):
    """One opt-out row per (customer, channel), the earliest time of the file's rows for it."""
    wanted: dict[tuple[str, str], datetime] = {}
    for ids, row_channel, at in zip(owners, frame["channel"], frame["opted_out_at"], strict=True):
        when = now if pd.isna(at) else naive_utc(at.to_pydatetime())
        for customer_id in ids:
            key = (customer_id, channel or row_channel)
            wanted[key] = min(wanted.get(key, when), when)
    return [
        {"customer_id": cid, "channel": ch, "source": source, "received_at": at, "message_id": None}
        for (cid, ch), at in sorted(wanted.items())
    ]


def import_optouts(
    engine: Engine,
    path: str | Path,
    tz: str,
    now: datetime,
    channel: str | None = None,
    source: str = IMPORT_SOURCE,
) -> OptOutImport:
    """Record the opt-outs of an exported list (:func:`huitouke.deliver.imports.read_optouts`) in
    one transaction. ``channel`` (sms, email, all) replaces every row's channel; by default a row
    has the file's channel, else sms for a number and email for an address. ``now`` is naive UTC,
    the time of rows without one. Importing the same file again records nothing new.
    :class:`~huitouke.deliver.imports.ImportFileError` when the file cannot be read at all."""
    if channel is not None and channel not in CHANNEL_CHOICES:
        raise ValueError(f"channel must be one of {', '.join(CHANNEL_CHOICES)}, not {channel!r}")
    check_source(source)
    frame, errors = read_optouts(path, tz)
    result = OptOutImport(str(path), entries=len(frame), errors=[str(e) for e in errors])
    result.lines = len(set(frame["source_line"]) | {e.line for e in errors})
    with engine.begin() as conn:
        lock_writers(conn, outbox)  # before the next claim, which checks opt-outs under this lock
        owners = _owners(conn, frame)
        result.not_matched = sum(1 for ids in owners if not ids)
        rows = _rows(frame, owners, channel, source, now)
        stored = _stored_pairs(conn, sorted({r["customer_id"] for r in rows}))
        new = [r for r in rows if not _covered(r, stored)]
        result.already = len(rows) - len(new)
        result.recorded = persist.record_opt_outs(conn, new, now)
    return result


@dataclass(frozen=True)
class LinkOptOut:
    """What an unsubscribe link did: the channel it opted out of, and whether it was new."""

    channel: str
    recorded: bool


def opt_out_by_link(engine: Engine, message_id: int, now: datetime) -> LinkOptOut | None:
    """The opt-out an unsubscribe link asks for: the customer and channel of outbox message
    ``message_id``, recorded with source ``link`` (a second click records nothing new). None when
    the store has no such message."""
    with engine.begin() as conn:
        row = conn.execute(
            select(outbox.c.customer_id, outbox.c.channel).where(outbox.c.message_id == message_id)
        ).first()
        if row is None:
            return None
        opt_out = {
            "customer_id": row.customer_id,
            "channel": row.channel,
            "source": LINK_SOURCE,
            "received_at": now,
            "message_id": message_id,
        }
        added = persist.record_opt_outs(conn, [opt_out], now)
    return LinkOptOut(row.channel, added > 0)
