"""A simulated season through Airflow (huitouke.season): the daily DAG day after day on the demo's
simulated clock, sending to the gateway simulator and a real SMTP server, customers answering."""

from __future__ import annotations

import json
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from sqlalchemy import create_engine, func, select

HISTORY_START = date(2025, 10, 1)
SEASON = [date(2025, 12, 12), date(2025, 12, 13), date(2025, 12, 14)]


def _tables(engine) -> dict[str, pd.DataFrame]:
    from huitouke.demo_shop.store import SHOP_TABLES

    with engine.connect() as conn:
        return {
            t: pd.read_sql_table(t, conn)
            .sort_values(list(pd.read_sql_table(t, conn).columns[:2]))
            .reset_index(drop=True)
            for t in SHOP_TABLES
        }


def test_the_shop_writer_keeps_the_database_equal_to_the_shop(tmp_path):
    """Day after day only changed rows are written; the database always equals a full rewrite."""
    from huitouke.demo_shop import ShopSpec, add_responses, generate_shop, shop_as_of, write_shop
    from huitouke.season import ShopWriter

    shop = generate_shop(ShopSpec(customers=800, start=date(2025, 11, 1), end=SEASON[-1], seed=3))
    written, fresh = (
        create_engine(f"sqlite:///{tmp_path / 'a.db'}"),
        create_engine(f"sqlite:///{tmp_path / 'b.db'}"),
    )
    writer = ShopWriter(written)
    counts = []
    for day in SEASON:
        counts.append(writer.write(shop_as_of(shop, day)))
        some = shop.customers[["customer_id"]].head(40).assign(campaign="birthday", coupon_code=None)
        shop, _ = add_responses(shop, some, day, seed=1)  # orders caused by messages, next days
        write_shop(shop_as_of(shop, day), fresh) if day == SEASON[-1] else None
    assert counts[1] < counts[0] / 5 and counts[2] < counts[0] / 5  # the later days: the changes only
    writer.write(shop_as_of(shop, SEASON[-1]))
    mine, theirs = _tables(written), _tables(fresh)
    for table, frame in theirs.items():
        pd.testing.assert_frame_equal(mine[table], frame, check_dtype=False)


def test_only_the_demos_store_accepts_a_simulated_clock(tmp_path):
    from datetime import UTC, datetime

    from huitouke.clock import CONF_KEY, REAL, ClockRefused, clock_for, mark_demo_store
    from huitouke.store.migrate import upgrade

    engine = create_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    upgrade(engine)
    asks = {CONF_KEY: {"offset_seconds": -86_400 * 30}}
    with engine.begin() as conn:
        assert clock_for(conn, None) is REAL and clock_for(conn, {"other": 1}) is REAL
        with pytest.raises(ClockRefused, match="not the demo's store"):
            clock_for(conn, asks)
        mark_demo_store(conn, datetime(2025, 1, 1))
        mark_demo_store(conn, datetime(2025, 1, 2))  # idempotent
        clock = clock_for(conn, asks)
        for bad in (
            {CONF_KEY: "yesterday"},
            {CONF_KEY: {"offset_seconds": True}},
            {CONF_KEY: {"offset_seconds": 1e12}},
        ):
            with pytest.raises(ClockRefused, match=CONF_KEY):
                clock_for(conn, bad)
    assert clock.simulated and abs((datetime.now(UTC) - clock.now()).days - 30) <= 1


class _ReplyingWorld:
    """The ground-truth world, where the first customer an SMS reached on the first day replies T."""

    def __init__(self, shop, start, end, seed):
        from huitouke.season import WorldShop

        self.inner, self.stopped = WorldShop(shop, start, end, seed), None

    def live(self, day, arrived):
        shop, answers = self.inner.live(day, arrived)
        if self.stopped is None and arrived is not None and (arrived["channel"] == "sms").any():
            self.stopped = arrived[arrived["channel"] == "sms"].iloc[0]
            answers.stop_replies.append(self.stopped["recipient"])
        return shop, answers


@pytest.fixture(scope="module")
def season(airflow_db, tmp_path_factory):
    """A small shop's history loaded into a fresh store marked as the demo's, then three days
    through the DAG on the simulated clock, with the gateway simulator and an SMTP server."""
    folder = tmp_path_factory.mktemp("season")
    with pytest.MonkeyPatch.context() as env:  # a store and a shop of the module's own
        for name, file in (("CRM_DB", "crm.sqlite"), ("SHOP_DB", "shop.sqlite")):
            env.setenv(
                f"AIRFLOW_CONN_{name}", json.dumps({"conn_type": "sqlite", "host": str(folder / file)})
            )
        return _a_season(folder)


