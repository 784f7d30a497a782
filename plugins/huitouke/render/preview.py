"""``huitouke templates preview``: a message as a customer will see it, with its SMS cost.

:func:`preview_message` renders a message for the sample context (every variant of a message
with variants by category group) or for a given context: a dict of customer fields (merged over
the sample customer), or of context objects (``{"customer": {...}, "coupon": {...}}``, each merged
over the sample's). It renders even when the SMS is over budget, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huitouke.render.catalogue import (
    CHANNELS,
    DEFAULT_MAX_SMS_SEGMENTS,
    DEFAULT_VARIANT,
    MessageFiles,
    find_message,
)
from huitouke.render.context import (
    CONTEXT,
    SAMPLE_SHOP,
    ShopInfo,
    category_context,
    sample_context,
    template_language,
)
from huitouke.render.environment import MessageEnvironment, TemplateError, template_environment
from huitouke.render.messages import CompiledMessage, RenderedMessage

__all__ = ["PreviewOptions", "format_rendered", "preview_context", "preview_message"]


def preview_context(
    overrides: dict[str, Any] | None = None,
    *,
    shop: ShopInfo | None = None,
    category_group: str | None = None,
    wave: int | None = None,
    waves: int = 5,
    campaign: str = "thank_you_new",
) -> dict[str, Any]:
    """The sample context with ``overrides`` merged in (see the module's documentation).
    ``campaign`` is the message name (``en/...`` gives an English sample customer)."""
    overrides = dict(overrides or {})
    if overrides and not set(overrides) <= set(CONTEXT):
        overrides = {"customer": overrides}
    group = category_group or (overrides.get("category") or {}).get("group")
    group = group or (overrides.get("customer") or {}).get("category_group") or "food"
    context = sample_context(
        shop,
        category_group=group,
        wave=wave or 1,
        waves=waves,
        campaign=campaign,
        language=template_language(campaign),
    )
    for key, value in overrides.items():
        if isinstance(value, dict):
            context[key] = {**context.get(key, {}), **value}
        else:
            context[key] = value
    if "category" not in overrides:
        context["category"] = category_context(group)
    return context


def format_rendered(message: RenderedMessage, max_segments: int | None = None) -> str:
    if message.channel == "sms":
        encoding = {"ucs2": "UCS-2", "gsm7": "GSM-7"}.get(message.encoding or "", message.encoding)
        budget = ""
        if max_segments is not None:
            over = (message.sms_segments or 0) > max_segments
            budget = f"; OVER the maximum of {max_segments}" if over else f"; maximum {max_segments}"
        return (
            f"{message.body}\n"
            f"-- {message.sms_segments} segment(s), {encoding}, {message.units} characters "
            f"(signature and footer included{budget})"
        )
    if message.channel == "email":
        return (
            f"Subject: {message.subject}\n--- text part ---\n{message.text}--- HTML part ---\n{message.html}"
        )
    return message.body.rstrip("\n")


@dataclass(frozen=True)
class PreviewOptions:
    """What :func:`preview_message` renders a message for (every field optional).

    ``channel``: only this channel (default every channel the message has); ``context``: see the
    module's documentation (default the sample context); ``wave``, ``category``: the sample's wave
    and category group (default wave 1, every variant of a message with variants); ``shop``
    (default the sample shop); ``max_segments``: the SMS budget shown (default 2); ``root``: the
    templates folder.
    """

    channel: str | None = None
    context: dict[str, Any] | None = None
    shop: ShopInfo | None = None
    wave: int | None = None
    category: str | None = None
    max_segments: int | None = None
    root: Path | None = None


def _sections(
    name: str, channel: str, files: MessageFiles, options: PreviewOptions, env: MessageEnvironment
) -> list[str]:
    """One channel of a message rendered for each sample variant (or once for a given context)."""
    shop = options.shop or SAMPLE_SHOP
    budget = (options.max_segments or DEFAULT_MAX_SMS_SEGMENTS) if channel == "sms" else None
    compiled = CompiledMessage(name, channel, shop, None, files, env)
    if options.context is not None or options.category or not files.by_category_group:
        groups: list[str | None] = [None]
    else:
        groups = list(files.variants)
    sections = []
    for group in groups:
        sample_group = options.category if group is None else ("other" if group == DEFAULT_VARIANT else group)
        ctx = preview_context(
            options.context, shop=shop, category_group=sample_group, wave=options.wave, campaign=name
        )
        message = compiled.render(ctx)
        title = f"== {channel}/{name}" + (f" [{ctx['category']['group']}]" if files.by_category_group else "")
        sections.append(f"{title} ({message.template}) ==\n{format_rendered(message, budget)}")
    return sections


def preview_message(name: str, options: PreviewOptions | None = None) -> str:
    """Every channel of message ``name`` (or only ``options.channel``) rendered as text for a person.

    Raises :class:`TemplateError` when the template is broken or no such message exists.
    ``name`` may carry its channel: ``sms/thank_you_new``.
    """
    options = options or PreviewOptions()
    channel = options.channel
    head, _, rest = name.partition("/")
    if channel is None and head in CHANNELS and rest:
        channel, name = head, rest
    env = template_environment(options.root)
    sections: list[str] = []
    for ch in [channel] if channel else list(CHANNELS):
        try:
            files = find_message(name, ch, options.root)
        except TemplateError:
            if channel:
                raise
            continue
        sections.extend(_sections(name, ch, files, options, env))
    if not sections:
        raise TemplateError(
            f"no template named {name!r} in any channel ({', '.join(CHANNELS)})",
            file=str(env.root),
            variable=name,
        )
    return "\n\n".join(sections) + "\n"
