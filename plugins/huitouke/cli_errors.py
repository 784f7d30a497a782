"""How the ``huitouke`` command reports a failure: one line per problem, a documented exit status,
never a traceback (unless ``--debug``) and never a phone number, an e-mail address or a name.

=====  ==========================================================================================
exit   meaning
=====  ==========================================================================================
0      done
1      the command ran and reports problems: ``templates lint`` found errors, ``db current`` is
       behind, a day of ``run-days`` failed, ``segments on`` found nothing
2      a user's mistake: a bad option, file, folder, encoding, configuration or value
       (:class:`huitouke.errors.UserInputError`, :class:`huitouke.config.ConfigError`, a missing
       or unreadable file, a missing Connection, a number out of range)
3      the CRM store: not reachable, refused the operation, or not at the code's revision
       (``huitouke db upgrade``)
4      an unexpected error, a bug: its class and where it happened; ``--debug`` shows the trace
130    interrupted (Ctrl-C)
=====  ==========================================================================================

A database driver's message can quote the row it failed on (a duplicate key's phone number, the
statement's parameters): it is reduced to the exception's class and, for a connection problem,
its first line with phones and e-mails masked. Every other line is masked the same way
(:func:`huitouke.pii.mask_text`), a safety net under the rule that messages carry no personal data.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import InvalidOperation
from pathlib import Path

from huitouke.pii import mask_text

__all__ = [
    "EXIT_BUG",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_STORE",
    "EXIT_USER",
    "Failure",
    "describe_failure",
    "encoding",
    "fraction",
    "iso_date",
    "non_negative_int",
    "positive_int",
    "run_reporting",
]

EXIT_OK, EXIT_PROBLEMS, EXIT_USER, EXIT_STORE, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
_MAX_LINE = 300
# Python's own conversion errors quote the value they failed on, which may be anything a file held.
_BUILTIN_CONVERSION = re.compile(
    r"(invalid literal for \w+\(\) with base \d+|could not convert string to \w+|Invalid isoformat string)"
    r": .*"
)


@dataclass(frozen=True)
class Failure:
    """What the command prints for an exception (each line after ``error: ``) and its exit status."""

    status: int
    lines: tuple[str, ...]


def _one(status: int, text: str) -> Failure:
    return Failure(
        status, tuple(line for line in str(text).splitlines() if line.strip()) or ("(no message)",)
    )


_FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)


def _file_error(exc: OSError) -> Failure:
    """A missing, unreadable or misplaced file or folder: its path and what is wrong."""
    if exc.filename is None:  # raised with a message of its own
        return _one(EXIT_USER, str(exc))
    path = Path(str(exc.filename))
    what = (exc.strerror or type(exc).__name__).lower()
    if isinstance(exc, FileNotFoundError) and not path.parent.exists():
        what = f"the folder {path.parent} does not exist"
    elif isinstance(exc, IsADirectoryError):
        what = "a folder, not a file"
    return _one(EXIT_USER, f"{path}: {what}")


def _database_error(exc: Exception) -> Failure:
    """A SQLAlchemy or driver error, without its text beyond a connection problem's first line
    (an IntegrityError's text quotes the row; a statement error, its parameters)."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    orig = getattr(exc, "orig", None)
    kind = type(exc).__name__ + (
        f" ({type(orig).__module__}.{type(orig).__name__})" if orig is not None else ""
    )
    if isinstance(exc, OperationalError):
        first = next((line for line in str(orig).splitlines() if line.strip()), "")[:200]
        return _one(
            EXIT_STORE,
            f"the database is not reachable or refused the operation: {kind}: {first} "
            "(check the Connection, and `huitouke db current`)",
        )
    from huitouke.store.errors import describe  # the driver's codes and names, never a value

    status = EXIT_STORE if isinstance(exc, DBAPIError) else EXIT_BUG
    return _one(
        status, f"the database refused the operation: {kind}: {describe(exc)}; run with --debug for the trace"
    )


def _unicode_error(exc: UnicodeDecodeError) -> Failure:
    return _one(
        EXIT_USER,
        f"the input is not {exc.encoding} (undecodable byte at position {exc.start}): give its "
        "encoding with --encoding (e.g. gb18030)",
    )


def _validation_error(exc: Exception) -> Failure:
    """A pydantic ValidationError: each field and message, never the input value it quotes."""
    from huitouke.config import validation_items

    lines = [f"{'.'.join(map(str, loc)) or '(top level)'}: {msg}" for loc, msg in validation_items(exc)]
    return Failure(EXIT_USER, tuple(lines))


def _store_error(exc: Exception) -> Failure | None:
    from huitouke.store.connection import ConnectionConfigError
    from huitouke.store.migrate import StoreNotCurrentError

    if isinstance(exc, StoreNotCurrentError):
        return _one(EXIT_STORE, str(exc))
    if isinstance(exc, ConnectionConfigError):
        return _one(EXIT_USER, str(exc))
    return None


def _unexpected(exc: BaseException) -> Failure:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return _one(
        EXIT_BUG,
        f"unexpected {type(exc).__name__}{where} (a bug: please report it); run with --debug for the traceback",
    )


def _classified(exc: Exception) -> Failure:
    from pydantic import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, SQLAlchemyError):
        return _database_error(exc)
    store = _store_error(exc)
    if store is not None:
        return store
    if isinstance(exc, UnicodeDecodeError):
        return _unicode_error(exc)
    if isinstance(exc, ValidationError):
        return _validation_error(exc)
    if isinstance(exc, ValueError):  # UserInputError, ConfigError, ExperimentFileError, a bad value
        return _one(EXIT_USER, _BUILTIN_CONVERSION.sub(r"\1: (the value is not shown)", str(exc)))
    if isinstance(exc, _FILE_ERRORS) or (isinstance(exc, OSError) and exc.filename is not None):
        return _file_error(exc)
    if type(exc) is LookupError:  # codecs: an unknown encoding (KeyError and IndexError are bugs)
        return _one(EXIT_USER, f"{exc} (give a known encoding, e.g. utf-8 or gb18030)")
    if isinstance(exc, (InvalidOperation, OverflowError)):
        return _one(EXIT_USER, f"a number is out of range or not a number ({type(exc).__name__})")
    if isinstance(exc, csv.Error):
        return _one(EXIT_USER, f"a line the CSV reader cannot read: {exc}")
    return _unexpected(exc)


