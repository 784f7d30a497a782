"""Messages compiled once, rendered many times.

Which files make a message is the catalogue's business (:mod:`huitouke.render.catalogue`):
:func:`compile_message` finds the message there, lints it (:mod:`huitouke.render.lint`) and
compiles it for a campaign.

**Speed.** :func:`compile_message` lints the files (a broken template fails here, before anything
is queued), loads them once, and checks the sample context against the SMS budget.
:func:`render_batch` then runs each template's compiled code in one reused jinja Context per
batch (:class:`_BodyRenderer`) instead of building one per message as ``Template.render`` does,
and the sandbox's attribute lookup reads context fields as dict keys. The compiled code is
Jinja's own, with every sandbox check in it: nothing is bypassed. A failing message is rendered
again through ``Template.render`` to get the template's line, and raised as :class:`TemplateError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Template, meta, nodes
from jinja2.utils import concat
from markupsafe import Markup

from huitouke.pii import get_logger
from huitouke.render.catalogue import (
    DEFAULT_MAX_SMS_SEGMENTS,
    DEFAULT_VARIANT,
    Channel,
    MessageFiles,
    find_message,
)
from huitouke.render.context import ShopInfo, shop_context
from huitouke.render.environment import (
    MessageEnvironment,
    TemplateError,
    display_path,
    error_from_exception,
    template_environment,
)
from huitouke.render.lint import lint_message
from huitouke.render.sms import finalize_sms, sms_units

log = get_logger(__name__)

__all__ = ["CompiledMessage", "RenderedMessage", "SmsBudgetError", "compile_message", "render_batch"]


class SmsBudgetError(TemplateError):
    """A rendered SMS has more segments than its campaign allows."""


@dataclass(slots=True)
class RenderedMessage:
    """One rendered message. ``body`` is what is sent for SMS (signature and footer included),
    the text part for e-mail, the script for a call."""

    channel: str
    body: str
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    sms_segments: int | None = None
    encoding: str | None = None
    template: str = ""
    units: int | None = None


@dataclass
class _Variant:
    file: str  # the main file, as people see it
    templates: dict[str, Template]
    # The template is self-contained (no global, no other template, no block): its render may
    # run in a reused Context whose namespace is the message's context itself.
    self_contained: bool = True
    subject: Any = None  # the e-mail subject block's render function


def _self_contained(env: MessageEnvironment, template: Template) -> bool:
    """True when the template reads no global (``range`` ...) and loads no other template."""
    try:
        source = Path(template.filename).read_text(encoding="utf-8") if template.filename else ""
        tree = env.parse(source)
    except Exception:  # noqa: BLE001 - the lint reports it; be conservative here
        return False
    loads = (nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport, nodes.Block)
    if any(True for _ in tree.find_all(loads)):
        return False
    names = {n.name for n in tree.find_all(nodes.Name)} | meta.find_undeclared_variables(tree)
    return not (names & set(env.globals))


class _BodyRenderer:
    """Renders one self-contained template many times in a single reused jinja Context.

    ``Template.render`` builds a Context per call (a copy of the globals, an EvalContext, the
    blocks): more than half of the time of a short SMS. Here the Context is built once and its
    namespace (``parent``) is pointed at each message's context; top-level ``{% set %}``
    variables are cleared between messages. The template's compiled code, with every sandbox
    check in it, is the one Jinja generated. One renderer per batch: not shared across threads.
    """

    __slots__ = ("_context", "_exported", "_root", "_vars")

    def __init__(self, template: Template):
        self._root = template.root_render_func
        self._context = template.new_context({}, shared=True)
        self._vars = self._context.vars
        self._exported = self._context.exported_vars

    def __call__(self, context: dict[str, Any]) -> str:
        if self._vars:
            self._vars.clear()
            self._exported.clear()
        self._context.parent = context
        return concat(self._root(self._context))


@dataclass
class CompiledMessage:
    """A message compiled once for a campaign: :meth:`render` one context, :meth:`render_many` many."""

    name: str
    channel: str
    shop: ShopInfo
    max_segments: int | None
    files: MessageFiles
    env: MessageEnvironment
    _variants: dict[str, _Variant] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._shop = shop_context(self.shop)
        self._footer = self.shop.opt_out_footer
        for group, parts in self.files.variants.items():
            templates: dict[str, Template] = {}
            for part, rel in parts.items():
                try:
                    templates[part] = self.env.get_template(rel)
                except Exception as exc:  # noqa: BLE001 - syntax errors, unknown filters, missing files
                    raise error_from_exception(exc, self.env, display_path(self.env.root / rel)) from None
            main = next(iter(templates.values()))
            variant = _Variant(
                file=display_path(main.filename or parts[next(iter(parts))]),
                templates=templates,
                self_contained=all(_self_contained(self.env, t) for t in templates.values()),
            )
            if self.channel == "email":
                variant.subject = templates["html"].blocks.get("subject")
            self._variants[group] = variant

    @property
    def files_used(self) -> list[str]:
        return [v.file for v in self._variants.values()]

    # -- choosing the variant --------------------------------------------------------------

    def _variant(self, context: dict[str, Any]) -> _Variant:
        variants = self._variants
        if len(variants) == 1:
            return next(iter(variants.values()))
        try:
            group = context["category"]["group"]
        except (KeyError, TypeError):
            raise TemplateError(
                "this message has variants by category group: the context needs category.group",
                file=display_path(self.env.root / self.channel / self.name),
                variable="category.group",
            ) from None
        return variants.get(group) or variants[DEFAULT_VARIANT]

    def _fail(
        self, variant: _Variant, template: Template, context: dict[str, Any], exc: Exception
    ) -> TemplateError:
        """Render again through Template.render, whose traceback carries the template's lines."""
        try:
            template.render(context)
        except Exception as again:  # noqa: BLE001 - every failure becomes a TemplateError
            return error_from_exception(again, self.env, variant.file)
        return error_from_exception(exc, self.env, variant.file)

    def _run(self, variant: _Variant, template: Template, context: dict[str, Any]) -> str:
        try:
            return concat(template.root_render_func(template.new_context(context)))
        except Exception as exc:
            raise self._fail(variant, template, context, exc) from None

    # -- rendering ---------------------------------------------------------------------------

    def render(self, context: dict[str, Any]) -> RenderedMessage:
        """Render one message. ``context`` follows :mod:`huitouke.render.context`; ``shop`` is
        added from the compiled message when absent."""
        if "shop" not in context:
            context = {**context, "shop": self._shop}
        variant = self._variant(context)
        if self.channel == "sms":
            return self._sms(variant, context, self._run(variant, variant.templates["body"], context))
        if self.channel == "email":
            return self._email(variant, context)
        body = self._run(variant, variant.templates["body"], context).strip() + "\n"
        return RenderedMessage(self.channel, body, text=body, template=variant.file)

    def _sms(self, variant: _Variant, context: dict[str, Any], body: str) -> RenderedMessage:
        text = finalize_sms(body, self.shop.name, self._footer, brackets=self.shop.sms_signature_brackets)
        encoding, units, segments = sms_units(text)
        if self.max_segments is not None and segments > self.max_segments:
            customer = context.get("customer") or {}
            raise SmsBudgetError(
                f"{segments} SMS segments ({units} {encoding} characters with signature and footer) "
                f"for customer {customer.get('id', '?')}, over the campaign's maximum of "
                f"{self.max_segments}: shorten the template",
                file=variant.file,
                variable="sms_segments",
            )
        return RenderedMessage("sms", text, None, None, None, segments, encoding, variant.file, units)

    def _email(self, variant: _Variant, context: dict[str, Any]) -> RenderedMessage:
        html_template = variant.templates["html"]
        html = self._run(variant, html_template, context).strip() + "\n"
        text = self._run(variant, variant.templates["text"], context).strip() + "\n"
        subject = ""
        if variant.subject is not None:
            try:
                raw = concat(variant.subject(html_template.new_context(context)))
            except Exception as exc:
                raise self._fail(variant, html_template, context, exc) from None
            subject = " ".join(Markup(raw).unescape().split())
        return RenderedMessage("email", text, subject=subject, html=html, text=text, template=variant.file)

    def render_many(self, contexts: Iterable[dict[str, Any]]) -> list[RenderedMessage]:
        """:meth:`render` for many contexts. For SMS the fast path: one reused jinja Context per
        variant (:class:`_BodyRenderer`), names bound once, the footer and segment arithmetic
        inlined. Same results as :meth:`render`, message for message."""
        if self.channel != "sms":
            return [self.render(c) for c in contexts]
        shop_ctx, shop_name, footer = self._shop, self.shop.name, self._footer
        brackets, max_segments = self.shop.sms_signature_brackets, self.max_segments
        renderers: dict[int, Any] = {}
        for variant in self._variants.values():
            template = variant.templates["body"]
            if variant.self_contained:
                renderers[id(variant)] = _BodyRenderer(template)
            else:
                renderers[id(variant)] = lambda c, t=template: concat(t.root_render_func(t.new_context(c)))
        single = next(iter(self._variants.values())) if len(self._variants) == 1 else None
        single_renderer = renderers[id(single)] if single else None
        pick = self._variant
        out: list[RenderedMessage] = []
        append = out.append
        for context in contexts:
            if "shop" not in context:
                context = {**context, "shop": shop_ctx}
            if single_renderer is not None:
                variant, render = single, single_renderer
            else:
                variant = pick(context)
                render = renderers[id(variant)]
            try:
                body = render(context)
            except Exception as exc:
                raise self._fail(variant, variant.templates["body"], context, exc) from None
            text = finalize_sms(body, shop_name, footer, brackets=brackets)
            encoding, units, segments = sms_units(text)
            if max_segments is not None and segments > max_segments:
                self._sms(variant, context, body)  # raises SmsBudgetError with the details
            append(RenderedMessage("sms", text, None, None, None, segments, encoding, variant.file, units))
        return out


