"""Loading a validated batch into the CRM store: upsert by order id, in one transaction.

Against what is already stored, each order is one of:

- **inserted**: a new order id (its lines and customer come with it);
- **updated**: the same content, moved forward: a later status (paid -> completed ->
  refunded/cancelled) or a larger partial refund (``refunded_cents``); only the status and the
  refund change, so refunds and cancellations never add revenue;
- **unchanged**: the same content and status, no larger refund (re-running a day lands here);
- **quarantined** ``conflicting_order``: the order id is stored with a different customer, payment
  time, amount or lines (an order that comes without lines, from an order-level export, is
  compared on the first three only); ``status_regression``: the row would move the order back
  (refunded -> paid). The stored order stays as it was. A smaller refund than the stored one keeps
  the stored one and is not a conflict: refunds only grow.

Quarantine rows are keyed so that re-running a day stores each bad row once: validation's rows by
(source, reason, raw row, occurrence), the store's conflicts by (source, reason, the order's
stored version, the day loaded).

:func:`load_batch` locks the orders (two intakes at once run one after the other), reads what the
batch names from the store, sorts it with the plain functions here (:func:`sort_orders`,
:func:`sort_customers`, :func:`quarantine_frame`: no database, nothing written, arrays rather than
a dict per row), then writes what they decided; the reads and writes are
:mod:`huitouke.intake.persist`. A database error comes out as a
:class:`~huitouke.store.errors.StoreError` without the values it quoted.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, Engine

from huitouke import records
from huitouke.intake import persist
from huitouke.intake.validate import ValidatedBatch
from huitouke.store.errors import call_safely

# The counts an intake_runs row records (besides its day, source and reasons).
_RUN_FIGURES = ("rows_read", "orders_read", "inserted", "updated", "unchanged", "quarantined")


@dataclass
class IntakeSummary:
    """What one intake did; ``as_text`` is the task log's closing table."""

    business_date: date
    source: str
    last_business_date: date | None = None  # set when one intake covered several days (history loads)
    rows_read: int = 0
    orders_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    new_quarantine_rows: int = 0
    customers_new: int = 0
    customers_updated: int = 0

    @property
    def period_end(self) -> date:
        return self.last_business_date or self.business_date

    @property
    def period(self) -> str:
        if self.period_end == self.business_date:
            return self.business_date.isoformat()
        return f"{self.business_date.isoformat()} .. {self.period_end.isoformat()}"

    @property
    def quarantined(self) -> int:
        return sum(self.quarantined_by_reason.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "business_date": self.business_date.isoformat(),
            "last_business_date": self.period_end.isoformat(),
            "source": self.source,
            "rows_read": self.rows_read,
            "orders_read": self.orders_read,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "quarantined": self.quarantined,
            "quarantined_by_reason": dict(sorted(self.quarantined_by_reason.items())),
            "new_quarantine_rows": self.new_quarantine_rows,
            "customers_new": self.customers_new,
            "customers_updated": self.customers_updated,
        }

    def as_text(self) -> str:
        rows = [
            ("rows read", self.rows_read),
            ("orders read", self.orders_read),
            ("inserted", self.inserted),
            ("updated (status)", self.updated),
            ("unchanged", self.unchanged),
            ("quarantined rows", self.quarantined),
        ]
        rows += [(f"  {reason}", n) for reason, n in sorted(self.quarantined_by_reason.items())]
        rows += [("new customers", self.customers_new), ("customers updated", self.customers_updated)]
        width = max(len(label) for label, _ in rows)
        lines = [f"Order intake for {self.period} from {self.source}"]
        lines += [f"  {label:<{width}}  {n:>9,}" for label, n in rows]
        if self.new_quarantine_rows != self.quarantined:
            lines.append(
                f"  ({self.new_quarantine_rows:,} quarantine rows are new; the others were stored by an earlier run)"
            )
        return "\n".join(lines)

    def run_row(self, finished_at: datetime) -> dict[str, Any]:
        """The ``intake_runs`` row that records this intake."""
        figures = self.as_dict()
        return {
            "business_date": self.business_date,
            "last_business_date": self.period_end,
            "source": self.source,
            **{name: figures[name] for name in _RUN_FIGURES},
            "quarantined_by_reason": json.dumps(figures["quarantined_by_reason"]),
            "finished_at": finished_at,
        }


