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

:func:`load_batch` reads what the batch names from the store, sorts it with the plain functions
here (:func:`sort_orders`, :func:`sort_customers`, :func:`quarantine_frame`: no database, nothing
written), then writes what they decided; the reads and writes are :mod:`huitouke.intake.persist`.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine

from huitouke import records
from huitouke.intake import persist
from huitouke.intake.validate import ValidatedBatch

# The counts an intake_runs row records (besides its day, source and reasons).
_RUN_FIGURES = ("rows_read", "orders_read", "inserted", "updated", "unchanged", "quarantined")


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

    def run_row(self, finished_at: datetime) -> dict[str, Any]:
        """The ``intake_runs`` row that records this intake."""
        figures = self.as_dict()
        return {
            "business_date": self.business_date,
            "last_business_date": self.period_end,
            "source": self.source,
            **{name: figures[name] for name in _RUN_FIGURES},
            "quarantined_by_reason": json.dumps(figures["quarantined_by_reason"]),
            "finished_at": finished_at,
        }


@dataclass(frozen=True)
class SortedOrders:
    """Where each order of a batch goes against what is stored, decided before anything is written."""

    new: list[dict[str, Any]]  # orders to insert
    moves: list[dict[str, Any]]  # status moves: order_id, status, source_updated_at, folded_as_paid
    unchanged: int
    conflicts: list[dict[str, Any]]  # quarantine rows: conflicting_order, status_regression
    customer_ids: set[str]  # the customers of the new and the moved orders

    @property
    def new_ids(self) -> set[str]:
        return {order["order_id"] for order in self.new}


def sort_orders(incoming: pd.DataFrame, stored: Mapping[str, Mapping[str, Any]]) -> SortedOrders:
    """Sort the batch's orders (``incoming``, validated) into new, status moves, unchanged and
    conflicts, against ``stored``: order id -> the stored order (persist.STORED_ORDER_COLUMNS)."""
    new, moves, conflicts = [], [], []
    unchanged = 0
    customer_ids: set[str] = set()
    for order in plain_records(incoming):
        old = stored.get(order["order_id"])
        if old is None:
            new.append(order)
            customer_ids.add(order["customer_id"])
        elif old["content_hash"] != order["content_hash"]:
            conflicts.append(_conflict(order, "conflicting_order", _differences(order, old)))
        elif old["status"] == order["status"]:
            unchanged += 1
        elif records.STATUS_RANK[order["status"]] > records.STATUS_RANK.get(old["status"], -1):
            moves.append(_status_move(order, old))
            customer_ids.add(old["customer_id"])
        else:
            detail = f"stored status is {old['status']!r}; the row says {order['status']!r}"
            conflicts.append(_conflict(order, "status_regression", detail))
    return SortedOrders(new, moves, unchanged, conflicts, customer_ids)


