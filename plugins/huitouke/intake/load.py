"""Loading a validated batch into the CRM store: upsert by order id, in one transaction.

Against what is already stored, each order is one of:

- **inserted**: a new order id (its lines and customer come with it);
- **updated**: the same content, a later status (paid -> completed -> refunded/cancelled): only the
  status changes, so refunds and cancellations never add revenue;
- **unchanged**: the same content and status (re-running a day lands here);
- **quarantined** ``conflicting_order``: the order id is stored with a different customer, payment
  time, amount or lines; ``status_regression``: the row would move the order back (refunded ->
  paid). The stored order stays as it was.

Quarantine rows are keyed by a hash of (source, reason, raw row, occurrence), so re-running a day
stores each bad row once.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, update

from huitouke import records
from huitouke.intake.validate import ValidatedBatch
from huitouke.pii import get_logger
from huitouke.store.schema import customers, intake_runs, order_lines, orders, quarantine

log = get_logger(__name__)

_CHUNK = 500


@dataclass
class IntakeSummary:
    """What one intake did; ``as_text`` is the task log's closing table."""

    business_date: date
    source: str
    last_business_date: date | None = None  # set when one intake covered several days (history loads)
    rows_read: int = 0
    orders_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    new_quarantine_rows: int = 0
    customers_new: int = 0
    customers_updated: int = 0

    @property
    def period_end(self) -> date:
        return self.last_business_date or self.business_date

    @property
    def period(self) -> str:
        if self.period_end == self.business_date:
            return self.business_date.isoformat()
        return f"{self.business_date.isoformat()} .. {self.period_end.isoformat()}"

    @property
    def quarantined(self) -> int:
        return sum(self.quarantined_by_reason.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "business_date": self.business_date.isoformat(),
            "last_business_date": self.period_end.isoformat(),
            "source": self.source,
            "rows_read": self.rows_read,
            "orders_read": self.orders_read,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "quarantined": self.quarantined,
            "quarantined_by_reason": dict(sorted(self.quarantined_by_reason.items())),
            "new_quarantine_rows": self.new_quarantine_rows,
            "customers_new": self.customers_new,
            "customers_updated": self.customers_updated,
        }

    def as_text(self) -> str:
        rows = [
            ("rows read", self.rows_read),
            ("orders read", self.orders_read),
            ("inserted", self.inserted),
            ("updated (status)", self.updated),
            ("unchanged", self.unchanged),
            ("quarantined rows", self.quarantined),
        ]
        rows += [(f"  {reason}", n) for reason, n in sorted(self.quarantined_by_reason.items())]
        rows += [("new customers", self.customers_new), ("customers updated", self.customers_updated)]
        width = max(len(label) for label, _ in rows)
        lines = [f"Order intake for {self.period} from {self.source}"]
        lines += [f"  {label:<{width}}  {n:>9,}" for label, n in rows]
        if self.new_quarantine_rows != self.quarantined:
            lines.append(
                f"  ({self.new_quarantine_rows:,} quarantine rows are new; the others were stored by an earlier run)"
            )
        return "\n".join(lines)