def compile_message(
    name: str,
    channel: Channel,
    shop: ShopInfo,
    max_segments: int | None = None,
    *,
    root: Path | None = None,
) -> CompiledMessage:
    """Lint and compile message ``name`` of ``channel`` for a campaign.

    Raises :class:`TemplateError` (file, line, variable) on the first lint error: syntax,
    a variable or field outside the documented context, an include outside the templates
    folder, a hard-coded signature or footer, the sample over ``max_segments`` (SMS;
    default :data:`DEFAULT_MAX_SMS_SEGMENTS`). The error's ``problems`` lists every problem.
    """
    files = find_message(name, channel, root)
    if channel == "sms" and max_segments is None:
        max_segments = DEFAULT_MAX_SMS_SEGMENTS
    problems = [p for p in lint_message(files, shop=shop, max_segments=max_segments, root=root) if p.is_error]
    if problems:
        error = problems[0].to_error()
        if len(problems) > 1:
            error.reason += (
                f" (and {len(problems) - 1} more problem(s): run `huitouke templates lint {name}`)"
            )
            error.args = (error.describe(),)
        error.problems = problems  # type: ignore[attr-defined]
        raise error
    compiled = CompiledMessage(name, channel, shop, max_segments, files, template_environment(root))
    log.info("compiled %s message %r (%d variant(s))", channel, name, len(files.variants))
    return compiled


def render_batch(compiled: CompiledMessage, contexts: Iterable[dict[str, Any]]) -> list[RenderedMessage]:
    """Render one message per context with a compiled message (the fast path)."""
    return compiled.render_many(contexts)
