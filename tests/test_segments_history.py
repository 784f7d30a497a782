"""Segment history: validity ranges, past-date lookups and daily transition counts."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from huitouke.segments import (
    HISTORY_COLUMNS,
    SEGMENT_COLUMNS,
    apply_changes,
    build_state,
    classify,
    diff_segments,
    empty_history,
    open_rows_of,
    segments_on,
)

START = dt.date(2025, 1, 1)


def _orders(rows: list[tuple[str, str, dt.date, str]]) -> pd.DataFrame:
    """(order_id, customer_id, business date, status); amounts 100 CNY."""
    frame = pd.DataFrame(rows, columns=["order_id", "customer_id", "business_date", "status"])
    frame["business_date"] = pd.to_datetime(frame["business_date"])
    frame["paid_at"] = frame["business_date"] + pd.Timedelta(hours=3)
    frame["amount_cents"] = 10_000
    frame["acquisition_source"] = "organic"
    return frame


def _run_days(orders: pd.DataFrame, days: list[dt.date]):
    """Run the daily chain over ``days``; returns the history, the day's segments and the changes."""
    history = empty_history()
    snapshots, changes = {}, {}
    for day in days:
        segments = classify(build_state(orders, until=day), day)
        change = diff_segments(open_rows_of(history), segments, day)
        history = apply_changes(history, change)
        snapshots[day], changes[day] = segments, change
    return history, snapshots, changes


def _day(n: int) -> dt.date:
    return START + dt.timedelta(days=n)


def test_the_first_day_opens_one_row_per_customer_coming_from_none():
    orders = _orders(
        [("o1", "a", _day(0), "paid"), ("o2", "b", _day(0), "paid"), ("o3", "b", _day(0), "paid")]
    )
    segments = classify(build_state(orders), _day(0))
    change = diff_segments(empty_history(), segments, _day(0))
    assert tuple(change.open.columns) == HISTORY_COLUMNS
    assert list(change.open["customer_id"]) == ["a", "b"]
    assert set(change.open["valid_from"]) == {_day(0)}
    assert change.open["valid_to"].isna().all()
    assert change.close.empty
    assert change.transition_counts() == {("none", "new"): 2}


def test_an_unchanged_segment_keeps_its_open_row():
    orders = _orders([("o1", "a", _day(0), "paid")])
    history, _, changes = _run_days(orders, [_day(0), _day(1), _day(2)])
    assert len(history) == 1
    assert changes[_day(2)].unchanged == 1
    assert changes[_day(2)].open.empty and changes[_day(2)].close.empty


def test_a_new_customer_becomes_one_time_after_new_days_with_one_closed_and_one_open_row():
    orders = _orders([("o1", "a", _day(0), "paid")])
    history, _, changes = _run_days(orders, [_day(0), _day(29), _day(30)])
    assert changes[_day(29)].transition_counts() == {}  # the R score may move, the lifecycle does not
    assert changes[_day(30)].transition_counts() == {("new", "one_time"): 1}
    rows = history.sort_values("valid_from")
    assert rows["lifecycle"].tolist()[0] == "new" and rows["lifecycle"].tolist()[-1] == "one_time"
    assert rows["valid_to"].tolist()[-2] == _day(30)  # [valid_from, valid_to): new until day 30 excluded
    assert pd.isna(rows["valid_to"].tolist()[-1])


def test_transitions_follow_a_customer_from_new_to_churned_and_back():
    orders = _orders([("o1", "a", _day(0), "paid"), ("o2", "a", _day(400), "paid")])
    days = [_day(0), _day(30), _day(180), _day(365), _day(400)]
    _, snapshots, changes = _run_days(orders, days)
    assert [snapshots[d]["lifecycle"].iloc[0] for d in days] == [
        "new",
        "one_time",
        "at_risk",
        "churned",
        "repeat",
    ]
    assert changes[_day(180)].transition_counts() == {("one_time", "at_risk"): 1}
    assert changes[_day(365)].transition_counts() == {("at_risk", "churned"): 1}
    assert changes[_day(400)].transition_counts() == {("churned", "repeat"): 1}


