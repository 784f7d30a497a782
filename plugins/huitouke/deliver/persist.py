"""Stage 5 at the store's edge: the outbox rows' moves, each one conditional on where the row is.

Every move of a row out of ``queued`` is made here, in a transaction that first takes the outbox's
writers lock (:func:`huitouke.store.rows.lock_writers`): two senders never claim the same row, and
a row leaves ``sending`` only by its claimer's record (``claimed_by``) or, once its lease has
expired, by the recovery that asks the provider (:mod:`huitouke.deliver.sender`). That is where
"at most one message per (campaign, customer, entry, wave, channel)" is enforced; the outbox's
unique key makes there be only one row to send.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    Connection,
    Select,
    and_,
    bindparam,
    column,
    exists,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy import values as sa_values

from huitouke.deliver import checks
from huitouke.deliver.states import OUT_ID_KEY, QUEUED, SENDING, SENT, out_id_from, out_id_of
from huitouke.shards import BUCKETS, Shard
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
    "with_facts",
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
    "bucket",
)
TREATED_OUTCOME, TREATED_ARM = "treated", "treatment"
# A list of ids given at execution: the statement is compiled (and cached) once, not per list.
IDS = bindparam("ids", expanding=True)
IDS_JSON = bindparam("ids_json")  # the same as one JSON array (SQLite: json_each)
CapOf = Callable[[str | None], tuple[int, int]]  # member tier -> (max_contacts, per_days)


@dataclass(frozen=True)
class Selection:
    """Which queued rows a sender drains: its channels, of business days ``oldest`` .. ``day``
    (of ``campaigns`` only, when given; a paused campaign's never: :func:`checks.claimable`), of
    the customers of ``shard`` (every customer by default); a shard's next claim reads from
    bucket ``from_bucket`` on (where its last claim ended, :attr:`Claim.next_bucket`)."""

    channels: tuple[str, ...]
    oldest: date
    day: date
    campaigns: tuple[str, ...] | None = None  # the run's campaigns param (None: all)
    shard: Shard = Shard.whole()
    from_bucket: int = 0

    def mine(self) -> list[Any]:
        """The conditions on outbox rows: the channels, days, campaigns (a paused one's rows wait)
        and shard (``bucket % count = index``)."""
        conditions = [
            o.channel.in_(list(self.channels)),
            o.business_date.between(self.oldest, self.day),
            checks.claimable(o.campaign, self.campaigns),
        ]
        return conditions + of_shard(self.shard)


def of_shard(shard: Shard) -> list[Any]:
    """The condition on outbox rows of ``shard``'s customers (none for every customer)."""
    if shard.is_whole:
        return []
    return [(o.bucket % shard.count) == shard.index]


@dataclass(frozen=True)
class Lease:
    """Who claims (the sender's owner), and for how long: ``length`` for each ``rows_per_lease``
    rows taken (a claim of several rounds of batches) and each of the ``ahead_rows`` still out
    before them (earlier claims' calls), or for the whole claim (``rows_per_lease`` 0)."""

    owner: str
    length: timedelta
    rows_per_lease: int = 0
    ahead_rows: int = 0

    def until(self, now: datetime, rows: int) -> datetime:
        rows += self.ahead_rows
        leases = -(-rows // self.rows_per_lease) if self.rows_per_lease else 1
        return now + self.length * max(leases, 1)


@dataclass(frozen=True)
class Claim:
    """Rows now ``sending`` under this claim, and the rows suppressed at send time with why.
    Plain dicts, not a frame: the sender works row by row, and a claim is its dearest step."""

    # CLAIM_COLUMNS (recipient the current address, attempts counted) and the facts checked
    rows: list[dict[str, Any]]
    suppressed: list[tuple[str, str, str]]  # (campaign, channel, reason) of each suppressed row

    @property
    def next_bucket(self) -> int:
        """Where a shard's next claim starts reading: the bucket of the last row taken (0 when
        none was)."""
        return int(self.rows[-1]["bucket"]) if self.rows else 0


def _queued(selection: Selection, now: datetime, limit: int, buckets: tuple[int, int] | None = None):
    """The first ``limit`` claimable rows: by message id; a shard's (``bucket % count = index``)
    by bucket, then message id, with ``buckets`` ``[from, to)`` of them, through
    ``ix_outbox_status_channel_bucket_message_id`` (a shard's rows are scattered among the other
    shards' in message id order: each claim would walk past the other shards' queued rows)."""
    query = (
        select(*(o[c] for c in CLAIM_COLUMNS))
        .where(o.status == QUEUED)
        .where(*selection.mine())
        .where(or_(o.next_attempt_at.is_(None), o.next_attempt_at <= now))
    )
    if selection.shard.is_whole:
        return with_facts(query.order_by(o.message_id).limit(limit), selection.day, ("message_id",))
    low, high = buckets or (0, BUCKETS)
    query = query.where(o.bucket >= low).where(o.bucket < high)
    return with_facts(
        query.order_by(o.bucket, o.message_id).limit(limit), selection.day, ("bucket", "message_id")
    )


def _claimable(conn: Connection, selection: Selection, now: datetime, limit: int) -> list[Any]:
    """The rows of :func:`_queued`; a shard's read from ``selection.from_bucket`` on (where its
    last claim ended), then, if fewer than ``limit``, from bucket 0 up to it (retries fallen due,
    rows put back): each claim reads only past the other shards' rows in the buckets between its
    own, not past every one still queued before its next row."""
    after = selection.from_bucket
    if selection.shard.is_whole or after <= 0:
        return conn.execute(_queued(selection, now, limit)).all()
    found = conn.execute(_queued(selection, now, limit, (after, BUCKETS))).all()
    if len(found) < limit:
        found += conn.execute(_queued(selection, now, limit - len(found), (0, after))).all()
    return found


# What :func:`with_facts` adds to an outbox query, in this order.
FACT_COLUMNS = (
    "current_phone",
    "current_email",
    "sms_flag",
    "email_flag",
    "member_tier",
    "arm",
    "outcome",
    "counts_toward_cap",
    "stopped",
)


def with_facts(query: Select, day: date, order: Sequence[str]) -> Select:
    """The rows of ``query`` (a select of outbox columns, with the outbox key's and ``channel``)
    with what the send-time checks read about each (:data:`FACT_COLUMNS`) joined beside them, in
    the same statement, ordered by the columns ``order``: the customer's current addresses and
    opt-out flags, their member tier valid on ``day``, the row's campaign wave, and whether an
    ``opt_outs`` row stops the channel (``all`` included). One query, not a lookup per fact: a
    claim's reads were most of its time. ``query`` is a subquery, so that its limit applies
    before the joins (PostgreSQL otherwise joined every queued row to take the first ones)."""
    rows = query.subquery("candidates")
    r = rows.c
    c, h, w, s = customers.c, segment_history.c, campaign_waves.c, opt_outs.c
    stopped = (
        exists().where(s.customer_id == r.customer_id).where(or_(s.channel == r.channel, s.channel == "all"))
    )
    tier_on = and_(
        h.customer_id == r.customer_id, h.valid_from <= day, or_(h.valid_to.is_(None), h.valid_to > day)
    )
    joined = (
        rows.outerjoin(customers, c.customer_id == r.customer_id)
        .outerjoin(segment_history, tier_on)
        .outerjoin(campaign_waves, and_(*(w[k] == r[k] for k in checks.WAVE_KEY)))
    )
    facts = (
        c.phone,
        c.email,
        c.sms_opt_out,
        c.email_opt_out,
        h.member_tier,
        w.arm,
        w.outcome,
        w.counts_toward_cap,
    )
    return (
        select(rows, *facts, stopped.label("stopped"))
        .select_from(joined)
        .order_by(*(r[name] for name in order))
    )


def _add_candidate_facts(rows: list[dict[str, Any]], cap_of: CapOf) -> None:
    """:data:`checks.CANDIDATE_FACTS` from the joined :data:`FACT_COLUMNS`, in place: the flag of
    the row's channel (a call reaches the phone: like planning, the SMS flag stops it too),
    whether the wave is still the treated arm's, and the cap of the customer's tier."""
    caps: dict[Any, tuple[int, int]] = {}
    for row in rows:
        tier = row["member_tier"] if isinstance(row["member_tier"], str) else None
        if tier not in caps:
            caps[tier] = cap_of(tier)
        row["flag_opted_out"] = row["email_flag"] if row["channel"] == "email" else row["sms_flag"]
        row["opted_out"] = bool(row["stopped"])
        row["treated"] = row["outcome"] == TREATED_OUTCOME and row["arm"] == TREATED_ARM
        row["cap_max_contacts"], row["cap_per_days"] = caps[tier]


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
    for among, params in _among(conn, o.customer_id, ids):
        for campaign, customer_id, entered_on, wave, sent_at in conn.execute(query.where(among), params):
            sent_on = sent_at.replace(tzinfo=UTC).astimezone(tz).date()
            sent.append((campaign, customer_id, entered_on, wave, sent_on))
    return sent


def verdicts(
    conn: Connection, rows: list[dict[str, Any]], cap_of: CapOf, tz: tzinfo, now: datetime
) -> list[tuple[str | None, str]]:
    """:func:`huitouke.deliver.checks.verdict` of each outbox row read with :func:`with_facts`
    (``(reason, recipient)``, in the rows' order). The messages already sent are read only for
    the customers of candidates that count toward a cap."""
    _add_candidate_facts(rows, cap_of)
    capped = [r for r in rows if checks.holds(r["counts_toward_cap"])]
    sent: list[tuple[str, str, date, int, date]] = []
    if capped:
        longest = max(int(r["cap_per_days"]) for r in capped)
        ids = sorted({r["customer_id"] for r in capped})
        sent = _sent_contacts(conn, ids, now - timedelta(days=longest), tz)
    today = now.replace(tzinfo=UTC).astimezone(tz).date()
    keys = [(*(r[k] for k in checks.WAVE_KEY), r["cap_per_days"]) for r in rows]
    recent = checks.contact_counts(keys, sent, today)
    return [checks.verdict(row, n) for row, n in zip(rows, recent, strict=True)]


def send_time_checks(
    conn: Connection, rows: pd.DataFrame, cap_of: CapOf, tz: tzinfo, now: datetime
) -> pd.DataFrame:
    """:func:`verdicts` of a frame of rows read with :func:`with_facts`: ``message_id, reason,
    recipient`` in the rows' order."""
    found = verdicts(conn, records(rows), cap_of, tz, now)
    return pd.DataFrame(
        {
            "message_id": rows["message_id"].to_numpy(),
            "reason": np.array([reason for reason, _ in found], dtype=object),
            "recipient": np.array([to for _, to in found], dtype=object),
        }
    )


def claim(
    conn: Connection,
    selection: Selection,
    limit: int,
    lease: Lease,
    now: datetime,
    cap_of: CapOf,
    tz: tzinfo,
    locked: bool = False,
) -> Claim:
    """Take up to ``limit`` claimable queued rows: checked again (:mod:`.checks`), the suppressed
    ones end ``suppressed`` with the reason, the others ``sending`` under ``lease.owner`` until
    :meth:`Lease.until`, one more attempt counted. Call in a fresh transaction, or with
    ``locked`` in one that took :func:`~huitouke.store.rows.lock_writers` first."""
    if not locked:
        lock_writers(conn, outbox)
    names = (*CLAIM_COLUMNS, *FACT_COLUMNS)
    found: dict[int, dict[str, Any]] = {}
    for values in _claimable(conn, selection, now, limit):
        # One row per message whatever the joins found (overlapping history rows would repeat it).
        found.setdefault(values[0], dict(zip(names, values, strict=True)))
    rows = list(found.values())
    go: list[dict[str, Any]] = []
    out: list[tuple[int, str]] = []
    suppressed: list[tuple[str, str, str]] = []
    readdress: list[tuple[str, str, int]] = []
    for row, (reason, recipient) in zip(rows, verdicts(conn, rows, cap_of, tz, now), strict=True):
        if reason is not None:
            out.append((row["message_id"], reason))
            suppressed.append((row["campaign"], row["channel"], reason))
            continue
        # Rendering stored both (the out id is a digest of the row's key, which never changes);
        # written again only where they differ: a new address, a row rendered before out ids were.
        out_id = row["out_id"] or out_id_from(tuple(row[k] for k in OUT_ID_KEY))
        if recipient != row["recipient"] or out_id != row["out_id"]:
            readdress.append((recipient, out_id, row["message_id"]))
        row.update(recipient=recipient, out_id=out_id, attempts=row["attempts"] + 1, claimed_at=now)
        go.append(row)
    suppress(conn, out)
    _take(conn, [r["message_id"] for r in go], lease.owner, now, lease.until(now, len(go)))
    if readdress:
        _set_addresses(conn, readdress)
    return Claim(go, suppressed)


def suppress(conn: Connection, reasons: list[tuple[int, str]]) -> None:
    """End queued rows ``suppressed``: ``(message_id, reason)`` pairs, the send-time checks'."""
    if not reasons:
        return
    conn.execute(
        update(outbox)
        .where(o.message_id == bindparam("mid"))
        .where(o.status == QUEUED)
        .values(status="suppressed", last_error=bindparam("why"), next_attempt_at=None),
        [{"mid": int(m), "why": f"suppressed at send time: {r}"} for m, r in reasons],
    )


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """``frame.to_dict("records")``, built column by column: the same values, about 3x faster on
    the arrow-backed text columns pandas makes of rows read (expired leases, the call list)."""
    columns = list(frame.columns)
    values = zip(*(frame[c].tolist() for c in columns), strict=True)
    return [dict(zip(columns, row, strict=True)) for row in values]


def _take(conn: Connection, ids: list[int], owner: str, now: datetime, lease_until: datetime) -> None:
    """The rows ``sending`` under ``owner``: one UPDATE of the values they share per IN list of ids."""
    for among, params in _among(conn, o.message_id, ids):
        conn.execute(
            update(outbox)
            .where(among)
            .where(_not_by_index(o.status) == QUEUED)
            .values(
                status=SENDING,
                claimed_by=owner,
                claimed_at=now,
                lease_until=lease_until,
                attempts=o.attempts + 1,
            ),
            params,
        )


def _among(conn: Connection, column: Any, values: Sequence[Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
    """``column IN values`` as (condition, parameters), one pair a statement. On SQLite one JSON
    array that ``json_each`` reads, whatever the count (SQLAlchemy rendered each of an expanding
    list's thousands of parameters at every execution: a tenth of a claim's CPU); elsewhere an
    expanding list a chunk of :data:`~huitouke.store.rows.IN_LIST_SIZE`."""
    if not values:
        return
    if conn.dialect.name == "sqlite":
        listed = select(literal_column("value")).select_from(func.json_each(IDS_JSON)).scalar_subquery()
        yield column.in_(listed), {"ids_json": json.dumps(list(values))}
        return
    for chunk in chunks(list(values)):
        yield column.in_(IDS), {"ids": list(chunk)}


def _not_by_index(column: Any) -> Any:
    """``column`` in an expression no index answers (``status || ''``): SQLite, without
    statistics, found the rows of an ``id IN (...) AND status = ...`` UPDATE through the status
    index, i.e. walked every queued row of the outbox for each claim, and changed that index as it
    walked (a claim of 2,000 rows: 11 us a row, 3 with the primary key)."""
    return column.op("||")("")


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
        if conn.dialect.name == "sqlite":
            moved += _sqlite_executemany(conn, _move_query(keys, owner is not None), group, {"owner": owner})
        else:
            moved += _move_from_values(conn, keys, group, owner)
    return moved


def _move_from_values(
    conn: Connection, keys: tuple[str, ...], group: list[dict[str, Any]], owner: str | None
) -> int:
    """:func:`move`'s changes with these keys as ``UPDATE ... FROM (VALUES ...)`` through
    psycopg2's ``execute_values``, one statement per page of rows: one round trip, not one a row
    as the driver's ``executemany`` makes, and none of SQLAlchemy's compiling of thousands of
    bound values. Each value is cast to its column's type (a column of NULLs would be text)."""
    from psycopg2.extras import execute_values

    names = [k for k in keys if k != "expect_lease"]
    types = [o[k].type for k in names] + ([o.lease_until.type] if "expect_lease" in keys else [])
    order = names + (["expect_lease"] if "expect_lease" in keys else [])
    template = "(" + ", ".join(f"%s::{t.compile(dialect=conn.dialect)}" for t in types) + ")"
    sets = ", ".join(f"{k} = v.{k}" for k in names if k != "message_id")
    sql = (
        f"UPDATE outbox SET {sets} FROM (VALUES %s) AS v ({', '.join(order)}) "
        f"WHERE outbox.message_id = v.message_id AND outbox.status = '{SENDING}'"
    )
    if "expect_lease" in keys:
        sql += " AND outbox.lease_until = v.expect_lease"
    cursor = conn.connection.dbapi_connection.cursor()
    if owner is not None:  # quoted by the driver, as it binds every value (escaped for the template)
        sql += " AND outbox.claimed_by = " + cursor.mogrify("%s", (owner,)).decode().replace("%", "%%")
    moved = 0
    try:
        for chunk in chunks(group, 1000):
            rows = [tuple(change[k] for k in order) for change in chunk]
            execute_values(cursor, sql, rows, template, len(rows))
            moved += max(cursor.rowcount, 0)
    finally:
        cursor.close()
    return moved


@functools.lru_cache(maxsize=64)
def _move_query(keys: tuple[str, ...], by_owner: bool) -> Any:
    """The UPDATE of :func:`move` for changes with these keys; each bound value is named after its
    key with a leading ``_`` (``_owner`` the claimer's)."""
    columns = [k for k in keys if k not in ("message_id", "expect_lease")]
    query = update(outbox).where(o.message_id == bindparam("_message_id")).where(o.status == SENDING)
    if by_owner:
        query = query.where(o.claimed_by == bindparam("_owner"))
    if "expect_lease" in keys:
        query = query.where(o.lease_until == bindparam("_expect_lease"))
    return query.values({c: bindparam(f"_{c}") for c in columns})


def _processed(values: list[Any], processor: Callable[[Any], Any]) -> list[Any]:
    """``processor`` of every value but None, once per distinct value (stamps and statuses repeat)."""
    done: dict[Any, Any] = {None: None}
    try:
        return [done[v] if v in done else done.setdefault(v, processor(v)) for v in values]
    except TypeError:  # unhashable values
        return [None if v is None else processor(v) for v in values]


def _sqlite_executemany(
    conn: Connection, query: Any, changes: list[dict[str, Any]], shared: dict[str, Any]
) -> int:
    """``conn.execute(query, params)`` as one driver ``executemany`` of plain tuples, each bound
    value (``_<key>`` of a change, or of ``shared``) converted by its type's processor once per
    distinct value: SQLAlchemy's parameter processing row by row was most of a record's time (as
    for inserts, :func:`huitouke.store.rows.insert_new`). Returns the rows changed."""
    sql, binds = _compiled(query, conn.dialect)
    columns = []
    for key, processor, constant in binds:
        if key in changes[0]:
            columns.append(_processed([c[key] for c in changes], processor))
        elif key in shared:
            columns.append([processor(shared[key])] * len(changes))
        else:  # a constant of the statement (the status it expects)
            columns.append([processor(constant)] * len(changes))
    return max(conn.exec_driver_sql(sql, list(zip(*columns, strict=True))).rowcount, 0)


@functools.lru_cache(maxsize=64)
def _compiled(query: Any, dialect: Any) -> tuple[str, list[tuple[str, Callable[[Any], Any], Any]]]:
    """A statement's SQL for ``dialect`` and, per positional parameter, its key (the bound name
    without its ``_``), its type's processor and its constant value."""
    compiled = query.compile(dialect=dialect)
    binds = []
    for name in compiled.positiontup:
        bind = compiled.binds[name]
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect) or _same
        binds.append((name.removeprefix("_"), processor, bind.effective_value))
    return str(compiled), binds


def _same(value: Any) -> Any:
    return value


def expired_leases(
    conn: Connection, channels: Sequence[str], now: datetime, shard: Shard | None = None
) -> pd.DataFrame:
    """Rows ``sending`` whose lease has run out: their sender died, or their fate is unknown
    (of ``shard``'s customers only, when given)."""
    query = (
        select(*(o[c] for c in CLAIM_COLUMNS))
        .where(o.status == SENDING)
        .where(o.channel.in_(list(channels)))
        .where(*of_shard(shard or Shard.whole()))
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
