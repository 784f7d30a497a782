"""Rows written straight into a migrated CRM store, and the segments of what it holds: the small
shops that the campaign, evaluation and UI tests plan, render and evaluate with the real code."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
from sqlalchemy import insert, select

from huitouke.segments import build_state, classify
from huitouke.store.schema import (
    campaign_days,
    campaign_entries,
    campaign_waves,
    coupons,
    customers,
    order_lines,
    orders,
)

LOADED_AT = datetime(2025, 6, 3, 0, 5)


def add_customer(
    engine,
    cid: str,
    *,
    name: str | None = "王小明",
    phone: str | None = "13800138000",
    email: str | None = None,
    sms_opt_out: bool = False,
) -> str:
    with engine.begin() as conn:
        conn.execute(
            insert(customers),
            {
                "customer_id": cid,
                "name": name,
                "phone": phone,
                "email": email,
                "birthday": None,
                "sms_opt_out": sms_opt_out,
                "email_opt_out": False,
                "first_seen_at": LOADED_AT,
                "updated_at": LOADED_AT,
            },
        )
    return cid


def add_order(engine, order_id: str, cid: str, on: date, cny: float, coupon_code: str | None = None) -> str:
    """A paid order of one food line, paid at 03:00 UTC of ``on``."""
    cents = round(cny * 100)
    with engine.begin() as conn:
        conn.execute(
            insert(orders),
            {
                "order_id": order_id,
                "customer_id": cid,
                "paid_at": datetime(on.year, on.month, on.day, 3),
                "business_date": on,
                "status": "paid",
                "amount_cents": cents,
                "acquisition_source": "organic",
                "coupon_code": coupon_code,
                "content_hash": order_id,
                "source": "test",
                "loaded_at": LOADED_AT,
                "status_changed_at": LOADED_AT,
            },
        )
        conn.execute(
            insert(order_lines),
            {"order_id": order_id, "line_no": 1, "category": "food", "quantity": 1, "amount_cents": cents},
        )
    return order_id


def segments_of(engine, playbook, on: date) -> pd.DataFrame:
    """The segments on ``on`` of every customer with a stored order (built in memory)."""
    with engine.connect() as conn:
        stored = pd.DataFrame(conn.execute(select(orders)).mappings().all())
        lines = pd.DataFrame(conn.execute(select(order_lines)).mappings().all())
    stored["paid_at"] = pd.to_datetime(stored["paid_at"])
    stored["business_date"] = pd.to_datetime(stored["business_date"])
    state = build_state(stored, lines, settings=playbook.segments, until=on)
    return classify(state, on, playbook.segments)


def stored_plan(engine) -> dict[str, pd.DataFrame]:
    """The stored plan in a fixed order, without the times of writing and the random coupon codes
    (what two plans of the same day must share)."""
    tables = {
        "entries": (campaign_entries, ["planned_at"]),
        "waves": (campaign_waves, ["planned_at"]),
        "coupons": (coupons, ["code", "created_at"]),
        "days": (campaign_days, ["planned_at", "rendered_at"]),
    }
    out = {}
    with engine.connect() as conn:
        for name, (table, without) in tables.items():
            frame = pd.DataFrame(conn.execute(select(table)).mappings().all())
            if len(frame):
                frame = frame.drop(columns=without)
                frame = frame.sort_values(list(frame.columns)[:4]).reset_index(drop=True)
            out[name] = frame
    return out
