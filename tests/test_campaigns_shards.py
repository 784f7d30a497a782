"""Planning by customer shards (issue 16): the candidates of any split of the customers, decided
together, give the plan of all customers at once, row for row; the staged path of the daily DAG
(one task per shard, then the reduce) stores what a single run stores, on SQLite and PostgreSQL,
over several days, with the daily global cap, member-tier caps and the entry limit binding."""

from __future__ import annotations

import itertools
import os
import random
from datetime import date, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import func, select
from store_rows import add_customer, add_order, segments_of, stored_plan

from huitouke.campaigns import parse_playbook, plan_day
from huitouke.campaigns.daily import plan_shard, reduce_day, run_day
from huitouke.campaigns.persist import MissingShards, staged_candidates
from huitouke.campaigns.plan import decide_day, plan_candidates
from huitouke.segments import SEGMENTS_COLUMNS
from huitouke.shards import Shard
from huitouke.store.schema import (
    campaign_plan_shards,
)

D0 = date(2025, 6, 2)
NOW = datetime(2025, 6, 3, 0, 5)
DAYS = [D0 + timedelta(days=i) for i in range(5)]


def playbook(cap: int):
    """Three campaigns over one audience: a service campaign every other day, a marketing one with
    a coupon every day for three days (the member cap cuts its third wave), one with an entry
    limit; a daily global cap far below the day's messages."""
    state = {"event": "state"}
    return parse_playbook(
        {
            "shop": {"name": "测试小店"},
            "contact_pressure": {
                "member_tiers": {},
                "other_tiers": {"max_contacts": 2, "per_days": 3},
                "daily_global_cap": cap,
            },
            "campaigns": {
                "tips": {
                    "kind": "service",
                    "priority": 60,
                    "entry": {**state, "state": {"min_paid_orders": 2}},
                    "templates": ["sms/tips"],
                    "holdout": {"share": 0.1},
                    "waves": {"first_after_days": 1, "interval_days": 2, "max_waves": 2},
                },
                "welcome": {
                    "kind": "marketing",
                    "priority": 50,
                    "entry": state,
                    "templates": ["sms/welcome", "email/welcome"],
                    "holdout": {"share": 0.2},
                    "waves": {"first_after_days": 0, "interval_days": 1, "max_waves": 3},
                    "coupon": {"value_cny": 10, "min_spend_cny": 50, "valid_days": 7},
                },
                "nudge": {
                    "kind": "marketing",
                    "priority": 40,
                    "entry": state,
                    "templates": ["sms/nudge"],
                    "holdout": {"share": 0.1},
                    "max_new_entries_per_day": 15,
                    "waves": {"first_after_days": 0, "interval_days": 1, "max_waves": 2},
                    "coupon": {"value_cny": 5, "min_spend_cny": 0, "valid_days": 3},
                },
            },
        },
        "test.yaml",
    )


# ------------------------------------------------------------------------------- the pure split


def _segments(ids: list[str]) -> pd.DataFrame:
    rng = random.Random(7)
    rows = []
    for cid in ids:
        rows.append(
            {
                "customer_id": cid,
                "lifecycle": "repeat",
                "r_score": 3,
                "f_score": 3,
                "m_score": 3,
                "member_tier": rng.choice(["normal", "active", None]),
                "value_tier": "mid",
                "low_value_acquisition": False,
                "category_group": rng.choice(["food", "home"]),
                "acquisition_source": "organic",
                "days_since_first_order": 200,
                "days_since_last_order": rng.choice([0, 5, 60]),
                "paid_orders": rng.choice([1, 2, 3]),
                "total_cents": 20_000,
                "aov_cents": 10_000,
            }
        )
    return pd.DataFrame(rows, columns=list(SEGMENTS_COLUMNS))


def _contacts(ids: list[str]) -> pd.DataFrame:
    rng = random.Random(8)
    return pd.DataFrame(
        {
            "customer_id": ids,
            "phone": [rng.choice(["13800138000", None]) for _ in ids],
            "email": [rng.choice(["x@example.com", None]) for _ in ids],
            "sms_opt_out": [rng.random() < 0.1 for _ in ids],
            "email_opt_out": False,
            "birthday": None,
        }
    )


def _shard_of(frame: pd.DataFrame, shard: Shard) -> pd.DataFrame:
    return frame[shard.mask(frame["customer_id"].astype(str))].reset_index(drop=True)


