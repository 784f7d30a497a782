"""Customer shards: which slice of the customers a mapped task of the daily run works on.

A customer's shard is a stable function of its id alone, the same in every process, on every
machine and in every Python or library version: the CRC-32 of the id's UTF-8 bytes (``zlib``),
reduced to one of :data:`BUCKETS` buckets, then ``bucket % count``. Shards are only a split of
the work: everything a shard computes is a function of its own customers, and what must see all
customers at once (quintiles, the daily global cap, KPIs) is a reduce step after the shards, so
the results are identical for any shard count (``scale.shards`` in ``include/huitouke.yaml``).

The bucket is what a database stores or computes when it filters rows by shard
(``bucket % :count = :shard``), so the SQL needs no hash function.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

BUCKETS = 4096  # fixed forever: stored buckets stay valid whatever the shard count


def bucket_of(customer_id: str) -> int:
    """The customer's bucket, in [0, BUCKETS)."""
    return zlib.crc32(customer_id.encode("utf-8")) % BUCKETS


def buckets_of(customer_ids: Iterable[str] | pd.Series | np.ndarray) -> np.ndarray:
    """The buckets of many customer ids, as int16 (one CRC-32 per id: about 0.3 s a million)."""
    values = customer_ids.tolist() if hasattr(customer_ids, "tolist") else list(customer_ids)
    return (
        np.fromiter((zlib.crc32(v.encode("utf-8")) for v in values), dtype=np.uint32, count=len(values))
        .__mod__(BUCKETS)
        .astype(np.int16)
    )


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count). ``Shard.whole()`` is every customer."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.count, int) and 1 <= self.count <= BUCKETS):
            raise ValueError(f"shard count must be an integer from 1 to {BUCKETS}, not {self.count!r}")
        if not (isinstance(self.index, int) and 0 <= self.index < self.count):
            raise ValueError(f"shard index must be from 0 to {self.count - 1}, not {self.index!r}")

    @classmethod
    def whole(cls) -> Shard:
        return cls(0, 1)

    @classmethod
    def all_of(cls, count: int) -> list[Shard]:
        """Every shard of ``count``: what the daily run maps over."""
        return [cls(i, count) for i in range(count)]

    @property
    def is_whole(self) -> bool:
        return self.count == 1

    def owns(self, customer_id: str) -> bool:
        return self.is_whole or bucket_of(customer_id) % self.count == self.index

    def mask(self, customer_ids: Iterable[str] | pd.Series | np.ndarray) -> np.ndarray:
        """True for the customer ids of this shard (all True for the whole)."""
        if self.is_whole:
            return np.ones(len(customer_ids), dtype=bool)  # type: ignore[arg-type]
        return buckets_of(customer_ids) % self.count == self.index

    def label(self) -> str:
        """How the task's map index names it: ``shard 2/4`` (1-based for people)."""
        return f"shard {self.index + 1}/{self.count}"

    def tag(self) -> str:
        """The label where there are several shards, "" for the whole (tables and logs)."""
        return "" if self.is_whole else self.label()

    def named(self, name: str) -> str:
        """``name`` alone for the whole, ``name shard 2/4`` otherwise (a campaign's or channel's task)."""
        return f"{name} {self.tag()}".rstrip()
