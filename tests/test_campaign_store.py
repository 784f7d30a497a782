"""Stages 3 and 4 against the store (SQLite and PostgreSQL): plan once, render into the outbox,
redeem coupons, fail a broken campaign alone, never queue twice, never message a holdout."""

from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sqlalchemy import func, select, update
from store_rows import add_customer, add_order, segments_of

from huitouke.campaigns import assign_arms, load_playbook
from huitouke.campaigns.daily import run_day as plan_campaigns
from huitouke.campaigns.playbook import parse_playbook
from huitouke.config import project_home
from huitouke.render import TemplateError
from huitouke.render.daily import lint_campaigns
from huitouke.render.daily import run_day as render_campaign
from huitouke.render.environment import templates_root
from huitouke.store.migrate import upgrade
from huitouke.store.schema import (
    campaign_days,
    campaign_entries,
    campaign_waves,
    coupons,
    customers,
    outbox,
)

D0 = date(2025, 6, 2)
NOW = datetime(2025, 6, 3, 0, 5)


def in_arm(campaign: str, arm: str, prefix: str) -> str:
    holdout = load_playbook().campaigns[campaign].holdout
    return next(
        c
        for c in (f"{prefix}{i}" for i in range(10_000))
        if assign_arms(campaign, [c], holdout.share, holdout.salt)[0] == arm
    )


class Store:
    """A tiny shop written into a migrated CRM store, and its segments computed in memory."""

    def __init__(self, engine):
        self.engine = engine
        upgrade(engine)
        self.playbook = load_playbook()
        self.n = 0

    def customer(self, cid: str, phone: str | None = "13800138000", **fields) -> str:
        return add_customer(self.engine, cid, phone=phone, **fields)

    def buy(self, cid: str, on: date, cny: float, coupon_code: str | None = None) -> str:
        self.n += 1
        return add_order(self.engine, f"o{self.n}", cid, on, cny, coupon_code)

    def segments(self, on: date) -> pd.DataFrame:
        return segments_of(self.engine, self.playbook, on)

    def plan(self, on: date, playbook=None):
        return plan_campaigns(self.engine, on, playbook or self.playbook, self.segments(on), now=NOW)

    def rows(self, table, *where):
        with self.engine.connect() as conn:
            return conn.execute(select(table).where(*where)).mappings().all()

    def count(self, table, *where) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(table).where(*where))


@pytest.fixture
def store(store_engine):
    return Store(store_engine)


def test_a_planned_day_is_stored_once_and_rendered_into_the_outbox(store):
    treated = store.customer(in_arm("thank_you", "treatment", "t"))
    held = store.customer(in_arm("thank_you", "holdout", "h"))
    store.buy(treated, D0, 120)
    store.buy(held, D0, 120)

    result = store.plan(D0)
    assert result.planned and "thank_you" in result.campaigns()
    waves = {
        r["customer_id"]: r for r in store.rows(campaign_waves, campaign_waves.c.campaign == "thank_you")
    }
    assert waves[treated]["outcome"] == "treated" and waves[held]["outcome"] == "held_out"
    assert {r["customer_id"] for r in store.rows(campaign_entries)} >= {treated, held}
    (coupon,) = store.rows(coupons)
    assert coupon["customer_id"] == treated and coupon["code"].startswith("TY-")

    done = render_campaign(store.engine, D0, "thank_you", store.playbook, now=NOW)
    assert done.queued == 1 and done.treated == 1
    (message,) = store.rows(outbox)
    assert message["customer_id"] == treated and message["status"] == "queued"
    assert message["coupon_code"] == coupon["code"] and coupon["code"] in message["body"]
    assert message["body"].startswith("【") and message["body"].endswith("回T退订")
    assert message["sms_segments"] >= 1 and message["template"] == "sms/thank_you_new"
    (day_row,) = store.rows(campaign_days, campaign_days.c.campaign == "thank_you")
    assert day_row["status"] == "queued" and day_row["messages_queued"] == 1 and day_row["held_out"] == 1

    # Running both stages again changes nothing and queues nothing new.
    again = store.plan(D0)
    assert not again.planned and "planned before" in again.note
    assert render_campaign(store.engine, D0, "thank_you", store.playbook, now=NOW).queued == 0
    assert store.count(outbox) == 1 and store.count(coupons) == 1