def _split_plan(pb, day, segments, contacts, entries, history, count: int):
    """The day planned shard by shard (each shard's rows only), decided in a shuffled order."""
    parts = [
        plan_candidates(
            pb,
            day,
            _shard_of(segments, shard),
            contacts=_shard_of(contacts, shard),
            entries=None if entries is None else _shard_of(entries, shard),
            history=None if history is None else _shard_of(history, shard),
        )
        for shard in Shard.all_of(count)
    ]
    random.Random(count).shuffle(parts)
    return decide_day(pb, day, parts)


def _history_of(waves: pd.DataFrame) -> pd.DataFrame:
    treated = waves[waves["outcome"] == "treated"]
    return pd.DataFrame(
        {
            "customer_id": treated["customer_id"],
            "contacted_on": treated["due_on"],
            "counts_toward_cap": treated["counts_toward_cap"],
        }
    )


def _entries_after(stored: pd.DataFrame | None, planned: pd.DataFrame) -> pd.DataFrame:
    """The stored entries once a day's entries are upserted."""
    if stored is None:
        return planned
    key = ["campaign", "customer_id", "entered_on"]
    merged = pd.concat([stored, planned], ignore_index=True).drop_duplicates(key, keep="last")
    return merged.reset_index(drop=True)


@pytest.mark.parametrize("count", [2, 3, 7])
def test_the_shards_candidates_decided_together_are_the_plan_of_all_customers(count):
    pb = playbook(cap=150)
    ids = [f"k{i:03d}" for i in range(200)]
    segments, contacts = _segments(ids), _contacts(ids)
    entries = history = None
    seen = set()
    for day in DAYS[:4]:
        whole = plan_day(pb, day, segments, contacts, entries=entries, history=history)
        split = _split_plan(pb, day, segments, contacts, entries, history, count)
        pd.testing.assert_frame_equal(split.entries, whole.entries)
        pd.testing.assert_frame_equal(split.waves, whole.waves)
        pd.testing.assert_frame_equal(split.summary, whole.summary)
        assert split.notes == whole.notes and split.sends is None
        seen |= set(whole.waves["reason"].dropna())
        seen |= {"deferred"} if whole.summary["deferred"].sum() else set()
        seen |= {"repeated"} if (whole.waves["wave"] > 1).any() else set()
        entries = _entries_after(entries, whole.entries)
        past = _history_of(whole.waves)
        history = past if history is None else pd.concat([history, past], ignore_index=True)
    assert {"cap_daily_global", "cap_member_tier", "lower_priority", "deferred", "repeated"} <= seen


# ------------------------------------------------------------------------- the store, staged


_databases = itertools.count(1)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_stores(request, tmp_path):
    """Two empty migrated CRM stores on the same database kind: one planned in one run, one by
    shards."""
    from huitouke.store.connection import make_engine
    from huitouke.store.migrate import upgrade

    if request.param == "sqlite":
        urls = [f"sqlite:///{tmp_path / f'{name}.sqlite'}" for name in ("one", "shards")]
    else:
        server = request.getfixturevalue("postgres_server")
        urls = [server.create_database(f"crm_shards_{os.getpid()}_{next(_databases)}") for _ in range(2)]
    engines = [make_engine(url) for url in urls]
    for engine in engines:
        upgrade(engine)
    yield engines
    for engine in engines:
        engine.dispose()


def _shop(engine) -> None:
    """80 customers who bought before D0 (a third with e-mail, a few opted out of SMS), some of
    whom buy again during the days planned."""
    rng = random.Random(5)
    n = itertools.count(1)
    for i in range(80):
        cid = f"k{i:03d}"
        email = "x@example.com" if i % 3 == 0 else None
        add_customer(engine, cid, email=email, sms_opt_out=i % 17 == 0)
        for _ in range(rng.choice([1, 2, 3])):
            add_order(
                engine, f"o{next(n)}", cid, D0 - timedelta(days=rng.randint(1, 20)), rng.choice([60, 120])
            )
        if i % 9 == 0:
            add_order(engine, f"o{next(n)}", cid, rng.choice(DAYS[1:]), 80)


def _plan_by_shards(engine, pb, day: date, count: int):
    segments = segments_of(engine, pb, day)
    for shard in Shard.all_of(count):
        plan_shard(engine, day, pb, shard, segments=segments, now=NOW)
    return reduce_day(engine, day, pb, count, now=NOW)


