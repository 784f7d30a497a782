"""Stage 2 split into customer shards (``scale.shards``), on SQLite and PostgreSQL: whatever the
shard count, and whatever is run again after a partial failure (one shard, the reduce, the whole
day), the store holds exactly what the single-transaction run stores: state, spend, history,
transitions and KPIs, day after day, through refunds, cancellations and a rebuild."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest
from test_segments_store import FIRST, Shop, Store, _intake

from huitouke.calendar.daily import DayRefused
from huitouke.segments import classify, load_segment_settings, persist
from huitouke.segments.daily import reduce_day, run_day, run_shard, segments_of_shard
from huitouke.shards import Shard
from huitouke.store.schema import segment_kpis


@pytest.fixture
def trio(store_url, request, tmp_path, monkeypatch):
    """Three stores on the same database kind: run whole, in 3 shards, and in 1, 2 or 3 shards
    by turns (the shard count changed between days, the snapshot of the whole runs in between)."""
    monkeypatch.setenv("HUITOUKE_CACHE_DIR", str(tmp_path / "cache"))
    urls = [store_url]
    for suffix in ("b", "c"):
        if store_url.startswith("sqlite"):
            urls.append(f"sqlite:///{tmp_path / f'crm-{suffix}.sqlite'}")
        else:
            name = store_url.rsplit("/", 1)[1]
            urls.append(request.getfixturevalue("postgres_server").create_database(f"{name}_{suffix}"))
    stores = [Store(url, None) for url in urls]
    yield stores
    for store in stores:
        store.engine.dispose()


RULES = load_segment_settings()


def _day(trio, shop: Shop, day: date, turn: int) -> None:
    frame = shop.day(day)
    for store in trio:
        _intake(store.engine, frame, day)
    _run(trio, day, turn)


def _run(trio, day: date, turn: int) -> None:
    whole, sharded, mixed = trio
    run_day(whole.engine, day, RULES)
    run_day(sharded.engine, day, RULES, 3)
    run_day(mixed.engine, day, RULES, 1 + turn % 3)
    assert whole.dump() == sharded.dump() == mixed.dump()


def test_one_shard_or_many_store_the_same_day_after_day(trio):
    whole, sharded, mixed = trio
    shop = Shop(seed=11, customers=60)
    days = [FIRST + timedelta(days=d) for d in range(9)]
    for turn, day in enumerate(days):
        if turn == 5:  # a changed state definition: every store rebuilds the state
            for store in trio:
                with store.engine.begin() as conn:
                    conn.execute(segment_kpis.update().values(state_fingerprint="0123456789abcdef"))
        _day(trio, shop, day, turn)
        if turn in (3, 6):  # the latest day again: recomputed identically
            before = whole.dump()
            _run(trio, day, turn + 1)
            assert whole.dump() == before
    for store in trio:
        store.check_rebuild(days[-1])
    # An older day is kept as computed, in shards as whole.
    before = whole.dump()
    assert run_day(sharded.engine, days[2], RULES, 3).recomputed is False
    assert sharded.dump() == before


def test_a_shard_or_the_reduce_run_again_after_a_partial_failure_changes_nothing(trio):
    whole, sharded, mixed = trio
    shop = Shop(seed=12, customers=50)
    days = [FIRST + timedelta(days=d) for d in range(4)]
    for turn, day in enumerate(days[:2]):
        _day(trio, shop, day, turn)
    frame = shop.day(days[2])
    for store in trio:
        _intake(store.engine, frame, days[2])
    run_day(whole.engine, days[2], RULES)
    run_day(mixed.engine, days[2], RULES, 2)
    shards = Shard.all_of(3)
    run_shard(sharded.engine, days[2], RULES, shards[0])
    run_shard(sharded.engine, days[2], RULES, shards[1])
    with pytest.raises(RuntimeError, match="shard 3/3 not run"):  # the reduce waits for every shard
        reduce_day(sharded.engine, days[2], RULES, 3)
    run_shard(sharded.engine, days[2], RULES, shards[1])  # a retry of a shard that committed
    run_shard(sharded.engine, days[2], RULES, shards[2])
    reduce_day(sharded.engine, days[2], RULES, 3)
    assert sharded.dump() == whole.dump()
    run_shard(sharded.engine, days[2], RULES, shards[0])  # a retry after the reduce
    reduce_day(sharded.engine, days[2], RULES, 3)  # and the reduce again
    assert sharded.dump() == whole.dump()
    _day(trio, shop, days[3], 1)


def test_a_day_never_computed_is_refused_by_every_shard_and_the_reduce(trio):
    whole, sharded, _ = trio
    shop = Shop(seed=13)
    days = [FIRST + timedelta(days=d) for d in range(3)]
    _day(trio, shop, days[0], 0)
    _intake(sharded.engine, shop.day(days[2]), days[2])
    run_day(sharded.engine, days[2], RULES, 3)
    before = sharded.dump()
    with pytest.raises(DayRefused):
        run_shard(sharded.engine, days[1], RULES, Shard(1, 3))
    with pytest.raises(DayRefused):
        reduce_day(sharded.engine, days[1], RULES, 3)
    assert sharded.dump() == before


def test_segments_of_a_shard_are_the_whole_classification_restricted_to_it(trio):
    _, sharded, _ = trio
    shop = Shop(seed=14, customers=80)
    days = [FIRST + timedelta(days=d) for d in range(3)]
    for turn, day in enumerate(days):
        _day(trio, shop, day, turn)
    with sharded.engine.connect() as conn:
        state = persist.read_state(conn)
        whole = classify(state, days[-1], RULES)
        for shard in Shard.all_of(4):
            part = segments_of_shard(conn, days[-1], RULES, shard)
            mine = shard.mask(whole["customer_id"])
            expected = whole[mine].reset_index(drop=True)
            pd.testing.assert_frame_equal(part.astype(str), expected.astype(str))
        with pytest.raises(RuntimeError, match="not the latest"):
            segments_of_shard(conn, days[0], RULES, Shard(0, 4))


def test_the_dags_adapters_run_the_shards_and_the_reduce(trio, monkeypatch):
    """What the mapped ``update_segments`` and ``reduce_segments`` call, with the count the DAG
    was parsed with: the same store as the whole run; the summaries name the shard."""
    from huitouke.config import load_settings
    from huitouke.pipeline import day_bounds, reduce_segments, update_segment_shard

    whole, sharded, _ = trio
    shop = Shop(seed=15)
    day = FIRST
    frame = shop.day(day)
    for store in (whole, sharded):
        _intake(store.engine, frame, day)
    run_day(whole.engine, day, RULES)
    monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", sharded.conn)
    settings = load_settings()
    start = day_bounds(day, settings)[0]
    summaries = [update_segment_shard(start, index, 2, settings) for index in range(2)]
    assert [s["shard"] for s in summaries] == ["shard 1/2", "shard 2/2"]
    reduced = reduce_segments(start, 2, settings)
    assert sharded.dump() == whole.dump()
    assert reduced["recomputed"] is True and reduced["customers"] > 0


def test_shards_started_at_once_take_the_store_lock_in_turn_and_store_the_same(trio):
    """Celery workers may start every shard at once (PostgreSQL's pool has several slots): each
    waits for the store lock, and the day is the whole run's."""
    from concurrent.futures import ThreadPoolExecutor

    whole, sharded, _ = trio
    shop = Shop(seed=16, customers=60)
    for d in range(3):
        day = FIRST + timedelta(days=d)
        frame = shop.day(day)
        for store in (whole, sharded):
            _intake(store.engine, frame, day)
        run_day(whole.engine, day, RULES)
        with ThreadPoolExecutor(max_workers=3) as pool:
            done = list(
                pool.map(lambda s, day=day: run_shard(sharded.engine, day, RULES, s), Shard.all_of(3))
            )
        assert sum(d.customers_recomputed for d in done) > 0
        reduce_day(sharded.engine, day, RULES, 3)
        assert sharded.dump() == whole.dump()


def test_the_reduce_refuses_orders_loaded_after_the_shards_and_a_changed_state_definition(trio, monkeypatch):
    whole, sharded, _ = trio
    shop = Shop(seed=17)
    days = [FIRST + timedelta(days=d) for d in range(2)]
    for store in (whole, sharded):
        _intake(store.engine, shop.day(days[0]), days[0])
    run_day(sharded.engine, days[0], RULES, 3)
    for shard in Shard.all_of(3):
        run_shard(sharded.engine, days[1], RULES, shard)
    _intake(sharded.engine, shop.day(days[1]), days[1])  # a late load after the shards
    with pytest.raises(RuntimeError, match="not folded"):
        reduce_day(sharded.engine, days[1], RULES, 3)
    monkeypatch.setattr(type(RULES), "state_fingerprint", lambda self: "fedcba9876543210")
    with pytest.raises(RuntimeError, match="shard 1/3, shard 2/3, shard 3/3 not run"):
        reduce_day(sharded.engine, days[1], RULES, 3)


def test_a_whole_run_after_shards_ignores_a_snapshot_the_shards_could_not_delete(trio, tmp_path):
    """Day 2 whole on a machine with a snapshot; day 3's shards run elsewhere and its reduce
    fails; day 3 then runs whole on the first machine: its snapshot of day 2 is not the store's."""
    import shutil

    from huitouke.segments import snapshot

    whole, sharded, _ = trio
    shop = Shop(seed=18, customers=50)
    days = [FIRST + timedelta(days=d) for d in range(3)]
    for day in days:
        frame = shop.day(day)
        for store in (whole, sharded):
            _intake(store.engine, frame, day)
    for day in days[:2]:
        run_day(whole.engine, day, RULES)
        run_day(sharded.engine, day, RULES)
    files = snapshot.paths(snapshot.cache_dir_for(sharded.engine.url), snapshot.store_id(sharded.engine.url))
    kept = tmp_path / "other-machine"
    kept.mkdir()
    for path in files.values():
        shutil.copy(path, kept / path.name)
    for shard in Shard.all_of(3):
        run_shard(sharded.engine, days[2], RULES, shard)
    assert not any(path.exists() for path in files.values())  # this machine's copy is gone
    for path in files.values():
        shutil.copy(kept / path.name, path)  # the other machine's copy
    run_day(whole.engine, days[2], RULES)
    run_day(sharded.engine, days[2], RULES)
    assert sharded.dump() == whole.dump()
    sharded.check_rebuild(days[2])