@dataclass(frozen=True)
class SortedOrders:
    """Where each order of a batch goes against what is stored, decided before anything is written."""

    new: pd.DataFrame  # orders to insert (the batch's columns, refunded_cents included)
    moves: pd.DataFrame  # forward moves (persist.MOVE_COLUMNS), with the stored order's customer_id
    unchanged: int
    conflicts: list[dict[str, Any]]  # quarantine rows: conflicting_order, status_regression
    customer_ids: pd.Index  # the customers of the new and the moved orders

    @property
    def new_ids(self) -> pd.Index:
        return pd.Index(self.new["order_id"])


def with_refunds(frame: pd.DataFrame) -> pd.DataFrame:
    """Validated orders with ``refunded_cents`` (int64; 0 when the source gave none)."""
    if "refunded_cents" in frame.columns:
        refunded = pd.to_numeric(frame["refunded_cents"], errors="coerce").fillna(0).astype("int64")
    else:
        refunded = pd.Series(0, index=frame.index, dtype="int64")
    return frame.assign(refunded_cents=refunded)


def sort_orders(
    incoming: pd.DataFrame, stored: pd.DataFrame, lined_ids: Iterable[str] | None = None
) -> SortedOrders:
    """Sort the batch's orders (``incoming``, validated, one row per order) into new, forward moves,
    unchanged and conflicts against ``stored`` (persist.STORED_ORDER_COLUMNS, one row per order).

    ``lined_ids``: the incoming orders that came with lines (None: all of them). An order without
    lines (an order-level export) is compared on customer, payment time and amount only, so a
    refund row without line columns moves an order stored with lines.
    """
    incoming = with_refunds(incoming).reset_index(drop=True)
    old = stored.drop_duplicates("order_id").reset_index(drop=True)
    at = positions(incoming["order_id"], old["order_id"])
    found = at >= 0
    new = incoming[~found].reset_index(drop=True)
    mine, old = incoming[found].reset_index(drop=True), old.iloc[at[found]].reset_index(drop=True)
    lined = np.ones(len(mine), dtype=bool) if lined_ids is None else isin(mine["order_id"], lined_ids)
    same = (mine["content_hash"].to_numpy() == old["content_hash"].to_numpy()) | (
        ~lined & _same_fixed_fields(mine, old)
    )
    status_new, status_old = mine["status"].to_numpy(dtype=object), old["status"].to_numpy(dtype=object)
    rank_new, rank_old = status_ranks(mine["status"]), status_ranks(old["status"])
    refund_new = mine["refunded_cents"].to_numpy(dtype=np.int64)
    refund_old = pd.to_numeric(old["refunded_cents"]).fillna(0).to_numpy(dtype=np.int64)
    same_status = status_new == status_old
    refund_up = refund_new > refund_old
    regression = same & ~same_status & ~(rank_new > rank_old)
    move = same & ~regression & (~same_status | refund_up)
    conflicts = [
        *_conflicts(mine[~same], old[~same], "conflicting_order"),
        *_conflicts(mine[regression], old[regression], "status_regression"),
    ]
    moves = _moves(mine[move], old[move])
    customer_ids = pd.Index(
        pd.unique(pd.concat([new["customer_id"], moves["customer_id"]]).to_numpy(dtype=object))
    )
    unchanged = int((same & same_status & ~refund_up).sum())
    return SortedOrders(new, moves, unchanged, conflicts, customer_ids)


def status_ranks(status: pd.Series) -> np.ndarray:
    """records.STATUS_RANK of each status (-1: none or unknown), looked up once per distinct value."""
    codes, uniques = pd.factorize(status.astype(object))
    ranks = np.array([records.STATUS_RANK.get(u, -1) for u in uniques] + [-1], dtype=np.int64)
    return ranks[codes]  # code -1 (missing) takes the last: -1