def _chunks(values: list[Any], size: int = _CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as dicts of plain Python values (NaN/NaT/pd.NA -> None) for the DB-API."""
    out = []
    for row in frame.to_dict(orient="records"):
        clean = {}
        for key, value in row.items():
            if (
                value is None
                or value is pd.NaT
                or value is pd.NA
                or (isinstance(value, float) and value != value)
            ):
                clean[key] = None
            elif isinstance(value, pd.Timestamp):
                clean[key] = value.to_pydatetime()
            elif hasattr(value, "item") and not isinstance(value, (str, bytes)):
                clean[key] = value.item()
            else:
                clean[key] = value
        out.append(clean)
    return out


def _fetch(conn: Connection, columns: Iterable[Any], key: Any, ids: list[str]) -> list[Any]:
    rows: list[Any] = []
    for chunk in _chunks(sorted(set(ids))):
        rows.extend(conn.execute(select(*columns).where(key.in_(chunk))).all())
    return rows


def quarantine_keys(source: str, frame: pd.DataFrame) -> list[str]:
    """Stable keys for quarantine rows: the same bad row gives the same key on every run."""
    seen: Counter[tuple[str, str]] = Counter()
    keys = []
    for reason, raw in zip(frame["reason"], frame["raw"], strict=True):
        seen[(reason, raw)] += 1
        material = f"{source}\n{reason}\n{raw}\n{seen[(reason, raw)]}"
        keys.append(hashlib.sha256(material.encode("utf-8")).hexdigest())
    return keys


def load_batch(
    engine: Engine,
    batch: ValidatedBatch,
    source: str,
    business_date: date,
    last_business_date: date | None = None,
) -> IntakeSummary:
    """Upsert ``batch`` into the store in one transaction and return what happened.

    ``business_date`` (to ``last_business_date`` for a history load) is the period read.
    """
    now = datetime.now(UTC).replace(tzinfo=None)
    summary = IntakeSummary(
        business_date=business_date,
        source=source,
        last_business_date=last_business_date,
        rows_read=batch.rows_read,
    )
    summary.orders_read = len(batch.orders)
    extra_quarantine: list[dict[str, Any]] = []

    with engine.begin() as conn:
        stored = {
            row.order_id: row
            for row in _fetch(
                conn,
                [
                    orders.c.order_id,
                    orders.c.customer_id,
                    orders.c.paid_at,
                    orders.c.amount_cents,
                    orders.c.status,
                    orders.c.content_hash,
                    orders.c.state_applied_at,
                    orders.c.folded_as_paid,
                ],
                orders.c.order_id,
                list(batch.orders["order_id"]),
            )
        }
        new_orders, status_updates = [], []
        for order in _records(batch.orders):
            old = stored.get(order["order_id"])
            if old is None:
                new_orders.append(order)
            elif old.content_hash != order["content_hash"]:
                extra_quarantine.append(_conflict(order, old, "conflicting_order", _differences(order, old)))
            elif old.status == order["status"]:
                summary.unchanged += 1
            elif records.STATUS_RANK[order["status"]] > records.STATUS_RANK.get(old.status, -1):
                status_updates.append(
                    {
                        "b_order_id": order["order_id"],
                        "b_status": order["status"],
                        "b_updated": order["source_updated_at"],
                        "b_now": now,
                        "b_folded_as_paid": _folded_as_paid(old),
                    }
                )
            else:
                extra_quarantine.append(
                    _conflict(
                        order,
                        old,
                        "status_regression",
                        f"stored status is {old.status!r}; the row says {order['status']!r}",
                    )
                )

        summary.customers_new, summary.customers_updated = _upsert_customers(
            conn,
            batch.customers,
            {o["customer_id"] for o in new_orders} | _customers_of(status_updates, stored),
            now,
        )
        if new_orders:
            for order in new_orders:
                order.update(source=source, loaded_at=now, status_changed_at=now)
            conn.execute(insert(orders), new_orders)
            new_ids = {o["order_id"] for o in new_orders}
            new_lines = _records(batch.lines[batch.lines["order_id"].isin(new_ids)])
            if new_lines:
                conn.execute(insert(order_lines), new_lines)
        if status_updates:
            conn.execute(
                update(orders)
                .where(orders.c.order_id == bindparam("b_order_id"))
                .values(
                    status=bindparam("b_status"),
                    source_updated_at=bindparam("b_updated"),
                    status_changed_at=bindparam("b_now"),
                    state_applied_at=None,  # stage 2 must fold the new status into the customer state
                    folded_as_paid=bindparam("b_folded_as_paid"),  # ... knowing what it counted
                ),
                status_updates,
            )
        summary.inserted, summary.updated = len(new_orders), len(status_updates)

        q = batch.quarantine
        if extra_quarantine:
            q = pd.concat([q, pd.DataFrame(extra_quarantine)], ignore_index=True)
        summary.quarantined_by_reason = dict(Counter(q["reason"])) if len(q) else {}
        summary.new_quarantine_rows = _store_quarantine(conn, q, source, business_date, now)

        conn.execute(
            delete(intake_runs).where(
                (intake_runs.c.business_date == business_date) & (intake_runs.c.source == source)
            )
        )
        conn.execute(
            insert(intake_runs).values(
                business_date=business_date,
                last_business_date=summary.period_end,
                source=source,
                rows_read=summary.rows_read,
                orders_read=summary.orders_read,
                inserted=summary.inserted,
                updated=summary.updated,
                unchanged=summary.unchanged,
                quarantined=summary.quarantined,
                quarantined_by_reason=json.dumps(summary.as_dict()["quarantined_by_reason"]),
                finished_at=now,
            )
        )
    return summary


def _folded_as_paid(old: Any) -> bool | None:
    """What the customer state counts of a stored order whose status is about to move: whether
    it counts it as paid, or None when the state never folded it (stage 2's fold needs to know)."""
    if old.state_applied_at is not None:  # folded with its stored status
        return old.status in records.PAID_STATUSES
    return old.folded_as_paid  # waiting already: what the state counted before that (if anything)


def _customers_of(status_updates: list[dict[str, Any]], stored: dict[str, Any]) -> set[str]:
    return {stored[u["b_order_id"]].customer_id for u in status_updates}


def _differences(order: dict[str, Any], old: Any) -> str:
    diffs = [
        f"{name}: stored {getattr(old, name)!r}, row {order[name]!r}"
        for name in ("customer_id", "paid_at", "amount_cents")
        if getattr(old, name) != order[name]
    ]
    return "order id already stored with different content (" + ("; ".join(diffs) or "lines differ") + ")"


def _conflict(order: dict[str, Any], old: Any, reason: str, detail: str) -> dict[str, Any]:
    del old
    raw = {k: (v.isoformat() if isinstance(v, (datetime, date)) else v) for k, v in order.items()}
    return {
        "reason": reason,
        "detail": detail,
        "order_id": order["order_id"],
        "source_ref": f"order {order['order_id']}",
        "raw": json.dumps(raw, ensure_ascii=False, sort_keys=True, default=str),
    }


def _upsert_customers(
    conn: Connection, frame: pd.DataFrame, touched: set[str], now: datetime
) -> tuple[int, int]:
    """Insert new customers; refresh contact fields that the source now gives differently."""
    frame = frame[frame["customer_id"].isin(touched)] if len(frame) else frame
    if frame.empty:
        return 0, 0
    incoming = _records(frame)
    fields = ("name", "phone", "email", "birthday")
    stored = {
        row.customer_id: row
        for row in _fetch(
            conn,
            [customers.c.customer_id, *(customers.c[f] for f in fields)],
            customers.c.customer_id,
            [c["customer_id"] for c in incoming],
        )
    }
    new, changed = [], []
    for cust in incoming:
        old = stored.get(cust["customer_id"])
        if old is None:
            new.append(
                {
                    **cust,
                    "sms_opt_out": False,
                    "email_opt_out": False,
                    "first_seen_at": now,
                    "updated_at": now,
                }
            )
            continue
        values = {f: cust[f] for f in fields if cust[f] is not None and cust[f] != getattr(old, f)}
        if values:
            changed.append((cust["customer_id"], values))
    if new:
        conn.execute(insert(customers), new)
    for customer_id, values in changed:
        conn.execute(
            update(customers).where(customers.c.customer_id == customer_id).values(**values, updated_at=now)
        )
    return len(new), len(changed)


def _store_quarantine(
    conn: Connection, frame: pd.DataFrame, source: str, business_date: date, now: datetime
) -> int:
    if frame.empty:
        return 0
    frame = frame.copy()
    frame["row_key"] = quarantine_keys(source, frame)
    existing = {
        row.row_key
        for row in _fetch(conn, [quarantine.c.row_key], quarantine.c.row_key, list(frame["row_key"]))
    }
    fresh = frame[~frame["row_key"].isin(existing)]
    if fresh.empty:
        return 0
    rows = _records(fresh)
    for row in rows:
        row.update(business_date=business_date, source=source, quarantined_at=now)
        row["source_ref"] = (row.get("source_ref") or "")[:255]
    conn.execute(insert(quarantine), rows)
    return len(rows)
