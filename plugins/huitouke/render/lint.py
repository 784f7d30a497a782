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
======================  ========  ===================================================================

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
from typing import Literal

from jinja2 import meta, nodes
from jinja2.exceptions import TemplateNotFound, TemplateSyntaxError
from markupsafe import Markup

from huitouke.render.context import CONTEXT, SAMPLE_SHOP, ShopInfo, sample_context, template_language
from huitouke.render.environment import (
    MessageEnvironment,
    TemplateError,
    display_path,
    error_from_exception,
    node_path,
    template_environment,
)
from huitouke.render.messages import (
    DEFAULT_MAX_SMS_SEGMENTS,
    DEFAULT_VARIANT,
    PARTS,
    MessageFiles,
    find_message,
    list_messages,
)
from huitouke.render.sms import UCS2_MULTI, UCS2_SINGLE, count_sms, finalize_sms

__all__ = ["LintProblem", "lint_file", "lint_message", "lint_templates"]

Severity = Literal["error", "warning"]

# Opt-out wordings seen in Chinese and English marketing SMS.
_OPT_OUT = re.compile(
    r"回\s*T\s*D?\s*退订|退订\s*回\s*T|拒收请回\s*[A-Z]|回复?\s*退订|reply\s+stop|text\s+stop", re.I
)
_EMAIL_OPT_OUT = re.compile(r"退订|unsubscribe", re.I)
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
# One file: syntax, variables, fields, attributes, includes
# ---------------------------------------------------------------------------------------------


def _walk(node: nodes.Node, parent: nodes.Node | None = None):
    yield node, parent
    for child in node.iter_child_nodes():
        yield from _walk(child, node)


def _name_chain_root(node: nodes.Node) -> nodes.Node:
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        node = node.node
    return node


def _key(node: nodes.Getattr | nodes.Getitem) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return node.arg.value
    return None


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


def _template_data_hits(tree: nodes.Template, pattern: re.Pattern) -> list[tuple[int, str]]:
    hits = []
    for data in tree.find_all(nodes.TemplateData):
        for match in pattern.finditer(data.data):
            hits.append((data.lineno + data.data[: match.start()].count("\n"), match.group(0)))
    return hits


