"""Stage 5 against the real gateway simulator over loopback, on SQLite and PostgreSQL: every rule of
sending proven by injecting the failure it guards against. Whatever fails, the simulator accepts
each message at most once, every queued message ends in a final state, and opted-out and holdout
customers, runs outside the window, backfills and late runs send nothing."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from deliver_rows import FAST_RULES, phone, seed, shop_today, statuses
from deliver_rows import job as make_job
from sqlalchemy import insert, select

from huitouke.deliver.daily import run_day
from huitouke.deliver.persist import out_id_of
from huitouke.deliver.providers.webhook import WebhookProvider
from huitouke.deliver.states import FINAL
from huitouke.store.schema import opt_outs, outbox

RECORDED = datetime(2025, 12, 1)
# The rules at the store's edge (claims, leases, at most once) run on SQLite and PostgreSQL; the
# rest is the same Python over either, so once is enough (the suite's time budget).
SQLITE_ONLY = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)


def webhook(gw, **options) -> WebhookProvider:
    values = {"batch_size": 10, "timeout_s": 0.5, "max_concurrency": 4}
    return WebhookProvider(f"{gw.url}/webhook", "test-token", **{**values, **options})


def out_ids(engine) -> dict[int, str]:
    with engine.connect() as conn:
        return {r.message_id: out_id_of(r._mapping) for r in conn.execute(select(outbox))}


def accepted_counts(gw, engine) -> dict[int, int]:
    return {mid: gw.state.times_accepted(oid) for mid, oid in out_ids(engine).items()}


def test_every_queued_message_is_sent_once(store_engine, gw):
    ids = seed(store_engine, 40)
    result = run_day(store_engine, make_job({"sms": webhook(gw)}))
    assert {s for s, _ in statuses(store_engine).values()} == {"sent"}
    assert set(accepted_counts(gw, store_engine).values()) == {1}
    assert result.as_dict()["outcomes"] == {"sent": len(ids)}
    with store_engine.connect() as conn:
        row = conn.execute(select(outbox).where(outbox.c.message_id == ids[0])).one()
    assert row.provider == "webhook" and row.provider_message_id and row.sent_at and row.attempts == 1
    assert row.claimed_by is None and row.lease_until is None


def test_under_faults_no_message_is_accepted_twice_and_every_one_ends_final(store_engine, gw, caplog):
    gw.state.set_faults(
        rate_5xx=0.2, rate_429=0.1, retry_after_s=0.05, rate_timeout=0.1, hang_s=1.0, rate_drop=0.05, seed=7
    )
    seed(store_engine, 200)
    with caplog.at_level("DEBUG"):
        result = run_day(store_engine, make_job({"sms": webhook(gw)}))
    outcomes = result.as_dict()["outcomes"]
    assert outcomes["unsettled"] and outcomes["retried"]  # timeouts and drops went to the status query
    final = statuses(store_engine)
    assert {s for s, _ in final.values()} <= FINAL, final
    accepted = accepted_counts(gw, store_engine)
    assert max(accepted.values()) == 1  # never twice, whatever failed
    for mid, (status, _) in final.items():
        if status == "sent":
            assert accepted[mid] == 1
        if accepted[mid] == 1:
            assert status in ("sent", "unknown")  # never failed or given up while it was accepted
    assert sum(s == "sent" for s, _ in final.values()) > 150
    stats = gw.state.stats()
    assert stats["faults"].get("5xx", 0) and stats["faults"].get("429", 0) and stats["faults"].get("drop", 0)
    assert "+86138" not in caplog.text and "顾客" not in caplog.text


def test_opted_out_and_holdout_customers_receive_nothing(store_engine, gw):
    seed(store_engine, 10, held_out={1, 2}, opted_out={3})
    with store_engine.begin() as conn:
        conn.execute(
            insert(opt_outs),
            [
                {
                    "customer_id": "c4",
                    "channel": "all",
                    "source": "import",
                    "received_at": RECORDED,
                    "recorded_at": RECORDED,
                }
            ],
        )
    gw.state.add_reply(phone(5), "ＴＤ")  # overnight: a stop reply, full-width
    run_day(store_engine, make_job({"sms": webhook(gw)}))
    final = {mid: s for mid, s in statuses(store_engine).items()}
    by_customer = _by_customer(store_engine)
    assert by_customer["c1"] == by_customer["c2"] == ("suppressed", "suppressed at send time: holdout")
    for customer in ("c3", "c4", "c5"):
        assert by_customer[customer] == ("suppressed", "suppressed at send time: opted_out")
    received = {m["to"] for m in gw.state.accepted()}
    assert received == {phone(i) for i in (0, 6, 7, 8, 9)}
    assert len(final) == 10
    with store_engine.connect() as conn:
        reply = conn.execute(select(opt_outs).where(opt_outs.c.customer_id == "c5")).one()
    assert (reply.channel, reply.source) == ("sms", "reply")


def _by_customer(engine) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        return {r.customer_id: (r.status, r.last_error) for r in conn.execute(select(outbox))}


@SQLITE_ONLY
@pytest.mark.parametrize("run_type, days_ago", [("backfill", 1), ("scheduled", 3), ("manual", 2)])
def test_backfills_and_late_runs_never_send(store_engine, gw, run_type, days_ago):
    day = shop_today() - timedelta(days=days_ago)
    seed(store_engine, 5, day=day)
    result = run_day(store_engine, make_job({"sms": webhook(gw)}, day=day, run_type=run_type))
    assert gw.state.stats()["accepted"] == 0
    assert {s for s, _ in statuses(store_engine).values()} == {"stale"}
    assert result.note.startswith("nothing sent")


@SQLITE_ONLY
def test_nothing_is_sent_outside_the_send_window(store_engine, gw):
    seed(store_engine, 5)
    now = datetime.now(ZoneInfo("Asia/Shanghai"))
    start = (now + timedelta(hours=1)).time().replace(microsecond=0)
    end = (now + timedelta(hours=2)).time().replace(microsecond=0)
    if start > end:  # the window would wrap midnight: use the hour before now instead
        start, end = (now - timedelta(hours=2)).time(), (now - timedelta(hours=1)).time()
    result = run_day(store_engine, make_job({"sms": webhook(gw)}, window=(start, end)))
    assert gw.state.stats()["accepted"] == 0
    assert {s for s, _ in statuses(store_engine).values()} == {"queued"}
    assert "outside the send window" in result.note


@SQLITE_ONLY
def test_an_empty_balance_pauses_sending_and_keeps_the_rows_queued(store_engine, gw):
    seed(store_engine, 30)
    gw.state.set_faults(insufficient_balance=True)
    result = run_day(store_engine, make_job({"sms": webhook(gw)}))
    assert result.tally.paused and "SENDING PAUSED" in result.as_text()
    with store_engine.connect() as conn:
        rows = conn.execute(select(outbox.c.status, outbox.c.attempts)).all()
    assert {tuple(r) for r in rows} == {("queued", 0)}
    gw.state.set_faults(insufficient_balance=False)
    run_day(store_engine, make_job({"sms": webhook(gw)}))
    assert {s for s, _ in statuses(store_engine).values()} == {"sent"}


@SQLITE_ONLY
def test_a_refused_template_fails_its_campaign_once(store_engine, gw, caplog):
    seed(store_engine, 30)
    gw.state.reject_number(phone(0), "template_refused")
    with caplog.at_level("ERROR"):
        run_day(store_engine, make_job({"sms": webhook(gw, max_concurrency=1)}))
    final = statuses(store_engine)
    failed = [e for s, e in final.values() if s == "failed"]
    assert failed and all("refused" in e for e in failed)
    assert sum("refused campaign" in r.message for r in caplog.records) == 1
    assert len(failed) + sum(s == "sent" for s, _ in final.values()) == 30


def test_two_senders_racing_for_the_same_rows_send_each_message_once(store_engine, gw):
    gw.state.set_faults(latency_ms=5)
    seed(store_engine, 300)
    errors: list[BaseException] = []

    def sender(n: int) -> None:
        try:
            run_day(store_engine, make_job({"sms": webhook(gw)}, owner=f"racer-{n}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert set(accepted_counts(gw, store_engine).values()) == {1}
    assert {s for s, _ in statuses(store_engine).values()} == {"sent"}
    with store_engine.connect() as conn:
        owners = {r[0] for r in conn.execute(select(outbox.c.claimed_by))}
    assert owners == {None}


KILLED_SENDER = textwrap.dedent(
    """
    import dataclasses
    import sys
    sys.path.insert(0, {tests!r})
    from deliver_rows import FAST_RULES, job
    from huitouke.deliver.daily import run_day
    from huitouke.deliver.providers.webhook import WebhookProvider
    from huitouke.store.connection import make_engine

    provider = WebhookProvider({url!r}, "test-token", batch_size=5, timeout_s=5, max_concurrency=1)
    rules = dataclasses.replace(FAST_RULES, claim_rows=5)  # one batch a claim: a lease of one round
    run_day(make_engine({store!r}), job({{"sms": provider}}, owner="doomed", rules=rules))
    """
)


def test_a_sender_killed_mid_batch_never_sends_twice(store_engine, store_url, gw):
    gw.state.set_faults(latency_ms=150)
    seed(store_engine, 60)
    script = KILLED_SENDER.format(tests=os.path.dirname(__file__), url=f"{gw.url}/webhook", store=store_url)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ})
    deadline = time.monotonic() + 60
    while gw.state.stats()["accepted"] < 12 and time.monotonic() < deadline:
        assert proc.poll() is None, "the sender ended before it could be killed"
        time.sleep(0.02)
    time.sleep(0.07)  # mid-call
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with store_engine.connect() as conn:
        in_flight = conn.execute(select(outbox.c.message_id).where(outbox.c.status == "sending")).all()
    assert in_flight  # the killed sender left claimed rows behind
    gw.state.set_faults(latency_ms=0)
    time.sleep(FAST_RULES.lease_seconds)  # their lease runs out
    run_day(store_engine, make_job({"sms": webhook(gw)}))
    assert set(accepted_counts(gw, store_engine).values()) == {1}
    assert {s for s, _ in statuses(store_engine).values()} == {"sent"}


@SQLITE_ONLY
def test_the_task_log_table_counts_each_outcome(store_engine, gw):
    seed(store_engine, 6, held_out={0})
    gw.state.reject_number(phone(1), "invalid_number")
    text = run_day(store_engine, make_job({"sms": webhook(gw)})).as_text()
    assert "suppressed" in text and "holdout" in text and "invalid_number" in text and "sent" in text
    assert "Receipts of the messages sent" in text and "delivered" in text  # read back after sending
    with store_engine.connect() as conn:
        receipts = {r[0] for r in conn.execute(select(outbox.c.receipt).where(outbox.c.status == "sent"))}
    assert receipts == {"delivered"}
    assert phone(1) not in text


@SQLITE_ONLY
def test_queued_rows_older_than_the_age_limit_expire(store_engine, gw):
    old = shop_today() - timedelta(days=1 + FAST_RULES.max_age_days + 1)
    seed(store_engine, 3, day=old)
    seed(store_engine, range(10, 13))
    run_day(store_engine, make_job({"sms": webhook(gw)}))
    by_customer = _by_customer(store_engine)
    assert {by_customer[f"c{i}"][0] for i in range(3)} == {"expired"}
    assert {by_customer[f"c{i}"][0] for i in range(10, 13)} == {"sent"}


@SQLITE_ONLY
def test_a_stop_reply_received_mid_drain_holds_from_the_next_batch(store_engine, gw):
    seed(store_engine, 10, campaign="thank_you")  # claimed first (lower message ids)
    seed(store_engine, 10, campaign="care_tips", new=("waves",))
    gw.state.set_faults(rate_reply_t=1.0)  # everyone who gets a message answers T at once
    provider = webhook(gw, batch_size=10, max_concurrency=1)
    # Replies are read between claims; one batch a claim, none claimed ahead of the calls out.
    one_batch_a_claim = dataclasses.replace(FAST_RULES, claim_rows=10, claims_ahead=0)
    run_day(store_engine, make_job({"sms": provider}, feeds_every_s=0, rules=one_batch_a_claim))
    by_campaign = {}
    with store_engine.connect() as conn:
        for campaign, status in conn.execute(select(outbox.c.campaign, outbox.c.status)):
            by_campaign.setdefault(campaign, set()).add(status)
    assert by_campaign == {"thank_you": {"sent"}, "care_tips": {"suppressed"}}
    with store_engine.connect() as conn:
        assert conn.execute(select(opt_outs.c.source).distinct()).scalars().all() == ["reply"]


def test_a_message_still_in_flight_when_its_answer_was_lost_is_not_sent_again(store_engine, gw):
    """The gateway finishes a batch only after the client gave up (a slow backend behind a proxy):
    the status query waits out the settle time, finds the messages, and nothing is resent."""
    gw.state.set_faults(rate_timeout=1.0, timeout_accepts=0.0, timeout_accepts_late=1.0, hang_s=1.0)
    seed(store_engine, 5)
    rules = dataclasses.replace(FAST_RULES, settle_seconds=2.0)
    run_day(store_engine, make_job({"sms": webhook(gw, batch_size=5, timeout_s=0.3)}, rules=rules))
    time.sleep(1.2)  # any call still hanging has finished (with settle_seconds=0.3: 5 duplicates)
    assert set(accepted_counts(gw, store_engine).values()) == {1}
    assert {s for s, _ in statuses(store_engine).values()} == {"sent"}


@SQLITE_ONLY
def test_a_pause_on_one_channel_does_not_stop_the_other(store_engine, gw, tmp_path):
    seed(store_engine, 5)
    seed(store_engine, range(5), channel="email", new=())  # the same waves, by e-mail too
    gw.state.set_faults(insufficient_balance=True)
    result = run_day(store_engine, make_job({"sms": webhook(gw), "email": _smtp_sink(tmp_path)}))
    by_channel = {}
    with store_engine.connect() as conn:
        for channel, status in conn.execute(select(outbox.c.channel, outbox.c.status)):
            by_channel.setdefault(channel, set()).add(status)
    assert by_channel == {"sms": {"queued"}, "email": {"sent"}}
    assert result.tally.paused.startswith("webhook")


def _smtp_sink(tmp_path):
    """A real local SMTP server accepting everything (stopped at the test's end by pytest's
    tmp_path lifetime is not enough: registered on the module's finalizer list)."""
    import socket

    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    from huitouke.deliver.providers.email import SmtpEmailProvider, SmtpSettings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    _STARTED.append(controller)
    return SmtpEmailProvider(SmtpSettings(host="127.0.0.1", port=port, from_email="shop@shop.example"))


_STARTED: list = []


@pytest.fixture(autouse=True)
def _stop_smtp_servers():
    yield
    while _STARTED:
        _STARTED.pop().stop()


@SQLITE_ONLY
def test_a_claim_whose_rows_were_all_suppressed_does_not_end_the_drain(store_engine, gw):
    seed(store_engine, 30, held_out=set(range(20)))  # the first two claims are all holdout
    run_day(store_engine, make_job({"sms": webhook(gw, batch_size=5, max_concurrency=2)}))
    final = [s for s, _ in statuses(store_engine).values()]
    assert final.count("suppressed") == 20 and final.count("sent") == 10
