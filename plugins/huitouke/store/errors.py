"""Store errors without personal data.

What a database driver raises can quote the values it refused: PostgreSQL's ``DETAIL: Key
(customer_id)=(...) already exists.`` or a ``COPY`` error's ``CONTEXT`` line (a whole row: names,
phones, e-mails), SQLite's messages, and SQLAlchemy's wrappers that repeat them. The engine's
``hide_parameters`` hides the bound parameters, not these. :func:`call_safely` turns any of them
into a :class:`StoreError` whose message names what failed (the operation, the kind of error, the
table, column and constraint) and never a value; the driver's exception is not chained to it, so
no traceback prints it either.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa
from sqlalchemy.exc import SQLAlchemyError

__all__ = ["DRIVER_ERRORS", "StoreError", "call_safely", "describe"]

T = TypeVar("T")

# A SQLite message made of words only (no digit, quote, @ or non-ASCII letter: no value can hide in
# it), e.g. "UNIQUE constraint failed: orders.order_id" or "database is locked".
_PLAIN_SQLITE_MESSAGE = re.compile(r"[A-Za-z_ .,:()]{1,200}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _driver_errors() -> tuple[type[BaseException], ...]:
    # Arrow's conversions of the rows on their way to the driver quote the values they refuse too.
    errors: list[type[BaseException]] = [SQLAlchemyError, sqlite3.Error, pa.ArrowException]
    try:
        import psycopg2

        errors.append(psycopg2.Error)
    except ImportError:  # pragma: no cover - a dependency
        pass
    return tuple(errors)


DRIVER_ERRORS = _driver_errors()


class StoreError(RuntimeError):
    """The store refused or failed an operation; the message says which and why, without values."""


def describe(exc: BaseException) -> str:
    """What went wrong, in words that carry no value of the data: the error's class and, from the
    driver, its code, table, column and constraint names (identifiers only)."""
    orig = getattr(exc, "orig", None) or exc
    parts = [type(orig).__name__]
    pgcode = getattr(orig, "pgcode", None)
    if pgcode:
        parts.append(_pg_code_name(pgcode))
        diag = getattr(orig, "diag", None)
        for label in ("table_name", "column_name", "constraint_name"):
            name = getattr(diag, label, None)
            if name and _IDENTIFIER.fullmatch(name):
                parts.append(f"{label.split('_')[0]} {name}")
    elif isinstance(orig, sqlite3.Error):
        parts.append(getattr(orig, "sqlite_errorname", "") or "")
        message = str(orig)
        if _PLAIN_SQLITE_MESSAGE.fullmatch(message):
            parts.append(message)
    return ", ".join(part for part in parts if part)


def _pg_code_name(code: str) -> str:
    try:
        from psycopg2 import errorcodes

        return f"{errorcodes.lookup(code)} ({code})"
    except (ImportError, KeyError):
        return code


def call_safely(doing: str, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)``; a database error it raises comes out as a :class:`StoreError`
    "<doing> failed in the store: <what>" (:func:`describe`), with no exception chained to it."""
    try:
        return function(*args, **kwargs)
    except DRIVER_ERRORS as exc:
        message = f"{doing} failed in the store: {describe(exc)}"
    raise StoreError(message)  # outside the except block: the driver's exception is not its context