def lint_file(rel: str, env: MessageEnvironment, shop: ShopInfo | None = None) -> list[LintProblem]:
    """The checks of one template file (``rel`` is its name under the templates folder)."""
    path = env.root / rel
    file = display_path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [LintProblem(file, None, None, f"cannot read the template: {exc}", rule="syntax")]
    try:
        tree = env.parse(source, rel, str(path))
        env.compile(tree, rel, str(path))  # unknown filters and tests are found here
    except TemplateSyntaxError as exc:
        return [LintProblem.from_error(error_from_exception(exc, env, file), "syntax")]

    problems: list[LintProblem] = []
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    known_names = set(CONTEXT) | set(env.globals) | _JINJA_SPECIAL

    # Variables outside the documented context.
    undeclared = meta.find_undeclared_variables(tree)
    loads = [n for n in tree.find_all(nodes.Name) if n.ctx == "load"]
    for name in sorted(undeclared | {n.name for n in loads if n.name not in assigned}):
        if name in known_names or name in assigned:  # a {% set %} inside an {% if %} may be undefined
            continue
        line = min((n.lineno for n in loads if n.name == name), default=None)
        problems.append(
            LintProblem(
                file,
                line,
                name,
                f"unknown variable {name!r} (known: {', '.join(CONTEXT)}){_suggest(name, CONTEXT)}",
                rule="unknown-variable",
            )
        )

    # Fields of the context objects, and attributes the sandbox refuses.
    for node, parent in _walk(tree):
        if not isinstance(node, nodes.Getattr | nodes.Getitem):
            continue
        key = _key(node)
        if key is None:
            continue
        if key.startswith("_"):
            inner = node.node
            if not any(
                (_key(n) or "").startswith("_")
                for n in [inner, *inner.find_all((nodes.Getattr, nodes.Getitem))]
                if isinstance(n, nodes.Getattr | nodes.Getitem)
            ):
                problems.append(
                    LintProblem(
                        file,
                        node.lineno,
                        node_path(node) or key,
                        f"attribute {key!r} is not allowed (names starting with '_' are Python internals; "
                        "the sandbox refuses them)",
                        rule="unsafe-attribute",
                    )
                )
            continue
        root = node.node
        if not (isinstance(root, nodes.Name) and root.name in CONTEXT and root.name not in assigned):
            continue
        obj = CONTEXT[root.name]
        fld = obj.field(key)
        if fld is None:
            problems.append(
                LintProblem(
                    file,
                    node.lineno,
                    f"{root.name}.{key}",
                    f"unknown field {key!r} of {root.name} (known: {', '.join(obj.field_names)})"
                    f"{_suggest(key, obj.field_names)}",
                    rule="unknown-field",
                )
            )
        elif isinstance(parent, nodes.Getattr | nodes.Getitem) and parent.node is node:
            sub = _key(parent) or "[...]"
            if not sub.startswith("_"):
                problems.append(
                    LintProblem(
                        file,
                        parent.lineno,
                        f"{root.name}.{key}.{sub}",
                        f"{root.name}.{key} is a {fld.type} and has no field {sub!r}: use a filter, "
                        f"e.g. {{{{ {root.name}.{key} | upper }}}}",
                        rule="unknown-field",
                    )
                )

    # Templates loaded by this one.
    for node in tree.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
        target = node.template
        if isinstance(target, nodes.Const) and isinstance(target.value, str):
            if isinstance(node, nodes.Include) and node.ignore_missing:
                continue
            try:
                env.loader.get_source(env, target.value)
            except TemplateNotFound:
                problems.append(
                    LintProblem(
                        file,
                        node.lineno,
                        target.value,
                        f"template {target.value!r} not found in {display_path(env.root)} "
                        "(include and extend only templates inside that folder)",
                        rule="include",
                    )
                )
        else:
            problems.append(
                LintProblem(
                    file,
                    node.lineno,
                    None,
                    "the template name is computed: it cannot be checked before sending",
                    "warning",
                    "dynamic-include",
                )
            )

    # Fields that may be empty, printed unguarded.
    found: list[tuple[int, str]] = []
    _check_optional(tree, frozenset(), _optional_paths(), found)
    for line, path_ in sorted(set(found)):
        problems.append(
            LintProblem(
                file,
                line,
                path_,
                f"{path_} may be empty for some customers: print it inside {{% if {path_} %}} "
                f"or with a default ({{{{ {path_} | default('…', true) }}}})",
                "warning",
                "optional-field",
            )
        )

    # SMS: the signature and the footer are added automatically.
    if rel.startswith("sms/"):
        footers = _OPT_OUT
        if shop and shop.opt_out_footer.strip():
            footers = re.compile(f"{re.escape(shop.opt_out_footer.strip())}|{_OPT_OUT.pattern}", re.I)
        for line, text in _template_data_hits(tree, footers):
            problems.append(
                LintProblem(
                    file,
                    line,
                    None,
                    f"opt-out footer {text!r} written in the template: the shop's footer "
                    f"({(shop or SAMPLE_SHOP).opt_out_footer}) is added to every SMS automatically; remove it",
                    rule="hardcoded-footer",
                )
            )
        first_output = next((n for n in tree.body if isinstance(n, nodes.Output)), None)
        opening = first_output.nodes[0] if first_output and first_output.nodes else None
        signature_at = None
        if isinstance(opening, nodes.TemplateData) and opening.data.lstrip().startswith("【"):
            signature_at = opening.lineno + opening.data[: opening.data.index("【")].count("\n")
        own = f"【{(shop or SAMPLE_SHOP).name.strip()}】"
        own_hits = [line for line, _ in _template_data_hits(tree, re.compile(re.escape(own)))]
        for line in sorted({*([signature_at] if signature_at else []), *own_hits}):
            problems.append(
                LintProblem(
                    file,
                    line,
                    None,
                    "a signature 【…】 written in the template: the signature is added from the shop's name "
                    "automatically; remove it",
                    rule="hardcoded-signature",
                )
            )
        for line, text in _template_data_hits(tree, re.compile("[【】]")):
            if line == signature_at or line in own_hits:
                continue
            problems.append(
                LintProblem(
                    file,
                    line,
                    None,
                    f"{text} inside an SMS: operators and gateways reserve 【】 for the signature and may "
                    "reject the message; use 「」 or [] instead",
                    "warning",
                    "signature-brackets",
                )
            )
            break
    return problems


