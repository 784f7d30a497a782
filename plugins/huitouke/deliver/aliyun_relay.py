"""The Aliyun report relay's store side: the receipts (``SmsReport``) and inbound messages
(``SmsUp``) Aliyun SMS pushes, checked, kept, and read back by cursor.

Aliyun delivers both only by pushing them (HTTP POSTs of a JSON array, or MNS queues); the Aliyun
provider pulls them (:meth:`huitouke.deliver.providers.aliyun.AliyunSmsProvider.receipts`). The
routes between the two are :mod:`huitouke.ui.aliyun_relay`; this module holds what they do with
the store (table ``aliyun_push_records``), so it is the same under any web server.

- A record is kept as pushed (JSON text), with its feed and an id that is the pull cursor.
- Aliyun says its pushes are not idempotent (a push whose answer it did not get is sent again):
  a record's natural key (``sms_report``: ``biz_id``, ``phone_number``, ``report_time``;
  ``sms_up``: ``sequence_id``; otherwise the whole record) is stored hashed, unique per feed, so a
  repeated push stores nothing new.
- Pushes are stored under the table's writers lock (:func:`huitouke.store.rows.lock_writers`), so
  ids are committed in id order: a pull that has read up to id N never misses a record committed
  later with a smaller id.
- Records older than the relay's ``keep_days`` are deleted when a push is stored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, select

from huitouke.store.rows import insert_new, lock_writers
from huitouke.store.schema import aliyun_push_records

__all__ = [
    "FEEDS",
    "MAX_BODY_BYTES",
    "MAX_RECORDS",
    "PAGE_SIZE",
    "BadPush",
    "RelayTokens",
    "parse_push",
    "records_after",
    "store_push",
]

FEEDS = ("sms_report", "sms_up")
MAX_BODY_BYTES = 1_000_000  # a push of 1,000 receipts is about 250 kB
MAX_RECORDS = 1000
PAGE_SIZE = 1000  # records per pull
_NATURAL_KEYS = {"sms_report": ("biz_id", "phone_number", "report_time"), "sms_up": ("sequence_id",)}
_SCALARS = (str, int, float, bool, type(None))
r = aliyun_push_records.c


class BadPush(ValueError):
    """A push body the relay refuses; the message is one line and names no one. ``status_code``:
    what the relay answers (400, or 413 for a body too large)."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class RelayTokens:
    """The relay's secrets (:func:`huitouke.deliver.wiring.aliyun_relay_tokens`) and retention."""

    push: str
    pull: str
    keep_days: int = 30

    def __repr__(self) -> str:  # never the secrets, in a log or a traceback
        return f"RelayTokens(keep_days={self.keep_days})"


def parse_push(body: bytes) -> list[dict[str, Any]]:
    """The records of a push body: a JSON array of at most :data:`MAX_RECORDS` flat objects,
    each with a ``phone_number``. Raises :class:`BadPush` otherwise."""
    if len(body) > MAX_BODY_BYTES:
        raise BadPush(f"the body is larger than {MAX_BODY_BYTES} bytes", 413)
    try:
        records = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise BadPush("the body is not JSON") from None
    if not isinstance(records, list):
        raise BadPush("the body must be a JSON array of records")
    if len(records) > MAX_RECORDS:
        raise BadPush(f"more than {MAX_RECORDS} records in one push")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise BadPush(f"record {i} is not a JSON object")
        if not all(isinstance(v, _SCALARS) for v in record.values()):
            raise BadPush(f"record {i} has a value that is not a string, number, boolean or null")
        if record.get("phone_number") in (None, ""):
            raise BadPush(f"record {i} has no phone_number")
    return records


def record_key(feed: str, record: dict[str, Any]) -> str:
    """The hash of a record's natural key (module docstring): equal for Aliyun's retries."""
    fields = _NATURAL_KEYS[feed]
    if all(record.get(f) not in (None, "") for f in fields):
        identity: Any = [str(record[f]) for f in fields]
    else:
        identity = record
    text = json.dumps(identity, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{feed}\n{text}".encode()).hexdigest()


def store_push(
    engine: Engine, feed: str, records: list[dict[str, Any]], now: datetime, keep_days: int | None = None
) -> int:
    """Keep the records of one push (in their order) that are not kept already; delete those older
    than ``keep_days``. Returns how many were new."""
    if feed not in FEEDS:
        raise ValueError(f"unknown feed {feed!r}")
    rows: dict[str, dict[str, Any]] = {}
    for record in records:
        key = record_key(feed, record)
        rows.setdefault(
            key,
            {
                "feed": feed,
                "record_key": key,
                "received_at": now,
                "record": json.dumps(record, ensure_ascii=False),
            },
        )
    with engine.begin() as conn:
        lock_writers(conn, aliyun_push_records)
        new = insert_new(conn, aliyun_push_records, list(rows.values()))
        if keep_days is not None:
            conn.execute(delete(aliyun_push_records).where(r.received_at < now - timedelta(days=keep_days)))
    return new


def records_after(
    engine: Engine, feed: str, cursor: int, limit: int = PAGE_SIZE
) -> tuple[list[dict[str, Any]], int]:
    """The feed's records after ``cursor`` in id order (at most ``limit``), and the new cursor
    (the last id read; ``cursor`` when there is none)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(r.record_id, r.record)
            .where(r.feed == feed)
            .where(r.record_id > cursor)
            .order_by(r.record_id)
            .limit(limit)
        ).all()
    return [json.loads(row.record) for row in rows], (rows[-1].record_id if rows else cursor)
