"""``huitouke deliver status``: where the outbox stands after a run, in counts only.

For business days ``since`` .. ``day``: messages per campaign and channel by status (with the
delivery receipts of the sent ones and the segments billed), the reasons of the rows that did not
go (failed, unknown, suppressed, stale, expired, and queued rows waiting on a retry), and the
opt-outs recorded since the first of those days by source. Reasons are the providers' masked
reasons, masked once more here; nothing names a customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo

import pandas as pd
from sqlalchemy import Engine, func, select

from huitouke.deliver.states import (
    EXPIRED,
    FAILED,
    LISTED,
    QUEUED,
    SENDING,
    SENT,
    STALE,
    SUPPRESSED,
    UNKNOWN,
)
from huitouke.pii import mask_text
from huitouke.store.rows import read_frame
from huitouke.store.schema import opt_outs, outbox

__all__ = ["DeliveryStatus", "delivery_status", "latest_business_day"]

STATUS_ORDER = (QUEUED, SENDING, LISTED, SENT, FAILED, UNKNOWN, SUPPRESSED, STALE, EXPIRED)
_REASON_WIDTH = 90
o = outbox.c


@dataclass(frozen=True)
class DeliveryStatus:
    """The outbox of business days ``since`` .. ``day`` (``by_status``: one row per campaign and
    channel; ``reasons``: campaign, channel, status, reason, messages; ``opt_outs``: source,
    channel, opt_outs)."""

    since: date
    day: date
    by_status: pd.DataFrame
    reasons: pd.DataFrame
    opt_outs: pd.DataFrame

    def as_text(self) -> str:
        days = (
            f"business day {self.day}"
            if self.since == self.day
            else f"business days {self.since}..{self.day}"
        )
        if self.by_status.empty:
            return f"Outbox, {days}: no messages."
        lines = [f"Outbox, {days}: messages by status", _table(self.by_status)]
        if not self.reasons.empty:
            lines += [
                "",
                "Why messages did not go (or wait to be retried)",
                _table(self.reasons),
            ]
        if not self.opt_outs.empty:
            lines += [
                "",
                f"Opt-outs recorded since {self.since} (shop time)",
                _table(self.opt_outs),
            ]
        return "\n".join(lines)


def _table(frame: pd.DataFrame) -> str:
    """A frame as text, its text columns left-aligned (pandas right-aligns everything)."""
    shown = frame.copy()
    for column in shown.columns:
        if not pd.api.types.is_numeric_dtype(shown[column]):
            width = max(len(str(column)), *(len(str(v)) for v in shown[column]))
            shown[column] = [str(v).ljust(width) for v in shown[column]]
            shown = shown.rename(columns={column: str(column).ljust(width)})
    return shown.to_string(index=False)


def latest_business_day(engine: Engine) -> date | None:
    """The latest business day with an outbox row."""
    with engine.connect() as conn:
        latest = conn.scalar(select(func.max(o.business_date)))
    return pd.Timestamp(latest).date() if latest is not None else None


def _counts(engine: Engine, since: date, day: date) -> pd.DataFrame:
    columns = ("campaign", "channel", "status", "last_error", "receipt", "messages", "segments")
    query = (
        select(
            o.campaign,
            o.channel,
            o.status,
            o.last_error,
            o.receipt,
            func.count(),
            func.sum(o.billed_segments),
        )
        .where(o.business_date.between(since, day))
        .group_by(o.campaign, o.channel, o.status, o.last_error, o.receipt)
    )
    with engine.connect() as conn:
        return read_frame(conn, query, columns)


def _by_status(counts: pd.DataFrame) -> pd.DataFrame:
    keys = ["campaign", "channel"]
    table = counts.pivot_table(index=keys, columns="status", values="messages", aggfunc="sum", fill_value=0)
    present = [s for s in STATUS_ORDER if s in table.columns]
    table = table[present + sorted(set(table.columns) - set(present))]
    sent = counts[counts["status"] == SENT]
    receipts = sent.pivot_table(index=keys, columns="receipt", values="messages", aggfunc="sum", fill_value=0)
    for receipt in ("delivered", "undelivered"):
        table[receipt] = receipts[receipt] if receipt in receipts.columns else 0
    table["segments"] = sent.groupby(keys)["segments"].sum()
    table["total"] = counts.groupby(keys)["messages"].sum()
    return table.fillna(0).astype("int64").reset_index().rename_axis(columns=None)


def _reasons(counts: pd.DataFrame) -> pd.DataFrame:
    rows = counts[counts["last_error"].notna() & (counts["last_error"] != "")]
    rows = rows[~rows["status"].isin([SENT, LISTED, SENDING])]
    if rows.empty:
        return pd.DataFrame(columns=["campaign", "channel", "status", "reason", "messages"])
    rows = rows.assign(reason=[mask_text(str(r))[:_REASON_WIDTH] for r in rows["last_error"]])
    table = rows.groupby(["campaign", "channel", "status", "reason"], as_index=False)["messages"].sum()
    return table.sort_values(
        ["campaign", "channel", "status", "messages"], ascending=[True, True, True, False]
    )


def _opt_outs(engine: Engine, since: date, tz: tzinfo) -> pd.DataFrame:
    start = datetime.combine(since, time(0), tzinfo=tz).astimezone(UTC).replace(tzinfo=None)
    c = opt_outs.c
    query = (
        select(c.source, c.channel, func.count())
        .where(c.recorded_at >= start)
        .group_by(c.source, c.channel)
        .order_by(c.source, c.channel)
    )
    with engine.connect() as conn:
        return read_frame(conn, query, ("source", "channel", "opt_outs"))


def delivery_status(engine: Engine, since: date, day: date, tz: tzinfo) -> DeliveryStatus:
    """The outbox of business days ``since`` .. ``day``, and the opt-outs recorded since ``since``
    began in shop time ``tz``."""
    counts = _counts(engine, since, day)
    empty = counts.empty
    by_status = pd.DataFrame() if empty else _by_status(counts)
    reasons = pd.DataFrame() if empty else _reasons(counts)
    return DeliveryStatus(since, day, by_status, reasons, _opt_outs(engine, since, tz))
