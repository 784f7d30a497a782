"""Vectorised helpers: whole columns turned into the shop's text at once, never one Python object
per row (times, days and amounts formatted by numpy; string columns Arrow-backed, low-cardinality
ones built by ``take`` from small lookups)."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd

DAY = 86_400  # seconds
EPOCH = np.datetime64("1970-01-01", "D")
DIGITS = np.array(list("0123456789"))


def day_number(day: datetime.date) -> int:
    """The date as days since 1970-01-01 (the generator's day numbers)."""
    return int((np.datetime64(day, "D") - EPOCH).astype(np.int64))


def fmt_seconds(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds (naive local time) -> 'YYYY-MM-DD HH:MM:SS' strings (numpy U19)."""
    text = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s")
    chars = np.ascontiguousarray(text.astype("U19")).view("U1").reshape(-1, 19)
    chars[:, 10] = " "
    return chars.view("U19").reshape(-1)


def fmt_days(days: np.ndarray) -> np.ndarray:
    """Epoch day numbers -> 'YYYY-MM-DD' strings (numpy U10)."""
    return np.datetime_as_string(days.astype("datetime64[D]"), unit="D").astype("U10")


def fmt_cents(cents: np.ndarray) -> np.ndarray:
    """Integer cents -> 'yuan.cc' strings, e.g. 10350 -> '103.50'."""
    cents = np.asarray(cents, dtype=np.int64)
    sign = np.where(cents < 0, "-", "")
    cents = np.abs(cents)
    whole = (cents // 100).astype(str)
    frac = cents % 100
    tail = np.char.add(np.char.add(".", DIGITS[frac // 10]), DIGITS[frac % 10])
    return np.char.add(np.char.add(sign, whole), tail)


def to_str(values: np.ndarray) -> pd.Series:
    """A string column (pandas' Arrow-backed ``str``) from a numpy array."""
    return pd.Series(values, dtype="str")


def take(lookup: list[str] | tuple[str, ...], codes: np.ndarray) -> pd.Series:
    """A string column from a small lookup and integer codes (no per-row Python strings)."""
    return pd.Series(pd.array(list(lookup), dtype="str").take(np.asarray(codes, dtype=np.intp)))