def test_a_customer_whose_orders_are_all_refunded_is_closed_and_goes_to_none():
    day0 = classify(
        build_state(_orders([("o1", "a", _day(0), "paid"), ("o2", "b", _day(0), "paid")])), _day(0)
    )
    history = apply_changes(empty_history(), diff_segments(empty_history(), day0, _day(0)))
    day1 = classify(
        build_state(_orders([("o1", "a", _day(0), "refunded"), ("o2", "b", _day(0), "paid")])), _day(1)
    )
    change = diff_segments(open_rows_of(history), day1, _day(1))
    assert change.close["customer_id"].tolist() == ["a"]
    assert change.open.empty
    assert change.transition_counts() == {("new", "none"): 1}
    history = apply_changes(history, change)
    assert segments_on(history, _day(0))["customer_id"].tolist() == ["a", "b"]
    assert segments_on(history, _day(1))["customer_id"].tolist() == ["b"]


def _random_orders(seed: int, customers: int = 40, days: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = customers * 3
    frame = _orders(
        [
            (f"o{i:04d}", f"c{int(c):03d}", _day(int(d)), str(s))
            for i, (c, d, s) in enumerate(
                zip(
                    rng.integers(0, customers, n),
                    rng.integers(0, days, n),
                    rng.choice(["paid", "completed", "refunded", "cancelled"], n, p=[0.5, 0.4, 0.05, 0.05]),
                    strict=True,
                )
            )
        ]
    )
    frame["amount_cents"] = rng.integers(1_000, 30_000, n)
    return frame


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_segment_of_any_past_date_is_the_one_computed_that_day(seed):
    orders = _random_orders(seed)
    days = [_day(d) for d in range(0, 120, 2)]
    history, snapshots, _ = _run_days(orders, days)
    for day in days:
        expected = snapshots[day][["customer_id", *SEGMENT_COLUMNS]].reset_index(drop=True)
        got = segments_on(history, day)
        pd.testing.assert_frame_equal(got.astype(expected.dtypes.to_dict()), expected)
    # The history keeps changes only: far fewer rows than one per customer and day.
    assert len(history) < 0.3 * sum(len(s) for s in snapshots.values())
    # Ranges of one customer do not overlap and leave no gap while the customer exists.
    for _, rows in history.sort_values("valid_from").groupby("customer_id"):
        ends = rows["valid_to"].tolist()
        starts = rows["valid_from"].tolist()
        assert all(end == start for end, start in zip(ends[:-1], starts[1:], strict=True))


def test_transition_counts_add_up_to_the_lifecycle_sizes():
    orders = _random_orders(7)
    days = [_day(d) for d in range(0, 120, 3)]
    _, snapshots, changes = _run_days(orders, days)
    sizes: dict[str, int] = {}
    for day in days:
        for (before, after), count in changes[day].transition_counts().items():
            sizes[before] = sizes.get(before, 0) - count
            sizes[after] = sizes.get(after, 0) + count
        expected = {k: v for k, v in snapshots[day]["lifecycle"].value_counts().to_dict().items() if v}
        assert {k: v for k, v in sizes.items() if v and k != "none"} == expected


def test_segment_ids_of_the_open_rows_are_passed_to_the_rows_to_close():
    orders = _orders([("o1", "a", _day(0), "paid"), ("o2", "b", _day(0), "paid")])
    history, _, _ = _run_days(orders, [_day(0)])
    open_rows = open_rows_of(history).assign(segment_id=[11, 12])
    change = diff_segments(open_rows, classify(build_state(orders), _day(30)), _day(30))
    assert change.close[["customer_id", "segment_id"]].values.tolist() == [["a", 11], ["b", 12]]
    assert set(change.close["valid_to"]) == {_day(30)}


def test_re_running_a_day_without_rewinding_the_history_is_refused():
    orders = _orders([("o1", "a", _day(0), "paid")])
    history, snapshots, _ = _run_days(orders, [_day(0)])
    with pytest.raises(ValueError, match="rewind"):
        diff_segments(open_rows_of(history), snapshots[_day(0)], _day(0))


def test_two_open_rows_for_one_customer_are_refused():
    orders = _orders([("o1", "a", _day(0), "paid")])
    history, snapshots, _ = _run_days(orders, [_day(0)])
    doubled = pd.concat([open_rows_of(history)] * 2, ignore_index=True)
    with pytest.raises(ValueError, match="more than one open row"):
        diff_segments(doubled, snapshots[_day(0)], _day(1))


def test_open_rows_read_back_from_a_store_compare_equal():
    """Rows read from SQL come back as object columns and plain ints: same segment, no change."""
    orders = _random_orders(3)
    history, snapshots, _ = _run_days(orders, [_day(100)])
    stored = open_rows_of(history).astype(object)
    stored["valid_from"] = pd.to_datetime(stored["valid_from"])
    change = diff_segments(stored, snapshots[_day(100)], _day(101))
    assert change.open.empty and change.close.empty


@pytest.mark.parametrize("seed", [4, 5])
def test_a_known_row_mapping_gives_the_same_changes_as_matching_the_ids(seed):
    """The daily fold knows each customer's row in the previous state; the open rows are that
    state's customers in order, so the diff may use the mapping instead of matching ids."""
    from huitouke.segments import same_customers

    orders = _random_orders(seed)
    history = empty_history()
    previous = None
    for n in range(0, 120, 7):
        state = build_state(orders, until=_day(n))
        segments = classify(state, _day(n))
        open_rows = open_rows_of(history).sort_values("customer_id", ignore_index=True)  # as stored
        matched = diff_segments(open_rows, segments, _day(n))
        if previous is not None:
            assert same_customers(open_rows["customer_id"], previous["customer_id"])
            where = {c: i for i, c in enumerate(previous["customer_id"])}
            known = np.array([where.get(c, -1) for c in state["customer_id"]], dtype=np.int64)
            mapped = diff_segments(open_rows, segments, _day(n), known)
            pd.testing.assert_frame_equal(mapped.close, matched.close)
            pd.testing.assert_frame_equal(mapped.open, matched.open)
            pd.testing.assert_frame_equal(mapped.transitions, matched.transitions)
        history = apply_changes(history, matched)
        previous = state


@pytest.mark.parametrize("seed", [6, 7])
def test_labels_as_text_or_as_categoricals_give_the_same_changes(seed):
    """The open rows' labels may come as text (a store read, an in-memory history) or as
    categoricals with any categories (the snapshot; classify's own): the changes are the same."""
    from huitouke.segments import LABEL_COLUMNS, canonical_labels

    orders = _random_orders(seed)
    history = empty_history()
    for n in range(0, 120, 9):
        segments = classify(build_state(orders, until=_day(n)), _day(n))
        as_text = open_rows_of(history)
        for column in LABEL_COLUMNS:
            as_text[column] = as_text[column].astype("str")
        expected = diff_segments(as_text, segments, _day(n))
        variants = [as_text.copy(), as_text.copy()]
        for column in LABEL_COLUMNS:
            variants[0][column] = canonical_labels(as_text[column])
            names = sorted({*as_text[column].dropna(), "unused"}, reverse=True)  # other order, one more
            variants[1][column] = pd.Categorical(as_text[column], categories=names)
        for open_rows in variants:
            got = diff_segments(open_rows, segments, _day(n))
            pd.testing.assert_frame_equal(got.close, expected.close)
            pd.testing.assert_frame_equal(got.open, expected.open)
            pd.testing.assert_frame_equal(got.transitions, expected.transitions)
        text_segments = segments.astype({column: "str" for column in LABEL_COLUMNS})
        got = diff_segments(variants[1], text_segments, _day(n))
        pd.testing.assert_frame_equal(got.close, expected.close)
        pd.testing.assert_frame_equal(got.transitions, expected.transitions)
        assert got.open.astype(str).equals(expected.open.astype(str))
        history = apply_changes(history, expected)
    assert len(history) > len(open_rows_of(history))  # rows were closed along the way


def test_a_row_mapping_that_does_not_fit_is_refused():
    segments = classify(build_state(_orders([("o1", "a", _day(0), "paid")])), _day(0))
    with pytest.raises(ValueError, match="does not fit"):
        diff_segments(empty_history(), segments, _day(0), np.array([3]))
