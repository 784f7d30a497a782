"""Which allocator Arrow uses while a day's segments run computes.

Arrow's default pool (mimalloc) maps fresh memory for the run's large buffers; the system
allocator reuses what numpy and pandas freed a moment before, where first-touched memory is slow
a measurable part of a daily run at a million customers (bench/README.md). A rebuild, which reads
every order and line, goes back to the default pool: less memory at its peak.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

__all__ = ["RunAllocator"]


class RunAllocator:
    """``with RunAllocator() as allocator:`` Arrow allocates from the system allocator inside the
    block (until :meth:`for_rebuild`), from the process's default pool again after it."""

    def __init__(self) -> None:
        self._default = pa.default_memory_pool()

    def __enter__(self) -> RunAllocator:
        pa.set_memory_pool(pa.system_memory_pool())
        return self

    def for_rebuild(self) -> None:
        """The default pool for the rest of the run: a rebuild's reads and build."""
        pa.set_memory_pool(self._default)

    def __exit__(self, *exc: Any) -> None:
        pa.set_memory_pool(self._default)
