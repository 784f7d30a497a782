"""Stage 5 at the store's edge: the outbox rows' moves, each one conditional on where the row is.

Every move of a row out of ``queued`` is made here, in a transaction that first takes the outbox's
writers lock (:func:`huitouke.store.rows.lock_writers`): two senders never claim the same row, and
a row leaves ``sending`` only by its claimer's record (``claimed_by``) or, once its lease has
expired, by the recovery that asks the provider (:mod:`huitouke.deliver.sender`). That is where
"at most one message per (campaign, customer, entry, wave, channel)" is enforced; the outbox's
unique key makes there be only one row to send.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

import pandas as pd
from sqlalchemy import Connection, and_, bindparam, column, func, or_, select, update
from sqlalchemy import values as sa_values

from huitouke.deliver import checks
from huitouke.deliver.states import QUEUED, SENDING, SENT
from huitouke.store.rows import IN_LIST_SIZE, chunks, insert_new, lock_writers, read_frame
from huitouke.store.schema import (
    campaign_waves,
    customers,
    delivery_cursors,
    opt_outs,
    outbox,
    segment_history,
)

__all__ = [
    "CLAIM_COLUMNS",
    "Claim",
    "Lease",
    "Selection",
    "claim",
    "close_queued",
    "expired_leases",
    "move",
    "out_id_of",
    "read_cursor",
    "record_opt_outs",
    "records",
    "send_time_checks",
    "suppress",
    "write_cursor",
]

o = outbox.c
CLAIM_COLUMNS = (
    "message_id",
    "campaign",
    "customer_id",
    "entered_on",
    "wave",
    "channel",
    "template",
    "business_date",
    "recipient",
    "subject",
    "body",
    "html",
    "sms_segments",
    "coupon_code",
    "attempts",
    "provider_message_id",
    "out_id",
    "sent_at",
    "claimed_at",
    "lease_until",
    "last_error",
    "template_code",
    "template_params",
)
TREATED_OUTCOME, TREATED_ARM = "treated", "treatment"
OUT_ID_KEY = ("campaign", "customer_id", "entered_on", "wave", "channel")
# A list of ids given at execution: the statement is compiled (and cached) once, not per list.
IDS = bindparam("ids", expanding=True)
CapOf = Callable[[str | None], tuple[int, int]]  # member tier -> (max_contacts, per_days)


@dataclass(frozen=True)
class Selection:
    """Which queued rows a sender drains: its channels, of business days ``oldest`` .. ``day``."""

    channels: tuple[str, ...]
    oldest: date
    day: date


@dataclass(frozen=True)
class Lease:
    """Who claims (the sender's owner), and for how long: ``length`` for each ``rows_per_lease``
    rows taken (a claim of several rounds of batches), or for the whole claim (0)."""

    owner: str
    length: timedelta
    rows_per_lease: int = 0

    def until(self, now: datetime, rows: int) -> datetime:
        leases = -(-rows // self.rows_per_lease) if self.rows_per_lease else 1
        return now + self.length * max(leases, 1)


@dataclass(frozen=True)
class Claim:
    """Rows now ``sending`` under this claim, and the rows suppressed at send time with why."""

    rows: pd.DataFrame  # CLAIM_COLUMNS, recipient the current address
    suppressed: pd.DataFrame  # message_id, campaign, channel, reason


def _queued(selection: Selection, now: datetime, limit: int):
    return (
        select(*(o[c] for c in CLAIM_COLUMNS))
        .where(o.status == QUEUED)
        .where(o.channel.in_(selection.channels))
        .where(o.business_date.between(selection.oldest, selection.day))
        .where(or_(o.next_attempt_at.is_(None), o.next_attempt_at <= now))
        .order_by(o.message_id)
        .limit(limit)
    )


def _customer_facts(conn: Connection, ids: Sequence[str], day: date) -> dict[str, tuple[Any, ...]]:
    """customer_id -> (current phone, e-mail, sms_opt_out, email_opt_out, member tier valid on
    ``day``). Plain rows into dicts, here and in the other facts: a claim's lookups, not frames."""
    c, h = customers.c, segment_history.c
    tier = (
        select(h.customer_id, h.member_tier)
        .where(h.valid_from <= day)
        .where(or_(h.valid_to.is_(None), h.valid_to > day))
        .subquery()
    )
    query = select(c.customer_id, c.phone, c.email, c.sms_opt_out, c.email_opt_out, tier.c.member_tier)
    query = query.outerjoin(tier, tier.c.customer_id == c.customer_id)
    facts: dict[str, tuple[Any, ...]] = {}
    for chunk in chunks(list(ids)):
        facts.update(
            (r[0], tuple(r[1:])) for r in conn.execute(query.where(c.customer_id.in_(IDS)), {"ids": chunk})
        )
    return facts


def _opted_out(conn: Connection, ids: Sequence[str]) -> set[tuple[str, str]]:
    """(customer_id, channel) of every recorded opt-out, ``all`` included."""
    found: set[tuple[str, str]] = set()
    for chunk in chunks(list(ids)):
        found.update(
            (r.customer_id, r.channel)
            for r in conn.execute(
                select(opt_outs.c.customer_id, opt_outs.c.channel).where(opt_outs.c.customer_id.in_(IDS)),
                {"ids": chunk},
            )
        )
    return found


def _waves(conn: Connection, rows: pd.DataFrame) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """The campaign wave of each row, by :data:`checks.WAVE_KEY`: arm, outcome, whether it counts
    toward the caps."""
    w = campaign_waves.c
    query = select(*(w[c] for c in (*checks.WAVE_KEY, "arm", "outcome", "counts_toward_cap")))
    query = query.where(w.campaign.in_(bindparam("campaigns", expanding=True)))
    campaigns = rows["campaign"].unique().tolist()
    found: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for chunk in chunks(rows["customer_id"].unique().tolist()):
        found.update(
            (tuple(r[:4]), tuple(r[4:]))
            for r in conn.execute(query.where(w.customer_id.in_(IDS)), {"ids": chunk, "campaigns": campaigns})
        )
    return found


def _sent_contacts(
    conn: Connection, ids: Sequence[str], since: datetime, tz: tzinfo
) -> list[tuple[str, str, date, int, date]]:
    """Capped waves with a message sent to these customers since ``since``: the wave's key and
    the shop day it went out."""
    w = campaign_waves.c
    join = and_(*(o[k] == w[k] for k in checks.WAVE_KEY))
    query = (
        select(*(o[k] for k in checks.WAVE_KEY), o.sent_at)
        .join(campaign_waves, join)
        .where(o.status == SENT)
        .where(o.sent_at >= since)
        .where(w.counts_toward_cap.is_(True))
    )
    sent = []
    for chunk in chunks(list(ids)):
        for campaign, customer_id, entered_on, wave, sent_at in conn.execute(
            query.where(o.customer_id.in_(IDS)), {"ids": chunk}
        ):
            sent_on = sent_at.replace(tzinfo=UTC).astimezone(tz).date()
            sent.append((campaign, customer_id, entered_on, wave, sent_on))
    return sent


_NO_PERSON, _NO_WAVE = (None,) * 5, (None,) * 3


def _candidates_with_facts(conn: Connection, rows: pd.DataFrame, day: date, cap_of: CapOf) -> pd.DataFrame:
    """The rows with :data:`checks.CANDIDATE_FACTS` beside them, looked up row by row."""
    ids = rows["customer_id"].unique().tolist()
    people, waves, stops = _customer_facts(conn, ids, day), _waves(conn, rows), _opted_out(conn, ids)
    caps: dict[str | None, tuple[int, int]] = {}
    facts: dict[str, list[Any]] = {name: [] for name in checks.CANDIDATE_FACTS}
    keys = zip(*(rows[c].tolist() for c in (*checks.WAVE_KEY, "channel")), strict=True)
    for campaign, customer_id, entered_on, wave, channel in keys:
        phone, email, sms_flag, email_flag, tier = people.get(customer_id, _NO_PERSON)
        arm, outcome, counts = waves.get((campaign, customer_id, entered_on, wave), _NO_WAVE)
        tier = tier if isinstance(tier, str) else None
        if tier not in caps:
            caps[tier] = cap_of(tier)
        # A call reaches the phone: like planning, the SMS opt-out flag stops it too (and an
        # opt_outs row for calls or for all channels).
        values = (
            phone,
            email,
            email_flag if channel == "email" else sms_flag,
            (customer_id, channel) in stops or (customer_id, "all") in stops,
            outcome == TREATED_OUTCOME and arm == TREATED_ARM,
            counts,
            *caps[tier],
        )
        for name, value in zip(checks.CANDIDATE_FACTS, values, strict=True):
            facts[name].append(value)
    return rows.assign(**facts)


def send_time_checks(
    conn: Connection, rows: pd.DataFrame, day: date, cap_of: CapOf, tz: tzinfo, now: datetime
) -> pd.DataFrame:
    """:func:`huitouke.deliver.checks.send_time_verdicts` of outbox rows, with the facts read
    from the store now: ``message_id, reason, recipient`` in the rows' order. The messages
    already sent are read only when a candidate counts toward a cap."""
    frame = _candidates_with_facts(conn, rows, day, cap_of)
    sent: list[tuple[str, str, date, int, date]] = []
    capped = frame["counts_toward_cap"].tolist()
    if any(c is not None and c == c and bool(c) for c in capped):  # noqa: PLR0124 - NaN
        longest = int(frame["cap_per_days"].max())
        ids = frame["customer_id"][frame["counts_toward_cap"].fillna(False).astype(bool)].unique().tolist()
        sent = _sent_contacts(conn, ids, now - timedelta(days=longest), tz)
    today = now.replace(tzinfo=UTC).astimezone(tz).date()
    return checks.send_time_verdicts(frame, checks.recent_contact_counts(frame, sent, today))


def claim(
    conn: Connection,
    selection: Selection,
    limit: int,
    lease: Lease,
    now: datetime,
    cap_of: CapOf,
    tz: tzinfo,
) -> Claim:
    """Take up to ``limit`` claimable queued rows: checked again (:mod:`.checks`), the suppressed
    ones end ``suppressed`` with the reason, the others ``sending`` under ``lease.owner`` until
    :meth:`Lease.until`, one more attempt counted. Call in a fresh transaction."""
    lock_writers(conn, outbox)
    rows = read_frame(conn, _queued(selection, now, limit), CLAIM_COLUMNS)
    if rows.empty:
        return Claim(rows, pd.DataFrame(columns=["message_id", "campaign", "channel", "reason"]))
    verdicts = send_time_checks(conn, rows, selection.day, cap_of, tz, now)
    rows = rows.assign(
        recipient=verdicts["recipient"].to_numpy(),
        out_id=_out_ids(rows),
        _reason=verdicts["reason"].to_numpy(),
    )
    out = rows[rows["_reason"].notna()]
    go = rows[rows["_reason"].isna()].drop(columns="_reason")
    suppress(conn, out)
    _take(conn, go, lease.owner, now, lease.until(now, len(go)))
    suppressed = out[["message_id", "campaign", "channel", "_reason"]].rename(columns={"_reason": "reason"})
    return Claim(go.assign(attempts=go["attempts"] + 1, claimed_at=now), suppressed)


def suppress(conn: Connection, rows: pd.DataFrame) -> None:
    """End queued rows ``suppressed`` with their ``_reason`` (the send-time checks')."""
    if rows.empty:
        return
    conn.execute(
        update(outbox)
        .where(o.message_id == bindparam("mid"))
        .where(o.status == QUEUED)
        .values(status="suppressed", last_error=bindparam("why"), next_attempt_at=None),
        [
            {"mid": int(m), "why": f"suppressed at send time: {r}"}
            for m, r in zip(rows["message_id"], rows["_reason"], strict=True)
        ],
    )


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """``frame.to_dict("records")``, built column by column: the same values, about 3x faster on
    the arrow-backed text columns pandas makes of claimed rows."""
    columns = list(frame.columns)
    values = zip(*(frame[c].tolist() for c in columns), strict=True)
    return [dict(zip(columns, row, strict=True)) for row in values]


def out_id_of(row: Any) -> str:
    """huitouke's id for a message at its provider: a digest of the outbox key, so the same
    (campaign, customer, entry, wave, channel) has the same id in every attempt and every store."""
    return _digest("|".join(str(row[k]) for k in OUT_ID_KEY))


def _digest(key: str) -> str:
    return "htk-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _out_ids(rows: pd.DataFrame) -> list[str]:
    """:func:`out_id_of` of each row, from the key's columns."""
    keys = zip(*(rows[k].tolist() for k in OUT_ID_KEY), strict=True)
    return [_digest("|".join(map(str, key))) for key in keys]


def _take(conn: Connection, rows: pd.DataFrame, owner: str, now: datetime, lease_until: datetime) -> None:
    """The rows ``sending`` under ``owner``: one UPDATE of the values they share per IN list of ids,
    then each row's recipient and out id (:func:`_set_addresses`)."""
    if rows.empty:
        return
    ids = [int(m) for m in rows["message_id"]]
    for chunk in chunks(ids):
        conn.execute(
            update(outbox)
            .where(o.message_id.in_(IDS))
            .where(o.status == QUEUED)
            .values(
                status=SENDING,
                claimed_by=owner,
                claimed_at=now,
                lease_until=lease_until,
                attempts=o.attempts + 1,
            ),
            {"ids": list(chunk)},
        )
    _set_addresses(conn, list(zip(rows["recipient"].tolist(), rows["out_id"].tolist(), ids, strict=True)))


def _set_addresses(conn: Connection, values: list[tuple[str, str, int]]) -> None:
    """``recipient, out_id`` by ``message_id``: plain text and integers, so on SQLite one driver
    ``executemany`` of tuples (SQLAlchemy's per-row parameter processing was most of a claim's
    UPDATE); elsewhere one ``UPDATE ... FROM (VALUES ...)`` per chunk (one round trip, not one a row)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("UPDATE outbox SET recipient = ?, out_id = ? WHERE message_id = ?", values)
        return
    for chunk in chunks(values, IN_LIST_SIZE // 3):
        given = sa_values(
            column("to", outbox.c.recipient.type),
            column("oid", outbox.c.out_id.type),
            column("mid", outbox.c.message_id.type),
            name="given",
        ).data(list(chunk))
        conn.execute(
            update(outbox).where(o.message_id == given.c.mid).values(recipient=given.c.to, out_id=given.c.oid)
        )


def move(conn: Connection, owner: str | None, changes: Iterable[dict[str, Any]]) -> int:
    """Apply each change (``message_id`` and the columns to set) to a row still ``sending`` under
    ``owner``; or, with ``owner`` None (a lease that expired), to a row still under the lease it
    had when read (``expect_lease``): a recovery never moves a row another sender claimed since.
    Changes that set the same columns go in one statement, executed for all of them at once
    (one UPDATE a row is most of a batch's record time). Returns the rows moved."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for change in changes:
        groups.setdefault(tuple(sorted(change)), []).append(change)
    moved = 0
    for keys, group in groups.items():
        columns = [k for k in keys if k not in ("message_id", "expect_lease")]
        query = update(outbox).where(o.message_id == bindparam("_message_id")).where(o.status == SENDING)
        if owner is not None:
            query = query.where(o.claimed_by == owner)
        if "expect_lease" in keys:
            query = query.where(o.lease_until == bindparam("_expect_lease"))
        query = query.values({c: bindparam(f"_{c}") for c in columns})
        params = [{f"_{k}": v for k, v in change.items()} for change in group]
        if conn.dialect.name == "sqlite":
            moved += _sqlite_executemany(conn, query, params)
        else:
            moved += conn.execute(query, params).rowcount
    return moved


def _processed(values: list[Any], processor: Callable[[Any], Any]) -> list[Any]:
    """``processor`` of every value but None, once per distinct value (stamps and statuses repeat)."""
    done: dict[Any, Any] = {None: None}
    try:
        return [done[v] if v in done else done.setdefault(v, processor(v)) for v in values]
    except TypeError:  # unhashable values
        return [None if v is None else processor(v) for v in values]


def _sqlite_executemany(conn: Connection, query: Any, params: list[dict[str, Any]]) -> int:
    """``conn.execute(query, params)`` as one driver ``executemany`` of plain tuples, each bound
    value converted by its type's processor once per distinct value: SQLAlchemy's parameter
    processing row by row was most of a record's time (as for inserts,
    :func:`huitouke.store.rows.insert_new`). Returns the rows changed."""
    compiled = query.compile(dialect=conn.dialect)
    columns = []
    for name in compiled.positiontup:
        bind = compiled.binds[name]
        processor = bind.type.dialect_impl(conn.dialect).bind_processor(conn.dialect) or (lambda v: v)
        if name in params[0]:
            columns.append(_processed([p[name] for p in params], processor))
        else:  # a constant of the statement (the status it expects)
            columns.append([processor(bind.effective_value)] * len(params))
    return max(conn.exec_driver_sql(str(compiled), list(zip(*columns, strict=True))).rowcount, 0)


def expired_leases(conn: Connection, channels: Sequence[str], now: datetime) -> pd.DataFrame:
    """Rows ``sending`` whose lease has run out: their sender died, or their fate is unknown."""
    query = (
        select(*(o[c] for c in CLAIM_COLUMNS))
        .where(o.status == SENDING)
        .where(o.channel.in_(list(channels)))
        .where(o.lease_until <= now)
        .order_by(o.message_id)
    )
    return read_frame(conn, query, CLAIM_COLUMNS)


def close_queued(
    conn: Connection, channels: Sequence[str], where: Any, status: str, reason: str
) -> pd.DataFrame:
    """End the queued rows of ``channels`` matching ``where`` with ``status`` and ``reason``;
    returns them (message_id, campaign, channel)."""
    base = and_(o.status == QUEUED, o.channel.in_(list(channels)), where)
    closed = read_frame(
        conn, select(o.message_id, o.campaign, o.channel).where(base), ("message_id", "campaign", "channel")
    )
    if not closed.empty:
        conn.execute(
            update(outbox).where(base).values(status=status, last_error=reason, next_attempt_at=None)
        )
    return closed


def record_opt_outs(conn: Connection, rows: list[dict[str, Any]], now: datetime) -> int:
    """Record opt-outs (``customer_id, channel, source, received_at, message_id``); the first of a
    (customer, channel) stands. The customers' flag for the channel is set too, so planning and
    rendering, which read it, leave the customer out from now on. Returns the new opt-outs."""
    if not rows:
        return 0
    added = insert_new(conn, opt_outs, [{**r, "recorded_at": now} for r in rows])
    for flag, channel in (("sms_opt_out", "sms"), ("email_opt_out", "email")):
        ids = sorted({r["customer_id"] for r in rows if r["channel"] in (channel, "all")})
        for chunk in chunks(ids):
            conn.execute(update(customers).where(customers.c.customer_id.in_(chunk)).values({flag: True}))
    return added


def read_cursor(conn: Connection, provider: str, feed: str) -> str | None:
    d = delivery_cursors.c
    return conn.scalar(select(d.cursor).where(d.provider == provider).where(d.feed == feed))


def write_cursor(conn: Connection, provider: str, feed: str, cursor: str | None, now: datetime) -> None:
    d = delivery_cursors.c
    done = conn.execute(
        update(delivery_cursors)
        .where(d.provider == provider)
        .where(d.feed == feed)
        .values(cursor=cursor, updated_at=now)
    )
    if done.rowcount == 0:
        insert_new(
            conn,
            delivery_cursors,
            [{"provider": provider, "feed": feed, "cursor": cursor, "updated_at": now}],
        )


def receipts_by(conn: Connection, since: date, day: date) -> pd.DataFrame:
    """The sent rows of business days ``since`` .. ``day`` by campaign, channel and receipt
    (delivered, undelivered, none yet)."""
    columns = ("campaign", "channel", "receipt", "rows")
    query = (
        select(o.campaign, o.channel, func.coalesce(o.receipt, "no receipt yet"), func.count())
        .where(o.business_date.between(since, day))
        .where(o.status == SENT)
        .group_by(o.campaign, o.channel, func.coalesce(o.receipt, "no receipt yet"))
        .order_by(o.campaign, o.channel)
    )
    return read_frame(conn, query, columns)


def count_queued(conn: Connection, channels: Sequence[str], since: date, day: date) -> int:
    """Queued rows of ``channels`` of business days ``since`` .. ``day``."""
    return int(
        conn.scalar(
            select(func.count())
            .where(o.status == QUEUED)
            .where(o.channel.in_(list(channels)))
            .where(o.business_date.between(since, day))
        )
    )
