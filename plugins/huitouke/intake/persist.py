"""Intake's store edge: the stored orders, customers and quarantine keys a batch names, and the
writes of one load (customers, new orders and their lines, status moves, quarantine rows, the
run's row). Plain Python values in and out; what to write is decided in
:mod:`huitouke.intake.load`."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Column, Connection, Row, bindparam, func, insert, select, update

from huitouke import records
from huitouke.store.rows import chunks
from huitouke.store.schema import customers, intake_runs, order_lines, orders, quarantine

# What the sort needs of a stored order: what may not change, its content hash and status, and
# whether (and how) the customer state has counted it.
STORED_ORDER_COLUMNS: tuple[str, ...] = (
    "order_id",
    *records.FIXED_ORDER_FIELDS,
    "status",
    "content_hash",
    "state_applied_at",
    "folded_as_paid",
)
_SOURCE_REF_LENGTH = quarantine.c.source_ref.type.length


def _fetch(conn: Connection, columns: list[Column], key: Column, ids: Iterable[Any]) -> list[Row]:
    """The rows whose ``key`` is one of ``ids``, a bounded IN (...) list at a time."""
    rows: list[Row] = []
    for chunk in chunks(sorted(set(ids))):
        rows.extend(conn.execute(select(*columns).where(key.in_(chunk))).all())
    return rows


def read_orders(conn: Connection, order_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The stored orders among ``order_ids``: order id -> {column: value} (STORED_ORDER_COLUMNS)."""
    columns = [orders.c[name] for name in STORED_ORDER_COLUMNS]
    return {row.order_id: row._asdict() for row in _fetch(conn, columns, orders.c.order_id, order_ids)}


def read_customers(conn: Connection, customer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The stored customers among ``customer_ids``: customer id -> their contact fields."""
    columns = [customers.c.customer_id, *(customers.c[name] for name in records.CONTACT_FIELDS)]
    return {
        row.customer_id: row._asdict() for row in _fetch(conn, columns, customers.c.customer_id, customer_ids)
    }


def read_quarantine_keys(conn: Connection, row_keys: Iterable[str]) -> set[str]:
    """The quarantine row keys among ``row_keys`` that an earlier run stored."""
    return {row.row_key for row in _fetch(conn, [quarantine.c.row_key], quarantine.c.row_key, row_keys)}


def write_customers(
    conn: Connection,
    new: list[dict[str, Any]],
    changed: list[tuple[str, dict[str, Any]]],
    now: datetime,
) -> None:
    """Insert the new customers (opted in); set the changed contact fields of stored ones."""
    if new:
        conn.execute(
            insert(customers),
            [
                {
                    **customer,
                    "sms_opt_out": False,
                    "email_opt_out": False,
                    "first_seen_at": now,
                    "updated_at": now,
                }
                for customer in new
            ],
        )
    for customer_id, values in changed:
        conn.execute(
            update(customers).where(customers.c.customer_id == customer_id).values(**values, updated_at=now)
        )


def insert_orders(
    conn: Connection, new: list[dict[str, Any]], lines: list[dict[str, Any]], source: str, now: datetime
) -> None:
    """Insert new orders (from ``source``, loaded ``now``) and their lines."""
    if not new:
        return
    conn.execute(
        insert(orders),
        [{**order, "source": source, "loaded_at": now, "status_changed_at": now} for order in new],
    )
    if lines:
        conn.execute(insert(order_lines), lines)


def move_statuses(conn: Connection, moves: list[dict[str, Any]], now: datetime) -> None:
    """Move stored orders to their later status (``moves``: order_id, status, source_updated_at,
    folded_as_paid). Stage 2 must fold the new status into the customer state, knowing what it
    counted of the order before."""
    if not moves:
        return
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
        [
            {
                "b_order_id": move["order_id"],
                "b_status": move["status"],
                "b_updated": move["source_updated_at"],
                "b_now": now,
                "b_folded_as_paid": move["folded_as_paid"],
            }
            for move in moves
        ],
    )


def insert_quarantine(
    conn: Connection, rows: list[dict[str, Any]], source: str, business_date: date, now: datetime
) -> int:
    """Insert quarantine rows (with their row_key) for ``business_date``; returns how many."""
    if not rows:
        return 0
    conn.execute(
        insert(quarantine),
        [
            {
                **row,
                "business_date": business_date,
                "source": source,
                "quarantined_at": now,
                "source_ref": (row.get("source_ref") or "")[:_SOURCE_REF_LENGTH],
            }
            for row in rows
        ],
    )
    return len(rows)


def record_run(conn: Connection, row: dict[str, Any]) -> int:
    """Record an intake in ``intake_runs`` as the next attempt for its day and source (the rows of
    earlier attempts stay: the audit of a re-run or a backfill). Returns the attempt's number."""
    key = (intake_runs.c.business_date == row["business_date"]) & (intake_runs.c.source == row["source"])
    attempt = (conn.scalar(select(func.max(intake_runs.c.attempt)).where(key)) or 0) + 1
    conn.execute(insert(intake_runs).values(**row, attempt=attempt))
    return attempt


def daily_orders_before(conn: Connection, source: str, day: date, days: int) -> list[int]:
    """Orders read by the daily intakes of ``source`` on the ``days`` business days before ``day``
    (the latest attempt of each), oldest first: what a complete day is measured against."""
    runs = intake_runs.c
    rows = conn.execute(
        select(runs.business_date, runs.attempt, runs.orders_read)
        .where(runs.source == source)
        .where(runs.business_date < day)
        .where(runs.business_date >= day - timedelta(days=days))
        .where(runs.last_business_date == runs.business_date)
        .order_by(runs.business_date, runs.attempt)
    ).all()
    latest = {row.business_date: int(row.orders_read) for row in rows}  # the last attempt wins
    return [latest[d] for d in sorted(latest)]