# ---------------------------------------------------------------------------------------------
# One message: renders with the sample context
# ---------------------------------------------------------------------------------------------


def _sample_group(group: str) -> str:
    return "other" if group == DEFAULT_VARIANT else group


def _render_sample(env: MessageEnvironment, rel: str, context: dict) -> tuple[str | None, LintProblem | None]:
    try:
        return env.get_template(rel).render(context), None
    except Exception as exc:  # noqa: BLE001 - every failure is reported
        error = error_from_exception(exc, env, display_path(env.root / rel))
        return None, LintProblem.from_error(error, "render")


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
    env = template_environment(root)
    shop = shop or SAMPLE_SHOP
    cache = file_problems if file_problems is not None else {}
    problems: list[LintProblem] = []
    broken = False
    for rel in files.files():
        if not (env.root / rel).is_file():
            continue
        if rel not in cache:
            cache[rel] = lint_file(rel, env, shop)
        problems.extend(cache[rel])
        broken = broken or any(p.is_error for p in cache[rel])

    if files.channel == "email":
        for parts in files.variants.values():
            present = {part: (env.root / rel).is_file() for part, rel in parts.items()}
            for part, ok in present.items():
                if not ok:
                    other = next(rel for p, rel in parts.items() if p != part)
                    problems.append(
                        LintProblem(
                            display_path(env.root / other),
                            None,
                            None,
                            f"an e-mail needs both parts: {parts[part]} is missing",
                            rule="email-part-missing",
                        )
                    )
                    broken = True
    if broken:
        return problems

    budget = max_segments if max_segments is not None else DEFAULT_MAX_SMS_SEGMENTS
    for group, parts in files.variants.items():
        for wave in range(1, _WAVES + 1):
            context = sample_context(
                shop,
                category_group=_sample_group(group),
                wave=wave,
                waves=_WAVES,
                campaign=files.name,
                language=template_language(files.name),
            )
            rendered: dict[str, str] = {}
            for part, rel in parts.items():
                text, problem = _render_sample(env, rel, context)
                if problem:
                    return [*problems, problem]
                rendered[part] = text or ""
            file = display_path(env.root / next(iter(parts.values())))
            if files.channel == "sms":
                final = finalize_sms(
                    rendered["body"], shop.name, shop.opt_out_footer, brackets=shop.sms_signature_brackets
                )
                count = count_sms(final)
                if count.segments > budget:
                    limit = (
                        (UCS2_SINGLE if budget == 1 else UCS2_MULTI * budget)
                        if count.encoding == "ucs2"
                        else None
                    )
                    cut = f"; cut about {count.units - limit} characters" if limit else ""
                    problems.append(
                        LintProblem(
                            file,
                            None,
                            "sms_segments",
                            f"{count.segments} segments with the sample context (wave {wave}): {count.units} "
                            f"{count.encoding} characters with signature and footer, the maximum is {budget} "
                            f"segment(s){cut}",
                            rule="sms-budget",
                        )
                    )
                    break
            elif files.channel == "email" and wave == 1:
                template = env.get_template(parts["html"])
                block = template.blocks.get("subject")
                subject = ""
                if block is not None:
                    subject = " ".join(
                        Markup("".join(block(template.new_context(context)))).unescape().split()
                    )
                if not subject:
                    problems.append(
                        LintProblem(
                            file,
                            None,
                            "subject",
                            "the e-mail has no subject: add {% block subject %}…{% endblock %} to the HTML part",
                            rule="email-subject",
                        )
                    )
                for part, text in rendered.items():
                    if not _EMAIL_OPT_OUT.search(text):
                        problems.append(
                            LintProblem(
                                display_path(env.root / parts[part]),
                                None,
                                None,
                                "no opt-out line (退订 / unsubscribe) in this part: extend "
                                f"email/_base{PARTS['email'][part]} which has it",
                                rule="email-opt-out",
                            )
                        )
    return problems


