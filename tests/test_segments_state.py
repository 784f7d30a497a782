"""Customer state: what counts, deterministic ties, and daily increments equal to a full rebuild."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from huitouke import records
from huitouke.segments import STATE_COLUMNS, SegmentSettings, build_state, update_state

TZ = ZoneInfo("Asia/Shanghai")
PAID = sorted(records.PAID_STATUSES)


def _orders(rows: list[tuple]) -> pd.DataFrame:
    """(order_id, customer_id, 'YYYY-MM-DD HH:MM' UTC, status, amount_cents[, source])."""
    frame = pd.DataFrame(
        [(*r, "organic") if len(r) == 5 else r for r in rows],
        columns=["order_id", "customer_id", "paid_at", "status", "amount_cents", "acquisition_source"],
    )
    frame["paid_at"] = pd.to_datetime(frame["paid_at"])
    frame["business_date"] = (frame["paid_at"] + pd.Timedelta(hours=8)).dt.normalize()
    return frame


def _lines(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["order_id", "category", "amount_cents"])


def _by_customer(state: pd.DataFrame) -> dict[str, dict]:
    return {row["customer_id"]: row for row in state.to_dict("records")}


def test_the_state_has_the_documented_columns_sorted_by_customer():
    state = build_state(
        _orders([("o2", "b", "2025-01-02 10:00", "paid", 100), ("o1", "a", "2025-01-01 10:00", "paid", 100)])
    )
    assert tuple(state.columns) == STATE_COLUMNS
    assert list(state["customer_id"]) == ["a", "b"]


def test_refunded_cancelled_and_pending_orders_count_for_nothing():
    orders = _orders(
        [
            ("o1", "a", "2025-01-01 02:00", "completed", 10_000),
            ("o2", "a", "2025-02-01 02:00", "refunded", 99_999),
            ("o3", "a", "2025-03-01 02:00", "cancelled", 99_999),
            ("o4", "a", "2025-04-01 02:00", "pending", 99_999),
            ("o5", "a", "2025-01-15 02:00", "shipped", 5_001),
        ]
    )
    a = _by_customer(build_state(orders))["a"]
    assert a["paid_orders"] == 2
    assert a["total_cents"] == 15_001
    assert a["aov_cents"] == 7_501  # 7500.5 rounded half up
    assert a["first_paid_at"] == pd.Timestamp("2025-01-01 02:00")
    assert a["last_paid_at"] == pd.Timestamp("2025-01-15 02:00")


def test_a_partial_refund_reduces_a_paid_orders_spend_and_its_lines_spend_stays():
    orders = _orders(
        [("o1", "a", "2025-01-01 02:00", "paid", 10_000), ("o2", "a", "2025-01-02 02:00", "completed", 4_000)]
    ).assign(refunded_cents=[2_500, 0])
    lines = _lines([("o1", "food", 10_000), ("o2", "durables", 4_000)])
    a = _by_customer(build_state(orders, lines))["a"]
    assert (a["paid_orders"], a["total_cents"], a["aov_cents"]) == (2, 11_500, 5_750)
    assert a["main_category_group"] == "food"  # lines as bought: the export names no refunded line
    # Without the column (an older caller), nothing is refunded.
    assert _by_customer(build_state(orders.drop(columns="refunded_cents")))["a"]["total_cents"] == 14_000


def test_a_customer_whose_every_order_was_refunded_has_no_state():
    orders = _orders(
        [("o1", "a", "2025-01-01 02:00", "refunded", 100), ("o2", "b", "2025-01-01 02:00", "paid", 100)]
    )
    assert list(build_state(orders)["customer_id"]) == ["b"]


def test_business_dates_are_shop_local_and_taken_from_the_orders():
    # 2025-01-01 20:00 UTC is 2025-01-02 04:00 in Shanghai.
    a = _by_customer(build_state(_orders([("o1", "a", "2025-01-01 20:00", "paid", 100)])))["a"]
    assert a["first_paid_at"] == pd.Timestamp("2025-01-01 20:00")
    assert a["first_business_date"] == pd.Timestamp("2025-01-02")


def test_the_first_orders_source_is_the_acquisition_source_with_ties_broken_by_order_id():
    orders = _orders(
        [
            ("o9", "a", "2025-01-01 02:00", "paid", 100, "points"),
            ("o3", "a", "2025-01-01 02:00", "paid", 100, "flash_sale"),
            ("o1", "a", "2025-01-05 02:00", "paid", 100, "organic"),
            ("o0", "b", "2025-01-01 02:00", "refunded", 100, "flash_sale"),
            ("o2", "b", "2025-01-02 02:00", "paid", 100, "organic"),
        ]
    )
    state = _by_customer(build_state(orders))
    assert state["a"]["acquisition_source"] == "flash_sale"
    assert state["b"]["acquisition_source"] == "organic"  # the refunded first order does not count


def test_the_main_category_group_is_the_largest_paid_spend_with_alphabetical_ties():
    orders = _orders(
        [
            ("o1", "a", "2025-01-01 02:00", "paid", 300),
            ("o2", "a", "2025-01-02 02:00", "refunded", 900),
            ("o3", "b", "2025-01-01 02:00", "paid", 200),
        ]
    )
    lines = _lines(
        [
            ("o1", "food", 100),
            ("o1", "3c", 200),
            ("o2", "durables", 900),  # refunded: does not count
            ("o3", "food", 100),
            ("o3", "cosmetics", 100),  # tie with food: alphabetical
        ]
    )
    state = _by_customer(build_state(orders, lines))
    assert state["a"]["main_category_group"] == "3c"
    assert state["b"]["main_category_group"] == "cosmetics"


def test_category_groups_come_from_the_playbook_and_unknown_goes_to_other():
    settings = SegmentSettings(category_groups={"baby": ["food", "kids_clothing"]})
    orders = _orders(
        [
            ("o1", "a", "2025-01-01 02:00", "paid", 300),
            ("o2", "b", "2025-01-01 02:00", "paid", 300),
            ("o3", "c", "2025-01-01 02:00", "paid", 300),
        ]
    )
    lines = _lines(
        [
            ("o1", "food", 100),
            ("o1", "kids_clothing", 100),
            ("o1", "3c", 150),  # 3c alone beats food or kids_clothing, not the baby group
            ("o2", records.UNKNOWN_CATEGORY, 300),
        ]
    )
    state = _by_customer(build_state(orders, lines, settings=settings))
    assert state["a"]["main_category_group"] == "baby"
    assert state["b"]["main_category_group"] == "other"
    assert state["c"]["main_category_group"] == "other"  # an order without lines: unknown category


def test_until_gives_the_state_as_of_a_past_day():
    orders = _orders(
        [("o1", "a", "2025-01-01 02:00", "paid", 100), ("o2", "a", "2025-02-01 02:00", "paid", 100)]
    )
    a = _by_customer(build_state(orders, until=dt.date(2025, 1, 31)))["a"]
    assert a["paid_orders"] == 1


def test_row_order_and_dtypes_of_the_input_do_not_matter():
    shop = _random_shop(np.random.default_rng(5), customers=60, days=40)
    orders, lines = shop.orders, shop.lines
    expected = build_state(orders, lines)
    shuffled = orders.sample(frac=1.0, random_state=1).astype({"status": "category", "customer_id": object})
    other = build_state(shuffled, lines.sample(frac=1.0, random_state=2).astype({"category": "category"}))
    pd.testing.assert_frame_equal(expected, other)


# --------------------------------------------------------------------------------------------------
# Daily increments == full rebuild
# --------------------------------------------------------------------------------------------------


class _Shop:
    """A shop whose orders arrive day by day, and change status later (refunds, cancellations)."""

    def __init__(
        self,
        orders: pd.DataFrame,
        lines: pd.DataFrame,
        days: list[dt.date],
        touched: list[set[str]],
        as_of: list[pd.DataFrame],
    ):
        self.orders, self.lines, self.days, self.touched, self.as_of = orders, lines, days, touched, as_of


def _random_shop(rng: np.random.Generator, customers: int = 80, days: int = 60) -> _Shop:
    """Orders over ``days`` days: every day some new orders (new and returning customers, several
    orders of one customer on one day, identical payment times) and some status changes of older
    orders (pending -> paid -> completed -> refunded/cancelled). ``as_of[d]`` is the store after day d."""
    start = dt.date(2025, 3, 1)
    store = pd.DataFrame(
        columns=[
            "order_id",
            "customer_id",
            "paid_at",
            "business_date",
            "status",
            "amount_cents",
            "acquisition_source",
        ]
    )
    all_lines = []
    as_of, touched, day_list = [], [], []
    serial = 0
    for d in range(days):
        day = start + dt.timedelta(days=d)
        n_new = int(rng.integers(0, 8))
        cust = [f"c{int(c):03d}" for c in rng.integers(0, customers, n_new)]
        hours = rng.integers(0, 24, n_new)
        paid_at = pd.to_datetime(
            [pd.Timestamp(day) + pd.Timedelta(hours=int(h)) - pd.Timedelta(hours=8) for h in hours]
        )
        if n_new > 1 and rng.random() < 0.3:
            paid_at = paid_at.where(np.arange(n_new) != 1, paid_at[0])  # a tie on the payment time
            cust[1] = cust[0]
        new = pd.DataFrame(
            {
                "order_id": [f"o{serial + i:05d}" for i in rng.permutation(n_new)],
                "customer_id": cust,
                "paid_at": paid_at,
                "business_date": pd.Timestamp(day),
                "status": rng.choice(["pending", "paid", "paid", "paid", "completed"], n_new),
                "amount_cents": rng.integers(100, 40_000, n_new),
                "acquisition_source": rng.choice(list(records.ACQUISITION_SOURCES), n_new),
            }
        )
        serial += n_new
        for order_id, amount in zip(new["order_id"], new["amount_cents"], strict=True):
            k = int(rng.integers(0, 4))  # 0 lines: an order without lines
            cats = rng.choice([*records.CATEGORIES[:4], records.UNKNOWN_CATEGORY], k)
            split = rng.multinomial(int(amount), np.ones(k) / k) if k else []
            all_lines += [(order_id, c, int(a)) for c, a in zip(cats, split, strict=True)]
        changed: set[str] = set(new["customer_id"])
        if len(store):
            # Status changes of older orders: forward only.
            pick = rng.random(len(store)) < 0.05
            for i in np.flatnonzero(pick):
                status = store.at[i, "status"]
                rank = records.STATUS_RANK[status]
                options = [s for s in records.STATUSES if records.STATUS_RANK[s] > rank]
                if options:
                    store.at[i, "status"] = str(rng.choice(options))
                    changed.add(store.at[i, "customer_id"])
        store = pd.concat([store, new], ignore_index=True) if len(store) else new
        store["amount_cents"] = store["amount_cents"].astype(np.int64)
        as_of.append(store.copy())
        touched.append(changed)
        day_list.append(day)
    lines = pd.DataFrame(all_lines, columns=["order_id", "category", "amount_cents"])
    return _Shop(store, lines, day_list, touched, as_of)


def _replay(shop: _Shop, settings: SegmentSettings | None = None) -> None:
    state = build_state(shop.as_of[0].iloc[:0], shop.lines.iloc[:0], settings=settings)
    for store, changed in zip(shop.as_of, shop.touched, strict=True):
        of_touched = store[store["customer_id"].isin(changed)]
        their_lines = shop.lines[shop.lines["order_id"].isin(of_touched["order_id"])]
        state = update_state(state, of_touched, their_lines, settings=settings)
        pd.testing.assert_frame_equal(state, build_state(store, shop.lines, settings=settings))


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_daily_increments_equal_a_full_rebuild_on_random_order_sequences(seed):
    shop = _random_shop(np.random.default_rng(seed))
    assert (shop.orders["status"].isin(records.VOID_STATUSES)).any()
    _replay(shop)


def test_daily_increments_equal_a_full_rebuild_with_category_groups():
    shop = _random_shop(np.random.default_rng(11))
    _replay(
        shop,
        SegmentSettings(category_groups={"everyday": ["food", "daily_goods"]}, unknown_category_group="misc"),
    )


def test_a_customer_whose_last_paid_order_is_refunded_leaves_the_state():
    orders = _orders(
        [("o1", "a", "2025-01-01 02:00", "paid", 100), ("o2", "b", "2025-01-01 02:00", "paid", 100)]
    )
    state = build_state(orders)
    refunded = orders[orders["customer_id"] == "a"].assign(status="refunded")
    assert list(update_state(state, refunded)["customer_id"]) == ["b"]


def _demo_store(customers: int, end: dt.date, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A generated demo shop, validated into store-shaped orders and lines (final statuses)."""
    from huitouke.demo_shop import ShopSpec, generate_shop
    from huitouke.intake.validate import validate

    shop = generate_shop(ShopSpec(customers=customers, start=dt.date(2025, 1, 1), end=end, seed=seed))
    raw = shop.orders.merge(shop.items, on="order_id", how="left").rename(
        columns={
            "pay_amount": "amount",
            "channel": "acquisition_source",
            "title": "product_name",
            "qty": "quantity",
            "amount": "line_amount",
        }
    )
    batch = validate(raw, TZ, end)
    orders = batch.orders.copy()
    orders["updated_at"] = pd.to_datetime(orders["source_updated_at"]).fillna(orders["paid_at"])
    return orders, batch.lines


