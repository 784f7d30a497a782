"""Loading into the CRM store (SQLite and PostgreSQL): upsert by order id, refunds, conflicts,
idempotent re-runs, nothing stored ever lost."""

from __future__ import annotations

import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from huitouke import records
from huitouke.intake import persist
from huitouke.intake.load import load_batch, plain_records, sort_customers, sort_orders
from huitouke.intake.validate import validate
from huitouke.store.errors import StoreError
from huitouke.store.schema import customers, intake_runs, order_lines, orders, quarantine

TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2025, 12, 12)


def rows(*specs):
    out = []
    for spec in specs:
        base = {
            "order_id": "T1",
            "customer_id": "c1",
            "paid_at": "2025-12-12 10:00:00",
            "amount": "100",
            "status": "paid",
            "sku": "S1",
            "category": "food",
            "quantity": "1",
            "line_amount": "100",
            "phone": "13800000001",
        }
        base.update(spec)
        out.append(base)
    return pd.DataFrame(out)


def load(engine, frame, day=DAY):
    return load_batch(engine, validate(frame, TZ, day), "test", day)


def as_stored(frame, **columns):
    """Validated orders as the store would hand them to the sort (persist.read_orders)."""
    return frame.assign(refunded_cents=0, **columns)


def count(engine, table, *where):
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(table).where(*where))


def stored(engine, order_id):
    with engine.connect() as conn:
        return conn.execute(select(orders).where(orders.c.order_id == order_id)).one()


def test_new_orders_are_inserted_with_lines_and_customers(store_engine):
    summary = load(store_engine, rows({}, {"order_id": "T2", "customer_id": "c2", "sku": "S2"}))
    assert (summary.inserted, summary.updated, summary.unchanged) == (2, 0, 0)
    assert count(store_engine, orders) == 2
    assert count(store_engine, order_lines) == 2
    assert count(store_engine, customers) == 2
    assert summary.customers_new == 2


def test_rerunning_a_day_changes_nothing(store_engine):
    frame = rows({}, {"order_id": "T2", "customer_id": None})
    first = load(store_engine, frame)
    before = stored(store_engine, "T1")
    second = load(store_engine, frame)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, 1)
    assert second.quarantined == first.quarantined == 1
    assert second.new_quarantine_rows == 0
    assert count(store_engine, quarantine) == 1
    assert count(store_engine, orders) == 1
    assert stored(store_engine, "T1") == before
    assert count(store_engine, intake_runs) == 2  # one audit row per attempt


def test_a_refund_updates_the_status_and_adds_no_revenue(store_engine):
    load(store_engine, rows({}))
    summary = load(
        store_engine, rows({"status": "refunded", "updated_at": "2025-12-15 09:00:00"}), date(2025, 12, 15)
    )
    assert (summary.inserted, summary.updated) == (0, 1)
    order = stored(store_engine, "T1")
    assert order.status == "refunded"
    assert order.amount_cents == 10000  # unchanged: the refund is a status, not a negative order
    assert count(store_engine, orders) == 1
    assert count(store_engine, order_lines) == 1


def test_an_order_id_stored_with_different_content_is_quarantined_and_the_stored_order_kept(store_engine):
    load(store_engine, rows({}))
    summary = load(store_engine, rows({"amount": "999", "line_amount": "999"}))
    assert summary.quarantined_by_reason == {"conflicting_order": 1}
    assert stored(store_engine, "T1").amount_cents == 10000
    with store_engine.connect() as conn:
        detail = conn.scalar(select(quarantine.c.detail))
    assert "amount_cents" in detail and "10000" in detail and "99900" in detail


def test_a_status_that_would_move_an_order_back_is_quarantined(store_engine):
    load(store_engine, rows({"status": "refunded"}))
    summary = load(store_engine, rows({"status": "paid"}))
    assert summary.quarantined_by_reason == {"status_regression": 1}
    assert stored(store_engine, "T1").status == "refunded"


def test_customer_contact_details_are_refreshed_not_erased(store_engine):
    load(store_engine, rows({"email": "a@example.com"}))
    load(store_engine, rows({"order_id": "T2", "phone": "13900000009", "email": None}))
    with store_engine.connect() as conn:
        cust = conn.execute(select(customers).where(customers.c.customer_id == "c1")).one()
    assert (cust.phone, cust.email) == ("13900000009", "a@example.com")


