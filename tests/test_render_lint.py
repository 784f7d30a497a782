"""Every lint rule, each on a small templates folder of its own."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from huitouke.render import SAMPLE_SHOP, ShopInfo, TemplateError, compile_message, lint_templates
from huitouke.render.cli import add_templates_commands
from huitouke.render.lint import LintProblem

GOOD_SMS = "{{ customer.first_name }}您好，感谢您的支持！"
EMAIL_HTML = (
    '{% extends "email/_base.html.j2" %}{% block subject %}给{{ customer.first_name }}的信{% endblock %}'
    "{% block content %}<p>{{ customer.first_name }}您好</p>{% endblock %}"
)
EMAIL_TEXT = (
    '{% extends "email/_base.txt.j2" %}{% block content %}{{ customer.first_name }}您好{% endblock %}'
)
EMAIL_BASE = {
    "email/_base.html.j2": "<title>{% block subject %}{% endblock %}</title>{% block content %}{% endblock %}退订",
    "email/_base.txt.j2": "{% block content %}{% endblock %}\n回复退订",
}


def _root(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


def _lint(tmp_path: Path, files: dict[str, str], **kwargs) -> list[LintProblem]:
    return lint_templates(root=_root(tmp_path, files), **kwargs)


def _rules(problems: list[LintProblem]) -> list[str]:
    return [p.rule for p in problems]


def test_a_clean_folder_has_no_problem(tmp_path):
    files = {
        "sms/ok.txt.j2": GOOD_SMS,
        "email/ok.html.j2": EMAIL_HTML,
        "email/ok.txt.j2": EMAIL_TEXT,
        **EMAIL_BASE,
    }
    assert _lint(tmp_path, files) == []


def test_syntax_error_names_file_and_line(tmp_path):
    [problem] = _lint(tmp_path, {"sms/x.txt.j2": "您好\n{% if customer.paid_orders > 1 %}老朋友"})
    assert problem.rule == "syntax" and problem.line == 2
    assert problem.file.endswith("sms/x.txt.j2")
    assert "endif" in problem.message


def test_unknown_filter_is_a_syntax_error_naming_the_filter(tmp_path):
    [problem] = _lint(tmp_path, {"sms/x.txt.j2": "{{ coupon.value_cny | cnyy }}"})
    assert (problem.rule, problem.line, problem.field) == ("syntax", 1, "cnyy")
    assert "available: " in problem.message and "cny" in problem.message


def test_unknown_variable_names_it_and_suggests_the_documented_one(tmp_path):
    [problem] = _lint(tmp_path, {"sms/x.txt.j2": "您好\n\n{{ custmer.first_name }}"})
    assert (problem.rule, problem.line, problem.field) == ("unknown-variable", 3, "custmer")
    assert "did you mean 'customer'?" in problem.message


def test_loop_and_set_variables_are_not_unknown(tmp_path):
    source = (
        "{% set n = namespace(count=0) %}{% for c in order.categories %}{{ loop.index }}{{ c }}{% endfor %}"
        "{% for i in range(2) %}{{ i }}{% endfor %}{{ n.count }}"
    )
    assert _lint(tmp_path, {"sms/x.txt.j2": source}) == []


def test_unknown_field_names_the_object_and_lists_its_fields(tmp_path):
    [problem] = _lint(tmp_path, {"sms/coupon_wave.txt.j2": "您好\n\n{{ coupon.valu }}"})
    assert (problem.rule, problem.line, problem.field) == ("unknown-field", 3, "coupon.valu")
    assert problem.message.startswith("unknown field 'valu' of coupon (known: code, value_cny, min_spend_cny")
    assert str(problem).endswith("sms/coupon_wave.txt.j2:3: coupon.valu: " + problem.message)


def test_unknown_field_by_subscript_is_found_too(tmp_path):
    [problem] = _lint(tmp_path, {"sms/x.txt.j2": "{{ customer['nmae'] }}"})
    assert (problem.rule, problem.field) == ("unknown-field", "customer.nmae")
    assert "did you mean 'name'?" in problem.message


def test_a_field_of_a_plain_value_is_an_unknown_field(tmp_path):
    [problem] = _lint(tmp_path, {"sms/x.txt.j2": "{{ customer.first_name.upper() }}"})
    assert (problem.rule, problem.field) == ("unknown-field", "customer.first_name.upper")
    assert "use a filter" in problem.message


def test_attribute_starting_with_underscore_is_unsafe(tmp_path):
    [problem] = _lint(tmp_path, {"sms/x.txt.j2": "{{ customer.first_name }}\n{{ ''.__class__.__mro__ }}"})
    assert (problem.rule, problem.line, problem.field) == ("unsafe-attribute", 2, "''.__class__")


def test_include_outside_the_templates_folder_or_missing(tmp_path):
    problems = _lint(
        tmp_path,
        {"sms/x.txt.j2": "{% include '../../etc/passwd' %}\n{% include 'sms/_nope.txt.j2' %}"},
    )
    assert [(p.rule, p.line, p.field) for p in problems] == [
        ("include", 1, "../../etc/passwd"),
        ("include", 2, "sms/_nope.txt.j2"),
    ]


def test_computed_include_is_a_warning(tmp_path):
    files = {
        "sms/x.txt.j2": "{% include 'sms/_' ~ category.group ~ '.txt.j2' %}",
        "sms/_other.txt.j2": "您好",
    }
    [problem] = _lint(tmp_path, files)
    assert (problem.rule, problem.severity) == ("dynamic-include", "warning")


def test_render_failure_with_the_sample_context(tmp_path):
    [problem] = _lint(tmp_path, {"sms/x.txt.j2": "您好\n{{ customer.paid_orders / 0 }}"})
    assert (problem.rule, problem.line) == ("render", 2)
    assert "ZeroDivisionError" in problem.message


def test_sms_over_the_budget_with_signature_and_footer(tmp_path):
    # 120 characters of body + 【暖暖母婴旗舰店】 (9) + space + 回T退订 (4) = 134: exactly 2 segments.
    fits = "好" * 120
    assert _lint(tmp_path, {"sms/x.txt.j2": fits}) == []
    [problem] = _lint(tmp_path, {"sms/x.txt.j2": fits + "好"})
    assert (problem.rule, problem.field) == ("sms-budget", "sms_segments")
    assert "3 segments" in problem.message and "135 ucs2 characters" in problem.message
    assert "the maximum is 2" in problem.message and "cut about 1 characters" in problem.message


def test_budget_is_per_campaign_and_checked_for_every_wave(tmp_path):
    source = "{% if wave.number == wave.of %}" + "好" * 80 + "{% else %}好{% endif %}"
    root = _root(tmp_path, {"sms/coupon_wave.txt.j2": source})
    [problem] = lint_templates(root=root, max_sms_segments={"coupon_wave": 1})
    assert problem.rule == "sms-budget" and "(wave 5)" in problem.message
    assert lint_templates(root=root, max_sms_segments={"coupon_wave": 2}) == []


def test_hardcoded_opt_out_footer_is_an_error(tmp_path):
    problems = _lint(tmp_path, {"sms/x.txt.j2": "{{ customer.first_name }}您好\n感谢支持！退订回T"})
    assert [(p.rule, p.line) for p in problems] == [("hardcoded-footer", 2)]
    problems = _lint(
        tmp_path,
        {"sms/x.txt.j2": "您好，感谢支持！拒收请回R"},
        shop=ShopInfo("店", opt_out_footer="拒收请回R"),
    )
    assert _rules(problems) == ["hardcoded-footer"]


def test_hardcoded_signature_is_an_error_and_other_brackets_a_warning(tmp_path):
    problems = _lint(tmp_path, {"sms/x.txt.j2": "【暖暖母婴旗舰店】{{ customer.first_name }}您好"})
    assert _rules(problems) == ["hardcoded-signature"]
    problems = _lint(
        tmp_path, {"sms/x.txt.j2": "{# 注释 #}\n【暖暖母婴旗舰店】{{ customer.first_name }}您好"}
    )
    assert [(p.rule, p.line) for p in problems] == [("hardcoded-signature", 2)]
    problems = _lint(tmp_path, {"sms/x.txt.j2": "{{ customer.first_name }}您好。【暖暖母婴旗舰店】"})
    assert _rules(problems) == ["hardcoded-signature"]
    problems = _lint(tmp_path, {"sms/x.txt.j2": "{{ customer.first_name }}您好，【双11福利】来了"})
    assert [(p.rule, p.severity) for p in problems] == [("signature-brackets", "warning")]


def test_shop_without_opt_out_footer_is_an_error_on_the_playbook(tmp_path):
    problems = _lint(tmp_path, {"sms/x.txt.j2": GOOD_SMS}, shop=ShopInfo("店", opt_out_footer=" "))
    assert [(p.rule, p.file, p.field) for p in problems] == [
        ("footer-missing", "include/playbook.yaml", "shop.sms_opt_out_footer")
    ]


def test_email_without_its_text_part(tmp_path):
    problems = _lint(tmp_path, {"email/x.html.j2": EMAIL_HTML, **EMAIL_BASE})
    assert _rules(problems) == ["email-part-missing"]
    assert "email/x.txt.j2 is missing" in problems[0].message


def test_email_without_subject(tmp_path):
    html = '{% extends "email/_base.html.j2" %}{% block content %}您好{% endblock %}'
    problems = _lint(tmp_path, {"email/x.html.j2": html, "email/x.txt.j2": EMAIL_TEXT, **EMAIL_BASE})
    assert [(p.rule, p.field) for p in problems] == [("email-subject", "subject")]


def test_email_part_without_opt_out_line(tmp_path):
    files = {"email/x.html.j2": EMAIL_HTML, "email/x.txt.j2": "{{ customer.first_name }}您好", **EMAIL_BASE}
    problems = _lint(tmp_path, files)
    assert _rules(problems) == ["email-opt-out"]
    assert problems[0].file.endswith("email/x.txt.j2")


def test_optional_field_printed_unguarded_is_a_warning(tmp_path):
    problems = _lint(tmp_path, {"sms/x.txt.j2": "您好\n{{ customer.name }}"})
    assert [(p.rule, p.severity, p.line, p.field) for p in problems] == [
        ("optional-field", "warning", 2, "customer.name")
    ]
    guarded = (
        "{% if customer.name %}{{ customer.name }}{% endif %}{{ customer.name | default('亲', true) }}"
        "{{ customer.birthday | date_zh if customer.birthday else '' }}"
    )
    assert _lint(tmp_path, {"sms/x.txt.j2": guarded}) == []


def test_unknown_message_name(tmp_path):
    root = _root(tmp_path, {"sms/x.txt.j2": GOOD_SMS})
    [problem] = lint_templates(["thank_you_nwe"], root=root)
    assert (problem.rule, problem.field) == ("unknown-message", "thank_you_nwe")


def test_names_select_messages_by_name_channel_or_file(tmp_path):
    root = _root(tmp_path, {"sms/a.txt.j2": GOOD_SMS, "sms/b.txt.j2": "{{ custmer }}"})
    assert lint_templates(["a"], root=root) == []
    assert lint_templates(["sms/a"], root=root) == []
    assert lint_templates(["sms/a.txt.j2"], root=root) == []
    assert _rules(lint_templates(["b"], root=root)) == ["unknown-variable"]
    assert _rules(lint_templates(root=root)) == ["unknown-variable"]


def test_partials_are_linted_but_not_budgeted(tmp_path):
    problems = _lint(tmp_path, {"sms/_part.txt.j2": "好" * 300 + "{{ custmer }}"})
    assert _rules(problems) == ["unknown-variable"]


def test_compile_message_raises_the_first_error_with_all_problems_attached(tmp_path):
    root = _root(tmp_path, {"sms/x.txt.j2": "{{ custmer }}\n{{ coupon.valu }}"})
    with pytest.raises(TemplateError) as caught:
        compile_message("x", "sms", SAMPLE_SHOP, root=root)
    error = caught.value
    assert (error.line, error.variable) == (1, "custmer")
    assert [p.rule for p in error.problems] == ["unknown-variable", "unknown-field"]
    assert "and 1 more problem" in str(error)


def test_compile_message_of_a_missing_message_names_the_folder(tmp_path):
    root = _root(tmp_path, {"sms/x.txt.j2": GOOD_SMS})
    with pytest.raises(TemplateError) as caught:
        compile_message("thank_you", "sms", SAMPLE_SHOP, root=root)
    assert caught.value.variable == "thank_you" and "sms/thank_you.txt.j2" in str(caught.value)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="huitouke")
    add_templates_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_lint_prints_problems_and_exits_1_on_errors(tmp_path, capsys):
    root = _root(tmp_path, {"sms/coupon_wave.txt.j2": "您好\n\n{{ coupon.valu }}", "sms/ok.txt.j2": GOOD_SMS})
    assert _cli(["templates", "lint", "--root", str(root)]) == 1
    out = capsys.readouterr()
    assert (
        f"{root}/sms/coupon_wave.txt.j2:3: coupon.valu: unknown field 'valu' of coupon (known: code,"
        in out.out
    )
    assert "1 error(s)" in out.err
    assert _cli(["templates", "lint", "--root", str(root), "ok"]) == 0


def test_cli_lint_warnings_alone_exit_0(tmp_path, capsys):
    root = _root(tmp_path, {"sms/x.txt.j2": "{{ customer.name }}您好"})
    assert _cli(["templates", "lint", "--root", str(root)]) == 0
    assert "warning: customer.name may be empty" in capsys.readouterr().out


# ------------------------------------------------------------ the campaigns: one check, two paths


def _broken_playbook(tmp_path: Path) -> Path:
    """The shipped playbook with two broken campaigns: win_back names a template that does not
    exist; new_product_premium sends templates that use ``coupon`` and gives no coupon."""
    from huitouke.config import project_home

    source = (project_home() / "include" / "playbook.yaml").read_text(encoding="utf-8")
    cut = source.index("    coupon:                          # the templates announce")
    end = source.index("prefix: NP\n", cut) + len("prefix: NP\n")
    text = (source[:cut] + source[end:]).replace(
        "templates: [sms/win_back]", "templates: [sms/no_such_message]"
    )
    path = tmp_path / "playbook.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_templates_lint_and_the_dags_check_report_the_same_broken_campaigns(tmp_path, monkeypatch, capsys):
    from huitouke.campaigns import load_playbook
    from huitouke.cli import main
    from huitouke.render.daily import check_templates

    path = _broken_playbook(tmp_path)
    monkeypatch.setenv("HUITOUKE_PLAYBOOK", str(path))
    dag = check_templates(load_playbook(path))
    assert set(dag.broken) == {"win_back", "new_product_premium"}

    assert main(["templates", "lint"]) == 1
    out = capsys.readouterr().out
    line_of = {text: i + 1 for i, text in enumerate(path.read_text(encoding="utf-8").splitlines())}
    broken = [line for line in out.splitlines() if "campaign will not be rendered" in line]
    assert len(broken) == 2
    win_back = next(line for line in broken if "campaigns.win_back" in line)
    assert win_back.startswith(
        f"{path}:{line_of['    templates: [sms/no_such_message]']}: campaigns.win_back:"
    )
    assert "no_such_message" in win_back
    premium = next(line for line in broken if "campaigns.new_product_premium" in line)
    assert "gives no coupon" in premium
    # Naming one message lints the campaigns that send it, and only them.
    assert main(["templates", "lint", "email/new_product_premium"]) == 1
    out = capsys.readouterr().out
    assert "campaigns.new_product_premium" in out and "campaigns.win_back" not in out
