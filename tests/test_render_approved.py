"""Approved SMS templates (the playbook's ``approved_sms_templates``): validated with the file, line
and field of every mistake; their parameters rendered in the message sandbox with the body's
context and stored on the outbox row; linted (missing under Aliyun, unknown template, broken or
empty parameters); and sent: outbox row -> message_factory -> AliyunSmsProvider -> the simulator
received the code and the parameters."""

from __future__ import annotations

import argparse
import dataclasses
import json
from datetime import date, datetime, timedelta

import pytest
import yaml
from deliver_rows import FAST_RULES, SHOP_TZ, yesterday
from deliver_rows import job as delivery_job
from sqlalchemy import func, select
from store_rows import add_customer, add_order, segments_of

from huitouke.campaigns import assign_arms
from huitouke.campaigns.daily import run_day as plan_campaigns
from huitouke.campaigns.playbook import parse_playbook
from huitouke.config import ConfigError, project_home
from huitouke.deliver.persist import CLAIM_COLUMNS
from huitouke.deliver.wiring import message_factory
from huitouke.render import TemplateError
from huitouke.render.approved import Approvals, compile_params
from huitouke.render.cli import add_templates_commands
from huitouke.render.context import sample_context
from huitouke.render.daily import check_templates, lint_campaigns, shop_info
from huitouke.render.daily import run_day as render_campaign
from huitouke.render.lint import lint_approved_sms
from huitouke.render.persist import OUTBOX_COLUMNS
from huitouke.store.schema import campaign_days, outbox

WHERE = "include/playbook.yaml"
SHIPPED = (project_home() / "include" / "playbook.yaml").read_text(encoding="utf-8")
APPROVED = """
approved_sms_templates:
  sms/thank_you_new:
    code: SMS_100000001
    text: "${name}您好，感谢您${date}第一次光临${shop}！送您${amount}回购券，券码${code}，${expires}前有效。"
    params:
      name: "{{ customer.first_name }}"
      date: "{{ order.date | date_zh }}"
      shop: "{{ shop.name }}"
      amount: "{{ coupon.value_cny | cny }}"
      code: "{{ coupon.code }}"
      expires: "{{ coupon.expires_on | date_zh }}"
  sms/thank_you_returning:
    code: SMS_100000002
    params:
      name: "{{ customer.first_name }}"
      orders: "{{ customer.paid_orders }}"
"""


def playbook_with(extra: str = APPROVED):
    text = SHIPPED + extra
    return parse_playbook(yaml.safe_load(text), WHERE, text)


def line_of(text: str, needle: str, after: str = "") -> int:
    """The 1-based line, in the shipped playbook plus ``text``, of the first ``needle`` in ``text``
    (after the first ``after``)."""
    return SHIPPED.count("\n") + text[: text.index(needle, text.index(after))].count("\n") + 1


# ------------------------------------------------------------------------------- the playbook


def test_a_mapping_is_read_with_where_it_is_written():
    approved = playbook_with().approved_template("sms/thank_you_new")
    assert approved.code == "SMS_100000001" and list(approved.params)[:2] == ["name", "date"]
    assert approved.file == WHERE
    assert approved.line_of("amount") == line_of(APPROVED, "amount:")
    assert approved.line_of() == line_of(APPROVED, "sms/thank_you_new:")
    assert playbook_with("").approved_sms_templates == {}