def _a_season(folder):
    from huitouke.config import config_path, load_settings
    from huitouke.demo import _create_demo_store
    from huitouke.demo_shop import ShopSpec, generate_shop, shop_as_of, write_shop
    from huitouke.gateway.server import DEFAULT_TOKEN, GatewayServer
    from huitouke.gateway.state import GatewayFaults
    from huitouke.pipeline import day_bounds, intake_orders, update_segments
    from huitouke.season import demo_delivery, mail_sink, run_season
    from huitouke.store.connection import engine_for

    settings = load_settings()
    shop = generate_shop(
        ShopSpec(customers=2_000, start=HISTORY_START, end=SEASON[0] - timedelta(days=1), seed=5)
    )
    crm, shop_db = engine_for("crm_db"), engine_for("shop_db")
    _create_demo_store(crm)
    history_end = SEASON[0] - timedelta(days=1)
    write_shop(shop_as_of(shop, history_end), shop_db)
    intake_orders(day_bounds(HISTORY_START, settings)[0], day_bounds(history_end, settings)[1], settings)
    update_segments(day_bounds(history_end, settings)[0], settings)
    world = _ReplyingWorld(shop, SEASON[0], SEASON[-1], 5)
    with (
        GatewayServer(GatewayFaults(latency_ms=1, seed=5)) as gateway,
        mail_sink() as (mail, port),
        demo_delivery(config_path(), gateway.url, DEFAULT_TOKEN, port, folder),
    ):
        days = run_season(world, SEASON, crm, shop_db, gateway, settings.shop.timezone)
        stats = gateway.state.stats()
    return {
        "days": days,
        "stats": stats,
        "mail": mail.accepted,
        "crm": crm,
        "world": world,
        "tz": settings.tz,
    }


pytestmark = pytest.mark.airflow


def test_every_day_of_the_season_runs_and_sends(season):
    assert [d.state for d in season["days"]] == ["success"] * len(SEASON)
    assert all(d.sent > 0 for d in season["days"])


def test_the_gateway_got_every_sms_sent_once_and_the_smtp_server_every_email(season):
    from huitouke.store.schema import outbox

    with season["crm"].connect() as conn:
        sent = dict(
            conn.execute(
                select(outbox.c.channel, func.count())
                .where(outbox.c.status == "sent")
                .group_by(outbox.c.channel)
            ).all()
        )
    assert season["stats"]["duplicates"] == 0
    assert season["stats"]["accepted"] == sent["sms"]
    assert season["mail"] == sent.get("email", 0)


def test_each_day_was_sent_on_the_morning_after_it_in_simulated_time(season):
    from huitouke.store.schema import outbox

    with season["crm"].connect() as conn:
        rows = conn.execute(
            select(outbox.c.business_date, func.min(outbox.c.sent_at), func.max(outbox.c.sent_at))
            .where(outbox.c.status == "sent")
            .group_by(outbox.c.business_date)
        ).all()
    assert [r[0] for r in rows] == SEASON
    for day, first, last in rows:
        local = [t.replace(tzinfo=ZoneInfo("UTC")).astimezone(season["tz"]) for t in (first, last)]
        assert all(t.date() == day + timedelta(days=1) and 10 <= t.hour < 11 for t in local), (day, local)


def test_a_stop_reply_is_read_back_as_an_opt_out_and_nothing_is_sent_after_it(season):
    from huitouke.store.schema import customers, outbox

    stopped = season["world"].stopped
    with season["crm"].connect() as conn:
        opted_out = conn.scalar(
            select(customers.c.sms_opt_out).where(customers.c.customer_id == stopped["customer_id"])
        )
        later = conn.scalar(
            select(func.count())
            .select_from(outbox)
            .where(outbox.c.customer_id == stopped["customer_id"])
            .where(outbox.c.channel == "sms")
            .where(outbox.c.status == "sent")
            .where(outbox.c.business_date > SEASON[1])
        )
    assert opted_out and later == 0  # the opt-out came from the reply the gateway relayed
