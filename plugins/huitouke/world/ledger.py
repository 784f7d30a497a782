"""What happened in the world, kept for the truth: every message delivered (with the response it
would bring), the responses still pending, every purchase with its cause and its alternative.

A purchase caused by a response records its **alternative**: the customer's next natural
purchase and earliest other pending response at that moment, which is when they would have
bought without that message. That is all the truth needs to know a responder's outcome without
the message (:mod:`huitouke.world.truth`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from huitouke.campaigns.holdout import uniforms
from huitouke.demo_shop.arrays import DAY, fmt_cents, fmt_seconds, to_str
from huitouke.demo_shop.parameters import (
    MAX_ORDER_CENTS,
    MIN_ORDER_CENTS,
    ORDER_SIGMA,
    REPEAT_CHANNEL_SHARE,
    SOURCES,
    flat_catalogue,
)
from huitouke.records import CANCELLED, CATEGORIES, COMPLETED, REFUNDED
from huitouke.world.clocks import Responses, void_kinds

World = Any  # huitouke.world.world.World (not imported: it imports this module)

COUPON_USE = 0.8  # share of responders to a message with a coupon who type its code in
MAIN_CATEGORY_SHARE = 0.8  # an order's line is of the customer's main category, else any


@dataclass(frozen=True)
class Pending:
    """Responses not yet happened: per response its customer, time, void time, clock, coupon."""

    customer: np.ndarray
    fire: np.ndarray
    void_at: np.ndarray
    clock: np.ndarray
    coupon: np.ndarray

    def where(self, keep: np.ndarray) -> Pending:
        return Pending(
            self.customer[keep], self.fire[keep], self.void_at[keep], self.clock[keep], self.coupon[keep]
        )

    @staticmethod
    def empty() -> Pending:
        e = np.empty(0)
        return Pending(e.astype(np.int64), e, e, e.astype(np.int64), e.astype(object))


class Ledger:
    """The world's records (module docstring)."""

    def __init__(self) -> None:
        self.pending = Pending.empty()
        self._messages: list[pd.DataFrame] = []
        self._purchases: list[pd.DataFrame] = []
        self._clocks = 0
        self.purchase_count = 0

    # --------------------------------------------------------------------------------- messages

    def add_messages(self, per: pd.DataFrame, pos: np.ndarray, at: float, drawn: Responses) -> None:
        """Record delivered messages (one row per message key) and their pending responses."""
        clock = np.arange(self._clocks, self._clocks + pos.size)
        self._clocks += pos.size
        self._messages.append(
            pd.DataFrame(
                {
                    "_key": per["_key"].to_numpy(),
                    "_pos": pos,
                    "sent_at": at,
                    "fire": drawn.fire,
                    "void_at": drawn.void_at,
                    "clock": clock,
                }
            )
        )
        keep = np.isfinite(drawn.fire)
        coupon = per["coupon_code"].astype(object).where(per["coupon_code"].notna(), None).to_numpy()
        self.pending = Pending(
            np.concatenate([self.pending.customer, pos[keep]]),
            np.concatenate([self.pending.fire, drawn.fire[keep]]),
            np.concatenate([self.pending.void_at, drawn.void_at[keep]]),
            np.concatenate([self.pending.clock, clock[keep]]),
            np.concatenate([self.pending.coupon, coupon[keep]]),
        )

    def messages(self) -> pd.DataFrame:
        """Every delivered message: ``_key, _pos, sent_at, fire, clock`` (fire ``inf``: no response)."""
        if not self._messages:
            return pd.DataFrame(
                {"_key": [], "_pos": [], "sent_at": [], "fire": [], "void_at": [], "clock": []}
            )
        return pd.concat(self._messages, ignore_index=True)

    def pending_between(self, a: float, b: float) -> Pending:
        return self.pending.where((self.pending.fire >= a) & (self.pending.fire < b))

    # -------------------------------------------------------------------------------- purchases

    def buy(self, world: World, customer: np.ndarray, when: np.ndarray, cause: np.ndarray) -> None:
        """Record the purchases of ``customer`` at ``when`` (cause -1: natural, else a clock) and
        cancel their other pending responses (a purchase ends what a message was for)."""
        pending = self.pending
        mine = np.isin(pending.customer, customer)
        by_clock = pd.Series(np.arange(pending.clock.size), index=pending.clock)
        caused = cause >= 0
        at = by_clock.reindex(cause[caused]).to_numpy(dtype=np.int64)
        void_at = when + world.natural_void[customer]
        void_at[caused] = pending.void_at[at]
        coupon = np.full(customer.size, None, dtype=object)
        coupon[caused] = pending.coupon[at]
        alt_time, alt_void = self._alternatives(world, pending.where(mine), customer, cause)
        self.pending = pending.where(~mine)
        arrival = np.isnan(world.people.last[customer])
        self._purchases.append(
            pd.DataFrame(
                {
                    "_pos": customer,
                    "time": when,
                    "cause": cause,
                    "void_at": void_at,
                    "alt_time": alt_time,
                    "alt_void_at": alt_void,
                    "cents": _cents(world, customer, arrival),
                    "coupon_code": _typed_in(world.seed, coupon, self.purchase_count),
                    "channel": _channels(world, customer, arrival),
                    "category": _categories(world, customer),
                    "serial": np.arange(self.purchase_count, self.purchase_count + customer.size),
                }
            )
        )
        self.purchase_count += customer.size

    @staticmethod
    def _alternatives(
        world: World, theirs: Pending, customer: np.ndarray, cause: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """When each buyer would have bought without the cause, and when that order would be
        voided: the earliest of their natural purchase and their other pending responses."""
        alt = world.next_natural[customer].copy()
        alt_void = alt + world.natural_void[customer]
        others = pd.DataFrame(
            {"c": theirs.customer, "fire": theirs.fire, "void": theirs.void_at, "k": theirs.clock}
        )
        others = others[~others["k"].isin(cause)]
        if len(others):
            first = others.sort_values("fire", kind="stable").drop_duplicates("c")
            where = pd.Series(np.arange(customer.size), index=customer).reindex(first["c"]).to_numpy()
            better = first["fire"].to_numpy() < alt[where]
            alt[where[better]] = first["fire"].to_numpy()[better]
            alt_void[where[better]] = first["void"].to_numpy()[better]
        return alt, alt_void

    def purchases(self) -> pd.DataFrame:
        """Every purchase so far (module docstring), in the order they happened per day."""
        if not self._purchases:
            return pd.DataFrame(
                columns=[
                    "_pos",
                    "time",
                    "cause",
                    "void_at",
                    "alt_time",
                    "alt_void_at",
                    "cents",
                    "coupon_code",
                ]
                + ["channel", "category", "serial"]
            )
        return pd.concat(self._purchases, ignore_index=True)

    def shop_rows(self, world: World, first: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The purchases from number ``first`` on as shop_orders and shop_order_items rows."""
        parts = [p for p in self._purchases if len(p) and p["serial"].iloc[-1] >= first]
        bought = pd.concat(parts, ignore_index=True) if parts else self.purchases()
        bought = bought[bought["serial"] >= first].sort_values(["time", "serial"], kind="stable")
        return shop_frames(world, bought)


def shop_frames(world: World, bought: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Purchases as the demo shop's order and line rows (final-state convention)."""
    seconds = np.round(bought["time"].to_numpy(dtype=float) * DAY).astype(np.int64)
    void_at = bought["void_at"].to_numpy(dtype=float)
    voided = np.isfinite(void_at)
    delay = np.where(voided, void_at - bought["time"].to_numpy(dtype=float), 0.0)
    refunded = voided & void_kinds(delay)
    status = np.where(refunded, REFUNDED, np.where(voided, CANCELLED, COMPLETED))
    void_seconds = np.round(np.where(voided, void_at, 0.0) * DAY).astype(np.int64)
    updated = np.where(voided, void_seconds, seconds)
    dates = fmt_seconds(seconds).astype("U10")
    order_id = np.char.add(
        np.char.add("W", np.char.replace(dates, "-", "")),
        np.char.zfill(bought["serial"].astype(str).to_numpy().astype("U"), 7),
    )
    ids = world.people.ids[bought["_pos"].to_numpy(dtype=np.int64)]
    amount = fmt_cents(bought["cents"].to_numpy(dtype=np.int64))
    orders = pd.DataFrame(
        {
            "order_id": to_str(order_id),
            "customer_id": to_str(ids.astype(str)),
            "paid_at": to_str(fmt_seconds(seconds)),
            "pay_amount": to_str(amount),
            "status": to_str(status),
            "channel": to_str(bought["channel"].to_numpy().astype(str)),
            "coupon_code": pd.Series(bought["coupon_code"].to_numpy(dtype=object), dtype="str"),
            "updated_at": to_str(fmt_seconds(updated)),
        }
    )
    catalogue = flat_catalogue()
    category = bought["category"].to_numpy(dtype=np.int64)
    product = catalogue.starts[category] + (bought["serial"].to_numpy() % catalogue.counts[category])
    items = pd.DataFrame(
        {
            "order_id": to_str(order_id),
            "line_no": np.ones(len(bought), dtype=np.int64),
            "sku": to_str(np.array(catalogue.skus, dtype=object)[product].astype(str)),
            "title": to_str(np.array(catalogue.titles, dtype=object)[product].astype(str)),
            "category": to_str(np.array(CATEGORIES)[category]),
            "qty": np.ones(len(bought), dtype=np.int64),
            "amount": to_str(amount),
        }
    )
    return orders, items


def _cents(world: World, customer: np.ndarray, arrival: np.ndarray) -> np.ndarray:
    """An order's amount: a new customer's first order as drawn, else around their level."""
    noise = np.exp(ORDER_SIGMA * world.rng.standard_normal(customer.size) - ORDER_SIGMA**2 / 2)
    cents = np.clip(np.round(world.people.level[customer] * noise * 100), MIN_ORDER_CENTS, MAX_ORDER_CENTS)
    first = np.round(world.people.first_cny[customer] * 100)
    return np.where(arrival, first, cents).astype(np.int64)


def _typed_in(seed: int, coupon: np.ndarray, serial0: int) -> np.ndarray:
    """The coupon codes the responders typed in at checkout (most of them)."""
    serials = np.arange(serial0, serial0 + coupon.size).astype(str)
    used = uniforms((str(seed), "coupon_use"), serials) < COUPON_USE
    return np.where(used, coupon, None)


def _channels(world: World, customer: np.ndarray, arrival: np.ndarray) -> np.ndarray:
    """How an order was won: a new customer's source, else mostly organic (as in the shop)."""
    repeat = world.rng.choice(len(SOURCES), size=customer.size, p=REPEAT_CHANNEL_SHARE)
    code = np.where(arrival, world.people.source[customer], repeat)
    return np.array(SOURCES, dtype=object)[code]


def _categories(world: World, customer: np.ndarray) -> np.ndarray:
    """The order line's category: the customer's main one mostly."""
    other = world.rng.integers(0, len(CATEGORIES), size=customer.size)
    main = world.rng.random(customer.size) < MAIN_CATEGORY_SHARE
    return np.where(main, world.people.category[customer], other)


def empty_undelivered() -> pd.DataFrame:
    return pd.DataFrame(
        {c: [] for c in ("campaign", "customer_id", "entered_on", "wave", "channel", "reason")}
    )


def empty_replies() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in ("customer_id", "phone", "text", "received_at")})


def reply_rows(world: World, pos: np.ndarray, when: np.ndarray) -> pd.DataFrame:
    """Reply rows: the customer, their phone, ``T``, when it arrived (shop-local text)."""
    if pos.size == 0:
        return empty_replies()
    return pd.DataFrame(
        {
            "customer_id": world.people.ids[pos].astype(str),
            "phone": world.people.phone[pos],
            "text": "T",
            "received_at": fmt_seconds(np.round(when * DAY).astype(np.int64)),
        }
    )
