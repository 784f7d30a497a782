"""``huitouke templates lint``: find a template's mistakes before a campaign sends anything.

Each problem names the file, the line and the variable or field, e.g.
``include/templates/sms/coupon_wave.txt.j2:3: coupon.valu: unknown field 'valu' of coupon (known: ...)``.

======================  ========  ===================================================================
rule                    severity  what
======================  ========  ===================================================================
``syntax``              error     Jinja syntax, unknown filter or test
``unknown-variable``    error     a variable outside the documented context (``custmer``)
``unknown-field``       error     a field the schema does not have (``customer.nmae``), or a field of
                                  a plain value (``customer.name.upper``: use a filter)
``unsafe-attribute``    error     an attribute starting with ``_`` (``''.__class__``): the sandbox
                                  would refuse it at render time
``include``             error     an included/extended/imported template that does not exist inside
                                  ``include/templates`` (``../../etc/passwd``)
``render``              error     the template fails with the sample context
``sms-budget``          error     the sample SMS, signature and footer included, has more segments
                                  than the campaign's maximum (default 2), for any wave 1-5
``hardcoded-footer``    error     an SMS template writes an opt-out footer (回T退订, 退订回T, STOP ...):
                                  the footer is added automatically, so it would appear twice
``hardcoded-signature`` error     an SMS template starts with 【…】 or writes 【shop name】: the
                                  signature is added from the playbook's shop name
``footer-missing``      error     the shop has no opt-out footer: marketing SMS must carry one
``email-part-missing``  error     an e-mail without its HTML or its text part
``email-subject``       error     an e-mail whose HTML part gives no ``{% block subject %}``
``email-opt-out``       error     an e-mail part without an opt-out line (退订 / unsubscribe): extend
                                  ``email/_base.html.j2`` and ``email/_base.txt.j2``, which have it
``unknown-message``     error     a name given to the lint that matches no template
``signature-brackets``  warning   【】 inside an SMS: operators reserve them for the signature
``optional-field``      warning   a field that may be empty (``customer.name``, ``customer.birthday``,
                                  ``shop.url``) printed outside ``{% if %}`` and without ``|default``
``dynamic-include``     warning   an include whose name is computed: it cannot be checked
``approved-missing``    error     the SMS provider (Aliyun) sends only approved templates and an SMS
                                  template an enabled campaign sends has no ``approved_sms_templates``
``approved-unknown``    error     an ``approved_sms_templates`` entry for a template that does not
                                  exist
``approved-params``     error     a parameter of an approved template: syntax, unknown variable or
                                  field, ``_`` attribute, or it fails with the sample context
``approved-empty``      warning   a parameter renders empty with the sample context (the provider
                                  refuses an empty parameter)
``campaign-broken``     error     an enabled campaign the daily run would not render: it names a
                                  template that does not exist, sends a template using ``coupon``
                                  without giving a coupon, or an SMS template its provider needs
                                  approved is not; the DAG's own check
                                  (:func:`huitouke.render.daily.lint_campaigns`), at the playbook's
                                  line of the campaign's templates (``huitouke templates lint`` only)
======================  ========  ===================================================================

The ``approved-*`` rules name the playbook's file and line and the field
(``approved_sms_templates.sms/coupon_wave.params.amount``); ``optional-field`` is checked in the
parameters too.

Why the opt-out footer is checked this way: :func:`huitouke.render.sms.finalize_sms` adds the
shop's footer to every marketing SMS, so a template can never lack it; what a template *can* do
wrong is write it again (the customer reads it twice and it costs characters), or be so long
that the footer pushes it over the budget (``sms-budget`` counts with signature and footer).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from jinja2 import meta, nodes
from jinja2.exceptions import TemplateNotFound, TemplateSyntaxError
from markupsafe import Markup

from huitouke.render.approved import (
    Approvals,
    CompiledParams,
    approved_field,
    approved_variants,
    compile_params,
    missing_approval_error,
    param_error,
)
from huitouke.render.catalogue import (
    DEFAULT_MAX_SMS_SEGMENTS,
    DEFAULT_VARIANT,
    PARTS,
    MessageFiles,
    list_messages,
    list_partials,
    messages_named,
)
from huitouke.render.context import CONTEXT, SAMPLE_SHOP, ShopInfo, sample_context, template_language
from huitouke.render.environment import (
    MessageEnvironment,
    TemplateError,
    display_path,
    error_from_exception,
    node_path,
    template_environment,
)
from huitouke.render.sms import UCS2_MULTI, UCS2_SINGLE, count_sms, finalize_sms

if TYPE_CHECKING:
    from huitouke.campaigns.playbook import ApprovedSmsTemplate

__all__ = [
    "LintProblem",
    "approved_problems",
    "lint_approved_sms",
    "lint_file",
    "lint_message",
    "lint_templates",
]

Severity = Literal["error", "warning"]

# Opt-out wordings seen in Chinese and English marketing SMS.
_OPT_OUT = re.compile(
    r"回\s*T\s*D?\s*退订|退订\s*回\s*T|拒收请回\s*[A-Z]|回复?\s*退订|reply\s+stop|text\s+stop", re.I
)
_EMAIL_OPT_OUT = re.compile(r"退订|unsubscribe", re.I)
_BRACKETS = re.compile("[【】]")
_WAVES = 5
_JINJA_SPECIAL = {"loop", "super", "self", "caller", "varargs", "kwargs"}


@dataclass(frozen=True)
class LintProblem:
    """One problem: ``file:line: field: message``."""

    file: str
    line: int | None
    field: str | None
    message: str
    severity: Severity = "error"
    rule: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        prefix = "" if self.is_error else "warning: "
        return (
            f"{where}: {self.field}: {prefix}{self.message}"
            if self.field
            else f"{where}: {prefix}{self.message}"
        )

    def to_error(self) -> TemplateError:
        return TemplateError(self.message, file=self.file, line=self.line, variable=self.field)

    @classmethod
    def from_error(cls, error: TemplateError, rule: str) -> LintProblem:
        return cls(error.file, error.line, error.variable, error.reason, "error", rule)


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# ---------------------------------------------------------------------------------------------
# One file: syntax, variables, fields, attributes, includes, optional fields, SMS signature/footer
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Parsed:
    """One parsed template file, what every rule of :func:`lint_file` looks at."""

    rel: str  # the name under the templates folder
    file: str  # as people see it
    tree: nodes.Template
    env: MessageEnvironment
    shop: ShopInfo | None
    assigned: frozenset[str]  # names the template sets itself ({% set %}, loop variables, macros)

    def problem(self, line: int | None, field: str | None, message: str, rule: str) -> LintProblem:
        return LintProblem(self.file, line, field, message, rule=rule)

    def warning(self, line: int | None, field: str | None, message: str, rule: str) -> LintProblem:
        return LintProblem(self.file, line, field, message, "warning", rule)


def _walk(node: nodes.Node, parent: nodes.Node | None = None):
    yield node, parent
    for child in node.iter_child_nodes():
        yield from _walk(child, node)


def _key(node: nodes.Getattr | nodes.Getitem) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return node.arg.value
    return None


def _unknown_variables(t: _Parsed) -> list[LintProblem]:
    """Rule ``unknown-variable``: a variable outside the documented context."""
    known_names = set(CONTEXT) | set(t.env.globals) | _JINJA_SPECIAL
    undeclared = meta.find_undeclared_variables(t.tree)
    loads = [n for n in t.tree.find_all(nodes.Name) if n.ctx == "load"]
    problems = []
    for name in sorted(undeclared | {n.name for n in loads if n.name not in t.assigned}):
        if name in known_names or name in t.assigned:  # a {% set %} inside an {% if %} may be undefined
            continue
        line = min((n.lineno for n in loads if n.name == name), default=None)
        message = f"unknown variable {name!r} (known: {', '.join(CONTEXT)}){_suggest(name, CONTEXT)}"
        problems.append(t.problem(line, name, message, "unknown-variable"))
    return problems


def _unsafe_attribute(t: _Parsed, node: nodes.Getattr | nodes.Getitem, key: str) -> LintProblem | None:
    """Rule ``unsafe-attribute``: a name starting with ``_`` (reported once per expression)."""
    inner = node.node
    if any(
        (_key(n) or "").startswith("_")
        for n in [inner, *inner.find_all((nodes.Getattr, nodes.Getitem))]
        if isinstance(n, nodes.Getattr | nodes.Getitem)
    ):
        return None
    message = (
        f"attribute {key!r} is not allowed (names starting with '_' are Python internals; "
        "the sandbox refuses them)"
    )
    return t.problem(node.lineno, node_path(node) or key, message, "unsafe-attribute")


def _unknown_field(
    t: _Parsed, node: nodes.Getattr | nodes.Getitem, key: str, parent: nodes.Node | None
) -> LintProblem | None:
    """Rule ``unknown-field``: a field the schema lacks, or a field of a plain value."""
    root = node.node
    if not (isinstance(root, nodes.Name) and root.name in CONTEXT and root.name not in t.assigned):
        return None
    obj = CONTEXT[root.name]
    fld = obj.field(key)
    if fld is None:
        message = (
            f"unknown field {key!r} of {root.name} (known: {', '.join(obj.field_names)})"
            f"{_suggest(key, obj.field_names)}"
        )
        return t.problem(node.lineno, f"{root.name}.{key}", message, "unknown-field")
    if isinstance(parent, nodes.Getattr | nodes.Getitem) and parent.node is node:
        sub = _key(parent) or "[...]"
        if not sub.startswith("_"):
            message = (
                f"{root.name}.{key} is a {fld.type} and has no field {sub!r}: use a filter, "
                f"e.g. {{{{ {root.name}.{key} | upper }}}}"
            )
            return t.problem(parent.lineno, f"{root.name}.{key}.{sub}", message, "unknown-field")
    return None


def _attributes(t: _Parsed) -> list[LintProblem]:
    """Rules ``unsafe-attribute`` and ``unknown-field``, in the order of the template."""
    problems = []
    for node, parent in _walk(t.tree):
        if not isinstance(node, nodes.Getattr | nodes.Getitem):
            continue
        key = _key(node)
        if key is None:
            continue
        if key.startswith("_"):
            found = _unsafe_attribute(t, node, key)
        else:
            found = _unknown_field(t, node, key, parent)
        if found is not None:
            problems.append(found)
    return problems


def _includes(t: _Parsed) -> list[LintProblem]:
    """Rules ``include`` (a loaded template outside the folder) and ``dynamic-include``."""
    problems = []
    for node in t.tree.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
        target = node.template
        if not (isinstance(target, nodes.Const) and isinstance(target.value, str)):
            message = "the template name is computed: it cannot be checked before sending"
            problems.append(t.warning(node.lineno, None, message, "dynamic-include"))
            continue
        if isinstance(node, nodes.Include) and node.ignore_missing:
            continue
        try:
            t.env.loader.get_source(t.env, target.value)
        except TemplateNotFound:
            message = (
                f"template {target.value!r} not found in {display_path(t.env.root)} "
                "(include and extend only templates inside that folder)"
            )
            problems.append(t.problem(node.lineno, target.value, message, "include"))
    return problems


def _optional_paths() -> set[str]:
    return {f"{o.name}.{f.name}" for o in CONTEXT.values() for f in o.fields if f.nullable}


def _expr_paths(node: nodes.Node) -> set[str]:
    return {p for n in node.find_all((nodes.Getattr, nodes.Getitem)) if (p := node_path(n))} | (
        {p} if (p := node_path(node)) else set()
    )


def _check_optional(node: nodes.Node, guards: frozenset[str], optional: set[str], out: list[tuple[int, str]]):
    """Optional fields printed without a guard: ``{% if x %}``, ``x if x else ...``, ``|default``."""
    if isinstance(node, nodes.If):
        guarded = guards | _expr_paths(node.test)
        for child in node.body:
            _check_optional(child, guarded, optional, out)
        for child in node.elif_:
            _check_optional(child, guards, optional, out)
        for child in node.else_:
            _check_optional(child, guards, optional, out)
        return
    if isinstance(node, nodes.Output):
        for child in node.nodes:
            if not isinstance(child, nodes.TemplateData):
                _check_expr(child, guards, optional, out)
        return
    for child in node.iter_child_nodes():
        _check_optional(child, guards, optional, out)


def _check_expr(node: nodes.Node, guards: frozenset[str], optional: set[str], out: list[tuple[int, str]]):
    if isinstance(node, nodes.Filter) and node.name in ("default", "d"):
        return
    if isinstance(node, nodes.CondExpr):
        _check_expr(node.expr1, guards | _expr_paths(node.test), optional, out)
        if node.expr2 is not None:
            _check_expr(node.expr2, guards, optional, out)
        return
    if isinstance(node, nodes.Test | nodes.Compare):
        return
    path = node_path(node) if isinstance(node, nodes.Getattr | nodes.Getitem) else None
    if path in optional and path not in guards:
        out.append((node.lineno, path))
        return
    for child in node.iter_child_nodes():
        _check_expr(child, guards, optional, out)


def _optional_fields(t: _Parsed) -> list[LintProblem]:
    """Rule ``optional-field``: a field that may be empty, printed unguarded."""
    found: list[tuple[int, str]] = []
    _check_optional(t.tree, frozenset(), _optional_paths(), found)
    return [
        t.warning(
            line,
            path,
            f"{path} may be empty for some customers: print it inside {{% if {path} %}} "
            f"or with a default ({{{{ {path} | default('…', true) }}}})",
            "optional-field",
        )
        for line, path in sorted(set(found))
    ]


def _template_data_hits(tree: nodes.Template, pattern: re.Pattern) -> list[tuple[int, str]]:
    hits = []
    for data in tree.find_all(nodes.TemplateData):
        for match in pattern.finditer(data.data):
            hits.append((data.lineno + data.data[: match.start()].count("\n"), match.group(0)))
    return hits


def _hardcoded_footer(t: _Parsed) -> list[LintProblem]:
    """Rule ``hardcoded-footer`` (SMS): an opt-out footer written in the template."""
    footers = _OPT_OUT
    if t.shop and t.shop.opt_out_footer.strip():
        footers = re.compile(f"{re.escape(t.shop.opt_out_footer.strip())}|{_OPT_OUT.pattern}", re.I)
    return [
        t.problem(
            line,
            None,
            f"opt-out footer {text!r} written in the template: the shop's footer "
            f"({(t.shop or SAMPLE_SHOP).opt_out_footer}) is added to every SMS automatically; remove it",
            "hardcoded-footer",
        )
        for line, text in _template_data_hits(t.tree, footers)
    ]


def _signature_lines(t: _Parsed) -> tuple[int | None, list[int]]:
    """Where an SMS template writes a signature: the line of an opening 【…】 (or None), and the
    lines of the shop's own 【name】."""
    first_output = next((n for n in t.tree.body if isinstance(n, nodes.Output)), None)
    opening = first_output.nodes[0] if first_output and first_output.nodes else None
    signature_at = None
    if isinstance(opening, nodes.TemplateData) and opening.data.lstrip().startswith("【"):
        signature_at = opening.lineno + opening.data[: opening.data.index("【")].count("\n")
    own = f"【{(t.shop or SAMPLE_SHOP).name.strip()}】"
    own_hits = [line for line, _ in _template_data_hits(t.tree, re.compile(re.escape(own)))]
    return signature_at, own_hits