@pytest.mark.parametrize(
    ("old", "new", "at", "field", "message"),
    [
        ("SMS_100000001", "sms-1000", "code: sms-1000", "sms/thank_you_new.code", "copy it from the provider"),
        ("${amount}回购券", "${value}回购券", "sms/thank_you_new:", "sms/thank_you_new", "no params for value"),
        ('"{{ customer.paid_orders }}"', "7", "orders:", "sms/thank_you_returning.params.orders",
         "write the parameter as text in quotes"),
        ("sms/thank_you_returning:", "email/thank_you_returning:", "email/thank_you_returning:",
         "email/thank_you_returning", "sms/<name>"),
        ("    text:", "    txt:", "txt:", "sms/thank_you_new.txt", "unknown field"),
        ("      orders:", "      or-ders:", ("params:", "SMS_100000002"), "sms/thank_you_returning.params",
         "'or-ders': the name inside ${...} of the approved text, letters, digits"),
        ('      orders: "{{ customer.paid_orders }}"', '      orders: " "', "orders:",
         "sms/thank_you_returning.params.orders", "the parameter is empty"),
        ("    code: SMS_100000002\n", "", "sms/thank_you_returning:", "sms/thank_you_returning", "say the"),
    ],
)  # fmt: skip
def test_a_mistake_names_the_file_the_line_and_the_field(old, new, at, field, message):
    text = APPROVED.replace(old, new, 1)
    with pytest.raises(ConfigError) as error:
        playbook_with(text)
    first = str(error.value).splitlines()[0]
    expected_line = line_of(text, *at) if isinstance(at, tuple) else line_of(text, at)
    assert first.startswith(f"{WHERE} (line {expected_line}): approved_sms_templates.{field}: "), first
    assert message in first


def test_variants_map_each_category_group_to_its_own_approved_template():
    approved = playbook_with(
        """
approved_sms_templates:
  sms/care_tips:
    variants:
      food: {code: SMS_201, params: {tip: "{{ category.display_name }}"}}
      default: {code: SMS_200, params: {name: "{{ customer.first_name }}"}}
"""
    ).approved_template("sms/care_tips")
    compiled = compile_params("sms/care_tips", approved)
    food, other = sample_context(category_group="food"), sample_context(category_group="3c")
    assert compiled.render(food) == ("SMS_201", {"tip": food["category"]["display_name"]})
    assert compiled.render(other) == ("SMS_200", {"name": other["customer"]["first_name"]})


# ------------------------------------------------------------------------ rendering, the sandbox


def compiled(params: dict[str, str]):
    text = "\napproved_sms_templates:\n  sms/birthday:\n    code: SMS_1\n    params:\n" + "".join(
        f"      {k}: {json.dumps(v, ensure_ascii=False)}\n" for k, v in params.items()
    )
    playbook = playbook_with(text)
    return compile_params(
        "sms/birthday", playbook.approved_template("sms/birthday"), shop_info(playbook)
    ), text


def test_params_render_with_the_bodys_context_in_one_batch_as_one_by_one():
    params, _ = compiled({"name": "{{ customer.first_name }}", "n": "{% set x = wave.number %}{{ x }}"})
    contexts = [sample_context(wave=w) for w in (1, 2, 3)]
    for context in contexts:
        context.pop("shop")  # added from the shop, as for the body
    many = params.render_many(contexts)
    assert many == [params.render(c) for c in contexts]
    assert [values["n"] for _, values in many] == ["1", "2", "3"]
    assert {code for code, _ in many} == {"SMS_1"}


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("{{ ''.__class__.__mro__ }}", "refused by the sandbox"),
        ("{{ 'x' * 100000 }}", "refused by the sandbox"),
        ("{{ customer.nickname }}", "undefined field 'nickname'"),
    ],
)
def test_a_param_the_sandbox_refuses_fails_like_a_body_naming_the_playbook_line(source, words):
    params, text = compiled({"name": "{{ customer.first_name }}", "bad": source})
    with pytest.raises(TemplateError) as error:
        params.render(sample_context())
    assert error.value.file == WHERE and error.value.line == line_of(text, "bad:")
    assert error.value.variable == "approved_sms_templates.sms/birthday.params.bad"
    assert words in error.value.reason


def test_a_param_the_lint_refuses_breaks_its_campaign_like_a_broken_body():
    extra = APPROVED + "  sms/birthday:\n    code: SMS_3\n    params:\n      x: \"{{ ''.__class__ }}\"\n"
    broken = lint_campaigns(playbook_with(extra))
    assert set(broken) == {"birthday"}
    assert "params.x" in broken["birthday"] and "the sandbox refuses them" in broken["birthday"]


# ---------------------------------------------------------------------------------------- lint


def rules(problems) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in problems:
        out.setdefault(p.rule, []).append(p.field or "")
    return out


