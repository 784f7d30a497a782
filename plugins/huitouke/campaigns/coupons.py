"""Coupon codes: one unique, unguessable code per (campaign, customer, entry, wave), and redemption.

A code is the campaign's prefix, a dash and 10 characters drawn with :mod:`secrets` from 31
unambiguous characters (no 0/O, 1/I/L): ``CW-7KQ2MX9PRT``. That is about 2**49 codes per prefix:
guessing one that exists, even among millions issued, takes billions of tries. Codes are random,
not derived, so they cannot be recomputed: the store keeps them, with a unique index on the code
and on (campaign, customer_id, entered_on, wave). On a re-run, :func:`issue_coupons` reuses the
stored code of a wave (pass them as ``existing``) and the store's ``ON CONFLICT DO NOTHING`` keeps
the first one if two runs race.

Only treated waves with a coupon get a code (holdout customers receive nothing). A coupon is valid
from the wave's business day through ``expires_on = business day + valid_days`` (the message goes
out the next morning, so the customer has ``valid_days`` full days); ``min_spend_cents`` is the
threshold (0 = none).

An order that carries a code (``orders.coupon_code``, matched without regard to case, spaces or
dashes) marks the coupon redeemed: :func:`redeemed_codes`.
"""

from __future__ import annotations

import re
import secrets

import numpy as np
import pandas as pd

from huitouke import records
from huitouke.campaigns.playbook import Playbook
from huitouke.campaigns.tables import columns_of, unique_key
from huitouke.store import schema

__all__ = [
    "ALPHABET",
    "CODE_LENGTH",
    "COUPON_COLUMNS",
    "REDEMPTION_COLUMNS",
    "coupon_prefix",
    "issue_coupons",
    "new_code",
    "normalise_code",
    "redeemed_codes",
    "with_codes",
]

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 10
_CODES = len(ALPHABET) ** CODE_LENGTH
# A coupon's key, (campaign, customer, entry, wave), and the columns issuing it sets: the coupons
# table's, less what redemption and the store's write fill in.
KEY: tuple[str, ...] = unique_key(schema.coupons)
COUPON_COLUMNS: tuple[str, ...] = columns_of(
    schema.coupons, without=("redeemed_order_id", "redeemed_on", "created_at")
)
REDEMPTION_COLUMNS: tuple[str, ...] = (
    "code",
    "order_id",
    "customer_id",
    "redeemed_on",
    "order_amount_cents",
    "known",
    "own_customer",
    "in_time",
    "min_spend_met",
)


def coupon_prefix(campaign: str, prefix: str | None = None) -> str:
    """The playbook's ``coupon.prefix``, else the initials of the campaign (coupon_waves -> CW)."""
    if prefix:
        return prefix
    parts = [p for p in campaign.split("_") if p]
    initials = "".join(p[0] for p in parts) if len(parts) > 1 else campaign[:2]
    return (initials.upper() or "C")[:6]


def new_code(prefix: str) -> str:
    """A fresh random code, e.g. ``CW-7KQ2MX9PRT``: the base-31 digits of one uniform draw among
    the 31**10 codes (one ``secrets`` call instead of ten)."""
    number = secrets.randbelow(_CODES)
    chars = []
    for _ in range(CODE_LENGTH):
        number, digit = divmod(number, len(ALPHABET))
        chars.append(ALPHABET[digit])
    return f"{prefix}-{''.join(chars)}"


def normalise_code(text: object) -> str | None:
    """A code as typed by a customer or a shop system, in the stored form (None if empty)."""
    if text is None or (not isinstance(text, str) and pd.isna(text)):
        return None
    compact = re.sub(r"[\s\-_]", "", str(text)).upper()
    if not compact:
        return None
    cut = len(compact) - CODE_LENGTH  # the prefix's length, when the code is ours
    return f"{compact[:cut]}-{compact[cut:]}" if 1 <= cut <= 6 else compact