def _same_fixed_fields(mine: pd.DataFrame, old: pd.DataFrame) -> np.ndarray:
    """Per order, whether the row and the stored order agree on records.FIXED_ORDER_FIELDS."""
    same = np.ones(len(mine), dtype=bool)
    for name in records.FIXED_ORDER_FIELDS:
        if name == "paid_at":
            a = pd.to_datetime(mine[name]).astype("datetime64[us]").to_numpy()
            b = pd.to_datetime(old[name]).astype("datetime64[us]").to_numpy()
            equal = (a == b) | (np.isnat(a) & np.isnat(b))
        else:
            equal = mine[name].astype(object).to_numpy() == old[name].astype(object).to_numpy()
        same &= equal
    return same


def _moves(mine: pd.DataFrame, old: pd.DataFrame) -> pd.DataFrame:
    """The forward moves: the later status (or the stored one), the larger refund, the row's update
    time, and what the customer state counts of the order (:func:`_folded_as_paid`)."""
    forward = status_ranks(mine["status"]) > status_ranks(old["status"])
    return pd.DataFrame(
        {
            "order_id": mine["order_id"].to_numpy(dtype=object),
            "status": np.where(
                forward, mine["status"].to_numpy(dtype=object), old["status"].to_numpy(dtype=object)
            ),
            "source_updated_at": mine["source_updated_at"].to_numpy(),
            "refunded_cents": np.maximum(
                mine["refunded_cents"].to_numpy(dtype=np.int64),
                pd.to_numeric(old["refunded_cents"]).to_numpy(dtype=np.int64),
            ),
            "folded_as_paid": _folded_as_paid(old),
            "customer_id": old["customer_id"].to_numpy(dtype=object),
        },
        columns=[*persist.MOVE_COLUMNS, "customer_id"],
    )


def _folded_as_paid(old: pd.DataFrame) -> np.ndarray:
    """What the customer state counts of stored orders whose status is about to move: whether it
    counts them as paid, or None when the state never folded them (stage 2's fold needs to know).
    Folded with its stored status: paid when that status is; waiting already: what the state
    counted before that (if anything)."""
    applied = old["state_applied_at"].notna().to_numpy()
    paid = old["status"].isin(records.PAID_STATUSES).to_numpy()
    waiting = (
        old["folded_as_paid"].astype(object).where(old["folded_as_paid"].notna(), None).to_numpy(dtype=object)
    )
    return np.where(applied, paid, waiting).astype(object)


def _conflicts(mine: pd.DataFrame, old: pd.DataFrame, reason: str) -> list[dict[str, Any]]:
    """Quarantine rows for the rows of ``mine`` (few: per-row Python here is fine)."""
    out = []
    for order, stored in zip(plain_records(mine), plain_records(old), strict=True):
        if reason == "conflicting_order":
            detail = _differences(order, stored)
        else:
            detail = f"stored status is {stored['status']!r}; the row says {order['status']!r}"
        out.append(_conflict(order, reason, detail, stored))
    return out


def _differences(order: dict[str, Any], old: Mapping[str, Any]) -> str:
    diffs = [
        f"{name}: stored {old[name]!r}, row {order[name]!r}"
        for name in records.FIXED_ORDER_FIELDS
        if old[name] != order[name]
    ]
    return "order id already stored with different content (" + ("; ".join(diffs) or "lines differ") + ")"


def _conflict(order: dict[str, Any], reason: str, detail: str, stored: Mapping[str, Any]) -> dict[str, Any]:
    raw = {k: (v.isoformat() if isinstance(v, (datetime, date)) else v) for k, v in order.items()}
    return {
        "reason": reason,
        "detail": detail,
        "order_id": order["order_id"],
        "source_ref": f"order {order['order_id']}",
        "raw": json.dumps(raw, ensure_ascii=False, sort_keys=True, default=str),
        # What the quarantine key is made of (not the row: a re-run of the day gives the same key
        # even when the row's parsed values differ): the stored version the row contradicts.
        "_stored_version": f"order {order['order_id']}\n{stored['content_hash']}\n{stored['status']}",
    }


