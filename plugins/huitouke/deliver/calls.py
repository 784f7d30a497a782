"""Phone follow-ups: the day's call list for the shop's staff, and their outcomes back.

The list is a CSV in the folder the data engineer configures (``delivery.call_list_folder``), one
file per business day; its rows move ``queued`` → ``listed``. It holds names and numbers, so it is
never logged. ``huitouke calls import FILE`` records what the staff wrote in it: ``reached`` →
``sent``; ``not_reached``, ``wrong_number``, ``refused`` → ``failed`` with that reason;
``opted_out`` → ``failed`` and an opt-out of every channel. Calls then have a sent view like
messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

import pandas as pd
from sqlalchemy import Connection, Engine, bindparam, select, update

from huitouke.deliver import persist
from huitouke.deliver.checks import claimable
from huitouke.deliver.imports import read_call_outcomes, write_call_list
from huitouke.deliver.states import FAILED, LISTED, QUEUED, SENT
from huitouke.store.rows import lock_writers, read_frame
from huitouke.store.schema import customers, outbox

__all__ = ["CallChecks", "CallImport", "import_call_outcomes", "list_calls"]

o = outbox.c
CALL = "call"
_CALL_FIELDS = ("message_id", "name", "phone", "campaign", "body", "coupon_code", "due_date")


def list_calls(
    engine: Engine, selection: persist.Selection, folder: Path, checks: CallChecks
) -> tuple[Path | None, int]:
    """Write the queued calls of ``selection`` to a new ``folder/calls_<day>_<time>.csv`` (a file
    staff may be filling in is never overwritten) and mark them listed; calls to customers who
    opted out, are in the holdout, have no phone or reached their cap end ``suppressed``, as a
    message would at send time. Returns the file (None when there was no call) and the count."""
    with engine.begin() as conn:
        lock_writers(conn, outbox)
        calls = _checked(conn, _queued_calls(conn, selection), selection, checks)
        if calls.empty:
            return None, 0
        stamp = checks.now.strftime("%H%M%S")
        path = folder / f"calls_{selection.day.isoformat()}_{stamp}.csv"
        written = write_call_list(calls[list(_CALL_FIELDS)], path)
        conn.execute(
            update(outbox)
            .where(o.message_id == bindparam("mid"))
            .where(o.status == QUEUED)
            .values(status=LISTED),
            [{"mid": int(m)} for m in calls["message_id"]],
        )
    return path, written


@dataclass(frozen=True)
class CallChecks:
    """What the send-time checks need: the caps by member tier, the shop's timezone, now (naive
    UTC, as the store keeps times)."""

    cap_of: persist.CapOf
    tz: tzinfo
    now: datetime


def _checked(
    conn: Connection, calls: pd.DataFrame, selection: persist.Selection, checks: CallChecks
) -> pd.DataFrame:
    """The calls that pass the send-time checks; the others end suppressed."""
    if calls.empty:
        return calls
    verdicts = persist.send_time_checks(conn, calls, checks.cap_of, checks.tz, checks.now)
    failing = verdicts["reason"].notna().to_numpy()
    persist.suppress(
        conn,
        list(zip(calls["message_id"][failing].tolist(), verdicts["reason"][failing].tolist(), strict=True)),
    )
    return calls[~failing]


def _queued_calls(conn: Connection, selection: persist.Selection) -> pd.DataFrame:
    """The queued calls with the facts the send-time checks read (:func:`persist.with_facts`); the
    customer's name and current phone are the list's."""
    keys = ("message_id", "campaign", "body", "coupon_code", "customer_id", "entered_on", "wave", "channel")
    query = (
        select(*(o[k] for k in keys), o.business_date.label("due_date"))
        .where(o.channel == CALL)
        .where(o.status == QUEUED)
        .where(o.business_date.between(selection.oldest, selection.day))
        .where(claimable(o.campaign, selection.campaigns))  # a paused campaign's calls wait queued
    )
    query = persist.with_facts(query, selection.day, ("campaign", "message_id")).add_columns(customers.c.name)
    calls = read_frame(conn, query, (*keys, "due_date", *persist.FACT_COLUMNS, "name"))
    calls = calls.drop_duplicates("message_id", ignore_index=True)
    return calls.assign(phone=calls["current_phone"])


@dataclass(frozen=True)
class CallImport:
    """What an import recorded: calls by outcome, rows not matched to a listed call, row errors."""

    outcomes: dict[str, int]
    not_listed: int
    errors: list[str]
    opt_outs: int


_FAILED_OUTCOMES = {"not_reached", "wrong_number", "refused", "opted_out"}


def import_call_outcomes(engine: Engine, path: Path, tz: str, now: datetime) -> CallImport:
    """Record the staff's outcomes (module docstring). A call already recorded keeps its outcome."""
    frame, errors = read_call_outcomes(path, tz)
    counts: dict[str, int] = {}
    not_listed = opt_outs = 0
    with engine.begin() as conn:
        lock_writers(conn, outbox)
        for row in frame.to_dict("records"):
            moved, customer_id = _record_call(conn, row, now)
            if not moved:
                not_listed += 1
                continue
            counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
            if row["outcome"] == "opted_out":
                opt_outs += persist.record_opt_outs(
                    conn,
                    [
                        {
                            "customer_id": customer_id,
                            "channel": "all",
                            "source": "call",
                            "received_at": now,
                            "message_id": int(row["message_id"]),
                        }
                    ],
                    now,
                )
    return CallImport(counts, not_listed, [str(e) for e in errors], opt_outs)


def _record_call(conn: Connection, row: dict, now: datetime) -> tuple[bool, str | None]:
    called_at = row.get("called_at")
    when = (
        called_at.to_pydatetime().replace(tzinfo=None)
        if isinstance(called_at, pd.Timestamp) and not pd.isna(called_at)
        else now
    )
    outcome = row["outcome"]
    status, reason = (SENT, None) if outcome == "reached" else (FAILED, f"call {outcome}")
    feedback = row.get("feedback") if isinstance(row.get("feedback"), str) else None
    done = conn.execute(
        update(outbox)
        .where(o.message_id == int(row["message_id"]))
        .where(o.channel == CALL)
        .where(o.status == LISTED)
        .values(status=status, last_error=reason, sent_at=when, feedback=feedback, provider="staff")
    )
    if done.rowcount == 0:
        return False, None
    customer_id = conn.scalar(select(o.customer_id).where(o.message_id == int(row["message_id"])))
    return True, customer_id
