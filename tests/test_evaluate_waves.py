"""The daily per-wave evaluation over a small hand-made set of waves and orders."""

from __future__ import annotations

from datetime import date, datetime, time

import numpy as np
import pandas as pd
import pytest

from huitouke.evaluate.waves import (
    BREAKDOWN_COLUMNS,
    CATEGORY_COLUMNS,
    CUMULATIVE_COLUMNS,
    CURVE_COLUMNS,
    RESULT_COLUMNS,
    MessageCosts,
    WaveOptions,
    evaluate_waves,
    planned_send_time,
)

DUE = date(2025, 12, 1)
SEND = datetime(2025, 12, 1, 1, 0)  # 09:00 in Shanghai is 01:00 UTC


def _wave(customer, arm, outcome, **fields):
    """One planned wave row; ``fields`` overrides campaign, wave, due, entered, lifecycle, channels."""
    defaults = {"campaign": "thank_you", "wave": 1, "due": DUE, "entered": DUE}
    wave = defaults | {"lifecycle": "new", "channels": "sms"} | fields
    return {
        "campaign": wave["campaign"],
        "customer_id": customer,
        "entered_on": wave["entered"],
        "wave": wave["wave"],
        "due_on": wave["due"],
        "arm": arm,
        "variant": "new" if customer != "t4" else "returning",
        "kind": "marketing",
        "priority": 80,
        "outcome": outcome,
        "reason": "no_contact" if outcome == "suppressed" else None,
        "channels": wave["channels"] if outcome != "suppressed" else "",
        "lifecycle": wave["lifecycle"],
    }


def _order(order_id, customer, paid_at, amount_cents, status="paid", categories="food"):
    return {
        "order_id": order_id,
        "customer_id": customer,
        "paid_at": paid_at,
        "status": status,
        "amount_cents": amount_cents,
        "categories": categories,
    }


@pytest.fixture
def waves():
    return pd.DataFrame(
        [
            _wave("t1", "treatment", "treated"),
            _wave("t2", "treatment", "treated", lifecycle="active"),
            _wave("t3", "treatment", "treated"),
            _wave("t4", "treatment", "treated", channels="email,sms"),
            _wave("t5", "treatment", "suppressed"),  # suppressed: still in the treated arm (ITT)
            _wave("h1", "holdout", "held_out"),
            _wave("h2", "holdout", "held_out", lifecycle="active"),
            _wave("h3", "holdout", "held_out"),
            _wave("h4", "holdout", "suppressed"),
        ]
    )


@pytest.fixture
def orders():
    return pd.DataFrame(
        [
            _order("o1", "t1", SEND, 5_000),  # exactly at the send time: before the window
            _order("o2", "t1", SEND + pd.Timedelta(seconds=1), 10_000, categories=["food", "toys"]),
            _order("o3", "t2", SEND + pd.Timedelta(days=2), 20_000, status="completed"),  # the last instant
            _order("o4", "t3", SEND + pd.Timedelta(days=2, seconds=1), 30_000, categories="toys"),
            _order("o5", "t4", SEND + pd.Timedelta(days=1), 40_000, status="refunded"),  # does not count
            _order("o6", "t5", datetime(2025, 12, 5, 12), 15_000),
            _order("o7", "h1", datetime(2025, 12, 2, 3), 8_000, categories="clothes"),
            _order("o8", "h2", datetime(2025, 11, 30, 12), 9_000),  # before the send
            _order("o9", "h4", datetime(2025, 12, 20), 7_000),  # day 19: only the 30-day window
            _order("o10", "x9", datetime(2025, 12, 2), 1_000),  # not in any wave
            _order("o11", "h3", datetime(2025, 12, 2), 1_000, status="pending"),  # not paid
            _order("o12", "h3", datetime(2025, 12, 2), 1_000, status="cancelled"),
        ]
    )


