"""Delivery end to end: 100,000 queued SMS drained from the outbox to the gateway simulator.

    .venv/bin/python bench/deliver.py

For each store (SQLite; PostgreSQL too with ``BENCH_PG=1``) and each provider, a fresh store is
seeded with ``BENCH_MESSAGES`` (default 100,000) queued SMS of yesterday (customers, their treated
campaign waves, the outbox rows; bulk inserts, not timed) and ``run_day`` drains it, as the DAG's
``deliver_messages`` task does, to the simulator in its own process (``GatewayProcess``) at
``BENCH_LATENCY_MS`` (default 5) per request:

- webhook: 100 messages a call, 4 calls at a time;
- aliyun: ``SendBatchSms`` at 100 numbers a call (the official SDK), 4 calls at a time;
- twilio: one message a request (the official SDK's async API), ``BENCH_TWILIO_BATCH`` (default
  100) messages per provider call, ``BENCH_TWILIO_CONCURRENCY`` (default 32) requests in flight,
  within Twilio's default limit of concurrent requests per account; ``BENCH_TWILIO_BATCH=1``
  is one message a call with that many sender threads.

Measured: messages/s end to end (``run_day``'s wall time, receipts pulls and the final settle
included), and where the sender's time goes. ``Sender`` is subclassed here (its claim, each
provider call, each call's outcomes taken, their writing timed from the outside) and put in
``daily``'s namespace for the run: claims (whose transaction first writes the outcomes of the
calls returned since the last one) and taking outcomes run on the sender's thread, the calls on
its pool; "waiting" is the sender's thread waiting for calls. Checked: the simulator's accepted
count equals the outbox's ``sent`` rows, and no out id was accepted twice.

SQLite as ``make_engine`` leaves a file: the rollback journal, ``synchronous=FULL`` (about 20 ms
a commit here; a commit a claim). "CPU" is the sending process's CPU time (all its threads) a
message: the figure a busy machine inflates least; the simulator's, in its own process, is
printed beside it (read from ``/proc``), with the load average at the end of the run.

Options (environment): ``BENCH_PROVIDERS=webhook,aliyun,twilio``, ``BENCH_PG=1``,
``BENCH_SQLITE=""`` (no SQLite run),
``BENCH_PROFILE=<provider>`` (cProfile of that provider's SQLite run, top 30 by cumulative time,
written to ``bench/deliver_<provider>.prof``), ``BENCH_MESSAGES``, ``BENCH_LATENCY_MS``,
``BENCH_TWILIO_CONCURRENCY``, ``BENCH_TWILIO_BATCH``, ``BENCH_CLAIMS_AHEAD`` (default the shipped
``delivery.claims_ahead``: 1; 0 claims only when no call is out), ``BENCH_PG_BATCH=1`` (PostgreSQL through
an engine with ``executemany_mode="values_plus_batch"``: psycopg2's ``execute_batch`` for the
claims' and records' UPDATEs, instead of one round trip a row as ``make_engine`` leaves it),
``BENCH_SKIP_FEEDS=twilio`` (the providers whose receipts and replies are not pulled: Twilio's
receipts are a listing of every message of the last day, and the simulator builds each page from
all of them, so at 100,000 messages the pulls took minutes of the simulator's CPU; empty: pull
for every provider).
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # deliver_rows (the delivery tests' store rows), pg_server

from deliver_rows import CAMPAIGN, job, phone, yesterday  # noqa: E402
from sqlalchemy import Engine, func, insert, select  # noqa: E402

from huitouke.deliver import daily  # noqa: E402
from huitouke.deliver.policy import DeliveryRules  # noqa: E402
from huitouke.deliver.providers.aliyun import AliyunSettings, AliyunSmsProvider  # noqa: E402
from huitouke.deliver.providers.base import OutgoingMessage, Provider  # noqa: E402
from huitouke.deliver.providers.twilio import TwilioSettings, TwilioSmsProvider  # noqa: E402
from huitouke.deliver.providers.webhook import WebhookProvider  # noqa: E402
from huitouke.deliver.sender import Sender  # noqa: E402
from huitouke.deliver.states import out_id_of  # noqa: E402
from huitouke.deliver.wiring import message_factory  # noqa: E402
from huitouke.gateway.server import GatewayProcess  # noqa: E402
from huitouke.gateway.state import GatewayFaults  # noqa: E402
from huitouke.store.connection import make_engine  # noqa: E402
from huitouke.store.migrate import upgrade  # noqa: E402
from huitouke.store.schema import campaign_waves, customers, outbox  # noqa: E402

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "100000"))
LATENCY_MS = float(os.environ.get("BENCH_LATENCY_MS", "5"))
PROVIDERS = os.environ.get("BENCH_PROVIDERS", "webhook,aliyun,twilio").split(",")
WITH_PG = os.environ.get("BENCH_PG", "") not in ("", "0")
PROFILE = os.environ.get("BENCH_PROFILE", "")
TWILIO_CONCURRENCY = int(os.environ.get("BENCH_TWILIO_CONCURRENCY", "32"))
TWILIO_BATCH = int(os.environ.get("BENCH_TWILIO_BATCH", "100"))
PG_BATCH = os.environ.get("BENCH_PG_BATCH", "") not in ("", "0")
CLAIMS_AHEAD = int(os.environ.get("BENCH_CLAIMS_AHEAD", str(DeliveryRules().claims_ahead)))
SKIP_FEEDS = os.environ.get("BENCH_SKIP_FEEDS", "twilio").split(",")
GOALS = {"webhook": 10_000, "aliyun": 10_000, "twilio": 1_000}
SQLITE_MODES = [m.strip() for m in os.environ.get("BENCH_SQLITE", "SQLite").split(",") if m.strip()]
SEED_CHUNK = 20_000


# ------------------------------------------------------------------------------ the store


def seed(engine: Engine, n: int) -> None:
    """``n`` customers, one treated wave and one queued SMS each, for yesterday (deliver_rows'
    shape, written in bulk)."""
    day, now = yesterday(), datetime(2025, 1, 1)
    for start in range(0, n, SEED_CHUNK):
        ids = range(start, min(start + SEED_CHUNK, n))
        people = [
            {
                "customer_id": f"c{i}",
                "name": f"顾客{i}",
                "phone": phone(i),
                "sms_opt_out": False,
                "email_opt_out": False,
                "first_seen_at": now,
                "updated_at": now,
            }
            for i in ids
        ]
        key = {"campaign": CAMPAIGN, "entered_on": day, "wave": 1}
        waves = [
            {
                **key,
                "customer_id": f"c{i}",
                "due_on": day,
                "arm": "treatment",
                "variant": "",
                "kind": "marketing",
                "priority": 50,
                "outcome": "treated",
                "channels": "sms",
                "counts_toward_cap": True,
                "planned_at": now,
            }
            for i in ids
        ]
        messages = [
            {
                **key,
                "customer_id": f"c{i}",
                "variant": "",
                "channel": "sms",
                "template": "sms/coupon",
                "business_date": day,
                "status": "queued",
                "recipient": phone(i),
                "body": f"【小店】顾客{i}，您的优惠券已到账 回T退订",
                "sms_segments": 1,
                "attempts": 0,
                "created_at": now,
                "out_id": out_id_of(
                    {**key, "customer_id": f"c{i}", "channel": "sms"}
                ),  # as rendering stores it
            }
            for i in ids
        ]
        with engine.begin() as conn:
            conn.execute(insert(customers), people)
            conn.execute(insert(campaign_waves), waves)
            conn.execute(insert(outbox), messages)


def sent_rows(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all()
    return {status: n for status, n in rows}


# ------------------------------------------------------------------------------ the providers


def build(name: str, gw: GatewayProcess) -> Provider:
    host = gw.url.removeprefix("http://")
    if name == "webhook":
        return WebhookProvider(f"{gw.url}/webhook", gw.token, batch_size=100, max_concurrency=4)
    if name == "aliyun":
        return AliyunSmsProvider(
            AliyunSettings(
                "LTAI-bench",
                gw.token,
                endpoint=host,
                protocol="http",
                sign_name="小店",
                report_url=f"{gw.url}/aliyun",
                report_token=gw.token,
            )
        )
    if name == "twilio":
        settings = TwilioSettings(
            "AC" + "1" * 32,
            gw.token,
            base_url=gw.url,
            from_number="+15005550006",
            max_concurrency=TWILIO_CONCURRENCY,
            batch_size=TWILIO_BATCH,
            page_size=1000,  # the simulator's listing reads every message for each page
        )
        return TwilioSmsProvider(settings)
    raise ValueError(f"unknown provider {name!r}")


def aliyun_messages(plain: Callable[[dict[str, Any]], OutgoingMessage]) -> Callable[..., OutgoingMessage]:
    """The playbook's template mapping for Aliyun (an approved template code and its parameters)."""
    import dataclasses

    def message_of(row: dict[str, Any]) -> OutgoingMessage:
        return dataclasses.replace(
            plain(row), template_code="SMS_100", template_params={"name": f"顾客{row['customer_id']}"}
        )

    return message_of


