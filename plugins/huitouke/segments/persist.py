"""Stage 2 at the store's edge: reading orders and state, writing state, history and KPIs.

The pure functions of this package never touch a database; this module is the only one that
reads or writes ``customer_state``, ``segment_history``, ``segment_kpis`` and
``segment_transitions``, always with bound parameters and in the caller's transaction.

Which customers a day touches is recorded on the orders themselves: ``orders.state_applied_at``
is null for an order that intake inserted or whose status it moved, until this stage folds it
into the customer's state. That makes the daily update independent of clocks and run times: an
order loaded late, or a refund of a year-old order, is picked up by the next run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from huitouke.segments.classify import SEGMENT_COLUMNS
from huitouke.segments.history import SegmentChanges
from huitouke.segments.state import LINE_INPUT_COLUMNS, ORDER_INPUT_COLUMNS, STATE_COLUMNS, empty_state
from huitouke.store.schema import (
    customer_state,
    order_lines,
    orders,
    segment_history,
    segment_kpis,
    segment_transitions,
)

_CHUNK = 900  # bound parameters per IN (...) list: under SQLite's and every driver's limit


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _frame(conn: Connection, query: Any, columns: Sequence[str]) -> pd.DataFrame:
    result = conn.execute(query)
    return pd.DataFrame(result.fetchall(), columns=list(columns))


def _as_datetime64(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    for column in columns:
        frame[column] = pd.to_datetime(frame[column]).astype("datetime64[ns]")
    return frame


# ------------------------------------------------------------------------------------- orders


def touched_customers(conn: Connection, until: date) -> list[str]:
    """Customers with an order not yet folded into the state, paid on or before ``until``."""
    query = (
        select(orders.c.customer_id)
        .where(orders.c.state_applied_at.is_(None))
        .where((orders.c.business_date <= until) | orders.c.business_date.is_(None))
        .distinct()
    )
    return sorted(conn.execute(query).scalars())


def read_orders(
    conn: Connection, customer_ids: Sequence[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All orders (any status) and their lines, of the given customers or of everyone."""
    order_cols = [orders.c[name] for name in ORDER_INPUT_COLUMNS]
    line_cols = [order_lines.c[name] for name in LINE_INPUT_COLUMNS]
    if customer_ids is None:
        order_frames = [_frame(conn, select(*order_cols), ORDER_INPUT_COLUMNS)]
        line_frames = [_frame(conn, select(*line_cols), LINE_INPUT_COLUMNS)]
    else:
        order_frames, line_frames = [], []
        for chunk in _chunks(list(customer_ids)):
            order_frames.append(
                _frame(conn, select(*order_cols).where(orders.c.customer_id.in_(chunk)), ORDER_INPUT_COLUMNS)
            )
            line_frames.append(
                _frame(
                    conn,
                    select(*line_cols)
                    .join(orders, orders.c.order_id == order_lines.c.order_id)
                    .where(orders.c.customer_id.in_(chunk)),
                    LINE_INPUT_COLUMNS,
                )
            )
    order_frame = (
        pd.concat(order_frames, ignore_index=True)
        if order_frames
        else pd.DataFrame(columns=ORDER_INPUT_COLUMNS)
    )
    line_frame = (
        pd.concat(line_frames, ignore_index=True)
        if line_frames
        else pd.DataFrame(columns=["order_id", "category", "amount_cents"])
    )
    order_frame = _as_datetime64(order_frame, ["paid_at", "business_date"])
    order_frame["amount_cents"] = order_frame["amount_cents"].astype("int64")
    line_frame["amount_cents"] = pd.to_numeric(line_frame["amount_cents"]).fillna(0).astype("int64")
    return order_frame, line_frame