def test_every_bad_row_reason_is_stored_once_with_the_raw_row(store_engine):
    frame = rows(
        {"order_id": "B1", "customer_id": None},
        {"order_id": "B2", "amount": "abc"},
        {"order_id": "B3", "amount": "-1"},
        {"order_id": "B4", "paid_at": "2025-13-45"},
        {"order_id": "B5", "status": "weird"},
        {"order_id": "OK"},
    )
    summary = load(store_engine, frame)
    assert summary.quarantined_by_reason == {
        "missing_customer": 1,
        "invalid_amount": 1,
        "negative_amount": 1,
        "unparseable_time": 1,
        "unknown_status": 1,
    }
    assert summary.inserted == 1
    load(store_engine, frame)
    assert count(store_engine, quarantine) == 5
    with store_engine.connect() as conn:
        raws = conn.execute(select(quarantine.c.raw)).scalars().all()
    assert any('"abc"' in raw for raw in raws)


def test_summary_text_lists_reasons(store_engine):
    summary = load(store_engine, rows({}, {"order_id": "X", "status": "??"}))
    text = summary.as_text()
    assert "rows read" in text and "unknown_status" in text and "inserted" in text


def test_stage_two_marks_only_the_orders_it_folded_in(store_engine):
    """An order loaded after stage 2 read its input stays unmarked for the next run."""
    from datetime import datetime

    from huitouke.segments.persist import mark_applied, read_pending

    load(store_engine, rows({}, {"order_id": "T2"}))
    with store_engine.begin() as conn:
        mark_applied(conn, ["T1"], datetime(2025, 12, 13))
    with store_engine.connect() as conn:
        unmarked = (
            conn.execute(select(orders.c.order_id).where(orders.c.state_applied_at.is_(None))).scalars().all()
        )
        assert unmarked == ["T2"]
        assert list(read_pending(conn)["customer_id"]) == ["c1"]


def test_a_status_move_records_what_the_state_counted_of_the_order(store_engine):
    """Stage 2 folds a moved order by its effect: intake keeps what the state counted before."""
    from datetime import datetime

    from huitouke.segments.persist import mark_applied

    load(store_engine, rows({}, {"order_id": "T2", "status": "pending"}, {"order_id": "T3"}))
    assert stored(store_engine, "T1").folded_as_paid is None  # never folded
    with store_engine.begin() as conn:
        mark_applied(conn, ["T1", "T2", "T3"], datetime(2025, 12, 13))
    load(store_engine, rows({"status": "refunded"}, {"order_id": "T2", "status": "paid"}, {"order_id": "T3"}))
    first, second, third = (stored(store_engine, i) for i in ("T1", "T2", "T3"))
    assert (first.status, first.state_applied_at, first.folded_as_paid) == ("refunded", None, True)
    assert (second.status, second.state_applied_at, second.folded_as_paid) == ("paid", None, False)
    assert third.state_applied_at is not None and third.folded_as_paid is None  # unchanged
    # Moved again before stage 2 ran: the state still counts what it counted.
    load(store_engine, rows({"order_id": "T2", "status": "refunded"}))
    assert stored(store_engine, "T2").folded_as_paid is False
    with store_engine.begin() as conn:
        mark_applied(conn, ["T1", "T2"], datetime(2025, 12, 14))
    assert stored(store_engine, "T1").folded_as_paid is None  # folded: counted as its status says


def test_the_sort_of_a_batch_against_the_stored_orders_needs_no_database():
    stored_orders = as_stored(
        validate(rows({"order_id": "T2"}, {"order_id": "T3"}, {"order_id": "T4"}), TZ, DAY).orders,
        state_applied_at=None,
        folded_as_paid=None,
    )
    incoming = rows(
        {},
        {"order_id": "T2", "status": "refunded"},
        {"order_id": "T3", "amount": "5", "line_amount": "5"},
        {"order_id": "T4"},
    )
    sorted_orders = sort_orders(validate(incoming, TZ, DAY).orders, stored_orders)
    assert list(sorted_orders.new["order_id"]) == ["T1"]
    moves = sorted_orders.moves
    assert list(zip(moves["order_id"], moves["status"], moves["folded_as_paid"], strict=True)) == [
        ("T2", "refunded", None)
    ]
    assert sorted_orders.unchanged == 1
    assert [(c["order_id"], c["reason"]) for c in sorted_orders.conflicts] == [("T3", "conflicting_order")]
    assert set(sorted_orders.customer_ids) == {"c1"}


def test_a_status_regression_is_a_conflict_and_a_folded_order_keeps_what_the_state_counted():
    stored_orders = as_stored(
        validate(rows({"status": "refunded"}, {"order_id": "T2"}), TZ, DAY).orders,
        state_applied_at=pd.Timestamp("2025-12-13").to_pydatetime(),
        folded_as_paid=None,
    )
    incoming = validate(rows({"status": "paid"}, {"order_id": "T2", "status": "completed"}), TZ, DAY).orders
    sorted_orders = sort_orders(incoming, stored_orders)
    assert [c["reason"] for c in sorted_orders.conflicts] == ["status_regression"]
    moves = sorted_orders.moves
    assert list(zip(moves["order_id"], moves["folded_as_paid"], strict=True)) == [("T2", True)]


