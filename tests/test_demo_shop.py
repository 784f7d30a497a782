"""The demo shop behaves like the shop in DOMAIN.md, and the intake query reads it canonically."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from huitouke.demo_shop import (
    BAD_ROW_KINDS,
    SHOP_ORDER_QUERY,
    DemoShop,
    ShopSpec,
    generate_shop,
    write_shop,
)
from huitouke.records import (
    ACQUISITION_SOURCES,
    ALL_COLUMNS,
    CANCELLED,
    CATEGORIES,
    COMPLETED,
    PAID_STATUSES,
    REFUNDED,
    canonical_status,
)

SPEC = ShopSpec(customers=5_000, seed=11)
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@pytest.fixture(scope="module")
def shop() -> DemoShop:
    return generate_shop(SPEC)


def _good_orders(shop: DemoShop) -> pd.DataFrame:
    """Orders that are not bad rows, with parsed amount and times."""
    good = shop.orders[~shop.orders["order_id"].isin(shop.bad_rows["order_id"])].copy()
    good["amount"] = pd.to_numeric(good["pay_amount"])
    good["paid"] = pd.to_datetime(good["paid_at"], format=TIME_FORMAT)
    good["updated"] = pd.to_datetime(good["updated_at"], format=TIME_FORMAT)
    return good


def _cents(text: pd.Series) -> pd.Series:
    return (pd.to_numeric(text) * 100).round().astype("int64")


def test_same_spec_gives_identical_frames(shop: DemoShop) -> None:
    again = generate_shop(SPEC)
    for name in ("customers", "orders", "items", "truth", "bad_rows"):
        first, second = getattr(shop, name), getattr(again, name)
        pd.testing.assert_frame_equal(first, second, check_exact=True)
        assert pd.util.hash_pandas_object(first).equals(pd.util.hash_pandas_object(second))
    other = generate_shop(ShopSpec(customers=5_000, seed=12))
    assert not other.orders["order_id"].equals(shop.orders["order_id"])


def test_order_values_average_about_103_cny(shop: DemoShop) -> None:
    good = _good_orders(shop)
    assert good["pay_amount"].str.fullmatch(r"\d+\.\d{2}").all()
    assert 93 <= good["amount"].mean() <= 113
    assert (good["amount"] > 0).all()


def test_repeat_rate_rises_with_average_order_value(shop: DemoShop) -> None:
    truth = shop.truth
    repeat = truth["paid_orders"] >= 2
    whole, above_70, above_140 = (
        repeat.mean(),
        repeat[truth["aov"] > 70].mean(),
        repeat[truth["aov"] > 140].mean(),
    )
    assert 0.07 <= whole <= 0.17
    assert 0.15 <= above_70 <= 0.32
    assert 0.28 <= above_140 <= 0.50
    low = repeat[truth["aov"] <= 70].mean()
    mid = repeat[(truth["aov"] > 70) & (truth["aov"] <= 140)].mean()
    assert low < mid < above_140
    # The true tier drives it too, and the premium tier carries most of the GMV.
    by_tier = repeat.groupby(truth["value_tier"]).mean()
    assert by_tier["low"] < by_tier["mid"] < by_tier["premium"]
    assert truth.loc[truth["aov"] > 70, "paid_amount"].sum() / truth["paid_amount"].sum() > 0.7


def test_flash_sale_and_points_customers_rarely_come_back(shop: DemoShop) -> None:
    truth = shop.truth
    share = truth["acquisition_source"].value_counts(normalize=True)
    assert set(share.index) == set(ACQUISITION_SOURCES)
    assert share["organic"] == pytest.approx(0.80, abs=0.03)
    assert share["flash_sale"] == pytest.approx(0.12, abs=0.02)
    assert share["points"] == pytest.approx(0.08, abs=0.02)
    repeat = (truth["paid_orders"] >= 2).groupby(truth["acquisition_source"]).mean()
    assert repeat["flash_sale"] < 0.06
    assert repeat["points"] < 0.02  # below 1% in a large shop; a few hundred customers here
    propensity = truth.groupby("acquisition_source")["repurchase_propensity"].mean()
    assert propensity["points"] < 0.01 < propensity["flash_sale"] < 0.1 < propensity["organic"]
    assert repeat["organic"] > 3 * repeat["flash_sale"]
    # Flash-sale customers buy cheaply: about 57 CNY on their first order.
    good = _good_orders(shop)
    first = good.merge(truth, left_on=["customer_id", "paid_at"], right_on=["customer_id", "first_paid_at"])
    assert first.loc[first["acquisition_source"] == "flash_sale", "amount"].mean() == pytest.approx(57, abs=8)
    # A first order carries the customer's acquisition channel; repeat orders are mostly organic.
    assert (first["channel"] == first["acquisition_source"]).all()
    repeats = good[~good["order_id"].isin(first["order_id"])]
    assert (repeats["channel"] == "organic").mean() > 0.8


def test_double_eleven_is_the_peak_day_and_nights_are_quiet(shop: DemoShop) -> None:
    good = _good_orders(shop)
    per_day = good["paid"].dt.normalize().value_counts()
    typical = per_day.median()
    assert per_day[pd.Timestamp("2025-11-11")] > 3 * typical
    assert per_day[pd.Timestamp("2025-12-12")] > 2 * typical
    assert per_day.idxmax() == pd.Timestamp("2025-11-11")
    weekend = per_day[per_day.index.day_of_week >= 5]
    weekday = per_day[per_day.index.day_of_week < 5]
    assert weekend.median() > weekday.median()
    hours = good["paid"].dt.hour
    assert hours.between(2, 5).mean() < 0.05
    assert hours.between(19, 22).mean() > 0.2


def test_repeat_orders_come_back_within_weeks_and_favour_the_main_category(shop: DemoShop) -> None:
    good = _good_orders(shop).sort_values(["customer_id", "paid"])
    gaps = good.groupby("customer_id")["paid"].diff().dropna().dt.days
    assert 25 <= gaps.median() <= 90
    assert (gaps <= 90).mean() > 0.5
    first_lines = shop.items[shop.items["line_no"] == 1].set_index("order_id")["category"]
    repeats = good[good.duplicated("customer_id")]
    main = repeats["customer_id"].map(shop.truth.set_index("customer_id")["main_category"])
    assert (repeats["order_id"].map(first_lines) == main).mean() > 0.6
    assert repeats["paid"].max() < pd.Timestamp(SPEC.end + datetime.timedelta(days=1))


def test_order_lines_sum_to_the_order_amount(shop: DemoShop) -> None:
    items = shop.items
    assert set(items["category"]) <= set(CATEGORIES)
    assert (items["qty"] >= 1).all()
    lines = items.groupby("order_id")["line_no"].agg(["count", "min", "max"])
    assert lines["count"].between(1, 3).all()
    assert (lines["min"] == 1).all() and (lines["max"] == lines["count"]).all()
    assert set(lines.index) == set(shop.orders["order_id"])
    good = _good_orders(shop).set_index("order_id")
    line_cents = _cents(items["amount"]).groupby(items["order_id"]).sum()
    assert (line_cents.loc[good.index] == _cents(good["pay_amount"])).all()
    assert (_cents(items["amount"]) > 0).all()


def test_refunds_and_cancellations_change_the_row_later(shop: DemoShop) -> None:
    good = _good_orders(shop)
    share = good["status"].value_counts(normalize=True)
    assert share[REFUNDED] == pytest.approx(0.03, abs=0.01)
    assert share[CANCELLED] == pytest.approx(0.01, abs=0.006)
    void = good["status"].isin([REFUNDED, CANCELLED])
    delay = good["updated"] - good["paid"]
    assert delay[void].between(pd.Timedelta(days=1), pd.Timedelta(days=10)).all()
    assert (delay[~void] == pd.Timedelta(0)).all()
    end_of_business = pd.Timestamp(SPEC.end + datetime.timedelta(days=1))
    assert (good["updated"] < end_of_business).all()
    # Recent orders are not completed yet; older ones are.
    age = (end_of_business - good["paid"]).dt.days
    assert not (good["status"][age < 6] == COMPLETED).any()
    assert (good["status"][(age > 8) & ~void] == COMPLETED).all()
    assert good["status"].isin(PAID_STATUSES | {REFUNDED, CANCELLED}).all()


def test_bad_rows_have_the_promised_share_and_kinds(shop: DemoShop) -> None:
    orders, bad = shop.orders.set_index("order_id"), shop.bad_rows
    assert len(bad) == round(SPEC.bad_row_share * len(orders))
    assert bad["order_id"].is_unique
    counts = bad["kind"].value_counts()
    assert set(counts.index) == set(BAD_ROW_KINDS)
    assert counts.max() - counts.min() <= 1
    rows = orders.loc[bad["order_id"]].assign(kind=bad["kind"].to_numpy())
    amount = pd.to_numeric(rows["pay_amount"], errors="coerce")
    paid = pd.to_datetime(rows["paid_at"], format=TIME_FORMAT, errors="coerce")
    status_known = rows["status"].map(canonical_status).notna()
    defect = {
        "missing_customer_id": rows["customer_id"].isna(),
        "non_numeric_amount": amount.isna(),
        "negative_amount": amount < 0,
        "bad_paid_at": paid.isna(),
        "unknown_status": ~status_known,
    }
    for kind, broken in defect.items():
        assert broken[rows["kind"] == kind].all(), kind
    # Every bad row still changed inside the business period, so the intake reads it.
    updated = pd.to_datetime(rows["updated_at"], format=TIME_FORMAT)
    assert updated.between(
        pd.Timestamp(SPEC.start), pd.Timestamp(SPEC.end + datetime.timedelta(days=1))
    ).all()
    # And no other row has any of these defects.
    good = orders.drop(index=bad["order_id"])
    assert good["customer_id"].notna().all()
    assert good["status"].map(canonical_status).notna().all()
    assert pd.to_datetime(good["paid_at"], format=TIME_FORMAT, errors="coerce").notna().all()


def test_customers_look_like_real_chinese_buyers(shop: DemoShop) -> None:
    customers = shop.customers
    assert len(customers) == SPEC.customers
    assert customers["customer_id"].is_unique
    assert customers["customer_id"].iloc[0] == "c000001"
    assert customers["phone"].str.fullmatch(r"1[3-9]\d{9}").all()
    assert customers["phone"].is_unique
    emails = customers["email"].dropna()
    assert 0.5 < len(emails) / len(customers) < 0.8
    assert emails.str.fullmatch(r"[a-z0-9_]+@[a-z0-9]+\.com").all() and emails.is_unique
    birthdays = customers["birthday"].dropna()
    assert len(birthdays) / len(customers) == pytest.approx(0.40, abs=0.03)
    assert pd.to_datetime(birthdays, format="%Y-%m-%d").dt.year.between(1950, 2010).all()
    assert customers["name"].str.fullmatch(r"[\u4e00-\u9fff]{2,4}").all()
    assert customers["nickname"].str.len().ge(2).all()
    registered = pd.to_datetime(customers["registered_at"], format=TIME_FORMAT)
    first = pd.to_datetime(shop.truth["first_paid_at"], format=TIME_FORMAT)
    assert (registered < first).all()
    assert set(shop.orders["customer_id"].dropna()) <= set(customers["customer_id"])


def test_shop_order_query_returns_the_orders_updated_that_day(shop: DemoShop, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    expected_counts = {
        "shop_customers": len(shop.customers),
        "shop_orders": len(shop.orders),
        "shop_order_items": len(shop.items),
    }
    assert write_shop(shop, url) == expected_counts
    assert write_shop(shop, url) == expected_counts  # drops and recreates: no duplicates
    # The day with the most refunds and cancellations of earlier orders.
    late = shop.orders[shop.orders["updated_at"].str[:10] != shop.orders["paid_at"].str[:10]]
    date = late["updated_at"].str[:10].value_counts().idxmax()
    start, end = (
        f"{date} 00:00:00",
        f"{datetime.date.fromisoformat(date) + datetime.timedelta(days=1)} 00:00:00",
    )
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            for table, count in expected_counts.items():
                assert connection.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one() == count
            day = pd.read_sql(sa.text(SHOP_ORDER_QUERY), connection, params={"start": start, "end": end})
            changed = shop.orders[shop.orders["updated_at"].str.startswith(date)]
            boundary = changed["updated_at"].max()
            before_boundary = pd.read_sql(
                sa.text(SHOP_ORDER_QUERY), connection, params={"start": start, "end": boundary}
            )
    finally:
        engine.dispose()

    assert list(day.columns) == list(ALL_COLUMNS)
    assert set(day["order_id"]) == set(changed["order_id"])
    assert len(day) == shop.items["order_id"].isin(changed["order_id"]).sum()
    assert day[["order_id", "sku"]].equals(day.sort_values(["order_id"], kind="stable")[["order_id", "sku"]])
    # The interval is half-open: an order updated exactly at :end is left for the next run.
    assert boundary not in set(before_boundary["updated_at"])
    assert set(before_boundary["order_id"]) == set(changed.loc[changed["updated_at"] < boundary, "order_id"])
    # Values come through as the shop stored them, refunds of older orders included.
    row = day.drop_duplicates("order_id").set_index("order_id")
    source = changed.set_index("order_id").loc[row.index]
    assert (row["amount"].fillna("") == source["pay_amount"].fillna("")).all()
    assert (row["acquisition_source"] == source["channel"]).all()
    assert (row["paid_at"] < date).any()
    assert day["quantity"].dtype.kind == "i"
    line_total = _cents(day["line_amount"]).groupby(day["order_id"]).sum()
    clean = row.index[~row.index.isin(shop.bad_rows["order_id"])]
    assert (line_total.loc[clean] == _cents(row.loc[clean, "amount"])).all()


def test_a_short_period_keeps_every_order_inside_it() -> None:
    spec = ShopSpec(customers=400, start=datetime.date(2025, 11, 1), end=datetime.date(2025, 11, 30), seed=3)
    shop = generate_shop(spec)
    good = _good_orders(shop)
    assert good["paid"].min() >= pd.Timestamp(spec.start)
    assert good["updated"].max() < pd.Timestamp(spec.end + datetime.timedelta(days=1))
    assert good["paid"].dt.normalize().value_counts().idxmax() == pd.Timestamp("2025-11-11")
    assert len(shop.customers) == 400 and np.isfinite(shop.truth["aov_level"]).all()


@pytest.mark.parametrize(
    "spec",
    [
        ShopSpec(customers=0),
        ShopSpec(start=datetime.date(2025, 2, 1), end=datetime.date(2025, 1, 1)),
        ShopSpec(bad_row_share=1.5),
        ShopSpec(timezone="Mars/Olympus_Mons"),
    ],
)
def test_an_impossible_spec_is_refused(spec: ShopSpec) -> None:
    with pytest.raises(ValueError):
        generate_shop(spec)