# ---------------------------------------------------------------------------------------------
# The command's entry point
# ---------------------------------------------------------------------------------------------


def _messages_for(name: str, root: Path | None) -> list[MessageFiles] | None:
    env = template_environment(root)
    name = name.strip().removeprefix(display_path(env.root) + "/")
    if name.endswith(".j2"):
        for message in list_messages(root):
            if name in message.files():
                return [message]
        return None
    channel, _, rest = name.partition("/")
    if channel in PARTS and rest:
        try:
            return [find_message(rest, channel, root)]
        except TemplateError:
            return None
    found = []
    for channel in PARTS:
        try:
            found.append(find_message(name, channel, root))
        except TemplateError:
            continue
    return found or None


def _partials(env: MessageEnvironment) -> list[str]:
    """The partials (``_*``) of the message folders: layouts and included pieces."""
    found = []
    for channel in PARTS:
        for path in (env.root / channel).rglob("*.j2"):
            rel = path.relative_to(env.root)
            if any(part.startswith("_") for part in rel.parts):
                found.append(rel.as_posix())
    return sorted(found)


def lint_templates(
    names: Iterable[str] | None = None,
    *,
    max_sms_segments: dict[str, int] | None = None,
    shop: ShopInfo | None = None,
    root: Path | None = None,
) -> list[LintProblem]:
    """Lint every template (or the messages ``names``: ``thank_you_new``, ``sms/coupon_wave``,
    ``sms/coupon_wave.txt.j2``). ``max_sms_segments`` gives a campaign's budget by message name
    (default :data:`~huitouke.render.messages.DEFAULT_MAX_SMS_SEGMENTS`)."""
    env = template_environment(root)
    budgets = max_sms_segments or {}
    problems: list[LintProblem] = []
    if names is None:
        messages = list_messages(root)
        partials = _partials(env)
    else:
        messages, partials = [], []
        for name in names:
            found = _messages_for(name, root)
            if found is None:
                problems.append(
                    LintProblem(
                        display_path(env.root),
                        None,
                        name,
                        f"no template named {name!r} (see `huitouke templates lint` for all)",
                        rule="unknown-message",
                    )
                )
            else:
                messages.extend(m for m in found if m not in messages)
    cache: dict[str, list[LintProblem]] = {}
    if shop is not None and not shop.opt_out_footer.strip() and any(m.channel == "sms" for m in messages):
        problems.append(
            LintProblem(
                "include/playbook.yaml",
                None,
                "shop.sms_opt_out_footer",
                "the shop's SMS opt-out footer is empty: marketing SMS must tell how to opt out (回T退订)",
                rule="footer-missing",
            )
        )
    for message in messages:
        budget = budgets.get(message.name, budgets.get(f"{message.channel}/{message.name}"))
        problems.extend(lint_message(message, shop=shop, max_segments=budget, root=root, file_problems=cache))
    for rel in partials:
        if rel not in cache:
            cache[rel] = lint_file(rel, env, shop)
            problems.extend(cache[rel])
    unique: list[LintProblem] = []
    for problem in problems:
        if problem not in unique:
            unique.append(problem)
    return unique