def mark_applied(conn: Connection, order_ids: Sequence[str], now: datetime) -> int:
    """Record that exactly these orders (the ones just read and folded in) are in the state.

    Marking by order id, not by customer, means an order committed by another writer after the
    read is left unmarked and picked up by the next run, never stamped without being counted.
    """
    statement = (
        update(orders)
        .where(orders.c.order_id == bindparam("b_order_id"))
        .where(orders.c.state_applied_at.is_(None))
        .values(state_applied_at=now)
    )
    ids = [{"b_order_id": str(i)} for i in order_ids]
    for chunk in _chunks(ids, 5_000):
        conn.execute(statement, list(chunk))
    return len(ids)


# -------------------------------------------------------------------------------------- state


def read_state(conn: Connection) -> pd.DataFrame:
    """The stored customer state, with the dtypes :func:`~huitouke.segments.state.build_state` gives."""
    frame = _frame(conn, select(*(customer_state.c[c] for c in STATE_COLUMNS)), STATE_COLUMNS)
    if frame.empty:
        return empty_state()
    frame = _as_datetime64(
        frame, ["first_paid_at", "last_paid_at", "first_business_date", "last_business_date"]
    )
    for column in ("paid_orders", "total_cents", "aov_cents"):
        frame[column] = frame[column].astype("int64")
    for column in ("customer_id", "main_category_group", "acquisition_source"):
        frame[column] = frame[column].astype("str")
    return frame.sort_values("customer_id", kind="stable", ignore_index=True)


def _state_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for row in frame[list(STATE_COLUMNS)].itertuples(index=False):
        rows.append(
            {
                "customer_id": str(row.customer_id),
                "first_paid_at": row.first_paid_at.to_pydatetime(),
                "last_paid_at": row.last_paid_at.to_pydatetime(),
                "first_business_date": row.first_business_date.date(),
                "last_business_date": row.last_business_date.date(),
                "paid_orders": int(row.paid_orders),
                "total_cents": int(row.total_cents),
                "aov_cents": int(row.aov_cents),
                "main_category_group": str(row.main_category_group),
                "acquisition_source": str(row.acquisition_source),
            }
        )
    return rows


def replace_state(conn: Connection, state: pd.DataFrame, customer_ids: Sequence[str] | None) -> None:
    """Write the rows of ``customer_ids`` (None: all) from ``state``; customers absent from it are removed."""
    if customer_ids is None:
        conn.execute(delete(customer_state))
        rows = _state_rows(state)
    else:
        ids = list(customer_ids)
        for chunk in _chunks(ids):
            conn.execute(delete(customer_state).where(customer_state.c.customer_id.in_(chunk)))
        rows = _state_rows(state[state["customer_id"].isin(ids)])
    for chunk in _chunks(rows, 5_000):
        conn.execute(insert(customer_state), list(chunk))


# ------------------------------------------------------------------------------------ history


def read_open_history(conn: Connection) -> pd.DataFrame:
    """The open segment rows (``valid_to`` null), with their ``segment_id``."""
    columns = ("segment_id", "customer_id", "valid_from", "valid_to", *SEGMENT_COLUMNS)
    frame = _frame(
        conn,
        select(*(segment_history.c[c] for c in columns)).where(segment_history.c.valid_to.is_(None)),
        columns,
    )
    return _history_dtypes(frame)


def _history_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    for column in ("r_score", "f_score", "m_score"):
        frame[column] = frame[column].astype("int8")
    frame["low_value_acquisition"] = frame["low_value_acquisition"].astype(bool)
    for column in ("customer_id", "lifecycle", "member_tier", "value_tier", "category_group"):
        frame[column] = frame[column].astype("str")
    return frame


def rewind_history(conn: Connection, day: date) -> None:
    """Undo what runs for ``day`` and later wrote to the history, so ``day`` can be computed again."""
    conn.execute(delete(segment_history).where(segment_history.c.valid_from >= day))
    conn.execute(update(segment_history).where(segment_history.c.valid_to >= day).values(valid_to=None))
    conn.execute(delete(segment_transitions).where(segment_transitions.c.business_date >= day))
    conn.execute(delete(segment_kpis).where(segment_kpis.c.business_date >= day))