def test_under_aliyun_every_sms_template_an_enabled_campaign_sends_needs_a_mapping():
    playbook = playbook_with()
    sent = playbook.sms_templates_in_use()
    assert "sms/thank_you_new" in sent and "sms/coupon_wave" in sent
    found = rules(lint_approved_sms(Approvals.of(playbook, "aliyun"), sent=sent, shop=shop_info(playbook)))
    missing = {f.removeprefix("approved_sms_templates.") for f in found.pop("approved-missing")}
    assert missing == set(sent) - {"sms/thank_you_new", "sms/thank_you_returning"}
    assert found == {}
    # Another provider: mappings are optional, and still checked.
    assert lint_approved_sms(Approvals.of(playbook, "webhook"), sent=sent) == []
    broken = lint_campaigns(playbook, sms_provider="aliyun")
    assert "thank_you" not in broken and "coupon_waves" in broken
    assert "delivers only approved templates" in broken["coupon_waves"]
    assert lint_campaigns(playbook, sms_provider="twilio") == {}


def test_unknown_templates_broken_and_empty_params_are_found_with_their_lines():
    extra = APPROVED + (
        "  sms/thank_you_nw:\n    code: SMS_9\n"
        "  sms/birthday:\n    code: SMS_3\n    params:\n"
        '      name: "{{ custmer.first_name }}"\n'
        '      url: "{{ shop.url }}"\n'
        "  sms/win_back:\n    code: SMS_4\n    params:\n"
        "      blank: \"{{ '' }}\"\n"
        '      syntax: "{{ coupon.code }"\n'
        "  sms/coupon_wave:\n    code: SMS_5\n    params:\n"
        "      blank: \"{{ '' }}\"\n"
    )
    playbook = playbook_with(extra)
    problems = lint_approved_sms(Approvals.of(playbook), shop=shop_info(playbook))
    by_field = {p.field: p for p in problems}
    unknown = by_field["approved_sms_templates.sms/thank_you_nw"]
    assert unknown.rule == "approved-unknown" and unknown.line == line_of(extra, "sms/thank_you_nw:")
    name = by_field["approved_sms_templates.sms/birthday.params.name"]
    assert name.rule == "approved-params" and name.is_error and "custmer" in name.message
    assert name.line == line_of(extra, 'name: "{{ custmer')
    url = by_field["approved_sms_templates.sms/birthday.params.url"]
    assert url.rule == "optional-field" and not url.is_error
    syntax = by_field["approved_sms_templates.sms/win_back.params.syntax"]
    assert syntax.rule == "approved-params" and syntax.is_error
    blank = by_field["approved_sms_templates.sms/coupon_wave.params.blank"]
    assert blank.rule == "approved-empty" and not blank.is_error and "renders empty" in blank.message
    assert "approved_sms_templates.sms/thank_you_new" not in str(problems)
    check = check_templates(playbook)
    assert any("sms/thank_you_nw" in e for e in check.mapping_errors)
    assert set(check.broken) == {"birthday", "win_back"}  # coupon_waves: an empty parameter only warns


def test_the_lint_command_reports_approved_templates_and_exits_1(capsys):
    playbook = playbook_with()
    parser = argparse.ArgumentParser()
    add_templates_commands(
        parser.add_subparsers(dest="command"),
        shop_loader=lambda: shop_info(playbook),
        approvals_loader=lambda: (Approvals.of(playbook, "aliyun"), playbook.sms_templates_in_use()),
    )
    args = parser.parse_args(["templates", "lint", "thank_you_new", "coupon_wave"])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert "approved_sms_templates.sms/coupon_wave: the SMS provider (aliyun)" in out
    assert "sms/thank_you_new" not in out.replace("sms/thank_you_new.txt", "")


# ------------------------------------------------------------------------- the store, the outbox

NOW = datetime(2025, 6, 3, 0, 5)


def treated_customer(engine, playbook, prefix: str = "t", phone: str = "13800138001") -> str:
    holdout = playbook.campaigns["thank_you"].holdout
    cid = next(
        c
        for c in (f"{prefix}{i}" for i in range(10_000))
        if assign_arms("thank_you", [c], holdout.share, holdout.salt)[0] == "treatment"
    )
    return add_customer(engine, cid, phone=phone)