def test_a_day_before_the_latest_planned_day_is_refused(store):
    cid = store.customer("c1")
    store.buy(cid, D0, 120)
    store.plan(D0 + timedelta(days=1))
    older = store.plan(D0)
    assert not older.planned and "before the latest planned day" in older.note
    assert store.count(campaign_waves, campaign_waves.c.due_on == D0) == 0


def test_an_order_carrying_a_coupon_code_redeems_it(store):
    cid = store.customer(in_arm("thank_you", "treatment", "t"))
    store.buy(cid, D0, 120)
    store.plan(D0)
    (coupon,) = store.rows(coupons)
    typed = coupon["code"].replace("-", " ").lower()  # as a customer might type it
    order_id = store.buy(cid, D0 + timedelta(days=3), 150, coupon_code=typed)
    store.buy(store.customer("x"), D0 + timedelta(days=3), 90, coupon_code="NO-SUCHCODE99")

    result = store.plan(D0 + timedelta(days=3))
    assert result.redemptions["redeemed"] == 1 and result.redemptions["unknown_code"] == 1
    (redeemed,) = store.rows(coupons, coupons.c.code == coupon["code"])
    assert redeemed["redeemed_order_id"] == order_id and redeemed["redeemed_on"] == D0 + timedelta(days=3)
    assert store.plan(D0 + timedelta(days=3)).redemptions["already_redeemed"] == 1


def test_a_customer_who_opts_out_after_planning_gets_nothing(store):
    cid = store.customer(in_arm("thank_you", "treatment", "t"))
    store.buy(cid, D0, 120)
    store.plan(D0)
    with store.engine.begin() as conn:
        conn.execute(update(customers).values(sms_opt_out=True))
    done = render_campaign(store.engine, D0, "thank_you", store.playbook, now=NOW)
    assert done.queued == 0 and done.skipped_opted_out == 1 and store.count(outbox) == 0


@pytest.fixture
def broken_templates(tmp_path) -> Path:
    root = tmp_path / "templates"
    shutil.copytree(templates_root(), root)
    path = root / "sms" / "thank_you_new.txt.j2"
    path.write_text(path.read_text(encoding="utf-8") + "{{ customer.nickname }}", encoding="utf-8")
    return root


def test_a_broken_template_fails_its_campaign_only_before_anything_is_queued(store, broken_templates):
    thanked = store.customer(in_arm("thank_you", "treatment", "t"))
    store.buy(thanked, D0, 120)
    broken = lint_campaigns(store.playbook, root=broken_templates)
    assert set(broken) == {"thank_you"} and "nickname" in broken["thank_you"]
    store.plan(D0)

    with pytest.raises(TemplateError) as failure:
        render_campaign(store.engine, D0, "thank_you", store.playbook, now=NOW, root=broken_templates)
    assert (
        failure.value.file.endswith("sms/thank_you_new.txt.j2")
        and failure.value.variable == "customer.nickname"
    )
    assert failure.value.line is not None
    assert store.count(outbox) == 0
    (day_row,) = store.rows(campaign_days, campaign_days.c.campaign == "thank_you")
    assert day_row["status"] == "failed" and "nickname" in day_row["error"]
    # Another campaign of the day renders with the same templates folder.
    render_campaign(store.engine, D0, "care_tips", store.playbook, now=NOW, root=broken_templates)

    # Fixed: running the task again queues the day's messages.
    assert render_campaign(store.engine, D0, "thank_you", store.playbook, now=NOW).queued == 1
    (day_row,) = store.rows(campaign_days, campaign_days.c.campaign == "thank_you")
    assert day_row["status"] == "queued" and day_row["error"] is None