def write_history(conn: Connection, changes: SegmentChanges) -> None:
    """Close the rows that ended and open the new ones."""
    if len(changes.close):
        ids = [{"b_id": int(i), "b_to": changes.business_date} for i in changes.close["segment_id"]]
        conn.execute(
            update(segment_history)
            .where(segment_history.c.segment_id == bindparam("b_id"))
            .values(valid_to=bindparam("b_to")),
            ids,
        )
    if len(changes.open):
        frame = changes.open
        rows = [
            {
                "customer_id": str(r.customer_id),
                "valid_from": changes.business_date,
                "valid_to": None,
                "lifecycle": str(r.lifecycle),
                "r_score": int(r.r_score),
                "f_score": int(r.f_score),
                "m_score": int(r.m_score),
                "member_tier": str(r.member_tier),
                "value_tier": str(r.value_tier),
                "low_value_acquisition": bool(r.low_value_acquisition),
                "category_group": str(r.category_group),
            }
            for r in frame.itertuples(index=False)
        ]
        for chunk in _chunks(rows, 5_000):
            conn.execute(insert(segment_history), list(chunk))


def segments_on(conn: Connection, day: date, customer_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Every customer's segment on a past (or the current) business date, from the history."""
    columns = ("customer_id", "valid_from", "valid_to", *SEGMENT_COLUMNS)
    query = (
        select(*(segment_history.c[c] for c in columns))
        .where(segment_history.c.valid_from <= day)
        .where(segment_history.c.valid_to.is_(None) | (segment_history.c.valid_to > day))
        .order_by(segment_history.c.customer_id)
    )
    if customer_ids is not None:
        query = query.where(segment_history.c.customer_id.in_(list(customer_ids)))
    return _history_dtypes(_frame(conn, query, columns))


# --------------------------------------------------------------------------------------- KPIs


def last_run(conn: Connection) -> tuple[date | None, str | None]:
    """The latest business date with stored KPIs, and the state fingerprint it used."""
    latest = conn.scalar(select(func.max(segment_kpis.c.business_date)))
    if latest is None:
        return None, None
    fingerprint = conn.scalar(
        select(segment_kpis.c.state_fingerprint).where(segment_kpis.c.business_date == latest)
    )
    return latest, fingerprint


def write_day(
    conn: Connection,
    day: date,
    kpis: dict[str, Any],
    changes: SegmentChanges,
    fingerprint: str,
    now: datetime,
) -> None:
    """Store the day's KPIs and lifecycle transitions (replacing any earlier result for the day)."""
    conn.execute(delete(segment_kpis).where(segment_kpis.c.business_date == day))
    conn.execute(delete(segment_transitions).where(segment_transitions.c.business_date == day))
    conn.execute(
        insert(segment_kpis).values(
            business_date=day,
            customers=int(kpis["customers"]),
            paid_orders=int(kpis["paid_orders"]),
            gmv_cents=int(kpis["gmv_cents"]),
            churned_customers=int(kpis["churned_customers"]),
            churn_rate=float(kpis["churn_rate"]),
            repeat_customers=int(kpis["repeat_customers"]),
            repeat_rate=float(kpis["repeat_rate"]),
            history_rows_closed=len(changes.close),
            history_rows_opened=len(changes.open),
            state_fingerprint=fingerprint,
            figures=json.dumps(kpis, ensure_ascii=False, default=_json_default),
            computed_at=now,
        )
    )
    transitions = [
        {"business_date": day, "from_lifecycle": a, "to_lifecycle": b, "customers": n}
        for (a, b), n in changes.transition_counts().items()
        if n
    ]
    if transitions:
        conn.execute(insert(segment_transitions), transitions)


def stored_kpis(conn: Connection, day: date) -> dict[str, Any] | None:
    figures = conn.scalar(select(segment_kpis.c.figures).where(segment_kpis.c.business_date == day))
    return json.loads(figures) if figures else None


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