def _row(results, window, view="itt"):
    rows = results[(results["window_days"] == window) & (results["view"] == view)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_planned_send_time_is_the_shop_morning_in_utc():
    assert planned_send_time(DUE) == SEND
    assert planned_send_time(DUE, "Europe/Berlin", time(10, 30)) == datetime(2025, 12, 1, 9, 30)


def test_windows_boundaries_refunds_and_suppressed_rows(waves, orders):
    ev = evaluate_waves(waves, orders, date(2025, 12, 11))
    res = ev.results
    assert list(res.columns) == RESULT_COLUMNS
    # 2025-12-11 >= due + 10: the 2- and 10-day windows have matured, the 30-day one has not.
    assert sorted(res["window_days"].unique()) == [2, 10]
    assert set(res["view"]) == {"itt"}  # no messages given: no sent-only view

    two = _row(res, 2)
    # Treated arm: t1..t5 (t5 suppressed, kept). Responders within (send, send + 2 days]:
    # t1 (o2, one second after; o1 at the send time does not count) and t2 (o3, the last instant;
    # completed counts as paid, like shipped).
    assert (two["customers"], two["responders"]) == (5, 2)
    assert two["revenue_cents"] == 10_000 + 20_000
    # Holdout: h1..h4 (h4 suppressed, kept); h1 bought on 12-02, h2 before the send; h3's orders
    # are pending and cancelled.
    assert (two["control_customers"], two["control_responders"]) == (4, 1)
    assert two["control_revenue_cents"] == 8_000
    assert two["response_rate"] == pytest.approx(0.4) and two["control_rate"] == pytest.approx(0.25)
    assert two["lift"] == pytest.approx(0.15)
    assert two["verdict"] == "too_few" and two["verdict_text"] == "too few customers to tell"
    assert (two["contacted"], two["suppressed"]) == (4, 1)
    assert np.isnan(two["sent"]) and np.isnan(two["received"])
    assert two["send_time"] == pd.Timestamp(SEND) and two["entered_on"] == DUE
    assert not two["primary"]

    ten = _row(res, 10)
    # + t3 (o4, one second after the 2-day window) and t5 (suppressed, bought on 12-05);
    # t4's order was refunded.
    assert (ten["customers"], ten["responders"]) == (5, 4)
    assert ten["revenue_cents"] == 10_000 + 20_000 + 30_000 + 15_000
    assert (ten["control_customers"], ten["control_responders"]) == (4, 1)
    assert ten["primary"] and ten["as_of"] == date(2025, 12, 11)


def test_maturity_is_as_of_at_least_due_plus_window(waves, orders):
    assert evaluate_waves(waves, orders, date(2025, 12, 2)).results.empty
    assert list(evaluate_waves(waves, orders, date(2025, 12, 3)).results["window_days"]) == [2]
    assert list(evaluate_waves(waves, orders, date(2025, 12, 10)).results["window_days"]) == [2]
    late = evaluate_waves(waves, orders, date(2025, 12, 31)).results
    assert list(late["window_days"]) == [2, 10, 30]
    # h4 (suppressed holdout) bought on day 19: a natural repurchaser of the 30-day window.
    assert _row(late, 30)["control_responders"] == 2


def test_recorded_windows_are_not_evaluated_again(waves, orders):
    recorded = pd.DataFrame([{"campaign": "thank_you", "wave": 1, "due_on": "2025-12-01", "window_days": 2}])
    res = evaluate_waves(waves, orders, date(2025, 12, 11), recorded=recorded).results
    assert list(res["window_days"]) == [10]


def test_same_inputs_same_rows(waves, orders):
    first = evaluate_waves(waves, orders, date(2025, 12, 31))
    again = evaluate_waves(waves.sample(frac=1, random_state=3), orders.iloc[::-1], date(2025, 12, 31))
    pd.testing.assert_frame_equal(first.results, again.results)
    pd.testing.assert_frame_equal(first.curves, again.curves)


def test_costs_sent_only_view_and_roi(waves, orders):
    messages = pd.DataFrame(
        [
            {
                "campaign": "thank_you",
                "customer_id": c,
                "entered_on": DUE,
                "wave": 1,
                "channel": "sms",
                "status": status,
                "sms_segments": 2,
            }
            for c, status in (("t1", "delivered"), ("t2", "sent"), ("t3", "delivered"), ("t4", "failed"))
        ]
        + [
            {
                "campaign": "thank_you",
                "customer_id": "t4",
                "entered_on": DUE,
                "wave": 1,
                "channel": "email",
                "status": "queued",
                "sms_segments": None,
            }
        ]
    )
    coupons = pd.DataFrame(
        [
            {
                "campaign": "thank_you",
                "customer_id": "t3",
                "entered_on": DUE,
                "wave": 1,
                "value_cents": 1_000,
                "redeemed_order_id": "o4",
            },
            {
                "campaign": "thank_you",
                "customer_id": "t1",
                "entered_on": DUE,
                "wave": 1,
                "value_cents": 1_000,
                "redeemed_order_id": None,
            },
        ]
    )
    ev = evaluate_waves(
        waves,
        orders,
        date(2025, 12, 11),
        messages=messages,
        coupons=coupons,
        options=WaveOptions(costs=MessageCosts(sms_segment_cents=4.5, email_cents=0.2)),
    )
    res = ev.results
    assert set(res["view"]) == {"itt", "sent", "received"}
    two, ten = _row(res, 2), _row(res, 10)
    # Sent (t2) or delivered (t1, t3: sent with a delivered receipt): 2 segments each at 4.5 fen
    # = 27 fen; t4's failed SMS and its still queued e-mail were not billed and cost nothing.
    assert two["cost_cents"] == pytest.approx(27.0)
    assert (two["sent"], two["received"]) == (3, 2)
    # The coupon redeemed by o4 (2 days + 1 s after the send) counts from the 10-day window on.
    assert ten["cost_cents"] == pytest.approx(1_027.0)
    assert ten["naive_roi"] == pytest.approx(75_000 / 1_027.0)
    incremental = (75_000 / 5 - 8_000 / 4) * 5
    assert ten["incremental_revenue_cents"] == pytest.approx(incremental)
    assert ten["incremental_roi"] == pytest.approx(incremental / 1_027.0)
    # Sent-only: t1, t2, t3 against the holdout customers who would have been sent (h1..h3).
    sent = _row(res, 10, "sent")
    assert (sent["customers"], sent["responders"]) == (3, 3)
    assert (sent["control_customers"], sent["control_responders"]) == (3, 1)
    # Delivered: t1 and t3, against the same holdout.
    received = _row(res, 10, "received")
    assert (received["customers"], received["responders"]) == (2, 2)
    assert (received["control_customers"], received["control_responders"]) == (3, 1)


def test_breakdowns_per_segment_channel_and_variant(waves, orders):
    ev = evaluate_waves(waves, orders, date(2025, 12, 11), options=WaveOptions(segment_columns=["lifecycle"]))
    br = ev.breakdowns
    assert list(br.columns) == BREAKDOWN_COLUMNS
    ten = br[br["window_days"] == 10].set_index(["dimension", "value"])
    assert list(dict.fromkeys(ten.index.get_level_values(0))) == ["lifecycle", "channels", "variant"]
    assert (
        ten.loc[("lifecycle", "new"), "customers"],
        ten.loc[("lifecycle", "new"), "control_customers"],
    ) == (4, 3)
    assert ten.loc[("lifecycle", "active"), "responders"] == 1
    # Channels as decided, the same for both arms; suppressed rows have none.
    assert ten.loc[("channels", "sms"), "customers"] == 3
    assert ten.loc[("channels", "email,sms"), "customers"] == 1
    assert ten.loc[("channels", "email,sms"), "verdict"] == "empty_arm"  # no holdout customer had both
    assert ten.loc[("channels", "(none)"), "control_customers"] == 1
    assert ten.loc[("variant", "returning"), "responders"] == 0
    tested = ten.dropna(subset=["p_value"])
    assert (tested["comparisons"] >= 1).all() and (tested["p_value_adjusted"] >= tested["p_value"]).all()


def test_curves_and_categories(waves, orders):
    ev = evaluate_waves(waves, orders, date(2025, 12, 11))
    curves = ev.curves
    assert list(curves.columns) == CURVE_COLUMNS
    assert list(curves["day"]) == list(range(11))  # matured days only: 0 .. 10
    by_day = curves.set_index("day")
    assert by_day.loc[0, "responders"] == 0  # day 0 is 0 by construction
    assert by_day.loc[1, "responders"] == 1  # t1
    assert by_day.loc[2, "responders"] == 2  # + t2, the last instant of day 2
    assert by_day.loc[3, "responders"] == 3  # + t3
    assert by_day.loc[10, "responders"] == 4  # + t5 on 12-05
    assert by_day.loc[2, "response_rate"] == pytest.approx(_row(ev.results, 2)["response_rate"])
    assert by_day.loc[10, "control_responders"] == 1
    assert by_day.loc[2, "lift"] == pytest.approx(0.4 - 0.25)

    cats = ev.categories
    assert list(cats.columns) == CATEGORY_COLUMNS
    treated = cats[cats["arm"] == "treatment"].set_index("category")
    # Primary (10-day) orders of treated responders: o2 food+toys, o3 food, o4 toys, o6 food.
    assert treated.loc["food", "orders"] == 3 and treated.loc["toys", "orders"] == 2
    assert treated.loc["food", "share"] == pytest.approx(3 / 4) and treated.loc["food", "rank"] == 1
    holdout = cats[cats["arm"] == "holdout"]
    assert list(holdout["category"]) == ["clothes"] and list(holdout["orders"]) == [1]


def test_cumulative_over_the_waves_of_a_sequence():
    entered = date(2025, 10, 1)
    w1, w2 = date(2025, 10, 31), date(2025, 11, 30)
    rows = [
        _wave("a1", "treatment", "treated", campaign="coupon_waves", wave=1, due=w1, entered=entered),
        _wave("a1", "treatment", "treated", campaign="coupon_waves", wave=2, due=w2, entered=entered),
        # a2 repurchased after wave 1 and left the sequence: no wave 2, still in the cohort.
        _wave("a2", "treatment", "treated", campaign="coupon_waves", wave=1, due=w1, entered=entered),
        _wave("b1", "holdout", "held_out", campaign="coupon_waves", wave=1, due=w1, entered=entered),
        _wave("b1", "holdout", "held_out", campaign="coupon_waves", wave=2, due=w2, entered=entered),
        _wave("b2", "holdout", "held_out", campaign="coupon_waves", wave=1, due=w1, entered=entered),
    ]
    orders = pd.DataFrame(
        [
            _order("p1", "a2", datetime(2025, 11, 5), 10_000),  # within wave 1 + 10 days
            _order("p2", "a1", datetime(2025, 12, 9), 20_000),  # within wave 2 + 10 days
            _order("p3", "b1", datetime(2025, 12, 10, 2), 30_000),  # after wave 2 + 10 days (01:00)
            _order("p4", "b2", datetime(2025, 10, 30), 5_000),  # before wave 1's send
        ]
    )
    ev = evaluate_waves(pd.DataFrame(rows), orders, date(2025, 12, 10))
    cum = ev.cumulative
    assert list(cum.columns) == CUMULATIVE_COLUMNS
    assert list(cum["through_wave"]) == [1, 2]
    one, two = cum.iloc[0], cum.iloc[1]
    assert (one["customers"], one["responders"], one["control_customers"], one["control_responders"]) == (
        2,
        1,
        2,
        0,
    )
    assert (two["customers"], two["responders"], two["control_customers"], two["control_responders"]) == (
        2,
        2,
        2,
        0,
    )
    assert two["revenue_cents"] == 30_000 and two["window_days"] == 10
    assert (two["entry_days"], two["first_entered_on"]) == (1, entered)
    # A day earlier, wave 2's primary window has not matured.
    assert list(evaluate_waves(pd.DataFrame(rows), orders, date(2025, 12, 9)).cumulative["through_wave"]) == [
        1
    ]


def test_windows_per_campaign_and_a_custom_send_time(waves, orders):
    ev = evaluate_waves(
        waves,
        orders,
        date(2025, 12, 31),
        options=WaveOptions(
            windows={"thank_you": [2, 30]},
            primary={"thank_you": 30},
            send_time=lambda day: datetime.combine(day, time(12, 0)),
        ),
    )
    res = ev.results
    assert list(res["window_days"]) == [2, 30] and list(res["primary"]) == [False, True]
    # Sent at 12:00 UTC: t1's o2 (01:00:01) is now before the send; t2's o3 and t3's o4, on
    # 12-03 at 01:00, are 37 hours after it.
    two = _row(res, 2)
    assert two["responders"] == 2 and two["revenue_cents"] == 20_000 + 30_000
    with pytest.raises(ValueError, match="primary window 10 is not one of"):
        evaluate_waves(waves, orders, date(2025, 12, 31), options=WaveOptions(windows=[2, 30], primary=10))


def test_no_waves_gives_empty_frames_with_their_columns(orders):
    empty = pd.DataFrame(columns=list(_wave("x", "treatment", "treated")))
    ev = evaluate_waves(empty, orders, date(2025, 12, 11))
    assert list(ev.results.columns) == RESULT_COLUMNS and ev.results.empty
    assert ev.breakdowns.empty and ev.cumulative.empty and ev.curves.empty and ev.categories.empty
    assert "no campaign wave" in ev.as_text()


def test_missing_columns_are_named(waves, orders):
    with pytest.raises(ValueError, match="orders lacks the column"):
        evaluate_waves(waves, orders.drop(columns="status"), date(2025, 12, 11))
    with pytest.raises(ValueError, match="waves lacks the column.*lifecycle"):
        evaluate_waves(
            waves.drop(columns="lifecycle"),
            orders,
            date(2025, 12, 11),
            options=WaveOptions(segment_columns=["lifecycle"]),
        )


def test_the_task_log_table_has_no_customer(waves, orders):
    ev = evaluate_waves(waves, orders, date(2025, 12, 31), options=WaveOptions(segment_columns=["lifecycle"]))
    text = ev.as_text()
    assert "thank_you" in text and "too few customers to tell" in text
    # Each verdict shown is explained under the tables, in the words of huitouke.evaluate.verdicts.
    legend = text.split("Verdicts (docs/evaluation.md):\n")[1]
    assert "  too few customers to tell: No difference found" in legend
    assert (
        "Repurchase curves" in text and "What responders bought" in text and "Revenue and cost (CNY)" in text
    )
    for customer in ("t1", "t2", "h1", "o2"):
        assert f" {customer} " not in text


def test_a_larger_wave_with_a_true_effect_is_found():
    rng = np.random.default_rng(9)
    n = 20_000
    arm = np.where(rng.random(n) < 0.1, "holdout", "treatment")
    customers = [f"c{i}" for i in range(n)]
    waves = pd.DataFrame(
        [
            _wave(c, a, "treated" if a == "treatment" else "held_out")
            for c, a in zip(customers, arm, strict=True)
        ]
    )
    p = np.where(arm == "treatment", 0.12, 0.06)
    bought = rng.random(n) < p
    paid_at = pd.Timestamp(SEND) + pd.to_timedelta(rng.random(n) * 10, unit="D")
    orders = pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(n)],
            "customer_id": customers,
            "paid_at": paid_at,
            "status": np.where(bought, "paid", "cancelled"),
            "amount_cents": 10_000,
        }
    )
    row = _row(evaluate_waves(waves, orders, date(2025, 12, 11)).results, 10)
    assert row["verdict"] == "lift"
    assert row["lift_low"] <= 0.06 <= row["lift_high"]


def test_a_rerun_says_todays_windows_were_stored_by_the_first_run():
    """The issue's misleading words: a re-run evaluates nothing new, and says why."""
    from huitouke.evaluate.result import WaveEvaluation

    empty = pd.DataFrame()
    rerun = WaveEvaluation(DUE, empty, empty, empty, empty, empty, already_stored=3)
    assert (
        "the 3 result row(s) of the windows that matured today were stored by an earlier run"
        in rerun.as_text()
    )
    assert rerun.as_dict()["already_stored"] == 3
    quiet = WaveEvaluation(DUE, empty, empty, empty, empty, empty)
    assert "no campaign wave has a window that matured today" in quiet.as_text()
