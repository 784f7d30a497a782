"""The daily fold (pending orders into the state and spend rows) equals a full rebuild, row for row.

A small store is simulated as intake and stage 2 keep it: every order carries ``applied`` (the
``state_applied_at`` stamp) and ``folded_as_paid`` (what the state counted of it when intake moved
its status). Each day brings new orders (new and returning customers, several orders of one
customer on one day, identical payment times, late orders paid before a customer's first order,
orders dated after the day, orders without a payment time) and status moves of older orders
(pending -> paid -> shipped -> completed -> refunded / cancelled), folded or not yet folded.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from huitouke import records
from huitouke.segments import (
    PENDING_COLUMNS,
    SegmentSettings,
    build_state_and_spend,
    fold_orders,
    plan_fold,
)
from huitouke.segments.state import ORDER_INPUT_COLUMNS

START = dt.date(2025, 3, 1)
CATEGORIES = [*records.CATEGORIES[:5], records.UNKNOWN_CATEGORY]


class _Store:
    def __init__(self, rng: np.random.Generator, customers: int):
        self.rng, self.customers = rng, customers
        self.orders = pd.DataFrame(
            {
                "order_id": pd.Series([], dtype="str"),
                "customer_id": pd.Series([], dtype="str"),
                "paid_at": pd.Series([], dtype="datetime64[ns]"),
                "business_date": pd.Series([], dtype="datetime64[ns]"),
                "status": pd.Series([], dtype="str"),
                "amount_cents": pd.Series([], dtype="int64"),
                "acquisition_source": pd.Series([], dtype="str"),
                "folded_as_paid": pd.Series([], dtype="boolean"),
                "applied": pd.Series([], dtype=bool),
            }
        )
        self.lines: list[tuple[str, str, int]] = []
        self.serial = 0

    def intake(self, day: dt.date) -> None:
        rng, n = self.rng, int(self.rng.integers(0, 9))
        rows = []
        for _ in range(n):
            order_id = f"o{self.serial:05d}"
            self.serial += 1
            back = int(rng.choice([0, 0, 0, 0, 1, 5, 30])) if rng.random() < 0.2 else 0  # late orders
            ahead = 1 if rng.random() < 0.04 else 0  # dated after the day: not folded yet
            hour = 9 if rng.random() < 0.3 else int(rng.integers(0, 24))  # ties on the payment time
            paid_at = pd.Timestamp(day) + pd.Timedelta(days=ahead - back, hours=hour - 8)
            if rng.random() < 0.03:
                paid_at = pd.NaT
            amount = int(rng.integers(0, 30_000))
            rows.append(
                {
                    "order_id": order_id,
                    "customer_id": f"c{int(rng.integers(0, self.customers)):03d}",
                    "paid_at": paid_at,
                    "business_date": pd.NaT
                    if paid_at is pd.NaT
                    else (paid_at + pd.Timedelta(hours=8)).normalize(),
                    "status": str(rng.choice(["pending", "paid", "paid", "paid", "completed", "cancelled"])),
                    "amount_cents": amount,
                    "acquisition_source": str(rng.choice(list(records.ACQUISITION_SOURCES))),
                    "folded_as_paid": pd.NA,
                    "applied": False,
                }
            )
            k = int(rng.integers(0, 4))  # 0 lines: the whole amount counts as unknown
            split = rng.multinomial(amount, np.ones(k) / k) if k else []
            for category, cents in zip(rng.choice(CATEGORIES, k), split, strict=True):
                self.lines.append((order_id, str(category), int(cents)))
        if len(self.orders):
            # Status moves, forward only, of folded and not yet folded orders; intake records what
            # the state counted of a folded order before unfolding it.
            for i in np.flatnonzero(rng.random(len(self.orders)) < 0.06):
                status = self.orders.at[i, "status"]
                later = [s for s in records.STATUSES if records.STATUS_RANK[s] > records.STATUS_RANK[status]]
                if not later:
                    continue
                if self.orders.at[i, "applied"]:
                    self.orders.at[i, "folded_as_paid"] = status in records.PAID_STATUSES
                    self.orders.at[i, "applied"] = False
                self.orders.at[i, "status"] = str(rng.choice(later))
        if rows:
            new = pd.DataFrame(rows).astype(self.orders.dtypes.to_dict())
            self.orders = pd.concat([self.orders, new], ignore_index=True) if len(self.orders) else new

    def line_frame(self, order_ids=None) -> pd.DataFrame:
        lines = pd.DataFrame(self.lines, columns=["order_id", "category", "amount_cents"])
        return lines if order_ids is None else lines[lines["order_id"].isin(set(order_ids))]

    def stamp(self, day: dt.date) -> None:
        """mark_folded: every pending order due by the day (or without a business date)."""
        business = self.orders["business_date"]
        due = ~self.orders["applied"] & (business.isna() | (business <= pd.Timestamp(day)))
        self.orders.loc[due, "applied"] = True
        self.orders.loc[due, "folded_as_paid"] = pd.NA


def _run(seed: int, settings: SegmentSettings | None = None, customers: int = 40, days: int = 70) -> dict:
    rng = np.random.default_rng(seed)
    store = _Store(rng, customers)
    state, spend = build_state_and_spend(store.orders[list(ORDER_INPUT_COLUMNS)], None, settings=settings)
    seen = {"added": 0, "recomputed": 0, "removed": 0}
    for d in range(days):
        day = START + dt.timedelta(days=d)
        store.intake(day)
        pending = store.orders.loc[~store.orders["applied"], list(PENDING_COLUMNS)].reset_index(drop=True)
        plan = plan_fold(state, pending, day)
        history = store.orders[store.orders["customer_id"].isin(plan.recomputed)][list(ORDER_INPUT_COLUMNS)]
        folded = fold_orders(
            state,
            spend,
            plan,
            store.line_frame(plan.changed_orders),
            history,
            store.line_frame(history["order_id"]),
            settings=settings,
            until=day,
        )
        touched = set(plan.touched)
        assert set(folded.rows["customer_id"]) <= touched
        assert set(folded.spend["customer_id"]) <= touched
        # As the store writes it: a recomputed customer's rows replaced whole, the changed rows upserted.
        keys = ["customer_id", "category_group"]
        upserted = pd.concat(
            [spend[~spend["customer_id"].isin(plan.replaced)], folded.spend_changed], ignore_index=True
        ).drop_duplicates(keys, keep="last")
        spend = pd.concat([spend[~spend["customer_id"].isin(touched)], folded.spend], ignore_index=True)
        spend = spend.sort_values(keys, ignore_index=True)
        pd.testing.assert_frame_equal(upserted.sort_values(keys, ignore_index=True), spend)
        state = folded.state
        store.stamp(day)

        expected_state, expected_spend = build_state_and_spend(
            store.orders[list(ORDER_INPUT_COLUMNS)], store.line_frame(), settings=settings, until=day
        )
        pd.testing.assert_frame_equal(state, expected_state)
        pd.testing.assert_frame_equal(spend, expected_spend)
        seen["added"] += len(plan.added)
        seen["recomputed"] += len(plan.recomputed)
        seen["removed"] += len(plan.removals)
    return seen


@pytest.mark.parametrize("seed", range(8))
def test_the_daily_fold_equals_a_full_rebuild_day_after_day(seed):
    seen = _run(seed)
    # both paths ran, many times, and refunds of orders between the first and the last were subtracted
    assert seen["added"] > 50 and seen["recomputed"] > 10 and seen["removed"] > 5


def test_the_daily_fold_equals_a_full_rebuild_with_category_groups():
    settings = SegmentSettings(
        category_groups={"everyday": ["food", "daily_goods"], "style": ["apparel", "beauty"]},
        unknown_category_group="misc",
    )
    _run(21, settings)


def _pending(rows: list[tuple]) -> pd.DataFrame:
    """(order_id, customer, 'YYYY-MM-DD HH:MM' UTC, status, amount, folded_as_paid)."""
    frame = pd.DataFrame(
        rows, columns=["order_id", "customer_id", "paid_at", "status", "amount_cents", "folded_as_paid"]
    )
    frame["paid_at"] = pd.to_datetime(frame["paid_at"])
    frame["business_date"] = (frame["paid_at"] + pd.Timedelta(hours=8)).dt.normalize()
    frame["acquisition_source"] = "organic"
    frame["folded_as_paid"] = frame["folded_as_paid"].astype("boolean")
    return frame


def test_plan_fold_sorts_pending_orders_into_additions_removals_and_no_change():
    before = _pending([("o1", "a", "2025-01-01 02:00", "paid", 100, None)])
    before = pd.concat(
        [before, _pending([("o2", "b", "2025-01-01 02:00", "paid", 100, None)])], ignore_index=True
    )
    state, _ = build_state_and_spend(before[list(ORDER_INPUT_COLUMNS)])
    pending = _pending(
        [
            ("o3", "a", "2025-01-05 02:00", "paid", 50, None),  # a new paid order: an addition
            ("o1", "a", "2025-01-01 02:00", "completed", 100, True),  # paid -> completed: nothing
            ("o4", "c", "2025-01-05 02:00", "pending", 70, None),  # not paid (yet): nothing
            ("o2", "b", "2025-01-01 02:00", "refunded", 100, True),  # a removal: recomputed
            ("o5", "d", "2025-01-09 02:00", "paid", 70, None),  # after the day: not folded yet
            ("o6", "e", "2025-01-05 02:00", "paid", 70, False),  # pending -> paid: an addition
        ]
    )
    plan = plan_fold(state, pending, dt.date(2025, 1, 5))
    assert plan.added == ["a", "e"]
    assert plan.recomputed == ["b"]
    assert sorted(plan.additions["order_id"]) == ["o3", "o6"]
    assert plan.touched == ["a", "b", "e"]


def test_an_order_paid_at_or_before_the_first_order_sends_its_customer_to_the_exact_path():
    first = _pending([("o5", "a", "2025-01-03 02:00", "paid", 100, None)])
    state, _ = build_state_and_spend(first[list(ORDER_INPUT_COLUMNS)])
    late = _pending(
        [("o1", "a", "2025-01-03 02:00", "paid", 80, None)]  # a tie on the payment time, smaller id
    )
    plan = plan_fold(state, late, dt.date(2025, 1, 5))
    assert plan.added == [] and plan.recomputed == ["a"]


def test_a_refund_between_the_first_and_the_last_order_is_subtracted_without_the_history():
    orders = _pending(
        [
            ("o1", "a", "2025-01-01 02:00", "paid", 100, None),
            ("o2", "a", "2025-01-03 02:00", "paid", 250, None),
            ("o3", "a", "2025-01-05 02:00", "paid", 100, None),
        ]
    )
    lines = pd.DataFrame(
        [("o1", "food", 100), ("o2", "apparel", 250), ("o3", "food", 100)],
        columns=["order_id", "category", "amount_cents"],
    )
    state, spend = build_state_and_spend(orders[list(ORDER_INPUT_COLUMNS)], lines)
    assert state.loc[0, "main_category_group"] == "apparel"
    refund = _pending([("o2", "a", "2025-01-03 02:00", "refunded", 250, True)])
    plan = plan_fold(state, refund, dt.date(2025, 1, 9))
    assert plan.added == ["a"] and plan.recomputed == [] and plan.replaced == ["a"]
    folded = fold_orders(state, spend, plan, lines[lines["order_id"] == "o2"], orders.iloc[:0], None)
    after = orders.assign(status=["paid", "refunded", "paid"])
    expected_state, expected_spend = build_state_and_spend(after[list(ORDER_INPUT_COLUMNS)], lines)
    pd.testing.assert_frame_equal(folded.state, expected_state)
    pd.testing.assert_frame_equal(folded.spend, expected_spend)  # the apparel row is gone
    assert folded.state.loc[0, "main_category_group"] == "food"