def test_a_store_planned_by_shards_holds_the_plan_of_one_run(two_stores):
    one, sharded = two_stores
    pb = playbook(cap=60)
    for engine in two_stores:
        _shop(engine)
    for day in DAYS:
        single = run_day(one, day, pb, segments_of(one, pb, day), now=NOW)
        by_shards = _plan_by_shards(sharded, pb, day, 3)
        assert single.planned and by_shards.planned
        assert by_shards.campaigns() == single.campaigns()
        pd.testing.assert_frame_equal(by_shards.summary, single.summary)
    a, b = stored_plan(one), stored_plan(sharded)
    for name in a:
        pd.testing.assert_frame_equal(b[name], a[name], obj=name)
    waves, days = a["waves"], a["days"]
    assert {"cap_daily_global", "cap_member_tier"} <= set(waves["reason"].dropna())
    assert (waves["wave"] > 1).any() and (waves["outcome"] == "treated").any()
    assert len(a["coupons"]) > 0
    assert days["figures"].str.contains('"deferred": [1-9]', regex=True).any()
    with sharded.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(campaign_plan_shards)) == 0  # dropped


def test_a_shard_or_the_reduce_run_again_stores_the_same(two_stores):
    _, engine = two_stores
    pb = playbook(cap=60)
    _shop(engine)
    _plan_by_shards(engine, pb, DAYS[0], 3)
    day = DAYS[1]
    segments = segments_of(engine, pb, day)
    for shard in Shard.all_of(3):
        plan_shard(engine, day, pb, shard, segments=segments, now=NOW)
    with engine.connect() as conn:
        before = staged_candidates(conn, day, 3)
    again = plan_shard(engine, day, pb, Shard(1, 3), segments=segments, now=NOW)  # a shard's retry
    assert again.staged
    with engine.connect() as conn:
        after = staged_candidates(conn, day, 3)
    for x, y in zip(before, after, strict=True):
        pd.testing.assert_frame_equal(x.entries, y.entries)
        pd.testing.assert_frame_equal(x.waves, y.waves)
        assert x.figures() == y.figures()

    planned = reduce_day(engine, day, pb, 3, now=NOW)
    stored = stored_plan(engine)
    rerun = reduce_day(engine, day, pb, 3, now=NOW)  # the reduce's retry: the stored plan stands
    assert planned.planned and not rerun.planned and "planned before" in rerun.note
    late = plan_shard(engine, day, pb, Shard(0, 3), segments=segments, now=NOW)
    assert not late.staged and "planned before" in late.note
    for name, frame in stored_plan(engine).items():
        pd.testing.assert_frame_equal(frame, stored[name], obj=name)
    assert rerun.campaigns() == planned.campaigns()


def test_the_reduce_refuses_a_day_whose_shards_did_not_all_stage(two_stores):
    _, engine = two_stores
    pb = playbook(cap=60)
    _shop(engine)
    segments = segments_of(engine, pb, D0)
    plan_shard(engine, D0, pb, Shard(0, 3), segments=segments, now=NOW)
    plan_shard(engine, D0, pb, Shard(2, 3), segments=segments, now=NOW)
    with pytest.raises(MissingShards, match=r"shard 2/3"):
        reduce_day(engine, D0, pb, 3, now=NOW)
    assert stored_plan(engine)["waves"].empty
    plan_shard(engine, D0, pb, Shard(1, 3), segments=segments, now=NOW)
    assert reduce_day(engine, D0, pb, 3, now=NOW).planned


def test_the_reduce_refuses_candidates_planned_on_segments_computed_again_since(two_stores):
    from huitouke.segments.daily import run_day as update_segments
    from huitouke.segments.settings import load_segment_settings

    _, engine = two_stores
    pb = playbook(cap=60)
    _shop(engine)
    update_segments(engine, D0, load_segment_settings())
    for shard in Shard.all_of(2):
        assert plan_shard(engine, D0, pb, shard, now=NOW).staged  # segments read from the store
    update_segments(engine, D0, load_segment_settings())  # stage 2 again: its run stamped anew
    with pytest.raises(MissingShards, match=r"shard 1/2, shard 2/2 were planned on earlier segments"):
        reduce_day(engine, D0, pb, 2, now=NOW)
    for shard in Shard.all_of(2):
        plan_shard(engine, D0, pb, shard, now=NOW)
    assert reduce_day(engine, D0, pb, 2, now=NOW).planned
