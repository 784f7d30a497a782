"""A simulated season through Airflow: the daily DAG day after day, as if each run happened on the
morning after its business day, sending through the gateway simulator, the customers answering.

Each simulated day:

1. the shop database is written as it stood at the end of the day (the world's orders so far);
2. the daily DAG runs through Airflow (``dag.test``) with a simulated clock at the next morning
   (:mod:`huitouke.clock`: accepted only by the demo's store), so delivery is inside the send
   window and the day is "yesterday": messages go out to the gateway simulator, a real HTTP server
   speaking the configured provider's API;
3. the messages really sent arrive the next morning in the world, which answers them with orders
   (the next day's intake reads them) and ``T`` replies, posted to the gateway before the next run,
   whose delivery reads them back as opt-outs.

Steps 1 and 3 happen in the world's :meth:`World.live`; the demo's world is :class:`WorldShop`
(the ground-truth world of :mod:`huitouke.world`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Protocol
from unittest.mock import patch
from zoneinfo import ZoneInfo

import pandas as pd
from sqlalchemy import Engine, select

from huitouke.clock import CONF_KEY
from huitouke.pii import get_logger

log = get_logger(__name__)

RUN_AT = time(10, 0)  # when, shop time, the run for day D happens: D+1, inside the send window
SMS_CONN_ID = "huitouke_sms_webhook"
SMTP_CONN_ID = "huitouke_smtp"


class World(Protocol):
    """The simulated shop and its customers, one calendar day at a time."""

    def live(self, day: date, arrived: pd.DataFrame | None) -> tuple[Any, Answers]:
        """Live through calendar ``day``: ``arrived`` are the messages that left that morning
        (the sent outbox rows of the business day before). Returns the shop database as it
        stands at the end of the day (a demo_shop.DemoShop) and what the customers did."""


@dataclass
class Answers:
    """What the customers did on one day."""

    orders: int = 0  # orders paid that day
    stop_replies: list[str] = field(default_factory=list)  # phone numbers replying T


@dataclass
class SeasonDay:
    """One simulated day: the run's state and what was sent and answered."""

    day: date
    state: str
    seconds: float
    sent: int = 0
    orders: int = 0
    replies: int = 0


def run_at(day: date, tz: str) -> datetime:
    """The simulated moment the run for business day ``day`` happens (the next morning)."""
    following = day + timedelta(days=1)
    return datetime.combine(following, RUN_AT, tzinfo=ZoneInfo(tz))


def run_conf(day: date, tz: str) -> dict[str, Any]:
    """The run's conf: the offset from now to :func:`run_at` (huitouke.clock), and
    ``accept_incomplete_day``: the world writes each whole day before its run, so a quiet day (a
    small shop's last order before the freshness guard's hour) is complete, not a broken extract."""
    offset = run_at(day, tz) - datetime.now(UTC)
    return {CONF_KEY: {"offset_seconds": offset.total_seconds()}, "accept_incomplete_day": True}


def sent_on(crm: Engine, day: date) -> pd.DataFrame:
    """The outbox rows of business day ``day`` that were sent."""
    from huitouke.deliver.states import SENT
    from huitouke.store.schema import outbox

    names = ("campaign", "customer_id", "entered_on", "wave", "channel", "status", "coupon_code", "recipient")
    columns = [outbox.c[name] for name in names]
    query = select(*columns).where(outbox.c.business_date == day).where(outbox.c.status == SENT)
    with crm.connect() as conn:
        rows = conn.execute(query).all()
    return pd.DataFrame(rows, columns=[c.name for c in columns])


class MailSink:
    """A local SMTP server (aiosmtpd, a real one) that accepts every e-mail and counts them."""

    def __init__(self) -> None:
        self.accepted = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.accepted += 1
        return "250 2.0.0 Ok: queued"


@contextmanager
def mail_sink() -> Iterator[tuple[MailSink, int]]:
    """The sink on a free local port, for the block's duration: (sink, port)."""
    import socket

    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = MailSink()
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-connection lines
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


@contextmanager
def demo_delivery(
    config: Path, gateway_url: str, token: str, smtp_port: int, data_dir: Path
) -> Iterator[Path]:
    """Settings whose SMS go to the gateway simulator's webhook API, whose e-mail goes to the
    local SMTP server on ``smtp_port`` and whose call lists go under ``data_dir``: ``config`` (the project's settings) with ``delivery``
    pointed at them, written under ``data_dir``, and the Connections as environment variables,
    both for the block's duration."""
    import yaml

    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    delivery = settings.setdefault("delivery", {})
    delivery["sms"] = {"provider": "webhook", "conn_id": SMS_CONN_ID}
    delivery["email"] = {"provider": "smtp", "conn_id": SMTP_CONN_ID}
    delivery["call_list_folder"] = str(
        data_dir / "call_lists"
    )  # beside the season's data, not the checkout's
    path = data_dir / "demo-huitouke.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings, allow_unicode=True, sort_keys=False), encoding="utf-8")
    sms = {"conn_type": "http", "host": f"{gateway_url}/webhook", "password": token}
    smtp = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": smtp_port,
        "extra": {"from_email": "小店 <shop@demo.example>"},
    }
    changes = {
        "HUITOUKE_CONFIG": str(path),
        f"AIRFLOW_CONN_{SMS_CONN_ID.upper()}": json.dumps(sms),
        f"AIRFLOW_CONN_{SMTP_CONN_ID.upper()}": json.dumps(smtp, ensure_ascii=False),
    }
    with patch.dict(os.environ, changes):
        yield path


