"""The shipped templates, the context, compile-once rendering, previews and the marketers' README."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from decimal import Decimal

import pytest

from huitouke.config import project_home
from huitouke.records import CATEGORIES
from huitouke.render import (
    CONTEXT,
    SAMPLE_SHOP,
    ShopInfo,
    SmsBudgetError,
    TemplateError,
    category_context,
    compile_message,
    count_sms,
    customer_context,
    lint_templates,
    list_messages,
    message_context,
    render_batch,
    sample_context,
    template_environment,
)
from huitouke.render.cli import add_templates_commands
from huitouke.render.context import context_reference_markdown, salutation
from huitouke.render.environment import cny, date_en, date_zh
from huitouke.render.preview import PreviewOptions, preview_message
from huitouke.segments import SEGMENTS_COLUMNS

# The default campaigns and the channels their templates exist in.
DEFAULT_MESSAGES = {
    "thank_you_new": {"sms", "email"},
    "thank_you_returning": {"sms"},
    "care_tips": {"sms", "email"},
    "coupon_wave": {"sms"},
    "phone_followup": {"call"},
    "birthday": {"sms"},
    "win_back": {"sms"},
    "new_product_premium": {"sms", "email"},
}
SHIPPED = [(m.channel, m.name) for m in list_messages()]


def test_every_shipped_template_lints_clean():
    problems = lint_templates()
    assert [str(p) for p in problems] == []


def test_every_default_campaign_has_its_zh_templates_and_there_is_an_english_example():
    shipped = {}
    for channel, name in SHIPPED:
        shipped.setdefault(name, set()).add(channel)
    for name, channels in DEFAULT_MESSAGES.items():
        assert channels <= shipped.get(name, set()), name
    assert "sms" in shipped["en/thank_you_returning"]


@pytest.mark.parametrize("channel", ["sms", "email"])
def test_care_tips_have_a_variant_for_every_category_and_a_default(channel):
    [care] = [m for m in list_messages() if m.name == "care_tips" and m.channel == channel]
    assert care.by_category_group
    assert set(care.variants) == {*CATEGORIES, "default"}


@pytest.mark.parametrize(("channel", "name"), SHIPPED, ids=[f"{c}/{n}" for c, n in SHIPPED])
def test_every_shipped_message_renders_with_the_sample_context(channel, name):
    message = compile_message(name, channel, SAMPLE_SHOP)
    groups = [*CATEGORIES, "baby"] if message.files.by_category_group else ["food"]
    for group in groups:
        for wave in range(1, 6):
            rendered = message.render(sample_context(category_group=group, wave=wave))
            assert "None" not in rendered.body and "{{" not in rendered.body
            if channel == "sms":
                assert rendered.body.startswith("【暖暖母婴旗舰店】") and rendered.body.endswith("回T退订")
                assert rendered.sms_segments <= 2 and rendered.encoding == "ucs2"
            if channel == "email":
                assert rendered.subject and "退订" in rendered.html and "退订" in rendered.text
                assert rendered.html.lstrip().startswith("<!DOCTYPE html>")


def test_care_tips_pick_the_variant_of_the_customer_category_group():
    message = compile_message("care_tips", "sms", SAMPLE_SHOP)
    food = message.render(sample_context(category_group="food"))
    assert "奶粉" in food.body and food.template.endswith("sms/care_tips/food.txt.j2")
    custom = message.render(sample_context(category_group="baby"))  # a playbook's own group
    assert custom.template.endswith("sms/care_tips/default.txt.j2")
    context = sample_context()
    del context["category"]
    with pytest.raises(TemplateError) as caught:
        message.render(context)
    assert caught.value.variable == "category.group"


def test_most_zh_sms_fit_one_or_two_segments_for_a_typical_customer():
    shop = ShopInfo(name="回头客优选")
    for channel, name in SHIPPED:
        if channel != "sms":
            continue
        message = compile_message(name, "sms", shop)
        context = sample_context(shop)
        context["customer"]["first_name"] = "张敏"
        assert message.render(context).sms_segments <= 2, name


def test_render_batch_gives_the_same_messages_as_render_one_by_one():
    message = compile_message("care_tips", "sms", SAMPLE_SHOP)
    contexts = []
    for i, group in enumerate([*CATEGORIES, "other"] * 3):
        context = sample_context(category_group=group)
        context["customer"]["first_name"] = f"客户{i}"
        del context["shop"]  # the compiled message adds its shop
        contexts.append(context)
    assert render_batch(message, contexts) == [message.render(c) for c in contexts]


def test_render_batch_matches_plain_jinja_render_of_the_template():
    message = compile_message("thank_you_new", "sms", SAMPLE_SHOP)
    template = template_environment().get_template("sms/thank_you_new.txt.j2")
    contexts = [sample_context() for _ in range(3)]
    contexts[1]["coupon"]["min_spend_cny"] = 0
    contexts[2]["coupon"]["value_cny"] = Decimal("12.5")
    for rendered, context in zip(render_batch(message, contexts), contexts, strict=True):
        assert rendered.body == f"【暖暖母婴旗舰店】{template.render(context).strip()}回T退订"
    assert "无门槛" in render_batch(message, contexts)[1].body
    assert "12.50元" in render_batch(message, contexts)[2].body


def test_set_variables_do_not_leak_between_messages_of_a_batch(tmp_path):
    (tmp_path / "sms").mkdir()
    source = "{% if customer.paid_orders > 1 %}{% set title = '老朋友' %}{% endif %}{{ title | default('新朋友') }}"
    (tmp_path / "sms" / "x.txt.j2").write_text(source, encoding="utf-8")
    message = compile_message("x", "sms", SAMPLE_SHOP, root=tmp_path)
    first, second = sample_context(), sample_context()
    first["customer"]["paid_orders"], second["customer"]["paid_orders"] = 3, 1
    bodies = [m.body for m in render_batch(message, [first, second])]
    assert bodies == ["【暖暖母婴旗舰店】老朋友 回T退订", "【暖暖母婴旗舰店】新朋友 回T退订"]


def test_an_sms_over_the_campaign_maximum_raises_naming_template_and_customer():
    message = compile_message("thank_you_new", "sms", SAMPLE_SHOP, max_segments=2)
    context = sample_context()
    context["customer"].update(id="C42", first_name="长" * 60)
    with pytest.raises(SmsBudgetError) as caught:
        render_batch(message, [sample_context(), context])
    assert "customer C42" in str(caught.value) and "maximum of 2" in str(caught.value)
    assert caught.value.file.endswith("sms/thank_you_new.txt.j2")


def test_compile_refuses_a_template_whose_sample_is_over_the_campaign_maximum():
    with pytest.raises(TemplateError) as caught:
        compile_message("thank_you_new", "sms", SAMPLE_SHOP, max_segments=1)
    assert caught.value.variable == "sms_segments"


def test_the_shop_signature_and_footer_come_from_shop_info():
    shop = ShopInfo(name="Nuannuan", opt_out_footer="Reply STOP to opt out", sms_signature_brackets=False)
    message = compile_message("en/thank_you_returning", "sms", shop)
    context = sample_context(shop)
    context["customer"]["first_name"] = "Alice"
    rendered = message.render(context)
    assert rendered.body.startswith("Nuannuan: Hi Alice, thanks for shopping")
    assert rendered.body.endswith("help. Reply STOP to opt out")
    assert (rendered.encoding, rendered.sms_segments) == ("gsm7", 1)
    assert count_sms(rendered.body).units == rendered.units


def test_call_script_renders_for_the_agent_without_signature_or_footer():
    rendered = compile_message("phone_followup", "call", SAMPLE_SHOP).render(sample_context())
    assert rendered.channel == "call" and "回T退订" not in rendered.body
    assert "T2025111100012345" in rendered.body and rendered.sms_segments is None


def test_context_schema_has_the_documented_objects_and_no_dict_method_names():
    assert list(CONTEXT) == ["customer", "shop", "coupon", "order", "category", "campaign", "wave"]
    assert CONTEXT["customer"].field_names == (
        "id",
        "name",
        "first_name",
        "member_tier",
        "value_tier",
        "lifecycle",
        "category_group",
        "paid_orders",
        "last_order_date",
        "birthday",
    )
    for obj in CONTEXT.values():
        assert not set(obj.field_names) & set(dir(dict)), obj.name


def test_customer_context_reads_a_segments_row():
    row = {column: None for column in SEGMENTS_COLUMNS}
    row.update(
        customer_id="C1",
        lifecycle="new",
        member_tier="normal",
        value_tier="premium",
        category_group="cosmetics",
        paid_orders=1,
        name="  李娜 ",
        last_business_date=dt.datetime(2025, 11, 11, 0, 0),
        birthday=float("nan"),
    )
    customer = customer_context(row)
    assert customer == {
        "id": "C1",
        "name": "李娜",
        "first_name": "李娜",
        "member_tier": "normal",
        "value_tier": "premium",
        "lifecycle": "new",
        "category_group": "cosmetics",
        "paid_orders": 1,
        "last_order_date": dt.date(2025, 11, 11),
        "birthday": None,
    }
    context = message_context(customer=customer, shop=SAMPLE_SHOP)
    assert (
        context["category"]
        == category_context("cosmetics")
        == {"group": "cosmetics", "display_name": "美妆护肤"}
    )
    assert set(context) == {"customer", "shop", "category"}


def test_salutation_is_never_empty():
    assert salutation("张三丰") == "张三丰"
    assert salutation("Alice  Smith") == "Alice"
    assert salutation(None) == salutation("  ") == "亲"


def test_filters_format_money_and_dates():
    assert [cny(20), cny(Decimal("12.5")), cny(199.0), cny(20, symbol=True), cny(None)] == [
        "20元",
        "12.50元",
        "199元",
        "¥20",
        "",
    ]
    day = dt.date(2025, 11, 25)
    assert [
        date_zh(day),
        date_zh(day, "long"),
        date_zh("2025-11-25"),
        date_en(day),
        date_en(day, "long"),
    ] == [
        "11月25日",
        "2025年11月25日",
        "11月25日",
        "Nov 25",
        "Nov 25, 2025",
    ]
    with pytest.raises(TypeError) as caught:
        cny("张三丰")  # e.g. {{ customer.name | cny }}: the error goes to a log, the name must not
    assert "张三丰" not in str(caught.value)


def test_templates_readme_carries_the_generated_context_reference():
    readme = (project_home() / "include" / "templates" / "README.md").read_text(encoding="utf-8")
    assert context_reference_markdown() in readme


def test_preview_shows_every_variant_with_its_segments():
    text = preview_message("sms/care_tips")
    for group in CATEGORIES:
        assert f"== sms/care_tips [{group}]" in text
    assert "segment(s), UCS-2" in text and "maximum 2" in text


def test_preview_for_a_given_customer_and_wave():
    text = preview_message("coupon_wave", PreviewOptions(context={"first_name": "王芳"}, wave=5))
    assert "【暖暖母婴旗舰店】王芳您好，这是本季最后一张" in text
    text = preview_message(
        "care_tips", PreviewOptions(channel="sms", context={"customer": {"category_group": "3c"}})
    )
    assert "sms/care_tips/3c.txt.j2" in text


def test_preview_says_when_an_sms_is_over_budget(tmp_path):
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "long.txt.j2").write_text("好" * 200, encoding="utf-8")
    assert "OVER the maximum of 2" in preview_message("long", PreviewOptions(root=tmp_path))


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="huitouke")
    add_templates_commands(
        parser.add_subparsers(dest="command", required=True), shop_loader=lambda: SAMPLE_SHOP
    )
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_preview_with_customer_json(tmp_path, capsys):
    customer = tmp_path / "customer.json"
    customer.write_text(
        json.dumps({"first_name": "陈静", "paid_orders": 7}, ensure_ascii=False), encoding="utf-8"
    )
    assert _cli(["templates", "preview", "thank_you_returning", "--customer-json", str(customer)]) == 0
    out = capsys.readouterr().out
    assert "陈静您好，这已是您第7次在小店下单" in out and "segment(s), UCS-2" in out


def test_cli_preview_of_an_unknown_message_exits_1(capsys):
    assert _cli(["templates", "preview", "thank_you_nwe"]) == 1
    assert "no template named 'thank_you_nwe'" in capsys.readouterr().err


def test_cli_lint_of_the_shipped_templates_exits_0(capsys):
    assert _cli(["templates", "lint"]) == 0
    assert "no errors" in capsys.readouterr().out


def test_cli_context_prints_the_reference(capsys):
    assert _cli(["templates", "context"]) == 0
    assert "`coupon.value_cny`" in capsys.readouterr().out


def test_a_customer_without_a_segment_row_yet_renders_with_empty_segments():
    """A join that found no segment row gives NaN cells (the demo's season met one: a render
    task failed on int(NaN)); the template sees None and 0 paid orders."""
    from huitouke.render.context import customer_context

    nan = float("nan")
    row = {"customer_id": "c1", "name": "张三", "member_tier": nan, "lifecycle": nan, "paid_orders": nan}
    customer = customer_context(row)
    assert customer["paid_orders"] == 0 and customer["member_tier"] is None and customer["lifecycle"] is None