def _status_move(order: dict[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "order_id": order["order_id"],
        "status": order["status"],
        "source_updated_at": order["source_updated_at"],
        "folded_as_paid": _folded_as_paid(old),
    }


def _folded_as_paid(old: Mapping[str, Any]) -> bool | None:
    """What the customer state counts of a stored order whose status is about to move: whether
    it counts it as paid, or None when the state never folded it (stage 2's fold needs to know)."""
    if old["state_applied_at"] is not None:  # folded with its stored status
        return old["status"] in records.PAID_STATUSES
    return old["folded_as_paid"]  # waiting already: what the state counted before that (if anything)


def _differences(order: dict[str, Any], old: Mapping[str, Any]) -> str:
    diffs = [
        f"{name}: stored {old[name]!r}, row {order[name]!r}"
        for name in records.FIXED_ORDER_FIELDS
        if old[name] != order[name]
    ]
    return "order id already stored with different content (" + ("; ".join(diffs) or "lines differ") + ")"


def _conflict(order: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
    raw = {k: (v.isoformat() if isinstance(v, (datetime, date)) else v) for k, v in order.items()}
    return {
        "reason": reason,
        "detail": detail,
        "order_id": order["order_id"],
        "source_ref": f"order {order['order_id']}",
        "raw": json.dumps(raw, ensure_ascii=False, sort_keys=True, default=str),
    }


def sort_customers(
    incoming: pd.DataFrame, stored: Mapping[str, Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    """The new customers among ``incoming`` and, for stored ones, the contact fields the source now
    gives differently: (new customers, [(customer id, {field: new value})]). An empty field never
    erases a stored one."""
    new, changed = [], []
    for customer in plain_records(incoming):
        old = stored.get(customer["customer_id"])
        if old is None:
            new.append(customer)
            continue
        values = {
            f: customer[f]
            for f in records.CONTACT_FIELDS
            if customer[f] is not None and customer[f] != old[f]
        }
        if values:
            changed.append((customer["customer_id"], values))
    return new, changed


def quarantine_keys(source: str, frame: pd.DataFrame) -> list[str]:
    """Stable keys for quarantine rows: the same bad row gives the same key on every run."""
    seen: Counter[tuple[str, str]] = Counter()
    keys = []
    for reason, raw in zip(frame["reason"], frame["raw"], strict=True):
        seen[(reason, raw)] += 1
        material = f"{source}\n{reason}\n{raw}\n{seen[(reason, raw)]}"
        keys.append(hashlib.sha256(material.encode("utf-8")).hexdigest())
    return keys


def quarantine_frame(validated: pd.DataFrame, conflicts: list[dict[str, Any]], source: str) -> pd.DataFrame:
    """Validation's quarantine rows and the store's conflicts, each with its ``row_key``."""
    frame = validated
    if conflicts:
        frame = pd.concat([frame, pd.DataFrame(conflicts)], ignore_index=True)
    if frame.empty:
        return frame
    return frame.assign(row_key=quarantine_keys(source, frame))


def plain_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as dicts of plain Python values (NaN/NaT/pd.NA -> None), as the DB-API takes them."""
    return [{key: _plain(value) for key, value in row.items()} for row in frame.to_dict(orient="records")]


def _plain(value: Any) -> Any:
    if value is None or value is pd.NaT or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


@dataclass(frozen=True)
class _Plan:
    """Everything one load writes, decided from the batch and the stored rows it names."""

    orders: SortedOrders
    new_lines: list[dict[str, Any]]
    new_customers: list[dict[str, Any]]
    changed_customers: list[tuple[str, dict[str, Any]]]
    quarantine: pd.DataFrame  # the batch's quarantine rows, with their row_key
    new_quarantine: list[dict[str, Any]]  # those not stored by an earlier run


def _plan(conn: Connection, batch: ValidatedBatch, source: str) -> _Plan:
    """Read what ``batch`` names from the store and sort it; nothing is written."""
    orders = sort_orders(batch.orders, persist.read_orders(conn, list(batch.orders["order_id"])))
    customers = batch.customers
    if len(customers):
        customers = customers[customers["customer_id"].isin(orders.customer_ids)]
    new_customers, changed_customers = sort_customers(
        customers, persist.read_customers(conn, list(customers["customer_id"]))
    )
    quarantine = quarantine_frame(batch.quarantine, orders.conflicts, source)
    new_quarantine = []
    if len(quarantine):
        stored_keys = persist.read_quarantine_keys(conn, list(quarantine["row_key"]))
        new_quarantine = plain_records(quarantine[~quarantine["row_key"].isin(stored_keys)])
    new_lines = []
    if orders.new:
        new_lines = plain_records(batch.lines[batch.lines["order_id"].isin(orders.new_ids)])
    return _Plan(orders, new_lines, new_customers, changed_customers, quarantine, new_quarantine)


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
    with engine.begin() as conn:
        plan = _plan(conn, batch, source)
        persist.write_customers(conn, plan.new_customers, plan.changed_customers, now)
        persist.insert_orders(conn, plan.orders.new, plan.new_lines, source, now)
        persist.move_statuses(conn, plan.orders.moves, now)
        new_quarantine_rows = persist.insert_quarantine(conn, plan.new_quarantine, source, business_date, now)
        summary = IntakeSummary(
            business_date=business_date,
            source=source,
            last_business_date=last_business_date,
            rows_read=batch.rows_read,
            orders_read=len(batch.orders),
            inserted=len(plan.orders.new),
            updated=len(plan.orders.moves),
            unchanged=plan.orders.unchanged,
            quarantined_by_reason=dict(Counter(plan.quarantine["reason"])) if len(plan.quarantine) else {},
            new_quarantine_rows=new_quarantine_rows,
            customers_new=len(plan.new_customers),
            customers_updated=len(plan.changed_customers),
        )
        persist.record_run(conn, summary.run_row(now))
    return summary