# ------------------------------------------------------------------------------ timing


@dataclass
class Timings:
    """Seconds spent in the sender's parts (claim, record: its thread; calls: the pool's)."""

    drain: float = 0.0
    feeds: float = 0.0
    claim: float = 0.0
    record: float = 0.0
    calls: float = 0.0
    write: float = 0.0  # the outcomes' UPDATEs, inside the claims' transactions (or a last one)
    claim_cpu: float = 0.0  # CPU seconds of those threads in each part
    record_cpu: float = 0.0
    calls_cpu: float = 0.0
    write_cpu: float = 0.0
    n_claims: int = 0
    n_calls: int = 0
    n_records: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def timed_sender(timings: Timings) -> type[Sender]:
    class TimedSender(Sender):
        def drain(self):  # type: ignore[override]
            started = time.perf_counter()
            try:
                return super().drain()
            finally:
                timings.drain += time.perf_counter() - started

        def _claim(self, *args, **kwargs):  # type: ignore[override]
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return super()._claim(*args, **kwargs)
            finally:
                timings.claim += time.perf_counter() - started
                timings.claim_cpu += time.thread_time() - cpu
                timings.n_claims += 1

        def _call(self, batch):  # type: ignore[override]
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return super()._call(batch)
            finally:
                with timings.lock:
                    timings.calls += time.perf_counter() - started
                    timings.calls_cpu += time.thread_time() - cpu
                    timings.n_calls += 1

        def _record(self, calls, returned):  # type: ignore[override]
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return super()._record(calls, returned)
            finally:
                timings.record += time.perf_counter() - started
                timings.record_cpu += time.thread_time() - cpu
                timings.n_records += 1

        def _write_in(self, conn, returned):  # type: ignore[override]
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return super()._write_in(conn, returned)
            finally:
                timings.write += time.perf_counter() - started
                timings.write_cpu += time.thread_time() - cpu

    return TimedSender


