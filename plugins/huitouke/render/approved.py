"""SMS templates as the provider approved them: the template code and the parameters it fills.

Chinese operators deliver only pre-approved SMS templates, so a provider such as Aliyun sends a
template *code* and the values of its ``${name}`` parameters, not the text huitouke rendered. The
playbook's ``approved_sms_templates`` maps each SMS template (``sms/coupon_wave``) to its code and
to one small Jinja template per parameter (``"{{ coupon.value_cny | cny }}"``).
:func:`compile_params` compiles those parameters in the SAME sandboxed environment as the message
(:func:`~huitouke.render.environment.template_environment`), and :meth:`CompiledParams.render_many`
renders them with the same contexts as the body: a parameter can reach nothing a body cannot.

Every failure is a :class:`~huitouke.render.environment.TemplateError` naming the playbook's file,
the parameter's line and its field (``approved_sms_templates.sms/coupon_wave.params.amount``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Template, meta, nodes
from jinja2.utils import concat

from huitouke.render.context import ShopInfo, shop_context
from huitouke.render.environment import (
    MessageEnvironment,
    TemplateError,
    error_from_exception,
    template_environment,
)

if TYPE_CHECKING:
    from huitouke.campaigns.playbook import ApprovedSmsTemplate

__all__ = [
    "APPROVED_ONLY_PROVIDERS",
    "Approvals",
    "approved_variants",
    "CompiledParams",
    "approved_field",
    "compile_params",
    "missing_approval_error",
    "needs_approved_templates",
    "params_json",
]

SECTION = "approved_sms_templates"
# The SMS providers that deliver only approved templates (a code and its parameters, no text).
APPROVED_ONLY_PROVIDERS = frozenset({"aliyun"})


def needs_approved_templates(provider: str | None) -> bool:
    """Whether every SMS template must be mapped to an approved one for this SMS provider."""
    return provider in APPROVED_ONLY_PROVIDERS


@dataclass(frozen=True)
class Approvals:
    """The playbook's approved SMS templates (template -> mapping), the SMS provider configured
    (``delivery.sms.provider`` of include/huitouke.yaml), and the playbook file errors name."""

    mappings: Mapping[str, ApprovedSmsTemplate] = field(default_factory=dict)
    provider: str | None = None
    file: str = "include/playbook.yaml"

    @classmethod
    def of(cls, playbook: Any, provider: str | None = None) -> Approvals:
        """From a :class:`~huitouke.campaigns.playbook.Playbook` (its file: the mappings' own)."""
        mappings = dict(playbook.approved_sms_templates)
        file = next((m.file for m in mappings.values()), _playbook_file())
        return cls(mappings, provider, file)

    @property
    def required(self) -> bool:
        """Every SMS template a campaign sends must be mapped (the provider sends no free text)."""
        return needs_approved_templates(self.provider)


def _playbook_file() -> str:
    from huitouke.config import describe_path
    from huitouke.segments.settings import playbook_path

    return describe_path(playbook_path())


def approved_field(template: str, param: str | None = None, variant: str | None = None) -> str:
    """The playbook field of a mapping, of one of its variants, or of one of their parameters,
    as errors name it: ``approved_sms_templates.sms/care_tips.variants.food.params.tip``."""
    out = f"{SECTION}.{template}" + (f".variants.{variant}" if variant is not None else "")
    return out + (f".params.{param}" if param is not None else "")


def params_json(params: Mapping[str, str]) -> str:
    """The parameters as stored in the outbox (``template_params``): a JSON object, Chinese kept."""
    return json.dumps(dict(params), ensure_ascii=False, separators=(",", ":"))


def missing_approval_error(
    template: str, provider: str, file: str, campaign: str | None = None
) -> TemplateError:
    """The error of an SMS template without a mapping when the provider needs one."""
    who = f"campaign {campaign} sends {template}, but " if campaign else ""
    return TemplateError(
        f"{who}the SMS provider ({provider}) delivers only approved templates: map {template} to its "
        f"template code and parameters under {SECTION} in the playbook",
        file=file,
        variable=approved_field(template),
    )


def param_error(
    approved: ApprovedSmsTemplate, template: str, param: str, inner: TemplateError, variant: str | None = None
) -> TemplateError:
    """A parameter's error, at the parameter's line in the playbook; the reason keeps the
    variable the sandbox or the lint named (``customer.nmae: undefined field ...``)."""
    reason = f"{inner.variable}: {inner.reason}" if inner.variable else inner.reason
    return TemplateError(
        reason,
        file=approved.file,
        line=approved.line_of(param, variant),
        variable=approved_field(template, param, variant),
    )


def _self_contained(env: MessageEnvironment, tree: nodes.Template) -> bool:
    """True when the parameter reads no global (``range`` ...) and loads no other template: it
    may then run in a reused jinja Context whose namespace is the message's context."""
    loads = (nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport, nodes.Block)
    if any(True for _ in tree.find_all(loads)):
        return False
    names = {n.name for n in tree.find_all(nodes.Name)} | meta.find_undeclared_variables(tree)
    return not (names & set(env.globals))


class _Param:
    """One compiled parameter; renders many contexts in one reused jinja Context when it can
    (as :class:`huitouke.render.messages._BodyRenderer` does for bodies: same compiled code,
    every sandbox check in it)."""

    __slots__ = ("_context", "_root", "_shared", "name", "template")

    def __init__(self, name: str, template: Template, self_contained: bool):
        self.name, self.template = name, template
        self._root = template.root_render_func
        self._shared = self_contained
        self._context = template.new_context({}, shared=True) if self_contained else None

    def __call__(self, context: dict[str, Any]) -> str:
        if self._context is None:
            return concat(self._root(self.template.new_context(context)))
        if self._context.vars:
            self._context.vars.clear()
            self._context.exported_vars.clear()
        self._context.parent = context
        return concat(self._root(self._context))


@dataclass
class CompiledParams:
    """One SMS template's approved counterpart, compiled: :meth:`render_many` gives each message's
    approved template code and parameters (texts, white space stripped at both ends)."""

    template: str  # sms/coupon_wave
    approved: ApprovedSmsTemplate
    env: MessageEnvironment
    shop: ShopInfo | None
    # variant of the mapping (None: its top-level template) -> (code, compiled parameters)
    choices: dict[str | None, tuple[str, list[_Param]]]

    def variant_for(self, context: dict[str, Any]) -> str | None:
        """The mapping's variant a message uses (by its category group; see ``choose``): None for the
        top-level approved template."""
        if not self.approved.variants:
            return None
        category = context.get("category")
        group = category.get("group") if isinstance(category, dict) else None
        try:
            return self.approved.choose(group)
        except LookupError:
            raise TemplateError(
                f"no approved template for category group {group!r}: add variants.{group}, a default "
                "variant, or a top-level code for the other groups",
                file=self.approved.file,
                line=self.approved.line_of(),
                variable=approved_field(self.template),
            ) from None

    def _error(
        self, param: _Param, variant: str | None, context: dict[str, Any], exc: Exception
    ) -> TemplateError:
        try:  # again through Template.render, for the sandbox's own account of it
            param.template.render(context)
        except Exception as again:  # noqa: BLE001 - every failure becomes a TemplateError
            exc = again
        inner = error_from_exception(exc, self.env, self.approved.file)
        return param_error(self.approved, self.template, param.name, inner, variant)

    def render(self, context: dict[str, Any]) -> tuple[str, dict[str, str]]:
        """The code and parameters of one message (``context`` as for the body; ``shop`` added
        when absent)."""
        return self.render_many([context])[0]

    def render_many(self, contexts: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, str]]]:
        shop = shop_context(self.shop) if self.shop is not None else None
        out: list[tuple[str, dict[str, str]]] = []
        for context in contexts:
            if shop is not None and "shop" not in context:
                context = {**context, "shop": shop}
            variant = self.variant_for(context)
            code, params = self.choices[variant]
            values: dict[str, str] = {}
            for param in params:
                try:
                    values[param.name] = param(context).strip()
                except Exception as exc:  # noqa: BLE001 - the sandbox, undefined fields, filters
                    raise self._error(param, variant, context, exc) from None
            out.append((code, values))
        return out


def approved_variants(approved: ApprovedSmsTemplate) -> list[str | None]:
    """The mapping's approved templates: None for its top-level one (when it has a code), then
    its variants."""
    return ([None] if approved.code is not None else []) + list(approved.variants)


def compile_params(
    template: str,
    approved: ApprovedSmsTemplate,
    shop: ShopInfo | None = None,
    *,
    root: Path | None = None,
) -> CompiledParams:
    """Compile the parameters of ``template``'s approved counterpart in the message sandbox.
    Raises :class:`TemplateError` (playbook file, line, field) for a syntax error or an unknown
    filter."""
    env = template_environment(root)
    choices: dict[str | None, tuple[str, list[_Param]]] = {}
    for variant in approved_variants(approved):
        one = approved.approved_for(variant)
        params: list[_Param] = []
        for name, source in one.params.items():
            try:
                tree = env.parse(source)
                compiled = env.from_string(source)
            except Exception as exc:  # noqa: BLE001 - syntax errors, unknown filters
                inner = error_from_exception(exc, env, approved.file)
                raise param_error(approved, template, name, inner, variant) from None
            params.append(_Param(name, compiled, _self_contained(env, tree)))
        choices[variant] = (one.code, params)
    return CompiledParams(template, approved, env, shop, choices)
