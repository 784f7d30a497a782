"""The holdout arm: the one function that decides who, in a campaign, receives nothing.

A customer's arm in a campaign is a pure function of ``(salt, campaign, customer_id)``: the
SHA-256 of the three (separated by a unit separator) is read as a number ``u`` uniform in [0, 1),
and ``u < holdout_share`` puts the customer in the holdout. So:

- the arm is the same on every re-run, every wave and every re-entry of the same campaign (a
  persistent holdout: a customer held out of ``thank_you`` is held out of every thank-you);
- arms of different campaigns are independent (the campaign name is hashed), so being held out
  of one campaign says nothing about another;
- nobody can choose or predict their arm without the salt, and changing a campaign's salt
  (``holdout.salt`` in the playbook) draws new arms for *new* entries; the arm of an existing
  entry is stored with it and never recomputed;
- raising the share only moves customers from treatment to holdout (``u`` does not change).

The planner assigns the arm at entry and stores it; evaluation compares the arms as stored.
:func:`uniform` is also the planner's source of deterministic tie-breaking orders (with other
purposes in its parts), so it is independent of the arm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

__all__ = [
    "ARMS",
    "DEFAULT_SALT",
    "HOLDOUT",
    "TREATMENT",
    "assign_arms",
    "holdout_draws",
    "uniform",
    "uniforms",
]

TREATMENT = "treatment"
HOLDOUT = "holdout"
ARMS: tuple[str, ...] = (TREATMENT, HOLDOUT)
DEFAULT_SALT = "huitouke-holdout-v1"

_SEP = "\x1f"
_SCALE = float(2**53)


def uniform(*parts: str) -> float:
    """A number in [0, 1) that depends only on ``parts`` (53 bits of their SHA-256)."""
    digest = hashlib.sha256(_SEP.join(parts).encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / _SCALE


def uniforms(prefix: tuple[str, ...], keys: Iterable[str]) -> np.ndarray:
    """:func:`uniform` of ``(*prefix, key)`` for every key, as a float array."""
    head = _SEP.join(prefix) + _SEP if prefix else ""
    values = [
        (int.from_bytes(hashlib.sha256(f"{head}{key}".encode()).digest()[:8], "big") >> 11) for key in keys
    ]
    return np.asarray(values, dtype=np.float64) / _SCALE


def holdout_draws(campaign: str, customer_ids: Iterable[str], salt: str = DEFAULT_SALT) -> np.ndarray:
    """Each customer's draw ``u`` in [0, 1) for the campaign; ``u < share`` means holdout."""
    return uniforms((salt, campaign), (str(c) for c in customer_ids))


def assign_arms(
    campaign: str, customer_ids: Iterable[str], share: float, salt: str = DEFAULT_SALT
) -> np.ndarray:
    """The arm (:data:`TREATMENT` or :data:`HOLDOUT`) of each customer in the campaign."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"holdout share must be in [0, 1), got {share}")
    held = holdout_draws(campaign, customer_ids, salt) < share
    return np.where(held, HOLDOUT, TREATMENT).astype(object)