def timed_feeds(timings: Timings, pull_all: Callable[..., None]) -> Callable[..., None]:
    def timed(*args: Any) -> None:
        started = time.perf_counter()
        try:
            pull_all(*args)
        finally:
            timings.feeds += time.perf_counter() - started

    return timed


# ------------------------------------------------------------------------------ one run


@dataclass
class Result:
    store: str
    provider: str
    seconds: float
    sent: int
    accepted: int
    duplicates: int
    other: dict[str, int]
    timings: Timings
    cpu: float  # the sending process's CPU seconds (all its threads) during run_day
    gw_cpu: float  # the simulator process's CPU seconds meanwhile

    @property
    def cpu_us(self) -> float:
        """CPU microseconds a message in the sending process: what a busy machine inflates least."""
        return self.cpu / max(self.sent, 1) * 1e6

    @property
    def rate(self) -> float:
        return self.sent / self.seconds

    @property
    def drain_rate(self) -> float:
        return self.sent / self.timings.drain

    @property
    def ok(self) -> bool:
        return self.sent == self.accepted == MESSAGES and self.duplicates == 0


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(store: str, url: str, name: str, gw: GatewayProcess, profile: bool) -> Result:
    if PG_BATCH and url.startswith("postgresql"):  # what psycopg2's execute_batch would change
        from sqlalchemy import create_engine

        engine = create_engine(url, executemany_mode="values_plus_batch")
    else:
        engine = make_engine(url)
    upgrade(engine)
    seed(engine, MESSAGES)
    gw.reset()
    provider = build(name, gw)
    plain = message_factory(None, None, "小店")
    delivery = job(
        {"sms": provider},
        message_of=aliyun_messages(plain) if name == "aliyun" else plain,
        rules=DeliveryRules(claims_ahead=CLAIMS_AHEAD),  # the shipped rules (the tests' are faster)
    )
    timings = Timings()
    original, daily.Sender = daily.Sender, timed_sender(timings)
    skipped = name in SKIP_FEEDS
    pull_all = daily._pull_all
    daily._pull_all = timed_feeds(timings, (lambda *_: None) if skipped else pull_all)
    profiler = cProfile.Profile() if profile else None
    try:
        gw_pid = gw._process.pid if gw._process else 0
        started, cpu_started, gw_started = time.perf_counter(), time.process_time(), process_cpu(gw_pid)
        if profiler:
            profiler.enable()
        result = daily.run_day(engine, delivery)
        if profiler:
            profiler.disable()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        gw_cpu = process_cpu(gw_pid) - gw_started
    finally:
        daily.Sender, daily._pull_all = original, pull_all
    if profiler:
        path = ROOT / "bench" / f"deliver_{name}.prof"
        profiler.dump_stats(path)
        print(f"  profile written to {path}; top 30 by cumulative time:")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    stats = gw.stats()
    rows = sent_rows(engine)
    engine.dispose()
    if result.tally.paused:
        print(f"  PAUSED: {result.tally.paused}")
    other = {k: v for k, v in rows.items() if k != "sent"}
    return Result(
        store,
        name,
        seconds,
        rows.get("sent", 0),
        stats["accepted"],
        stats["duplicates"],
        other,
        timings,
        cpu,
        gw_cpu,
    )


