"""The e-mail's one-click unsubscribe link (RFC 8058), served at ``/huitouke/unsubscribe``.

- ``POST /huitouke/unsubscribe?token=T`` (a mailbox provider's one-click, body
  ``List-Unsubscribe=One-Click``; or the button of the page below) records the opt-out of the
  message's customer and channel (source ``link``) and answers 200 with a short page. No
  confirmation step, as RFC 8058 requires; a second POST records nothing new and answers the same.
- ``GET`` (a person, or a mail scanner following the link) changes nothing: a page with a button
  that POSTs. Scanners fetch links; they must not unsubscribe anyone.
- A garbled or forged token: 400, a page saying the link is not valid, nothing more. A valid token
  whose message the store no longer has: 404.

These routes need no Airflow login: customers click them. The rest of the plugin's app does
(:mod:`huitouke.ui.app`). They carry nothing personal: the token names an outbox message, the
pages name no one. The token's secret is the password of the Connection ``huitouke_unsubscribe``
(:func:`huitouke.deliver.wiring.unsubscribe_secret`); without ``delivery.unsubscribe_url`` the
link is not configured and the routes answer 404. Pages are hand-written strings: two small
static pages, outside the Airflow-styled templates of the rest of the UI.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from sqlalchemy import Engine

from huitouke.pii import get_logger

__all__ = ["PATH", "configured_engine", "configured_secret", "unsubscribe_router"]

log = get_logger(__name__)

PATH = "/unsubscribe"
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}
CHANNEL_WORDS = {
    "email": ("e-mail", "邮件"),
    "sms": ("text messages", "短信"),
    "call": ("phone calls", "电话"),
}

SecretOf = Callable[[], bytes | None]
EngineOf = Callable[[], Engine]


def configured_secret() -> bytes | None:
    from huitouke.config import load_settings
    from huitouke.deliver.wiring import unsubscribe_secret

    return unsubscribe_secret(load_settings().delivery)


def configured_engine() -> Engine:
    from huitouke.ui import data

    engine = data.store_engine()
    data.check_schema(engine, data.store_conn_id())
    return engine


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    page = f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;
max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222;line-height:1.6}}
button{{font-size:1rem;padding:.6rem 1.4rem;border:0;border-radius:.4rem;background:#0b6bcb;color:#fff;
cursor:pointer}}</style></head>
<body><h1>{html.escape(title)}</h1>{body}</body></html>"""
    return HTMLResponse(page, status_code=status_code, headers=HEADERS)


def _invalid() -> HTMLResponse:
    return _page(
        "链接无效 · Link not valid",
        "<p>此退订链接无效或不完整。请使用邮件中的退订链接，或回复邮件告诉我们。</p>"
        "<p>This unsubscribe link is not valid or is incomplete. Please use the link in the e-mail, "
        "or reply to the e-mail and tell us.</p>",
        400,
    )


def _unavailable() -> HTMLResponse:
    return _page(
        "暂时无法退订 · Please try again later",
        "<p>系统暂时无法处理您的退订请求，请稍后再试。</p>"
        "<p>We cannot take your request right now. Please try again in a few minutes.</p>",
        503,
    )


def _not_found() -> HTMLResponse:
    return _page(
        "链接已失效 · Link no longer valid",
        "<p>此退订链接已失效。请回复邮件告诉我们，我们会为您退订。</p>"
        "<p>This link is no longer valid. Reply to the e-mail and we will unsubscribe you.</p>",
        404,
    )


def _confirm(token: str) -> HTMLResponse:
    action = html.escape(f"?token={token}", quote=True)  # relative: the same path, behind any proxy
    return _page(
        "退订 · Unsubscribe",
        "<p>确认后，我们将不再向您发送此类消息。</p>"
        "<p>Confirm, and we will stop sending you these messages.</p>"
        f'<form method="post" action="{action}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        "<button type=submit>确认退订 · Unsubscribe</button></form>",
    )


def _done(channel: str, recorded: bool) -> HTMLResponse:
    english, chinese = CHANNEL_WORDS.get(channel, ("messages", "消息"))
    already = "" if recorded else "<p>（您此前已退订。You had already unsubscribed.）</p>"
    return _page(
        "已退订 · Unsubscribed",
        f"<p>您已退订，我们将不再向您发送营销{chinese}。</p>"
        f"<p>You are unsubscribed: we will send you no more marketing {english}.</p>{already}",
    )


def _message_id(secret_of: SecretOf, token: str) -> int | HTMLResponse:
    """The token's message id, or the page to answer instead (no detail of what was wrong)."""
    from huitouke.deliver.unsubscribe import read_token

    try:
        secret = secret_of()
    except Exception as exc:  # a missing Connection, a short secret: the operator's to fix
        log.warning("unsubscribe link: the token secret is not available: %s", exc)
        return _unavailable()
    if secret is None:
        return _page("Not found", "<p>Not found.</p>", 404)
    try:
        return read_token(secret, token)
    except ValueError:
        log.info("unsubscribe link: a token that is garbled or not ours was refused")
        return _invalid()


def unsubscribe_router(
    secret_of: SecretOf | None = None,
    engine_of: EngineOf | None = None,
    clock: Callable[[], datetime] = _utcnow,
) -> APIRouter:
    """The two routes, with no authentication (module docstring). The secret and the store are
    asked for on each request: by default from the configuration (:func:`configured_secret`,
    :func:`configured_engine`), so a Connection edited in the UI is used at once."""
    router = APIRouter(default_response_class=HTMLResponse)

    def secret() -> bytes | None:
        return (secret_of or configured_secret)()

    def engine() -> Engine:
        return (engine_of or configured_engine)()

    @router.get(PATH, include_in_schema=False)
    def confirm(token: str = Query("")) -> HTMLResponse:
        found = _message_id(secret, token)
        return found if isinstance(found, HTMLResponse) else _confirm(token)

    @router.post(PATH, include_in_schema=False)
    def unsubscribe(token: str = Query("")) -> HTMLResponse:
        from huitouke.deliver.optouts import opt_out_by_link

        found = _message_id(secret, token)
        if isinstance(found, HTMLResponse):
            return found
        try:
            done = opt_out_by_link(engine(), found, clock())
        except Exception as exc:  # the store is down or behind: the customer may try again
            log.warning("unsubscribe link: the opt-out could not be recorded: %s", type(exc).__name__)
            return _unavailable()
        if done is None:
            return _not_found()
        log.info(
            "unsubscribe link: opt-out of %s recorded (%s)", done.channel, "new" if done.recorded else "again"
        )
        return _done(done.channel, done.recorded)

    return router
