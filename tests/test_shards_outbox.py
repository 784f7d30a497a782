"""Issue 16, stages 4 and 5 split into customer shards, on SQLite and PostgreSQL: the outbox a
day renders and the statuses delivery leaves through the real gateway simulator are the same for
one shard and for three (rendered in any order, delivered by three senders at once); three
concurrent shard senders, one of them killed mid-call and run again, send each message once and
claim only their own customers'; the campaign's day row stays right whichever shard ends last."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta

import pytest
from deliver_rows import FAST_RULES, SHOP_TZ, seed, statuses, yesterday
from deliver_rows import job as make_job
from sqlalchemy import delete, insert, select, text, update
from store_rows import add_customer, add_order, segments_of

from huitouke.campaigns import load_playbook
from huitouke.campaigns.daily import run_day as plan_campaigns
from huitouke.campaigns.persist import FAILED, RENDERED
from huitouke.deliver import persist
from huitouke.deliver.daily import run_day as deliver_day
from huitouke.deliver.daily import summarize_day
from huitouke.deliver.persist import out_id_of
from huitouke.deliver.providers.webhook import WebhookProvider
from huitouke.gateway.state import GatewayFaults
from huitouke.render import persist as render_persist
from huitouke.render.daily import run_day as render_campaign
from huitouke.shards import Shard, bucket_of
from huitouke.store import migrate
from huitouke.store.schema import campaign_days, outbox

NOW = datetime(2025, 6, 3, 0, 5)
SQLITE_ONLY = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
# What a message is, whoever rendered it: its key, texts, addresses, coupon and bucket.
MESSAGE = (
    "campaign",
    "customer_id",
    "entered_on",
    "wave",
    "channel",
    "template",
    "recipient",
    "subject",
    "body",
    "coupon_code",
    "sms_segments",
    "bucket",
)


def webhook(gw) -> WebhookProvider:
    return WebhookProvider(f"{gw.url}/webhook", "test-token", batch_size=5, timeout_s=2, max_concurrency=2)


def planned_shop(engine, customers: int = 36) -> tuple[object, list[str]]:
    """Customers who bought yesterday (a phone and an e-mail address each), the day planned."""
    day = yesterday()
    for i in range(customers):
        cid = add_customer(engine, f"k{i}", phone=f"1380013{i:04d}", email=f"k{i}@example.com")
        add_order(engine, f"o{i}", cid, day, 80 + 7 * i)
    playbook = load_playbook()
    planned = plan_campaigns(engine, day, playbook, segments_of(engine, playbook, day), now=NOW)
    return playbook, planned.campaigns()


def render_all(engine, playbook, campaigns: list[str], shards: list[Shard]) -> None:
    """Each campaign's shards rendered; on PostgreSQL at once (threads), as N workers would (the
    SQLite store has one writer: its pool has one slot)."""

    def render(shard: Shard) -> None:
        for campaign in campaigns:
            render_campaign(engine, yesterday(), campaign, playbook, now=NOW, shard=shard)

    if engine.dialect.name != "postgresql" or len(shards) == 1:
        for shard in shards:
            render(shard)
        return
    errors: list[BaseException] = []

    def guarded(shard: Shard) -> None:
        try:
            render(shard)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(s,)) for s in shards]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def messages(engine) -> dict[tuple, dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(*(outbox.c[c] for c in (*MESSAGE, "status")))).mappings().all()
    return {tuple(r[c] for c in MESSAGE[:5]): dict(r) for r in rows}


def day_rows(engine) -> dict[str, tuple]:
    c = campaign_days.c
    with engine.connect() as conn:
        rows = conn.execute(select(c.campaign, c.status, c.error, c.messages_queued)).all()
    return {r.campaign: (r.status, r.error, r.messages_queued) for r in rows}


def deliver_shards(engine, gw, count: int) -> list[dict]:
    """The day's SMS delivered by ``count`` shard senders at once (threads), as the DAG maps them."""
    results: list[dict] = []
    errors: list[BaseException] = []

    def sender(shard: Shard) -> None:
        try:
            job = make_job({"sms": webhook(gw)}, owner=f"run/deliver[{shard.label()}]/1", shard=shard)
            results.append(deliver_day(engine, job).as_dict())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(s,)) for s in Shard.all_of(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    return results


def accepted(gw, engine) -> dict[int, int]:
    with engine.connect() as conn:
        return {
            r.message_id: gw.state.times_accepted(out_id_of(r._mapping)) for r in conn.execute(select(outbox))
        }


def test_one_shard_and_three_render_and_deliver_the_same_outbox(store_engine, gw):
    playbook, campaigns = planned_shop(store_engine)
    assert campaigns

    render_all(store_engine, playbook, campaigns, [Shard.whole()])
    whole, whole_days = messages(store_engine), day_rows(store_engine)
    assert whole and {m["status"] for m in whole.values()} == {"queued"}
    assert all(m["bucket"] == bucket_of(m["customer_id"]) for m in whole.values())
    delivered = deliver_shards(store_engine, gw, 1)
    whole_sent = messages(store_engine)

    with store_engine.begin() as conn:  # the same planned day, rendered again by three shards
        conn.execute(delete(outbox))
        conn.execute(update(campaign_days).values(status="planned", messages_queued=0))
    gw.state.reset(GatewayFaults())
    render_all(store_engine, playbook, campaigns, [Shard(2, 3), Shard(0, 3), Shard(1, 3)])
    assert messages(store_engine) == whole and day_rows(store_engine) == whole_days
    by_shard = deliver_shards(store_engine, gw, 3)
    assert messages(store_engine) == whole_sent
    assert {m["status"] for m in whole_sent.values() if m["channel"] == "sms"} == {"sent"}
    assert set(accepted(gw, store_engine).values()) <= {0, 1}

    # Each shard sent its own customers' messages; the reduce step's table is the whole day's.
    sent_by_shard = [r["outcomes"].get("sent", 0) for r in by_shard]
    assert all(sent_by_shard) and sum(sent_by_shard) == delivered[0]["outcomes"]["sent"]
    summary = summarize_day(store_engine, yesterday(), FAST_RULES, by_shard)
    assert summary.as_dict()["outcomes"] == delivered[0]["outcomes"]
    assert "3 tasks reported" in summary.as_text()


KILLED_SHARD = textwrap.dedent(
    """
    import dataclasses
    import sys
    sys.path.insert(0, {tests!r})
    from deliver_rows import FAST_RULES, job
    from huitouke.deliver.daily import run_day
    from huitouke.deliver.providers.webhook import WebhookProvider
    from huitouke.shards import Shard
    from huitouke.store.connection import make_engine

    provider = WebhookProvider({url!r}, "test-token", batch_size=3, timeout_s=5, max_concurrency=1)
    rules = dataclasses.replace(FAST_RULES, claim_rows=3)  # one batch a claim: a lease of one round
    run_day(make_engine({store!r}), job({{"sms": provider}}, owner="doomed", rules=rules, shard=Shard(1, 3)))
    """
)


def test_three_shard_senders_one_killed_and_run_again_send_each_message_once(store_engine, store_url, gw):
    gw.state.set_faults(latency_ms=120)
    seed(store_engine, 90)
    with store_engine.connect() as conn:
        owner_of = {r.message_id: bucket_of(r.customer_id) % 3 for r in conn.execute(select(outbox))}
    script = KILLED_SHARD.format(tests=os.path.dirname(__file__), url=f"{gw.url}/webhook", store=store_url)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ})
    deadline = time.monotonic() + 60
    while gw.state.stats()["accepted"] < 6 and time.monotonic() < deadline:
        assert proc.poll() is None, "the sender ended before it could be killed"
        time.sleep(0.02)
    errors: list[BaseException] = []

    def sender(index: int) -> None:
        try:
            deliver_day(
                store_engine, make_job({"sms": webhook(gw)}, owner=f"s{index}", shard=Shard(index, 3))
            )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    others = [threading.Thread(target=sender, args=(i,)) for i in (0, 2)]
    for t in others:
        t.start()
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-call, while the two others send
    proc.wait()
    for t in others:
        t.join()
    assert not errors
    now = statuses(store_engine)
    assert {now[m][0] for m, s in owner_of.items() if s != 1} == {"sent"}
    assert {now[m][0] for m, s in owner_of.items() if s == 1} <= {"queued", "sending", "sent"}
    assert any(now[m][0] == "sending" for m, s in owner_of.items() if s == 1)  # left by the dead one

    gw.state.set_faults(latency_ms=0)
    time.sleep(FAST_RULES.lease_seconds)  # its lease runs out; the task is run again
    deliver_day(store_engine, make_job({"sms": webhook(gw)}, owner="s1-again", shard=Shard(1, 3)))
    assert set(accepted(gw, store_engine).values()) == {1}
    assert {s for s, _ in statuses(store_engine).values()} == {"sent"}