def test_customers_sort_into_new_and_changed_contact_fields_without_erasing():
    incoming = validate(
        rows({"email": None, "phone": "13900000009"}, {"order_id": "T2", "customer_id": "c2"}), TZ, DAY
    ).customers
    stored_customers = pd.DataFrame(
        [{"customer_id": "c1", "name": None, "phone": "13800000001", "email": "a@x.cn", "birthday": None}]
    )
    new, changed = sort_customers(incoming, stored_customers)
    assert list(new["customer_id"]) == ["c2"]
    assert plain_records(changed) == [
        {"customer_id": "c1", "name": None, "phone": "13900000009", "email": None, "birthday": None}
    ]


# ------------------------------------------------------------------ issue 14: concurrency, errors


def with_refunds(frame, refunds, day=DAY):
    """The validated batch of ``frame`` with ``refunded_cents`` per order id (the column validation
    gives partial refunds from an export's refund amounts)."""
    batch = validate(frame, TZ, day)
    batch.orders["refunded_cents"] = batch.orders["order_id"].map(refunds).fillna(0).astype("int64")
    return batch


PERSONAL = {"phone": "13912345678", "email": "wang.fang@example.com", "customer_name": "王芳"}


def test_two_intakes_of_the_same_day_at_once_both_succeed_and_store_each_order_once(store_engine):
    frame = rows(*({"order_id": f"T{i}", "customer_id": f"c{i % 7}", **PERSONAL} for i in range(300)))
    frame.loc[0, "status"] = "??"  # one quarantined row: stored once
    batch = validate(frame, TZ, DAY)
    start = threading.Barrier(2)

    def intake():
        start.wait()
        return load_batch(store_engine, batch, "test", DAY)

    with ThreadPoolExecutor(2) as pool:
        summaries = list(pool.map(lambda _: intake(), range(2)))
    assert sorted((s.inserted, s.unchanged) for s in summaries) == [(0, 299), (299, 0)]
    assert sorted(s.new_quarantine_rows for s in summaries) == [0, 1]
    assert count(store_engine, orders) == 299
    assert count(store_engine, customers) == 7
    assert count(store_engine, quarantine) == 1
    assert count(store_engine, intake_runs) == 2


def test_an_error_of_the_store_carries_no_personal_data(store_engine, monkeypatch):
    load(store_engine, rows({**PERSONAL}))
    # The stored customer not found (as if read before another writer committed it): the insert
    # of the same customer again is refused by the database, whose message quotes the row.
    monkeypatch.setattr(
        persist, "read_customers", lambda conn, ids: pd.DataFrame(columns=persist.STORED_CUSTOMER_COLUMNS)
    )
    with pytest.raises(StoreError) as caught:
        load(store_engine, rows({"order_id": "T2", **PERSONAL}))
    printed = "".join(traceback.format_exception(caught.value))
    assert "The intake of 2025-12-12 from test failed in the store" in printed
    assert "IntegrityError" in printed or "UniqueViolation" in printed
    for value in (*PERSONAL.values(), "c1", "13800000001"):
        assert value not in printed
    assert caught.value.__context__ is None and caught.value.__cause__ is None


def test_store_errors_are_described_by_kind_and_names_only():
    import sqlite3

    from huitouke.store.errors import describe

    assert describe(sqlite3.IntegrityError("UNIQUE constraint failed: customers.customer_id")) == (
        "IntegrityError, UNIQUE constraint failed: customers.customer_id"
    )
    assert describe(sqlite3.OperationalError('near "13912345678": syntax error')) == "OperationalError"


def test_rerunning_a_day_adds_no_second_conflict_row(store_engine):
    load(store_engine, rows({}))
    conflicting = rows({"amount": "999", "line_amount": "999"})
    first = load(store_engine, conflicting)
    second = load(store_engine, conflicting)
    # The same order id with other content again (a row whose parsed values differ per run).
    third = load(store_engine, rows({"amount": "998", "line_amount": "998"}))
    assert [s.quarantined_by_reason for s in (first, second, third)] == [{"conflicting_order": 1}] * 3
    assert [s.new_quarantine_rows for s in (first, second, third)] == [1, 0, 0]
    assert count(store_engine, quarantine) == 1
    # Another day repeating the conflict records it for that day.
    later = load(store_engine, conflicting, date(2025, 12, 13))
    assert later.new_quarantine_rows == 1


def test_a_refund_row_without_lines_moves_an_order_stored_with_lines(store_engine):
    load(store_engine, rows({}, {"order_id": "T2"}))
    no_lines = rows({"status": "refunded"}, {"order_id": "T2", "status": "refunded", "amount": "5"})
    no_lines = no_lines.drop(columns=["sku", "category", "quantity", "line_amount"])
    summary = load(store_engine, no_lines, date(2025, 12, 15))
    assert (summary.updated, summary.quarantined_by_reason) == (1, {"conflicting_order": 1})
    assert stored(store_engine, "T1").status == "refunded"
    assert stored(store_engine, "T2").status == "paid"  # its amount differs: still a conflict
    assert count(store_engine, order_lines) == 2  # the stored lines stay
    again = load(store_engine, no_lines, date(2025, 12, 15))
    assert (again.updated, again.unchanged, again.new_quarantine_rows) == (0, 1, 0)