def test_daily_increments_equal_a_full_rebuild_on_a_generated_demo_shop():
    orders, lines = _demo_store(2_000, dt.date(2025, 6, 30), seed=3)
    assert orders["status"].isin(records.VOID_STATUSES).any()
    day_of = (orders["updated_at"] + pd.Timedelta(hours=8)).dt.normalize()  # when the source last changed it
    paid_day = pd.to_datetime(orders["business_date"])
    state = None
    days = sorted(set(paid_day.dropna()) | set(day_of.dropna()))
    for i, day in enumerate(days):
        # The store after `day`: paid orders so far, with the status they had then (a later refund
        # or cancellation was still "paid").
        store = orders[paid_day <= day].copy()
        later = day_of[store.index] > day
        store.loc[later, "status"] = records.PAID
        changed = set(orders.loc[(paid_day == day) | (day_of == day), "customer_id"])
        of_touched = store[store["customer_id"].isin(changed)]
        their_lines = lines[lines["order_id"].isin(of_touched["order_id"])]
        state = (
            build_state(of_touched, their_lines)
            if state is None
            else update_state(state, of_touched, their_lines)
        )
        if i % 7 == 0:
            pd.testing.assert_frame_equal(state, build_state(store, lines))
    pd.testing.assert_frame_equal(state, build_state(orders, lines))
    final = orders.groupby("customer_id")["status"].apply(lambda s: s.isin(PAID).any())
    assert len(state) == int(final.sum())


def test_a_rebuild_by_customer_partitions_equals_one_rebuild():
    """A memory-bounded rebuild may read the store one range of customers at a time."""
    shop = _random_shop(np.random.default_rng(8))
    orders, lines = shop.orders, shop.lines
    low = orders["customer_id"] < "c040"
    parts = [
        build_state(orders[part], lines[lines["order_id"].isin(orders.loc[part, "order_id"])])
        for part in (low, ~low)
    ]
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), build_state(orders, lines))