def _hardcoded_signature(t: _Parsed) -> list[LintProblem]:
    """Rule ``hardcoded-signature`` (SMS): an opening 【…】 or the shop's 【name】 in the template."""
    signature_at, own_hits = _signature_lines(t)
    message = (
        "a signature 【…】 written in the template: the signature is added from the shop's name "
        "automatically; remove it"
    )
    lines = sorted({*([signature_at] if signature_at else []), *own_hits})
    return [t.problem(line, None, message, "hardcoded-signature") for line in lines]


def _signature_brackets(t: _Parsed) -> list[LintProblem]:
    """Rule ``signature-brackets`` (SMS, warning, once): 【】 elsewhere than in a signature."""
    signature_at, own_hits = _signature_lines(t)
    for line, text in _template_data_hits(t.tree, _BRACKETS):
        if line == signature_at or line in own_hits:
            continue
        message = (
            f"{text} inside an SMS: operators and gateways reserve 【】 for the signature and may "
            "reject the message; use 「」 or [] instead"
        )
        return [t.warning(line, None, message, "signature-brackets")]
    return []


_FILE_RULES = (_unknown_variables, _attributes, _includes, _optional_fields)
_SMS_FILE_RULES = (_hardcoded_footer, _hardcoded_signature, _signature_brackets)