def test_a_template_using_a_coupon_its_campaign_does_not_give_is_broken():
    source = (project_home() / "include" / "playbook.yaml").read_text(encoding="utf-8")
    cut = source.index("    coupon:                          # the templates announce")
    end = source.index("prefix: NP\n", cut) + len("prefix: NP\n")
    without_coupon = source[:cut] + source[end:]
    playbook = parse_playbook(yaml.safe_load(without_coupon), "playbook.yaml", without_coupon)
    broken = lint_campaigns(playbook)
    assert set(broken) == {"new_product_premium"}
    assert "gives no coupon" in broken["new_product_premium"]


def test_matured_windows_are_evaluated_once_treated_against_holdout(store):
    from huitouke.evaluate.daily import run_day as evaluate_day
    from huitouke.store.schema import evaluation_details, evaluations

    holdout = load_playbook().campaigns["thank_you"].holdout
    ids = [f"e{i}" for i in range(400)]
    arms = dict(zip(ids, assign_arms("thank_you", ids, holdout.share, holdout.salt), strict=True))
    treated = [c for c in ids if arms[c] == "treatment"][:3]
    held = [c for c in ids if arms[c] == "holdout"][:2]
    for cid in treated + held:
        store.customer(cid)
        store.buy(cid, D0, 120)
    store.plan(D0)
    render_campaign(store.engine, D0, "thank_you", store.playbook, now=NOW)
    with store.engine.begin() as conn:  # delivered as rendered: the provider billed the segments
        conn.execute(update(outbox).values(status="sent", billed_segments=outbox.c.sms_segments))
    # Sent D0 + 1 at 09:00 Shanghai (01:00 UTC). Orders are stored at 03:00 UTC of their day.
    store.buy(treated[0], D0 + timedelta(days=2), 80)  # inside the 2-day window
    store.buy(treated[1], D0 + timedelta(days=5), 60)  # inside the 10-day window only
    store.buy(held[0], D0 + timedelta(days=9), 50)  # natural repurchase, 10-day window

    def rows():
        with store.engine.connect() as conn:
            return {
                (r.window_days, r.view): r
                for r in conn.execute(select(evaluations).where(evaluations.c.campaign == "thank_you")).all()
            }

    evaluate_day(store.engine, D0 + timedelta(days=2), store.playbook, "Asia/Shanghai", now=NOW)
    assert rows() == {}  # the 2-day window ends on D0 + 3 at 09:00: not matured yet
    evaluate_day(store.engine, D0 + timedelta(days=3), store.playbook, "Asia/Shanghai", now=NOW)
    two = rows()[(2, "itt")]
    assert (two.customers, two.responders, two.control_customers, two.control_responders) == (3, 1, 2, 0)
    assert two.evaluated_on == D0 + timedelta(days=3) and two.verdict == "too_few"
    assert two.lift == pytest.approx(1 / 3)
    segments = sum(m["sms_segments"] for m in store.rows(outbox))
    cost = segments * store.playbook.shop.unit_costs.sms_segment_cny * 100  # the billed segments
    assert two.cost_cents == round(cost) and cost > 0
    stored = len(rows())
    evaluate_day(store.engine, D0 + timedelta(days=3), store.playbook, "Asia/Shanghai", now=NOW)
    assert len(rows()) == stored  # a re-run adds nothing

    evaluate_day(store.engine, D0 + timedelta(days=11), store.playbook, "Asia/Shanghai", now=NOW)
    ten = rows()[(10, "itt")]
    assert (ten.responders, ten.control_responders) == (2, 1)
    assert ten.incremental_revenue_cents == round((14_000 / 3 - 5_000 / 2) * 3)
    assert rows()[(2, "itt")].evaluated_on == D0 + timedelta(days=3)  # recorded once, never redone
    assert store.count(evaluation_details, evaluation_details.c.kind == "curve") == 1
