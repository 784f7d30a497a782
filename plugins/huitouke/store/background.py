"""A transaction's writes on a background thread, while the caller goes on computing.

Stage 2 writes tens of thousands of rows a day (state, spend and history rows) and computes on a
million customers; the database drivers release the GIL while the database works, and so do
numpy, pandas and Arrow in their bulk operations, so on two cores the two overlap.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["BackgroundWrites"]


class BackgroundWrites:
    """Runs submitted writes one after the other, in submission order, on one thread.

    The connection they use must be used by one thread at a time: call :meth:`wait` before the
    caller touches it again. Leaving the ``with`` block waits for every write (also after an
    error, so the transaction never ends under a running write) and raises the first write's
    error; after a write failed, the ones submitted after it are skipped.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="huitouke-writes")
        self._pending: list[Future[Any]] = []
        self._failed = False

    def submit(self, write: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        self._pending.append(self._pool.submit(self._run, write, args, kwargs))

    def _run(self, write: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._failed:
            return None
        try:
            return write(*args, **kwargs)
        except BaseException:
            self._failed = True
            raise

    def wait(self) -> None:
        """Return when every submitted write is done; raise the first error."""
        pending, self._pending = self._pending, []
        error: BaseException | None = None
        for future in pending:
            exc = future.exception()
            if exc is not None and error is None:
                error = exc
        if error is not None:
            raise error

    def __enter__(self) -> BackgroundWrites:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self.wait()
            else:  # the caller failed: let the writes finish (or fail) before the rollback
                for future in self._pending:
                    future.exception()
                self._pending = []
        finally:
            self._pool.shutdown(wait=True)