def _parse(rel: str, env: MessageEnvironment, shop: ShopInfo | None) -> _Parsed | LintProblem:
    """The parsed file, or the problem that it cannot be read or parsed (rule ``syntax``)."""
    path = env.root / rel
    file = display_path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return LintProblem(file, None, None, f"cannot read the template: {exc}", rule="syntax")
    try:
        tree = env.parse(source, rel, str(path))
        env.compile(tree, rel, str(path))  # unknown filters and tests are found here
    except TemplateSyntaxError as exc:
        return LintProblem.from_error(error_from_exception(exc, env, file), "syntax")
    assigned = frozenset(n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param"))
    return _Parsed(rel, file, tree, env, shop, assigned)


def lint_file(rel: str, env: MessageEnvironment, shop: ShopInfo | None = None) -> list[LintProblem]:
    """The checks of one template file (``rel`` is its name under the templates folder)."""
    parsed = _parse(rel, env, shop)
    if isinstance(parsed, LintProblem):
        return [parsed]
    rules = _FILE_RULES + (_SMS_FILE_RULES if rel.startswith("sms/") else ())
    return [problem for rule in rules for problem in rule(parsed)]


# ---------------------------------------------------------------------------------------------
# One message: renders with the sample context
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Message:
    """One message being linted, with what its sample renders need."""

    files: MessageFiles
    env: MessageEnvironment
    shop: ShopInfo
    budget: int  # SMS segments

    def path(self, rel: str) -> str:
        return display_path(self.env.root / rel)


def _sample_group(group: str) -> str:
    return "other" if group == DEFAULT_VARIANT else group


def _render_sample(env: MessageEnvironment, rel: str, context: dict) -> tuple[str | None, LintProblem | None]:
    try:
        return env.get_template(rel).render(context), None
    except Exception as exc:  # noqa: BLE001 - every failure is reported
        error = error_from_exception(exc, env, display_path(env.root / rel))
        return None, LintProblem.from_error(error, "render")


def _files_problems(m: _Message, cache: dict[str, list[LintProblem]]) -> tuple[list[LintProblem], bool]:
    """The problems of the message's files (cached per file), and whether one is an error."""
    problems: list[LintProblem] = []
    for rel in m.files.files():
        if not (m.env.root / rel).is_file():
            continue
        if rel not in cache:
            cache[rel] = lint_file(rel, m.env, m.shop)
        problems.extend(cache[rel])
    return problems, any(p.is_error for p in problems)


def _email_parts_missing(m: _Message) -> list[LintProblem]:
    """Rule ``email-part-missing``: an e-mail without its HTML or its text part."""
    if m.files.channel != "email":
        return []
    problems = []
    for parts in m.files.variants.values():
        for part, rel in parts.items():
            if (m.env.root / rel).is_file():
                continue
            other = next(r for p, r in parts.items() if p != part)
            message = f"an e-mail needs both parts: {rel} is missing"
            problems.append(LintProblem(m.path(other), None, None, message, rule="email-part-missing"))
    return problems


def _sms_budget(m: _Message, rendered: dict[str, str], wave: int, file: str) -> LintProblem | None:
    """Rule ``sms-budget``: the sample SMS, signature and footer included, over the budget."""
    shop, budget = m.shop, m.budget
    final = finalize_sms(
        rendered["body"], shop.name, shop.opt_out_footer, brackets=shop.sms_signature_brackets
    )
    count = count_sms(final)
    if count.segments <= budget:
        return None
    limit = (UCS2_SINGLE if budget == 1 else UCS2_MULTI * budget) if count.encoding == "ucs2" else None
    cut = f"; cut about {count.units - limit} characters" if limit else ""
    message = (
        f"{count.segments} segments with the sample context (wave {wave}): {count.units} "
        f"{count.encoding} characters with signature and footer, the maximum is {budget} "
        f"segment(s){cut}"
    )
    return LintProblem(file, None, "sms_segments", message, rule="sms-budget")


def _email_subject(m: _Message, parts: dict[str, str], context: dict, file: str) -> list[LintProblem]:
    """Rule ``email-subject``: the HTML part gives no ``{% block subject %}`` (or an empty one)."""
    template = m.env.get_template(parts["html"])
    block = template.blocks.get("subject")
    subject = ""
    if block is not None:
        subject = " ".join(Markup("".join(block(template.new_context(context)))).unescape().split())
    if subject:
        return []
    message = "the e-mail has no subject: add {% block subject %}…{% endblock %} to the HTML part"
    return [LintProblem(file, None, "subject", message, rule="email-subject")]


def _email_opt_out(m: _Message, parts: dict[str, str], rendered: dict[str, str]) -> list[LintProblem]:
    """Rule ``email-opt-out``: an e-mail part without an opt-out line."""
    return [
        LintProblem(
            m.path(parts[part]),
            None,
            None,
            "no opt-out line (退订 / unsubscribe) in this part: extend "
            f"email/_base{PARTS['email'][part]} which has it",
            rule="email-opt-out",
        )
        for part, text in rendered.items()
        if not _EMAIL_OPT_OUT.search(text)
    ]


def _sample_problems(m: _Message, group: str, parts: dict[str, str]) -> tuple[list[LintProblem], bool]:
    """Rule ``render`` and the rules on the sample renders of one variant, waves 1 to 5; True
    when a render failed (nothing further is checked then)."""
    problems: list[LintProblem] = []
    for wave in range(1, _WAVES + 1):
        context = sample_context(
            m.shop,
            category_group=_sample_group(group),
            wave=wave,
            waves=_WAVES,
            campaign=m.files.name,
            language=template_language(m.files.name),
        )
        rendered: dict[str, str] = {}
        for part, rel in parts.items():
            text, problem = _render_sample(m.env, rel, context)
            if problem:
                return [*problems, problem], True
            rendered[part] = text or ""
        file = m.path(next(iter(parts.values())))
        if m.files.channel == "sms":
            over = _sms_budget(m, rendered, wave, file)
            if over is not None:
                problems.append(over)
                break
        elif m.files.channel == "email" and wave == 1:
            problems.extend(_email_subject(m, parts, context, file))
            problems.extend(_email_opt_out(m, parts, rendered))
    return problems, False


def lint_message(
    files: MessageFiles,
    *,
    shop: ShopInfo | None = None,
    max_segments: int | None = None,
    root: Path | None = None,
    file_problems: dict[str, list[LintProblem]] | None = None,
) -> list[LintProblem]:
    """Every problem of one message: its files' problems, then the sample renders (SMS budget,
    e-mail subject and opt-out line). ``file_problems`` caches per-file results across messages."""
    budget = max_segments if max_segments is not None else DEFAULT_MAX_SMS_SEGMENTS
    m = _Message(files, template_environment(root), shop or SAMPLE_SHOP, budget)
    problems, broken = _files_problems(m, file_problems if file_problems is not None else {})
    missing = _email_parts_missing(m)
    if broken or missing:
        return [*problems, *missing]
    for group, parts in files.variants.items():
        found, failed = _sample_problems(m, group, parts)
        problems.extend(found)
        if failed:
            break
    return problems


# ---------------------------------------------------------------------------------------------
# The command's entry point
# ---------------------------------------------------------------------------------------------


def _unknown_message(env: MessageEnvironment, name: str) -> LintProblem:
    """Rule ``unknown-message``: a name given to the lint that matches no template."""
    message = f"no template named {name!r} (see `huitouke templates lint` for all)"
    return LintProblem(display_path(env.root), None, name, message, rule="unknown-message")


def _footer_missing(shop: ShopInfo | None, messages: list[MessageFiles]) -> list[LintProblem]:
    """Rule ``footer-missing``: the shop has no opt-out footer and there are SMS to lint."""
    if shop is None or shop.opt_out_footer.strip() or not any(m.channel == "sms" for m in messages):
        return []
    message = "the shop's SMS opt-out footer is empty: marketing SMS must tell how to opt out (回T退订)"
    return [
        LintProblem("include/playbook.yaml", None, "shop.sms_opt_out_footer", message, rule="footer-missing")
    ]


def _selected(
    names: Iterable[str] | None, env: MessageEnvironment, root: Path | None
) -> tuple[list[MessageFiles], list[str], list[LintProblem]]:
    """The messages and partials to lint (all of them without ``names``), and the names that
    match nothing."""
    if names is None:
        return list_messages(root), list_partials(root), []
    messages: list[MessageFiles] = []
    unknown = []
    for name in names:
        found = messages_named(name, root)
        if found is None:
            unknown.append(_unknown_message(env, name))
        else:
            messages.extend(m for m in found if m not in messages)
    return messages, [], unknown


def lint_templates(
    names: Iterable[str] | None = None,
    *,
    max_sms_segments: dict[str, int] | None = None,
    shop: ShopInfo | None = None,
    root: Path | None = None,
    approvals: Approvals | None = None,
    sms_sent: Iterable[str] = (),
) -> list[LintProblem]:
    """Lint every template (or the messages ``names``: ``thank_you_new``, ``sms/coupon_wave``,
    ``sms/coupon_wave.txt.j2``). ``max_sms_segments`` gives a campaign's budget by message name
    (default :data:`~huitouke.render.catalogue.DEFAULT_MAX_SMS_SEGMENTS`). With ``approvals``, the
    playbook's approved SMS templates too (:func:`lint_approved_sms`; ``sms_sent``: the SMS
    templates the enabled campaigns send, which the provider may require to be mapped)."""
    env = template_environment(root)
    budgets = max_sms_segments or {}
    messages, partials, problems = _selected(names, env, root)
    problems.extend(_footer_missing(shop, messages))
    cache: dict[str, list[LintProblem]] = {}
    for message in messages:
        budget = budgets.get(message.name, budgets.get(f"{message.channel}/{message.name}"))
        problems.extend(lint_message(message, shop=shop, max_segments=budget, root=root, file_problems=cache))
    for rel in partials:
        if rel not in cache:
            cache[rel] = lint_file(rel, env, shop)
            problems.extend(cache[rel])
    if approvals is not None:
        only = None if names is None else [f"sms/{m.name}" for m in messages if m.channel == "sms"]
        problems.extend(lint_approved_sms(approvals, sent=sms_sent, only=only, shop=shop, root=root))
    unique: list[LintProblem] = []
    for problem in problems:
        if problem not in unique:
            unique.append(problem)
    return unique


# ---------------------------------------------------------------------------------------------
# Approved SMS templates (the playbook's approved_sms_templates)
# ---------------------------------------------------------------------------------------------


def _at_param(
    problem: LintProblem, approved: ApprovedSmsTemplate, where: tuple[str, str, str | None]
) -> LintProblem:
    """A problem found in a parameter's source, moved to the parameter's line in the playbook
    (``where``: template, parameter, variant of the mapping)."""
    template, param, variant = where
    inner = problem.field
    message = f"{inner}: {problem.message}" if inner and inner not in problem.message else problem.message
    rule = problem.rule if problem.rule == "optional-field" else "approved-params"
    field = approved_field(template, param, variant)
    line = approved.line_of(param, variant)
    return LintProblem(approved.file, line, field, message, problem.severity, rule)


def _param_source_problems(
    template: str, approved: ApprovedSmsTemplate, env: MessageEnvironment, shop: ShopInfo | None
) -> list[LintProblem]:
    """The file rules (syntax, unknown variable or field, ``_`` attributes, optional fields) on
    each parameter's source."""
    problems: list[LintProblem] = []
    for variant in approved_variants(approved):
        for param, source in approved.approved_for(variant).params.items():
            try:
                tree = env.parse(source)
                env.compile(tree)
            except TemplateSyntaxError as exc:
                inner = error_from_exception(exc, env, approved.file)
                error = param_error(approved, template, param, inner, variant)
                problems.append(LintProblem.from_error(error, "approved-params"))
                continue
            assigned = frozenset(n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param"))
            parsed = _Parsed("", approved.file, tree, env, shop, assigned)
            for rule in (_unknown_variables, _attributes, _optional_fields):
                problems.extend(_at_param(p, approved, (template, param, variant)) for p in rule(parsed))
    return problems


def _param_sample_problems(compiled: CompiledParams, contexts: Iterable[dict]) -> list[LintProblem]:
    """Rules ``approved-params`` (a render fails) and ``approved-empty`` on sample contexts."""
    problems: list[LintProblem] = []
    empty: set[tuple[str, str]] = set()
    approved = compiled.approved
    for context in contexts:
        try:
            code, values = compiled.render(context)
        except TemplateError as exc:
            return [*problems, LintProblem.from_error(exc, "approved-params")]
        variant = compiled.variant_for(context)
        for param, value in values.items():
            if value or (code, param) in empty:
                continue
            empty.add((code, param))
            message = "renders empty with the sample context: the provider refuses an empty parameter"
            field = approved_field(compiled.template, param, variant)
            line = approved.line_of(param, variant)
            problems.append(LintProblem(approved.file, line, field, message, "warning", "approved-empty"))
    return problems


def _sample_contexts(template: str, shop: ShopInfo | None, root: Path | None) -> list[dict]:
    """The sample contexts of an SMS message: each of its category-group variants, waves 1 to 5."""
    name = template.partition("/")[2]
    found = messages_named(template, root)
    groups = list(found[0].variants) if found else [DEFAULT_VARIANT]
    return [
        sample_context(
            shop,
            category_group=_sample_group(group),
            wave=wave,
            waves=_WAVES,
            campaign=name,
            language=template_language(name),
        )
        for group in groups
        for wave in range(1, _WAVES + 1)
    ]


def approved_problems(
    template: str,
    approved: ApprovedSmsTemplate,
    *,
    shop: ShopInfo | None = None,
    root: Path | None = None,
    contexts: Iterable[dict] | None = None,
) -> tuple[list[LintProblem], CompiledParams | None]:
    """Every problem of one approved template's parameters, and the parameters compiled (None
    when a parameter has an error in its source). ``contexts``: the sample contexts to render
    (default: the sample customer in each of the message's variants, waves 1 to 5)."""
    env = template_environment(root)
    problems = _param_source_problems(template, approved, env, shop)
    if any(p.is_error for p in problems):
        return problems, None
    compiled = compile_params(template, approved, shop or SAMPLE_SHOP, root=root)
    samples = _sample_contexts(template, shop, root) if contexts is None else contexts
    return [*problems, *_param_sample_problems(compiled, samples)], compiled


def _unknown_approved(template: str, approved: ApprovedSmsTemplate, root: Path | None) -> LintProblem | None:
    """Rule ``approved-unknown``: a mapping for an SMS template that does not exist."""
    if messages_named(template, root) is not None:
        return None
    env = template_environment(root)
    message = (
        f"no SMS template {template!r} in {display_path(env.root)}: map only the templates the "
        "campaigns send (check the spelling, or remove the entry)"
    )
    return LintProblem(
        approved.file, approved.line_of(), approved_field(template), message, rule="approved-unknown"
    )


def lint_approved_sms(
    approvals: Approvals,
    *,
    sent: Iterable[str] = (),
    only: Iterable[str] | None = None,
    shop: ShopInfo | None = None,
    root: Path | None = None,
) -> list[LintProblem]:
    """The playbook's approved SMS templates: each for an existing template, its parameters
    sound on the sample contexts; and, when the SMS provider needs them, one for every template
    in ``sent`` (the SMS templates of the enabled campaigns). ``only``: check these templates
    alone (``sms/coupon_wave``)."""
    wanted = None if only is None else set(only)
    problems: list[LintProblem] = []
    for template, approved in approvals.mappings.items():
        if wanted is not None and template not in wanted:
            continue
        unknown = _unknown_approved(template, approved, root)
        if unknown is not None:
            problems.append(unknown)
            continue
        problems.extend(approved_problems(template, approved, shop=shop, root=root)[0])
    if approvals.required:
        for template in sent:
            if template not in approvals.mappings and (wanted is None or template in wanted):
                error = missing_approval_error(template, str(approvals.provider), approvals.file)
                problems.append(LintProblem.from_error(error, "approved-missing"))
    return problems
