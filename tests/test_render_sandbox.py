"""The sandbox: a marketer's template cannot reach Python internals, the file system or memory.

Each escape is checked at both layers: the lint inside compile_message refuses the template, and,
should a template reach rendering anyway, the sandboxed environment refuses it at render time,
in the single render and in the batch fast path, with a TemplateError naming file, line, variable.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from huitouke.render import SAMPLE_SHOP, TemplateError, compile_message, render_batch, sample_context
from huitouke.render.catalogue import find_message
from huitouke.render.environment import template_environment
from huitouke.render.messages import CompiledMessage

ESCAPES = {
    "mro": "{{ ''.__class__.__mro__ }}",
    "dict": "{{ customer.__dict__ }}",
    "cycler_globals": "{{ cycler.__init__.__globals__ }}",
    "subclasses": "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
    "template_reference": "{{ self._TemplateReference__context }}",
    "include_passwd": "{% include '../../etc/passwd' %}",
    "extends_passwd": "{% extends '../../etc/passwd' %}",
    "dict_methods": "{{ customer.items() }}",
    "format_globals": "{{ '{0.__class__}'.format(customer) }}",
    "attr_filter_missing": "{{ customer | attr('__class__') }}",
    "safe_filter": "{{ customer.name | safe }}",
    "memory_bomb": "{{ 'x' * 100000000 }}",
    "power_bomb": "{{ 9 ** 999999 }}",
    "huge_range": "{% for i in range(10000000) %}{% endfor %}",
}


def _root(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


def _unlinted(name: str, root: Path, channel: str = "sms") -> CompiledMessage:
    """A compiled message that skipped the lint, to test the sandbox on its own."""
    return CompiledMessage(
        name, channel, SAMPLE_SHOP, None, find_message(name, channel, root), template_environment(root)
    )


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_sandbox_escape_is_refused_before_anything_is_queued(tmp_path, name):
    root = _root(tmp_path, {f"sms/{name}.txt.j2": "您好\n" + ESCAPES[name]})
    with pytest.raises(TemplateError) as caught:
        compile_message(name, "sms", SAMPLE_SHOP, root=root)
    assert caught.value.file.endswith(f"sms/{name}.txt.j2")


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_sandbox_escape_is_refused_at_render_time_too(tmp_path, name):
    root = _root(tmp_path, {f"sms/{name}.txt.j2": "您好\n" + ESCAPES[name]})
    with pytest.raises(TemplateError) as caught:
        message = _unlinted(name, root)
        message.render(sample_context())
    assert caught.value.file.endswith(f"sms/{name}.txt.j2")
    assert caught.value.line == 2
    with pytest.raises(TemplateError):
        render_batch(_unlinted(name, root), [sample_context()])


def test_sandbox_error_names_file_line_and_expression(tmp_path):
    root = _root(tmp_path, {"sms/x.txt.j2": "第一行\n第二行\n{{ ''.__class__.__mro__ }}"})
    with pytest.raises(TemplateError) as caught:
        _unlinted("x", root).render(sample_context())
    error = caught.value
    assert (error.line, error.variable) == (3, "''.__class__")
    assert str(error).startswith(f"{root / 'sms/x.txt.j2'}:3: ''.__class__: refused by the sandbox")


def test_include_of_a_symlink_leaving_the_templates_folder_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("password", encoding="utf-8")
    root = _root(tmp_path / "templates", {"sms/x.txt.j2": "{% include 'sms/_link.txt.j2' %}"})
    os.symlink(secret, root / "sms" / "_link.txt.j2")
    with pytest.raises(TemplateError) as caught:
        _unlinted("x", root).render(sample_context())
    assert caught.value.variable == "sms/_link.txt.j2"
    assert "password" not in str(caught.value)


def test_include_inside_the_templates_folder_works(tmp_path):
    root = _root(
        tmp_path,
        {
            "sms/x.txt.j2": "{% include 'sms/_hello.txt.j2' %}，欢迎回来。",
            "sms/_hello.txt.j2": "{{ customer.first_name }}您好",
        },
    )
    message = compile_message("x", "sms", SAMPLE_SHOP, root=root)
    assert message.render(sample_context()).body == "【暖暖母婴旗舰店】欧阳晓雨您好，欢迎回来。回T退订"


def test_only_the_documented_filters_and_three_globals_are_available():
    env = template_environment()
    assert "safe" not in env.filters and "attr" not in env.filters and "map" not in env.filters
    assert {"cny", "date_zh", "date_en", "default", "join", "upper"} <= set(env.filters)
    assert set(env.globals) == {"range", "dict", "namespace"}


def test_customer_data_is_escaped_in_html_email_only(tmp_path):
    root = _root(
        tmp_path,
        {
            "email/x.html.j2": "{% block subject %}{{ customer.name }}{% endblock %}<p>{{ customer.name }} 退订</p>",
            "email/x.txt.j2": "{{ customer.name }} 退订",
            "sms/x.txt.j2": "{{ customer.name }}",
        },
    )
    context = sample_context()
    context["customer"]["name"] = "<script>alert(1)</script>&"
    email = _unlinted("x", root, "email").render(context)
    assert "<p>&lt;script&gt;alert(1)&lt;/script&gt;&amp; 退订</p>" in email.html
    assert email.text.startswith("<script>alert(1)</script>&")
    assert email.subject == "<script>alert(1)</script>&"  # a header, not HTML
    assert "<script>" in _unlinted("x", root).render(context).body


def test_a_missing_variable_fails_instead_of_printing_nothing(tmp_path):
    root = _root(tmp_path, {"sms/x.txt.j2": "您好\n{{ coupon.value_cny }}元"})
    context = sample_context()
    del context["coupon"]
    with pytest.raises(TemplateError) as caught:
        _unlinted("x", root).render(context)
    assert (caught.value.line, caught.value.variable) == (2, "coupon")


def test_a_missing_field_names_the_dotted_variable(tmp_path):
    root = _root(tmp_path, {"sms/x.txt.j2": "您好\n\n{{ coupon.code }}"})
    context = sample_context()
    del context["coupon"]["code"]
    with pytest.raises(TemplateError) as caught:
        render_batch(_unlinted("x", root), [sample_context(), context])
    assert (caught.value.line, caught.value.variable) == (3, "coupon.code")
    assert str(caught.value).startswith(f"{root / 'sms/x.txt.j2'}:3: coupon.code: undefined field 'code'")


@pytest.mark.parametrize("name", ["../../../etc/passwd", "/etc/passwd", "sms/../x", "", "a\\b"])
def test_a_message_name_cannot_leave_the_channel_folder(tmp_path, name):
    root = _root(tmp_path, {"x.txt.j2": "secret"})
    with pytest.raises(TemplateError) as caught:
        compile_message(name, "sms", SAMPLE_SHOP, root=root)
    assert caught.value.variable == name


def test_template_error_survives_pickling_between_processes():
    error = TemplateError(
        "unknown field 'valu' of coupon", file="sms/x.txt.j2", line=3, variable="coupon.valu"
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.file, copy.line, copy.variable, str(copy)) == (error.file, 3, "coupon.valu", str(error))
