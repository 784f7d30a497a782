"""An operator's pause of one campaign's sending, kept in the CRM store (``campaign_pauses``):
``huitouke deliver pause --campaign X`` / ``resume``. The claim never takes a paused campaign's
messages (:func:`huitouke.deliver.checks.claimable`), so they stay queued: resumed, the next claim
or run sends them; left paused beyond ``delivery.max_age_days`` they expire as any queued message.
Planning and rendering go on as usual: a pause holds sending only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

import pandas as pd
from sqlalchemy import Connection, Engine, delete, func, select

from huitouke.deliver.states import QUEUED
from huitouke.store.rows import insert_new
from huitouke.store.schema import campaign_pauses, outbox

__all__ = ["pause", "paused", "queued_of_paused", "resume"]


def pause(engine: Engine, campaign: str, now: datetime, note: str | None = None) -> bool:
    """Pause ``campaign``'s sending; False when it was paused already (kept as it was)."""
    with engine.begin() as conn:
        return bool(
            insert_new(conn, campaign_pauses, [{"campaign": campaign, "paused_at": now, "note": note}])
        )


def resume(engine: Engine, campaign: str) -> bool:
    """Resume ``campaign``'s sending; False when it was not paused."""
    with engine.begin() as conn:
        return (
            conn.execute(delete(campaign_pauses).where(campaign_pauses.c.campaign == campaign)).rowcount > 0
        )


def paused(conn: Connection) -> pd.DataFrame:
    """The paused campaigns: ``campaign, paused_at, note``, by campaign."""
    p = campaign_pauses.c
    rows = conn.execute(select(p.campaign, p.paused_at, p.note).order_by(p.campaign)).all()
    return pd.DataFrame(rows, columns=["campaign", "paused_at", "note"])


def queued_of_paused(conn: Connection, channels: Sequence[str], since: date, day: date) -> pd.DataFrame:
    """``campaign, channel, messages`` queued for business days ``since`` .. ``day`` of the paused
    campaigns: what a pause holds back."""
    o, p = outbox.c, campaign_pauses.c
    query = (
        select(o.campaign, o.channel, func.count().label("messages"))
        .join(campaign_pauses, p.campaign == o.campaign)
        .where(o.status == QUEUED)
        .where(o.channel.in_(list(channels)))
        .where(o.business_date.between(since, day))
        .group_by(o.campaign, o.channel)
        .order_by(o.campaign, o.channel)
    )
    return pd.DataFrame(conn.execute(query).all(), columns=["campaign", "channel", "messages"])