def describe_failure(exc: BaseException) -> Failure:
    """The exit status and the lines to print for ``exc`` (masked; each line at most 300 characters)."""
    if isinstance(exc, KeyboardInterrupt):
        return Failure(EXIT_INTERRUPTED, ("interrupted",))
    failure = _classified(exc) if isinstance(exc, Exception) else _unexpected(exc)
    return Failure(failure.status, tuple(mask_text(line)[:_MAX_LINE] for line in failure.lines))


def run_reporting(func: Callable[[argparse.Namespace], int], args: argparse.Namespace, *, debug: bool) -> int:
    """``func(args)``; an exception is printed as ``error: ...`` lines on stderr (after its
    traceback with ``debug``) and its exit status returned."""
    try:
        return func(args)
    except (Exception, KeyboardInterrupt) as exc:
        if debug:
            traceback.print_exc()
        failure = describe_failure(exc)
        for line in failure.lines:
            print(f"error: {line}", file=sys.stderr)
        return failure.status


# ----------------------------------------------------------------------------- option types


def positive_int(text: str) -> int:
    """An option's whole number of at least 1 (argparse names the option on a bad one)."""
    return _int_at_least(text, 1, "a whole number of at least 1")


def non_negative_int(text: str) -> int:
    """An option's whole number of at least 0."""
    return _int_at_least(text, 0, "a whole number of at least 0")


def _int_at_least(text: str, low: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number strictly between 0 and 1, or a percentage (``0.9``, ``90%``)."""
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a fraction strictly between 0 and 1 (or a percentage), got {text!r}"
        )
    return value


def encoding(text: str) -> str:
    """A text encoding Python knows (``utf-8``, ``gb18030``...)."""
    try:
        known = getattr(codecs.lookup(text), "_is_text_encoding", True)
    except LookupError:
        known = False
    if not known:
        raise argparse.ArgumentTypeError(f"unknown text encoding {text!r} (e.g. utf-8, utf-8-sig, gb18030)")
    return text


def iso_date(text: str) -> date:
    """A date written ``YYYY-MM-DD``."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None