@SQLITE_ONLY
def test_the_campaign_day_row_stays_failed_while_any_shard_failed(store_engine):
    playbook, campaigns = planned_shop(store_engine, customers=12)
    campaign, day = campaigns[0], yesterday()

    def record(shard: Shard, error: str | None = None) -> None:
        with store_engine.begin() as conn:
            if error is None:
                render_persist.record_queued(conn, day, campaign, NOW, shard)
            else:
                render_persist.record_failure(conn, day, campaign, error, NOW, shard)

    record(Shard(0, 3), "line 1 broken")
    record(Shard(2, 3), "line 2 broken\nsecond line")
    record(Shard(1, 3))
    assert day_rows(store_engine)[campaign][0] == FAILED
    record(Shard(0, 3))
    status, error, _ = day_rows(store_engine)[campaign]
    assert status == FAILED and error == "shard 3/3: line 2 broken\nsecond line"
    record(Shard(2, 3))
    assert day_rows(store_engine)[campaign][:2] == (RENDERED, None)
    # One shard (every customer) as before: its outcome is the row's.
    record(Shard.whole(), "broken")
    assert day_rows(store_engine)[campaign][:2] == (FAILED, "broken")
    record(Shard.whole())
    assert day_rows(store_engine)[campaign][:2] == (RENDERED, None)


