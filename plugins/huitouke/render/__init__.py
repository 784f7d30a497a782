"""Stage 4 of the daily run: marketers' templates rendered into messages, safely and fast.

Templates live in ``include/templates/`` (``sms/``, ``email/``, ``call/``) and belong to the
marketers; ``include/templates/README.md`` is their guide. The pipeline's side::

    problems = lint_templates()                      # or lint_templates(["thank_you_new"])
    compiled = compile_message("thank_you_new", "sms", shop, max_segments=2)   # TemplateError if broken
    messages = render_batch(compiled, contexts)      # one RenderedMessage per context
    messages[0].body, messages[0].sms_segments, messages[0].encoding

- :mod:`~huitouke.render.environment`: the sandboxed Jinja environment, filters, :class:`TemplateError`.
- :mod:`~huitouke.render.context`: the documented context (schema, builders, sample), :class:`ShopInfo`.
- :mod:`~huitouke.render.sms`: signature, opt-out footer, GSM-7/UCS-2 segment counting.
- :mod:`~huitouke.render.catalogue`: message names, which files make a message, every message.
- :mod:`~huitouke.render.messages`: compile once, render many.
- :mod:`~huitouke.render.lint`: the lint rules; :mod:`~huitouke.render.preview`: previews;
  :mod:`~huitouke.render.cli`: the ``huitouke templates`` commands.
- :mod:`~huitouke.render.daily`: the stage's tasks (``check_templates``, ``run_day``: one
  campaign's treated waves of a day rendered into the outbox); :mod:`~huitouke.render.persist`:
  its reads and writes at the store's edge.

A broken template raises :class:`TemplateError` from :func:`compile_message`, naming the file,
the line and the variable, so its campaign fails before anything is queued.
"""

from huitouke.render.catalogue import DEFAULT_MAX_SMS_SEGMENTS, find_message, list_messages
from huitouke.render.context import (
    CONTEXT,
    SAMPLE_SHOP,
    ShopInfo,
    campaign_context,
    category_context,
    coupon_context,
    customer_context,
    message_context,
    order_context,
    sample_context,
    wave_context,
)
from huitouke.render.environment import TemplateError, template_environment, templates_root
from huitouke.render.lint import LintProblem, lint_templates
from huitouke.render.messages import (
    CompiledMessage,
    RenderedMessage,
    SmsBudgetError,
    compile_message,
    render_batch,
)
from huitouke.render.preview import preview_message
from huitouke.render.sms import SmsCount, count_sms, finalize_sms

__all__ = [
    "CONTEXT",
    "DEFAULT_MAX_SMS_SEGMENTS",
    "SAMPLE_SHOP",
    "CompiledMessage",
    "LintProblem",
    "RenderedMessage",
    "ShopInfo",
    "SmsBudgetError",
    "SmsCount",
    "TemplateError",
    "campaign_context",
    "category_context",
    "compile_message",
    "count_sms",
    "coupon_context",
    "customer_context",
    "finalize_sms",
    "find_message",
    "lint_templates",
    "list_messages",
    "message_context",
    "order_context",
    "preview_message",
    "render_batch",
    "sample_context",
    "template_environment",
    "templates_root",
    "wave_context",
]