class WorldShop:
    """The ground-truth world (:mod:`huitouke.world`) as the season's: the shop's history, then the
    world's customers living through the season; the shop database is the history plus the
    world's orders, as :func:`huitouke.demo_shop.shop_as_of` shows them on each day."""

    def __init__(self, shop: Any, start: date, end: date, seed: int, effects: Any = None) -> None:
        from huitouke.world import TRUE_EFFECTS, World

        chosen = TRUE_EFFECTS if effects is None else effects
        self.history = shop
        self.world = World.from_shop(shop, start, end, effects=chosen, seed=seed)
        self.days: list[Any] = []  # the world's days so far (huitouke.world.WorldDay)

    def live(self, day: date, arrived: pd.DataFrame | None) -> tuple[Any, Answers]:
        from huitouke.demo_shop import shop_as_of
        from huitouke.world.world import grown_shop

        happened = self.world.step(day, arrived)
        self.days.append(happened)
        shop = shop_as_of(grown_shop(self.history, self.world, self.days), day)
        return shop, Answers(len(happened.orders), list(happened.replies["phone"].astype(str)))

    def invalid_phones(self) -> set[str]:
        """The phone numbers that do not exist (the gateway rejects them, as an operator would)."""
        return self.world.invalid_numbers()

    def truth(self, waves: pd.DataFrame, windows: tuple[int, ...]) -> pd.DataFrame:
        """The true effects per (campaign, wave, due_on, window) of ``waves`` (huitouke.world.truth)."""
        from huitouke.world import true_effects

        return true_effects(self.world, waves, windows)


class ShopWriter:
    """Keeps the shop database equal to the world's shop day after day, writing only the rows that
    changed since the day before (a whole rewrite each day took longer than the day's DAG run)."""

    KEYS = {
        "shop_customers": ["customer_id"],
        "shop_orders": ["order_id"],
        "shop_order_items": ["order_id", "line_no"],
    }
    FRAMES = {"shop_customers": "customers", "shop_orders": "orders", "shop_order_items": "items"}

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.hashes: dict[str, pd.Series] | None = None

    def write(self, shop: Any) -> int:
        """Bring the database to ``shop``; returns the rows written (all of them the first time)."""
        from huitouke.demo_shop import write_shop

        frames = {table: getattr(shop, attr) for table, attr in self.FRAMES.items()}
        hashes = {table: self._hashes(table, frame) for table, frame in frames.items()}
        if self.hashes is None:
            write_shop(shop, self.engine)
            self.hashes = hashes
            return sum(len(f) for f in frames.values())
        written = 0
        with self.engine.begin() as conn:
            for table, frame in frames.items():
                written += self._sync(conn, table, frame, self.hashes[table], hashes[table])
        self.hashes = hashes
        return written

    def _hashes(self, table: str, frame: pd.DataFrame) -> pd.Series:
        """One hash per row, indexed by the row's key (its key columns as text, joined)."""
        names = self.KEYS[table]
        keys = frame[names[0]].astype(str)
        for name in names[1:]:
            keys = keys + "\x1f" + frame[name].astype(str)
        hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        return pd.Series(hashes, index=pd.Index(keys.to_numpy(dtype=object), dtype=object))

    def _sync(self, conn: Any, table: str, frame: pd.DataFrame, before: pd.Series, now: pd.Series) -> int:
        """Replace every row whose first key (customer, order) has a row gone, changed or new."""
        from huitouke.demo_shop import shop_metadata

        shop_table = shop_metadata().tables[table]
        first = shop_table.c[self.KEYS[table][0]]
        unchanged = now.index.isin(before.index)
        unchanged[unchanged] = before.reindex(now.index[unchanged]).to_numpy() == now.to_numpy()[unchanged]
        gone = before.index[~before.index.isin(now.index)]
        touched = {key.split("\x1f")[0] for key in [*now.index[~unchanged], *gone]}
        if not touched:
            return 0
        ordered = sorted(touched)
        for start in range(0, len(ordered), 500):
            conn.execute(shop_table.delete().where(first.in_(ordered[start : start + 500])))
        rows = frame[frame[first.name].astype(str).isin(touched)]
        if not rows.empty:
            conn.execute(
                shop_table.insert(), rows.astype(object).where(rows.notna(), None).to_dict("records")
            )
        return len(rows)


def run_season(
    world: World,
    days: list[date],
    crm: Engine,
    shop_engine: Engine,
    gateway: Any,
    tz: str,
    progress: Callable[[SeasonDay], None] = lambda d: None,
) -> list[SeasonDay]:
    """Every day of ``days`` through the DAG, in order, stopping at the first failed run."""
    import time as clock

    from huitouke.dagrun import load_daily_dag, run_business_days

    dag = load_daily_dag()
    shop_writer = ShopWriter(shop_engine)
    done: list[SeasonDay] = []
    arrived: pd.DataFrame | None = None
    for day in days:
        started = clock.perf_counter()
        shop, answers = world.live(day, arrived)
        for phone in answers.stop_replies:  # read back by this day's delivery: opt-outs
            gateway.state.add_reply(phone, "T", "webhook")
        shop_writer.write(shop)
        state = run_business_days([day], dag=dag, conf_of=lambda d: run_conf(d, tz))[day]
        arrived = sent_on(crm, day) if state == "success" else None
        sent = 0 if arrived is None else len(arrived)
        result = SeasonDay(
            day, state, clock.perf_counter() - started, sent, answers.orders, len(answers.stop_replies)
        )
        done.append(result)
        progress(result)
        if state != "success":
            break
    return done
