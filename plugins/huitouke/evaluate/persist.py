"""Stage 6 at the store's edge: what evaluation reads (the waves of the look-back period with each
customer's segment on the wave's day, the cohort's orders, the outbox, the coupons, the windows
already recorded) and writes (``evaluations``, ``evaluation_details``, ``evaluation_sequences``).

:mod:`huitouke.evaluate.daily` touches the store only through this module, in the caller's
transaction. Re-running a day adds nothing and changes nothing already recorded: an evaluation is
inserted once under its key, the details are upserted under theirs, and the day's sequences are
replaced.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Float,
    Integer,
    String,
    Table,
    and_,
    delete,
    func,
    or_,
    select,
)

from huitouke.campaigns.plan import STORED_WAVE_COLUMNS
from huitouke.campaigns.tables import unique_key
from huitouke.evaluate.result import COHORT_KEY, WINDOW_KEY, WaveEvaluation
from huitouke.evaluate.waves import planned_send_time
from huitouke.store.rows import insert_new, read_frame, upsert
from huitouke.store.schema import (
    campaign_waves,
    coupons,
    evaluation_details,
    evaluation_sequences,
    evaluations,
    order_lines,
    orders,
    outbox,
    segment_history,
)

__all__ = [
    "read_coupons",
    "read_messages",
    "read_orders",
    "read_recorded",
    "read_waves",
    "write_evaluation",
]

# What evaluation reads of the outbox and the coupons: their key, then what became of the message
# (status, its delivery receipt) and what it cost (segments rendered, segments the provider billed).
MESSAGE_COLUMNS = (*unique_key(outbox), "status", "receipt", "sms_segments", "billed_segments")
COUPON_COLUMNS = (*unique_key(coupons), "value_cents", "redeemed_order_id")


# ---------------------------------------------------------------------------------------- reads


def read_waves(conn: Connection, since: date, day: date, segment_columns: Sequence[str]) -> pd.DataFrame:
    """Waves due in [since, day), with each customer's segment on the due day (history ranges)."""
    w, h = campaign_waves.c, segment_history.c
    query = (
        select(*(w[c] for c in STORED_WAVE_COLUMNS), *(h[c] for c in segment_columns))
        .outerjoin(
            segment_history,
            and_(
                h.customer_id == w.customer_id,
                h.valid_from <= w.due_on,
                or_(h.valid_to.is_(None), h.valid_to > w.due_on),
            ),
        )
        .where(w.due_on >= since)
        .where(w.due_on < day)
    )
    return read_frame(conn, query, (*STORED_WAVE_COLUMNS, *segment_columns))


def read_orders(conn: Connection, since: date, day: date, timezone: str) -> pd.DataFrame:
    """Every order of the cohorts' customers paid after the first send and up to the end of
    ``day``, with its categories ("a,b"). Status as it stands now: a refund since is no response;
    ``amount_cents`` is net of partial refunds."""
    w = campaign_waves.c
    cohort = select(w.customer_id).where(w.due_on >= since).where(w.due_on < day).distinct().subquery()
    first = planned_send_time(since, timezone, datetime.min.time())
    end = planned_send_time(day + timedelta(days=1), timezone, datetime.min.time())
    o = orders.c
    frame = read_frame(
        conn,
        # Revenue net of partial refunds (a whole refund changes the status: no response at all).
        select(
            o.order_id, o.customer_id, o.paid_at, o.status, (o.amount_cents - o.refunded_cents).label("net")
        )
        .join(cohort, cohort.c.customer_id == o.customer_id)
        .where(o.paid_at > first)
        .where(o.paid_at < end),
        ("order_id", "customer_id", "paid_at", "status", "amount_cents"),
    )
    if frame.empty:
        return frame.assign(categories=pd.Series([], dtype=object))
    lines = read_frame(
        conn,
        select(order_lines.c.order_id, order_lines.c.category)
        .join(orders, orders.c.order_id == order_lines.c.order_id)
        .join(cohort, cohort.c.customer_id == o.customer_id)
        .where(o.paid_at > first)
        .where(o.paid_at < end),
        ("order_id", "category"),
    )
    categories = lines.groupby("order_id")["category"].agg(lambda c: ",".join(sorted(set(c))))
    frame["categories"] = frame["order_id"].map(categories)
    frame["paid_at"] = pd.to_datetime(frame["paid_at"])
    return frame