def sort_customers(incoming: pd.DataFrame, stored: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The new customers among ``incoming`` and, for stored ones (persist.STORED_CUSTOMER_COLUMNS),
    the contact fields the source now gives differently: (new customers, changed customers with
    CONTACT_FIELDS, None where the stored value stays). An empty field never erases a stored one."""
    incoming = incoming.reset_index(drop=True)
    old = stored.drop_duplicates("customer_id").set_index("customer_id")
    found = isin(incoming["customer_id"], old.index)
    new = incoming[~found].reset_index(drop=True)
    mine = incoming[found].reset_index(drop=True)
    old = old.reindex(mine["customer_id"]).reset_index(drop=True)
    changed = pd.DataFrame({"customer_id": mine["customer_id"].to_numpy(dtype=object)})
    any_change = np.zeros(len(mine), dtype=bool)
    for name in records.CONTACT_FIELDS:
        value = mine[name].astype(object).where(mine[name].notna(), None).to_numpy(dtype=object)
        before = old[name].astype(object).where(old[name].notna(), None).to_numpy(dtype=object)
        change = pd.notna(value) & (value != before)
        changed[name] = np.where(change, value, None)
        any_change |= change
    return new, changed[any_change].reset_index(drop=True)


def quarantine_keys(source: str, frame: pd.DataFrame) -> list[str]:
    """Stable keys for quarantine rows: the same bad row gives the same key on every run. A row of
    validation is keyed by its raw row (and its occurrence among equal ones); a conflict with the
    store by its order's stored version and the day (``_stored_version``)."""
    seen: Counter[tuple[str, str]] = Counter()
    versions = frame["_stored_version"] if "_stored_version" in frame.columns else [None] * len(frame)
    keys = []
    for reason, raw, version in zip(frame["reason"], frame["raw"], versions, strict=True):
        material_row = raw if version is None or version != version else version
        seen[(reason, material_row)] += 1
        material = f"{source}\n{reason}\n{material_row}\n{seen[(reason, material_row)]}"
        keys.append(hashlib.sha256(material.encode("utf-8")).hexdigest())
    return keys


def quarantine_frame(
    validated: pd.DataFrame, conflicts: list[dict[str, Any]], source: str, business_date: date | None = None
) -> pd.DataFrame:
    """Validation's quarantine rows and the store's conflicts, each with its ``row_key``. A conflict
    is keyed by the day loaded too (``business_date``): each day that repeats it records it once."""
    frame = validated
    if conflicts:
        extra = pd.DataFrame(conflicts)
        if business_date is not None:
            extra["_stored_version"] = extra["_stored_version"] + f"\n{business_date.isoformat()}"
        frame = pd.concat([frame, extra], ignore_index=True)
    if frame.empty:
        return frame
    keyed = frame.assign(row_key=quarantine_keys(source, frame))
    return keyed.drop(columns=["_stored_version"], errors="ignore")


def isin(values: pd.Series, wanted: Iterable[Any]) -> np.ndarray:
    """Whether each of ``values`` (ids) is one of ``wanted``, as a boolean array (Arrow's hash
    lookup: pandas' ``isin`` on Arrow-backed text goes through Python objects)."""
    wanted = wanted if isinstance(wanted, (pa.Array, pa.ChunkedArray)) else _ids(wanted)
    return pc.is_in(_ids(values), value_set=wanted).to_numpy(zero_copy_only=False)


def positions(values: pd.Series, wanted: pd.Series) -> np.ndarray:
    """Where each of ``values`` (ids) is in ``wanted`` (distinct ids), -1 where it is not (Arrow's
    hash lookup: a pandas reindex on text hashes Python objects, several times slower)."""
    found = pc.index_in(_ids(values), value_set=_ids(wanted))
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _ids(values: Iterable[Any]) -> pa.Array:
    """Ids (a Series, an array, an Index or any iterable) as an Arrow string array."""
    if not isinstance(values, (pd.Series, pd.Index, np.ndarray)):
        values = np.array(list(values), dtype=object)
    array = pa.array(
        np.asarray(values, dtype=object) if isinstance(values, pd.Index) else values, from_pandas=True
    )
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(pa.string()) if not pa.types.is_string(array.type) else array


def plain_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as dicts of plain Python values (NaN/NaT/pd.NA -> None), as the DB-API takes them."""
    return [{key: _plain(value) for key, value in row.items()} for row in frame.to_dict(orient="records")]


def _plain(value: Any) -> Any:
    if value is None or value is pd.NaT or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


@dataclass(frozen=True)
class _Plan:
    """Everything one load writes, decided from the batch and the stored rows it names."""

    orders: SortedOrders
    new_lines: pd.DataFrame
    new_customers: pd.DataFrame
    changed_customers: pd.DataFrame
    quarantine: pd.DataFrame  # the batch's quarantine rows, with their row_key
    new_quarantine: pd.DataFrame  # those not stored by an earlier run


def _plan(conn: Connection, batch: ValidatedBatch, source: str, business_date: date) -> _Plan:
    """Read what ``batch`` names from the store and sort it; nothing is written."""
    lines = batch.lines
    orders = sort_orders(batch.orders, persist.read_orders(conn, batch.orders["order_id"]), lines["order_id"])
    customers = batch.customers
    if len(customers):
        customers = customers[isin(customers["customer_id"], orders.customer_ids)]
    new_customers, changed_customers = sort_customers(
        customers, persist.read_customers(conn, customers["customer_id"])
    )
    quarantine = quarantine_frame(batch.quarantine, orders.conflicts, source, business_date)
    new_quarantine = quarantine
    if len(quarantine):
        stored_keys = persist.read_quarantine_keys(conn, quarantine["row_key"])
        new_quarantine = quarantine[~quarantine["row_key"].isin(stored_keys)]
    if len(orders.new) < len(batch.orders):
        lines = lines[isin(lines["order_id"], orders.new_ids)]
    return _Plan(orders, lines, new_customers, changed_customers, quarantine, new_quarantine)


def load_batch(
    engine: Engine,
    batch: ValidatedBatch,
    source: str,
    business_date: date,
    last_business_date: date | None = None,
) -> IntakeSummary:
    """Upsert ``batch`` into the store in one transaction and return what happened.

    ``business_date`` (to ``last_business_date`` for a history load) is the period read. The
    transaction is the only writer of the orders while it runs (persist.lock_intake): two intakes
    at once run one after the other. A database error comes out as a
    :class:`~huitouke.store.errors.StoreError` whose message carries no value of the batch.
    """
    period = business_date.isoformat() + (f" .. {last_business_date}" if last_business_date else "")
    return call_safely(
        f"The intake of {period} from {source}",
        _load,
        engine,
        batch,
        source,
        business_date,
        last_business_date,
    )


def _load(
    engine: Engine, batch: ValidatedBatch, source: str, business_date: date, last_business_date: date | None
) -> IntakeSummary:
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.connect() as conn, persist.bulk_inserts(conn) as bulk, conn.begin():
        persist.lock_intake(conn)
        plan = _plan(conn, batch, source, business_date)
        with persist.inserting(conn, bulk, len(plan.orders.new) + len(plan.new_lines)):
            persist.insert_customers(bulk, plan.new_customers, now)
            persist.insert_orders(bulk, plan.orders.new, plan.new_lines, source, now)
        persist.update_customers(conn, plan.changed_customers, now)
        persist.move_orders(conn, plan.orders.moves, now)
        new_quarantine_rows = persist.insert_quarantine(conn, plan.new_quarantine, source, business_date, now)
        summary = IntakeSummary(
            business_date=business_date,
            source=source,
            last_business_date=last_business_date,
            rows_read=batch.rows_read,
            orders_read=len(batch.orders),
            inserted=len(plan.orders.new),
            updated=len(plan.orders.moves),
            unchanged=plan.orders.unchanged,
            quarantined_by_reason=dict(Counter(plan.quarantine["reason"])) if len(plan.quarantine) else {},
            new_quarantine_rows=new_quarantine_rows,
            customers_new=len(plan.new_customers),
            customers_updated=len(plan.changed_customers),
        )
        persist.record_run(conn, summary.run_row(now))
    return summary
