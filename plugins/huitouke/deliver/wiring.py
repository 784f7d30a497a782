"""From configuration to a day's :class:`~huitouke.deliver.daily.DeliveryJob`: the providers the
``delivery:`` section names (each built from its Airflow Connection), the message each outbox row
becomes (its out id, its unsubscribe link), the playbook's send window and contact caps."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from huitouke.config import DeliverySettings, Settings, project_home
from huitouke.deliver.aliyun_relay import RelayTokens
from huitouke.deliver.policy import DeliveryRules
from huitouke.deliver.providers.base import OutgoingMessage, Provider

__all__ = ["aliyun_relay_tokens", "build_provider", "delivery_rules", "message_factory", "providers_from"]

_PROVIDERS: dict[str, tuple[str, str]] = {  # kind -> (module, class); imported only when configured
    "webhook": ("huitouke.deliver.providers.webhook", "WebhookProvider"),
    "aliyun": ("huitouke.deliver.providers.aliyun", "AliyunSmsProvider"),
    "twilio": ("huitouke.deliver.providers.twilio", "TwilioSmsProvider"),
    "smtp": ("huitouke.deliver.providers.email", "SmtpEmailProvider"),
}


def build_provider(kind: str, conn_id: str | None) -> Provider:
    """The provider of ``kind`` from its Connection (its own default Connection id when None)."""
    import importlib

    module, name = _PROVIDERS[kind]
    cls = getattr(importlib.import_module(module), name)
    return cls.from_connection(conn_id) if conn_id else cls.from_connection()


def providers_from(settings: DeliverySettings, only: str | None = None) -> dict[str, Provider]:
    """channel -> provider, for the channels with one configured (``only``: that channel's)."""
    chosen = {"sms": settings.sms, "email": settings.email}
    return {
        ch: build_provider(c.provider, c.conn_id)
        for ch, c in chosen.items()
        if c.provider != "none" and only in (None, ch)
    }


def delivery_rules(settings: DeliverySettings) -> DeliveryRules:
    fields = DeliveryRules.__dataclass_fields__
    return DeliveryRules(**{k: v for k, v in settings.model_dump().items() if k in fields})


def call_list_folder(settings: Settings) -> Path:
    folder = Path(settings.delivery.call_list_folder)
    return folder if folder.is_absolute() else project_home() / folder


def unsubscribe_secret(settings: DeliverySettings) -> bytes | None:
    """The unsubscribe tokens' secret: the password of ``delivery.unsubscribe_conn_id`` (None when
    no unsubscribe URL is configured)."""
    if not settings.unsubscribe_url:
        return None
    from huitouke.store.connection import airflow_connection

    secret = airflow_connection(settings.unsubscribe_conn_id).password or ""
    if len(secret.encode()) < 16:
        raise ValueError(
            f"Connection {settings.unsubscribe_conn_id!r}: its password, the unsubscribe tokens' secret, "
            "must be at least 16 bytes"
        )
    return secret.encode()


def aliyun_relay_tokens(settings: DeliverySettings) -> RelayTokens | None:
    """The Aliyun report relay's tokens from ``delivery.aliyun_relay_conn_id`` (None: the relay is
    off): its password is the push token, its extra ``pull_token`` the pull token. Each at least
    16 bytes, and not the same: the push token travels in a URL (Aliyun's console, proxies' logs),
    and must not also read what was pushed."""
    if not settings.aliyun_relay_conn_id:
        return None
    from huitouke.store.connection import airflow_connection

    conn_id = settings.aliyun_relay_conn_id
    conn = airflow_connection(conn_id)
    push = conn.password or ""
    pull = str((getattr(conn, "extra_dejson", None) or {}).get("pull_token") or "")
    if len(push.encode()) < 16 or len(pull.encode()) < 16:
        raise ValueError(
            f"Connection {conn_id!r}: its password (the push token) and its extra pull_token "
            "must be at least 16 bytes each"
        )
    if push == pull:
        raise ValueError(f"Connection {conn_id!r}: the push token and the pull token must differ")
    return RelayTokens(push=push, pull=pull, keep_days=settings.aliyun_relay_keep_days)


def _aware_utc(moment: Any) -> datetime | None:
    """A stored time (naive UTC, possibly a pandas Timestamp) as an aware datetime."""
    if type(moment) is datetime:  # as claimed: the common case, without pandas
        return moment.replace(tzinfo=UTC)
    if moment is None or pd.isna(moment):
        return None
    return pd.Timestamp(moment).to_pydatetime().replace(tzinfo=UTC)


def _template_params(stored: Any) -> dict[str, str]:
    """An approved SMS template's parameters as the outbox keeps them (JSON; None: none)."""
    if stored is None or (isinstance(stored, float) and pd.isna(stored)) or stored == "":
        return {}
    return {str(k): str(v) for k, v in json.loads(stored).items()}


def message_factory(
    secret: bytes | None, unsubscribe_base: str | None, sign_name: str | None = None
) -> Callable[[dict[str, Any]], OutgoingMessage]:
    """How an outbox row (as claimed) becomes what a provider sends."""
    from huitouke.deliver.unsubscribe import make_token, unsubscribe_url

    def message_of(row: dict[str, Any]) -> OutgoingMessage:
        link = None
        if row["channel"] == "email" and secret and unsubscribe_base:
            link = unsubscribe_url(unsubscribe_base, make_token(secret, int(row["message_id"])))
        return OutgoingMessage(
            message_id=int(row["message_id"]),
            out_id=row["out_id"],
            channel=row["channel"],
            recipient=row["recipient"],
            body=row["body"] or "",
            template=row["template"],
            campaign=row["campaign"],
            subject=row.get("subject"),
            html=row.get("html"),
            sms_segments=int(row.get("sms_segments") or 1),
            template_code=row.get("template_code") or None,
            template_params=_template_params(row.get("template_params")),
            sign_name=sign_name,
            unsubscribe_url=link,
            claimed_at=_aware_utc(row.get("claimed_at")),
        )

    return message_of


def cap_of(playbook: Any) -> Callable[[str | None], tuple[int, int]]:
    """member tier -> (max_contacts, per_days): the playbook's contact caps, as the send-time
    checks read them."""
    pressure = playbook.contact_pressure

    def cap(tier: str | None) -> tuple[int, int]:
        tier_cap = pressure.cap_for(tier)
        return tier_cap.max_contacts, tier_cap.per_days

    return cap