def test_a_larger_partial_refund_moves_the_order_and_a_smaller_one_keeps_it(store_engine):
    from datetime import datetime

    from huitouke.segments.persist import mark_applied

    load(store_engine, rows({}, {"order_id": "T2"}))
    with store_engine.begin() as conn:
        mark_applied(conn, ["T1", "T2"], datetime(2025, 12, 13))
    moved = load_batch(store_engine, with_refunds(rows({}, {"order_id": "T2"}), {"T1": 3000}), "test", DAY)
    assert (moved.updated, moved.unchanged, moved.quarantined) == (1, 1, 0)
    first = stored(store_engine, "T1")
    assert (first.refunded_cents, first.status, first.state_applied_at, first.folded_as_paid) == (
        3000,
        "paid",
        None,
        True,
    )
    assert stored(store_engine, "T2").refunded_cents == 0
    smaller = load_batch(store_engine, with_refunds(rows({}), {"T1": 1000}), "test", DAY)
    assert (smaller.updated, smaller.unchanged, smaller.quarantined) == (0, 1, 0)
    assert stored(store_engine, "T1").refunded_cents == 3000
    # A status move keeps the larger refund; a new order stores its refund.
    later = with_refunds(rows({"status": "completed"}, {"order_id": "T3"}), {"T3": 500})
    load_batch(store_engine, later, "test", DAY)
    assert (stored(store_engine, "T1").status, stored(store_engine, "T1").refunded_cents) == (
        "completed",
        3000,
    )
    assert stored(store_engine, "T3").refunded_cents == 500


_STATUS_STRATEGY = st.sampled_from(records.STATUSES)


def _order_frame(specs):
    return pd.DataFrame(
        {
            "order_id": [s[0] for s in specs],
            "customer_id": [s[1] for s in specs],
            "paid_at": pd.to_datetime(["2025-12-12 02:00"] * len(specs)),
            "amount_cents": [s[2] for s in specs],
            "status": [s[3] for s in specs],
            "refunded_cents": [s[4] for s in specs],
            "content_hash": [f"{s[1]}/{s[2]}/{s[5]}" for s in specs],  # s[5]: the lines
            "source_updated_at": pd.NaT,
        }
    )


_ORDER_SPEC = st.tuples(
    st.sampled_from(["c1", "c2"]),
    st.sampled_from([100, 200]),
    _STATUS_STRATEGY,
    st.sampled_from([0, 0, 30, 60]),
    st.sampled_from(["L1", "L2"]),
)


@settings(max_examples=60, deadline=None)
@given(
    stored_specs=st.dictionaries(st.sampled_from([f"T{i}" for i in range(6)]), _ORDER_SPEC, max_size=6),
    incoming_specs=st.dictionaries(st.sampled_from([f"T{i}" for i in range(8)]), _ORDER_SPEC, max_size=8),
    lined=st.sets(st.sampled_from([f"T{i}" for i in range(8)])),
)
def test_every_order_lands_in_one_outcome_and_sorting_again_after_the_writes_moves_nothing(
    stored_specs, incoming_specs, lined
):
    stored_frame = _order_frame([(k, *v) for k, v in stored_specs.items()]).assign(
        state_applied_at=pd.NaT, folded_as_paid=None
    )
    incoming = _order_frame([(k, *v) for k, v in incoming_specs.items()])
    first = sort_orders(incoming, stored_frame, lined)
    outcomes = len(first.new) + len(first.moves) + first.unchanged + len(first.conflicts)
    assert outcomes == len(incoming)
    for move in plain_records(first.moves):
        old, row = stored_specs[move["order_id"]], incoming_specs[move["order_id"]]
        assert records.STATUS_RANK[move["status"]] >= records.STATUS_RANK[old[2]]
        assert move["refunded_cents"] == max(old[3], row[3])
    # The store after the writes: the new orders inserted, the moves applied.
    after = stored_frame.set_index("order_id")
    for move in plain_records(first.moves):
        after.loc[move["order_id"], ["status", "refunded_cents"]] = [move["status"], move["refunded_cents"]]
    after = pd.concat([after.reset_index(), first.new.assign(state_applied_at=pd.NaT, folded_as_paid=None)])
    second = sort_orders(incoming, after, lined)
    assert (len(second.new), len(second.moves)) == (0, 0)
    assert second.unchanged == len(first.new) + len(first.moves) + first.unchanged
