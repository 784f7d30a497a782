"""Evaluation from delivery's outcomes: costs count what was billed, the ``sent`` view keeps the
customers sent a message, the ``received`` view those whose message was delivered; read from the
outbox and stored (the view fits the key column on PostgreSQL too)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pandas as pd
import pytest
from deliver_rows import CAMPAIGN, seed
from sqlalchemy import select, update

from huitouke.evaluate import persist
from huitouke.evaluate.result import VIEWS
from huitouke.evaluate.waves import MessageCosts, WaveOptions, evaluate_waves
from huitouke.store.schema import evaluations, outbox

DUE = date(2025, 12, 1)
SEND = datetime(2025, 12, 1, 1, 0)  # 09:00 in Shanghai
COSTS = MessageCosts(sms_segment_cents=4.5, email_cents=0.2, call_cents=50.0)


def _wave(campaign: str, customer: str, arm: str) -> dict:
    return {
        "campaign": campaign,
        "customer_id": customer,
        "entered_on": DUE,
        "wave": 1,
        "due_on": DUE,
        "arm": arm,
        "variant": "",
        "outcome": "treated" if arm == "treatment" else "held_out",
        "channels": "sms",
    }


def _message(campaign, customer, channel, status, segments=None, billed=None, receipt=None) -> dict:
    return {
        "campaign": campaign,
        "customer_id": customer,
        "entered_on": DUE,
        "wave": 1,
        "channel": channel,
        "status": status,
        "receipt": receipt,
        "sms_segments": segments,
        "billed_segments": billed,
    }


@pytest.fixture
def waves() -> pd.DataFrame:
    rows = [_wave("thank_you", f"t{i}", "treatment") for i in range(1, 6)]
    rows += [_wave("thank_you", f"h{i}", "holdout") for i in range(1, 4)]
    rows += [_wave("birthday", "b1", "treatment"), _wave("birthday", "b2", "treatment")]
    rows += [_wave("birthday", "bh", "holdout")]
    return pd.DataFrame(rows)


@pytest.fixture
def orders() -> pd.DataFrame:
    buyers = {"t1": 1, "t2": 3, "t3": 1, "h1": 2, "b1": 1, "bh": 1}
    return pd.DataFrame(
        [
            {
                "order_id": f"o-{customer}",
                "customer_id": customer,
                "paid_at": SEND + timedelta(days=days),
                "status": "paid",
                "amount_cents": 10_000,
            }
            for customer, days in buyers.items()
        ]
    )


@pytest.fixture
def messages() -> pd.DataFrame:
    return pd.DataFrame(
        [
            # t1: delivered, billed 3 segments where 1 was rendered: 13.5 fen.
            _message("thank_you", "t1", "sms", "sent", segments=1, billed=3, receipt="delivered"),
            # t2: sent, the operator says undelivered (2 segments: 9 fen); its e-mail sent (0.2 fen).
            _message("thank_you", "t2", "sms", "sent", segments=2, billed=2, receipt="undelivered"),
            _message("thank_you", "t2", "email", "sent"),
            # t3: unknown fate: costed at its rendered 2 segments (9 fen), but not sent.
            _message("thank_you", "t3", "sms", "unknown", segments=2),
            # t4: a failed SMS and a queued e-mail cost nothing; the call reached it (50 fen).
            _message("thank_you", "t4", "sms", "failed", segments=2),
            _message("thank_you", "t4", "email", "queued"),
            _message("thank_you", "t4", "call", "sent"),
            # t5: suppressed at send time.
            _message("thank_you", "t5", "sms", "suppressed", segments=1),
            # The birthday cohort sent nothing: one failed, one stale, one expired.
            _message("birthday", "b1", "sms", "failed", segments=1),
            _message("birthday", "b2", "sms", "stale", segments=1),
            _message("birthday", "b2", "email", "expired"),
        ]
    )


def _row(results: pd.DataFrame, campaign: str, window: int, view: str) -> pd.Series:
    rows = results[
        (results["campaign"] == campaign) & (results["window_days"] == window) & (results["view"] == view)
    ]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def _evaluate(waves, orders, messages, as_of=date(2025, 12, 11)):
    return evaluate_waves(waves, orders, as_of, messages=messages, options=WaveOptions(costs=COSTS)).results


def test_costs_count_only_what_was_billed(waves, orders, messages):
    res = _evaluate(waves, orders, messages)
    itt = _row(res, "thank_you", 10, "itt")
    assert itt["cost_cents"] == pytest.approx(13.5 + 9.0 + 0.2 + 9.0 + 50.0)
    assert (itt["contacted"], itt["sent"], itt["received"]) == (5, 3, 2)
    birthday = _row(res, "birthday", 10, "itt")
    assert birthday["cost_cents"] == 0 and (birthday["sent"], birthday["received"]) == (0, 0)


def test_the_sent_view_keeps_the_customers_sent_a_message(waves, orders, messages):
    sent = _row(_evaluate(waves, orders, messages), "thank_you", 10, "sent")
    # t1, t2 (SMS and e-mail), t4 (the call) against the held-out holdout h1..h3; t3's unknown
    # SMS and t5's suppressed one do not make them sent.
    assert (sent["customers"], sent["responders"]) == (3, 2)
    assert (sent["control_customers"], sent["control_responders"]) == (3, 1)
    assert sent["cost_cents"] == pytest.approx(13.5 + 9.0 + 0.2 + 50.0)


def test_the_received_view_keeps_the_delivered_ones(waves, orders, messages):
    received = _row(_evaluate(waves, orders, messages), "thank_you", 10, "received")
    # t1 (a delivered receipt) and t4 (a reached call); t2's SMS was undelivered and its e-mail
    # has no receipt.
    assert (received["customers"], received["responders"]) == (2, 1)
    assert (received["control_customers"], received["control_responders"]) == (3, 1)
    assert received["cost_cents"] == pytest.approx(13.5 + 50.0)


def test_a_cohort_with_nothing_sent_has_only_the_itt_view(waves, orders, messages):
    res = _evaluate(waves, orders, messages)
    assert set(res.loc[res["campaign"] == "birthday", "view"]) == {"itt"}
    assert set(res.loc[res["campaign"] == "thank_you", "view"]) == set(VIEWS)


def test_sent_without_receipts_has_no_received_view(waves, orders, messages):
    no_receipts = messages.assign(receipt=None)
    no_receipts = no_receipts[no_receipts["channel"] != "call"]
    res = _evaluate(waves, orders, no_receipts)
    assert set(res["view"]) == {"itt", "sent"}
    assert _row(res, "thank_you", 2, "itt")["received"] == 0


def test_segments_fall_back_to_the_rendered_count_then_one(waves, orders):
    given = pd.DataFrame(
        [
            _message("thank_you", "t1", "sms", "sent", segments=2),  # not reported: 2 rendered
            _message("thank_you", "t2", "sms", "sent"),  # neither known: 1
            _message("thank_you", "t3", "sms", "sent", segments=1, billed=4),  # as billed
        ]
    )
    assert _row(_evaluate(waves, orders, given), "thank_you", 2, "itt")["cost_cents"] == pytest.approx(
        (2 + 1 + 4) * 4.5
    )


def test_outcomes_read_from_the_outbox_are_stored_under_every_view(store_engine):
    """Delivery's outcomes in a real outbox: read back with their receipts and billed segments,
    evaluated and stored (``received`` fits ``evaluations.view`` on PostgreSQL as on SQLite)."""
    day = DUE
    ids = seed(store_engine, 6, day=day, held_out={4, 5})
    outcomes = [
        {"status": "sent", "billed_segments": 2, "receipt": "delivered"},
        {"status": "sent", "billed_segments": 1, "receipt": "undelivered"},
        {"status": "failed"},
        {"status": "unknown"},
        {"status": "suppressed"},
        {"status": "suppressed"},
    ]
    with store_engine.begin() as conn:
        for message_id, values in zip(sorted(ids), outcomes, strict=True):
            conn.execute(update(outbox).where(outbox.c.message_id == message_id).values(**values))
    as_of = day + timedelta(days=3)
    with store_engine.begin() as conn:
        messages = persist.read_messages(conn, day)
        assert list(messages.columns) == list(persist.MESSAGE_COLUMNS)
        assert {"receipt", "billed_segments", "sms_segments", "status"} <= set(messages.columns)
        ev = evaluate_waves(
            persist.read_waves(conn, day, as_of, ()),
            persist.read_orders(conn, day, as_of, "Asia/Shanghai"),
            as_of,
            messages=messages,
            options=WaveOptions(windows=[2], costs=COSTS),
        )
        persist.write_evaluation(conn, ev, as_of, datetime(2025, 12, 4))
    itt = _row(ev.results, CAMPAIGN, 2, "itt")
    # Billed: 2 + 1 segments sent, and the unknown one at its rendered 1 segment.
    assert itt["cost_cents"] == pytest.approx((2 + 1 + 1) * 4.5)
    assert (itt["sent"], itt["received"]) == (2, 1)
    with store_engine.connect() as conn:
        stored = set(conn.scalars(select(evaluations.c.view)))
    assert stored == set(VIEWS)


def test_the_pages_offer_every_stored_view():
    from huitouke.ui import data

    assert data.VIEWS == VIEWS