@SQLITE_ONLY
def test_the_migration_fills_the_bucket_of_existing_messages(store_engine):
    from alembic import command

    cfg = migrate.alembic_config()
    with store_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0016")
    seed_before = ["k1", "k2", "顾客"]
    with store_engine.begin() as conn:
        for cid in seed_before:
            conn.execute(
                text(
                    "INSERT INTO outbox (campaign, customer_id, entered_on, wave, variant, channel, template,"
                    " business_date, status, attempts, created_at) VALUES ('c', :cid, '2025-06-01', 1, '',"
                    " 'sms', 'sms/x', '2025-06-01', 'queued', 0, '2025-06-01 00:00:00')"
                ),
                {"cid": cid},
            )
    migrate.upgrade(store_engine)
    with store_engine.connect() as conn:
        found = dict(conn.execute(select(outbox.c.customer_id, outbox.c.bucket)).all())
    assert found == {cid: bucket_of(cid) for cid in seed_before}
    with store_engine.begin() as conn:
        conn.execute(insert(outbox), [{**_row("k9"), "status": "queued"}])  # the default fills it
        assert conn.scalar(select(outbox.c.bucket).where(outbox.c.customer_id == "k9")) == bucket_of("k9")


def _row(cid: str) -> dict:
    return {
        "campaign": "c",
        "customer_id": cid,
        "entered_on": NOW.date(),
        "wave": 1,
        "variant": "",
        "channel": "sms",
        "template": "sms/x",
        "business_date": NOW.date(),
        "attempts": 0,
        "created_at": NOW,
    }


def test_a_shard_claims_only_its_rows_from_where_it_left_then_from_the_start(store_engine):
    seed(store_engine, 90)
    with store_engine.connect() as conn:
        buckets = {r.message_id: r.bucket for r in conn.execute(select(outbox))}
    mine = {m for m, b in buckets.items() if b % 3 == 0}
    middle = sorted(buckets[m] for m in mine)[len(mine) // 2]
    shard = Shard(0, 3)
    selection = persist.Selection(("sms",), yesterday(), yesterday(), shard=shard, from_bucket=middle)
    lease = persist.Lease("s0", timedelta(seconds=30))
    now = datetime.now()
    with store_engine.begin() as conn:
        first = persist.claim(conn, selection, 5, lease, now, lambda tier: (9, 7), SHOP_TZ)
    taken = [r["bucket"] for r in first.rows]
    assert taken == sorted(taken) and min(taken) >= middle  # from where the last claim ended
    with store_engine.begin() as conn:
        rest = persist.claim(conn, selection, 1000, lease, now, lambda tier: (9, 7), SHOP_TZ)
    ids = {r["message_id"] for r in (*first.rows, *rest.rows)}
    assert ids == mine  # then from bucket 0: every row of the shard, none of the others'
    assert rest.next_bucket < middle