def read_messages(conn: Connection, since: date) -> pd.DataFrame:
    """The outbox rows of the look-back period: whom, on which channel, in what status, with
    which receipt, at how many segments."""
    query = select(*(outbox.c[c] for c in MESSAGE_COLUMNS)).where(outbox.c.business_date >= since)
    return read_frame(conn, query, MESSAGE_COLUMNS)


def read_coupons(conn: Connection, since: date) -> pd.DataFrame:
    """The coupons issued in the look-back period: their value and the order that redeemed them."""
    query = select(*(coupons.c[c] for c in COUPON_COLUMNS)).where(coupons.c.issued_on >= since)
    return read_frame(conn, query, COUPON_COLUMNS)


def read_recorded(conn: Connection, since: date) -> pd.DataFrame:
    """The windows already evaluated (:data:`~huitouke.evaluate.result.WINDOW_KEY`): not again."""
    query = select(*(evaluations.c[c] for c in WINDOW_KEY)).where(evaluations.c.due_on >= since).distinct()
    return read_frame(conn, query, WINDOW_KEY)


def count_evaluated_on(conn: Connection, day: date) -> int:
    """How many result rows runs of ``day`` stored."""
    return int(
        conn.scalar(select(func.count()).select_from(evaluations).where(evaluations.c.evaluated_on == day))
    )


# --------------------------------------------------------------------------------------- writes


def write_evaluation(conn: Connection, ev: WaveEvaluation, day: date, now: datetime) -> None:
    """Store the day's evaluation: new results, the windows' details, the day's sequences."""
    insert_new(
        conn,
        evaluations,
        [
            _row(
                evaluations,
                r,
                evaluated_on=day,
                primary_window=bool(r["primary"]),
                figures=_json([r]),
                computed_at=now,
            )
            for r in ev.results.to_dict("records")
        ],
    )
    upsert(conn, evaluation_details, _detail_rows(ev, day), unique_key(evaluation_details))
    conn.execute(delete(evaluation_sequences).where(evaluation_sequences.c.evaluated_on == day))
    insert_new(
        conn,
        evaluation_sequences,
        [
            _row(evaluation_sequences, r, evaluated_on=day, figures=_json([r]))
            for r in ev.cumulative.to_dict("records")
        ],
    )


def _detail_rows(ev: WaveEvaluation, day: date) -> list[dict[str, Any]]:
    """One ``evaluation_details`` row per window and kind (breakdowns, categories), and per wave
    for its curve (window 0): the frame's rows as JSON."""
    details = []
    for kind, frame in (("breakdowns", ev.breakdowns), ("categories", ev.categories)):
        for (campaign, wave, due_on, window), part in frame.groupby(WINDOW_KEY, sort=True):
            details.append((campaign, wave, due_on, window, kind, part))
    for (campaign, wave, due_on), part in ev.curves.groupby(COHORT_KEY, sort=True):
        details.append((campaign, wave, due_on, 0, "curve", part))
    return [
        {
            "campaign": c,
            "wave": int(w),
            "due_on": d,
            "window_days": int(win),
            "kind": kind,
            "evaluated_on": day,
            "figures": _json(part.to_dict("records")),
        }
        for c, w, d, win, kind, part in details
    ]


def _row(table: Table, record: Mapping[str, Any], **given: Any) -> dict[str, Any]:
    """A row of ``table``: the ``given`` values, and every other column taken from ``record`` as
    the column's type stores it (whole numbers rounded, NaN as NULL, numpy as Python)."""
    row = {}
    for column in table.columns:
        if column.name in given:
            row[column.name] = given[column.name]
            continue
        value = record[column.name]
        if isinstance(column.type, Boolean):
            row[column.name] = bool(value)
        elif isinstance(column.type, Integer):
            row[column.name] = _whole(value)
        elif isinstance(column.type, Float | DateTime):
            row[column.name] = _plain(value)
        elif isinstance(column.type, String):
            row[column.name] = str(value)
        else:
            row[column.name] = value
    return row


def _plain(value: Any) -> Any:
    """A JSON- and driver-friendly scalar: numpy -> Python, NaN/NaT -> None, dates -> ISO text."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


def _json(records: list[dict[str, Any]]) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, (date, datetime, pd.Timestamp)):
            return value.isoformat()
        return str(value)

    clean = [{k: _plain(v) for k, v in r.items()} for r in records]
    return json.dumps(clean, ensure_ascii=False, sort_keys=True, default=default)


def _whole(value: Any) -> int | None:
    value = _plain(value)
    return None if value is None else int(round(value))