def report(r: Result) -> None:
    t = r.timings
    waiting = max(t.drain - t.claim - t.record, 0.0)
    goal = GOALS[r.provider]
    print(
        f"  {r.store:<10} {r.provider:<8} {r.sent:>7,} sent in {r.seconds:6.2f} s = {r.rate:8,.0f} msg/s "
        f"(goal {goal:,}: {'PASS' if r.rate >= goal else 'FAIL'}); accepted {r.accepted:,}, "
        f"duplicates {r.duplicates}, {'accepted = sent' if r.ok else 'MISMATCH ' + str(r.other)}"
    )
    print(
        f"    run_day {r.seconds:.2f} s = drain {t.drain:.2f} s ({r.drain_rate:,.0f} msg/s) + receipts and "
        f"replies pulled {t.feeds:.2f} s + the rest {r.seconds - t.drain - t.feeds:.2f} s; "
        f"sender CPU {r.cpu:.2f} s = {r.cpu_us:.0f} us a message (one core's worth: {1e6 / r.cpu_us:,.0f} msg/s); "
        f"simulator CPU {r.gw_cpu / max(r.sent, 1) * 1e6:.0f} us a message; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"    drain: claim {t.claim:.2f} s ({t.claim / t.drain:.0%}, {t.n_claims} claims; the returned calls' "
        f"outcomes written in them: {t.write:.2f} s), outcomes taken {t.record:.2f} s ({t.record / t.drain:.0%}, "
        f"{t.n_records} times for {t.n_calls} calls), waiting for calls {waiting:.2f} s ({waiting / t.drain:.0%}); "
        f"calls {t.calls:.2f} s summed over the pool ({t.calls / max(t.n_calls, 1) * 1000:.1f} ms a call)"
    )
    per = 1e6 / max(r.sent, 1)
    print(
        f"    CPU a message: claim {t.claim_cpu * per:.0f} us (writing outcomes {t.write_cpu * per:.0f}), "
        f"outcomes taken {t.record_cpu * per:.0f} us, calls {t.calls_cpu * per:.0f} us, "
        f"the rest {(r.cpu - t.claim_cpu - t.record_cpu - t.calls_cpu) * per:.0f} us"
    )


def main() -> int:
    print(
        f"Delivery benchmark: {MESSAGES:,} queued SMS, simulator at {LATENCY_MS:g} ms a request "
        f"in its own process; {os.cpu_count()} cores"
    )
    results: list[Result] = []
    with ExitStack() as stack:
        gw = stack.enter_context(GatewayProcess(GatewayFaults(latency_ms=LATENCY_MS)))
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="huitouke-bench-")))
        stores: list[tuple[str, Callable[[str], str]]] = [
            (kind, lambda name, kind=kind: f"sqlite:///{folder / f'{name}.sqlite'}") for kind in SQLITE_MODES
        ]
        if WITH_PG:
            from pg_server import start_postgres

            server = start_postgres()
            stack.callback(server.stop)
            stores.append(("PostgreSQL", lambda name: server.create_database(f"bench_{name}")))
        for store, url_of in stores:
            for name in PROVIDERS:
                result = run(store, url_of(name), name, gw, profile=PROFILE == name and store == "SQLite")
                report(result)
                results.append(result)
    print()
    print(
        "summary          provider  run_day msg/s  drain msg/s   goal     verdict  CPU us/msg  accepted = sent"
    )
    for r in results:
        goal = GOALS[r.provider]
        print(
            f"  {r.store:<14} {r.provider:<8} {r.rate:12,.0f} {r.drain_rate:12,.0f} {goal:>7,}     "
            f"{'PASS' if r.rate >= goal else 'FAIL':<8} {r.cpu_us:10.0f}  {r.ok}"
        )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