def issue_coupons(
    waves: pd.DataFrame, playbook: Playbook, existing: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Coupon rows (:data:`COUPON_COLUMNS`) for the treated waves of a plan that carry a coupon.

    ``waves`` is :attr:`huitouke.campaigns.plan.DayPlan.waves`; ``existing`` the stored coupons of
    those waves (same columns): their codes are reused, so a re-run issues the same codes.
    """
    out = _coupon_rows(waves)
    codes, taken = _stored_codes(out, existing)
    _new_codes(out["campaign"].to_numpy(dtype=object), codes, taken, playbook)
    out.insert(0, "code", codes)
    return out[list(COUPON_COLUMNS)]


def _coupon_rows(waves: pd.DataFrame) -> pd.DataFrame:
    """The coupon of each treated wave with coupon terms, without its code."""
    treated = waves[
        (waves["outcome"] == "treated").to_numpy() & waves["coupon_value_cents"].notna().to_numpy()
    ]
    return pd.DataFrame(
        {
            "campaign": treated["campaign"].to_numpy(dtype=object),
            "customer_id": treated["customer_id"].to_numpy(dtype=object),
            "entered_on": treated["entered_on"].to_numpy(dtype=object),
            "wave": treated["wave"].to_numpy(dtype=np.int64),
            "value_cents": treated["coupon_value_cents"].to_numpy(dtype=np.int64),
            "min_spend_cents": treated["coupon_min_spend_cents"].to_numpy(dtype=np.int64),
            "issued_on": treated["due_on"].to_numpy(dtype=object),
            "expires_on": treated["coupon_expires_on"].to_numpy(dtype=object),
        }
    )


def _stored_codes(out: pd.DataFrame, existing: pd.DataFrame | None) -> tuple[np.ndarray, set[str]]:
    """The stored code of each coupon of ``out`` (None: not stored yet), and every stored code."""
    codes = np.full(len(out), None, dtype=object)
    if existing is None or not len(existing):
        return codes, set()
    stored = existing.assign(entered_on=pd.to_datetime(existing["entered_on"]).dt.date)
    lookup = {
        (c, str(k), e, int(w)): code
        for c, k, e, w, code in zip(*(stored[column] for column in (*KEY, "code")), strict=True)
    }
    for i, (c, k, e, w) in enumerate(zip(*(out[column] for column in KEY), strict=True)):
        codes[i] = lookup.get((c, k, e, int(w)))
    return codes, set(stored["code"])


def _new_codes(campaign_of: np.ndarray, codes: np.ndarray, taken: set[str], playbook: Playbook) -> None:
    """A fresh code, with its campaign's prefix, for each coupon without one (in place)."""
    prefixes = {
        name: coupon_prefix(name, (c.coupon.prefix if c.coupon else None) or _variant_prefix(c))
        for name, c in playbook.campaigns.items()
    }
    for i in np.flatnonzero(pd.isna(codes)):
        prefix = prefixes.get(campaign_of[i]) or coupon_prefix(campaign_of[i])
        code = new_code(prefix)
        while code in taken:  # astronomically rare; the store's unique index is the real guard
            code = new_code(prefix)
        taken.add(code)
        codes[i] = code


def _variant_prefix(campaign) -> str | None:
    for variant in campaign.variants.values():
        if variant.coupon is not None and variant.coupon.prefix:
            return variant.coupon.prefix
    return None


def with_codes(sends: pd.DataFrame, coupons: pd.DataFrame) -> pd.DataFrame:
    """``sends`` with a ``coupon_code`` column (None for messages without a coupon)."""
    keys = coupons[[*KEY, "code"]].rename(columns={"code": "coupon_code"})
    merged = sends.merge(keys, on=list(KEY), how="left", validate="many_to_one")
    merged["coupon_code"] = merged["coupon_code"].astype(object).where(merged["coupon_code"].notna(), None)
    return merged


def redeemed_codes(orders: pd.DataFrame, coupons: pd.DataFrame | None = None) -> pd.DataFrame:
    """Codes redeemed by ``orders`` (paid orders with a ``coupon_code``): :data:`REDEMPTION_COLUMNS`.

    One row per code, the first order that used it (by business date, then order id). With the
    stored ``coupons``, flags say whether the code is known, used by its own customer, within its
    validity and with the minimum spend met; the store marks a coupon redeemed whatever the flags
    (the shop accepted the order), and evaluation may look at them.
    """
    frame = orders
    if "status" in frame.columns:
        frame = frame[frame["status"].isin(records.PAID_STATUSES)]
    if "coupon_code" not in frame.columns or frame.empty:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in REDEMPTION_COLUMNS})
    code = frame["coupon_code"].map(normalise_code)
    used = frame.assign(code=code)[code.notna().to_numpy()]
    used = used.assign(_day=pd.to_datetime(used["business_date"]))
    used = used.sort_values(["_day", "order_id"], kind="stable").drop_duplicates("code", keep="first")
    out = pd.DataFrame(
        {
            "code": used["code"].to_numpy(dtype=object),
            "order_id": used["order_id"].astype(str).to_numpy(dtype=object),
            "customer_id": used["customer_id"].astype(str).to_numpy(dtype=object),
            "redeemed_on": used["_day"].dt.date.to_numpy(dtype=object),
            "order_amount_cents": used["amount_cents"].to_numpy(dtype=np.int64),
        }
    )
    if coupons is None or coupons.empty:
        for flag in REDEMPTION_COLUMNS[5:]:
            out[flag] = pd.array([pd.NA] * len(out), dtype="boolean")
        return out[list(REDEMPTION_COLUMNS)]
    stored = coupons.set_index("code")
    hit = out["code"].isin(stored.index).to_numpy()
    rows = stored.reindex(out["code"])
    issued = pd.to_datetime(rows["issued_on"]).dt.date.to_numpy(dtype=object)
    expires = pd.to_datetime(rows["expires_on"]).dt.date.to_numpy(dtype=object)
    out["known"] = hit
    out["own_customer"] = hit & (
        rows["customer_id"].astype(object).to_numpy() == out["customer_id"].to_numpy()
    )
    out["in_time"] = hit & np.array(
        [bool(h) and i <= r <= e for h, i, r, e in zip(hit, issued, out["redeemed_on"], expires, strict=True)]
    )
    spend = rows["min_spend_cents"].fillna(0).to_numpy(dtype=np.int64)
    out["min_spend_met"] = hit & (out["order_amount_cents"].to_numpy() >= spend)
    return out[list(REDEMPTION_COLUMNS)]