def planned(engine, playbook, day: date) -> str:
    cid = treated_customer(engine, playbook)
    add_order(engine, "o1", cid, day, 120)
    plan_campaigns(engine, day, playbook, segments_of(engine, playbook, day), now=NOW)
    return cid


def outbox_rows(engine):
    with engine.connect() as conn:
        return conn.execute(select(outbox)).mappings().all()


def test_rendering_stores_the_code_and_the_params_with_the_body(store_engine):
    playbook, day = playbook_with(), date(2025, 6, 2)
    planned(store_engine, playbook, day)
    done = render_campaign(store_engine, day, "thank_you", playbook, now=NOW, sms_provider="aliyun")
    assert done.queued == 1
    (row,) = outbox_rows(store_engine)
    assert row["template_code"] == "SMS_100000001"
    params = json.loads(row["template_params"])
    assert params["code"] == row["coupon_code"] and params["code"] in row["body"]
    assert params["name"] == "王小明" and params["shop"] == playbook.shop.name
    assert params["date"] == "6月2日" and params["amount"] == "10元"
    assert {"template_code", "template_params"} <= set(OUTBOX_COLUMNS) & set(CLAIM_COLUMNS)


def test_without_a_mapping_under_aliyun_a_campaign_fails_before_queueing(store_engine):
    playbook, day = playbook_with(""), date(2025, 6, 2)
    planned(store_engine, playbook, day)
    with pytest.raises(TemplateError, match="delivers only approved templates"):
        render_campaign(store_engine, day, "thank_you", playbook, now=NOW, sms_provider="aliyun")
    with store_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(outbox)) == 0
        (status, error) = conn.execute(
            select(campaign_days.c.status, campaign_days.c.error).where(
                campaign_days.c.campaign == "thank_you"
            )
        ).one()
    assert status == "failed" and "approved_sms_templates.sms/thank_you_new" in error
    # Another provider sends the text: the mapping is optional, nothing is stored for it.
    render_campaign(store_engine, day, "thank_you", playbook, now=NOW, sms_provider="webhook")
    (row,) = outbox_rows(store_engine)
    assert row["template_code"] is None and row["template_params"] is None
    assert message_factory(None, None)(dict(row)).template_params == {}


# ---------------------------------------------------------------------- to the simulator, sent


def test_a_rendered_row_goes_out_with_its_code_and_params_to_the_aliyun_simulator(store_engine):
    pytest.importorskip("alibabacloud_dysmsapi20170525")
    from huitouke.deliver.daily import run_day as deliver_day
    from huitouke.deliver.providers.aliyun import AliyunSettings, AliyunSmsProvider
    from huitouke.gateway.server import GatewayServer

    playbook, day = playbook_with(), yesterday()
    planned(store_engine, playbook, day)
    render_campaign(store_engine, day, "thank_you", playbook, now=datetime.now(), sms_provider="aliyun")
    (row,) = outbox_rows(store_engine)
    with GatewayServer() as gw:
        settings = AliyunSettings(
            access_key_id="LTAI-test",
            access_key_secret=gw.state.token,
            endpoint=gw.url.removeprefix("http://"),
            protocol="http",
            timeout_s=2,
            connect_timeout_s=2,
        )
        provider = AliyunSmsProvider(dataclasses.replace(settings))
        job = delivery_job({"sms": provider}, day, message_of=message_factory(None, None, "回头客小店"))
        job = dataclasses.replace(job, rules=FAST_RULES, tz=SHOP_TZ)
        deliver_day(store_engine, job)
        (accepted,) = gw.state.accepted()
    assert accepted["to"] == "+8613800138001"
    assert accepted["extra"]["template_code"] == "SMS_100000001"
    assert accepted["extra"]["sign_name"] == "回头客小店"
    sent_params = json.loads(accepted["text"].removeprefix("【回头客小店】"))
    assert sent_params == json.loads(row["template_params"])
    assert sent_params["code"] == row["coupon_code"]
    (after,) = outbox_rows(store_engine)
    assert after["status"] == "sent" and after["sent_at"] is not None
    assert after["business_date"] >= date.today() - timedelta(days=2)
