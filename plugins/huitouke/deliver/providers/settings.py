"""A provider's settings from an Airflow Connection's extras: the known names only, each value
coerced to its field's type (extras typed in the Airflow UI arrive as strings)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def _coerce(kind: str, value: Any) -> Any:
    if value is None or value == "":
        return None if "None" in kind else value
    if kind.startswith("float"):
        return float(value)
    if kind.startswith("int"):
        return int(value)
    if kind.startswith("bool"):
        return str(value).strip().lower() in {"1", "true", "yes", "on"}
    return str(value)


def settings_with_extras(settings: T, extras: dict[str, Any], fixed: set[str]) -> T:
    """``settings`` (a dataclass) with the extras that name one of its fields, except ``fixed``
    (the fields the Connection's own columns set); unknown extras are ignored."""
    kinds = {f.name: str(f.type) for f in dataclasses.fields(settings) if f.name not in fixed}  # type: ignore[arg-type]
    changes = {k: _coerce(kinds[k], v) for k, v in extras.items() if k in kinds}
    return dataclasses.replace(settings, **changes)  # type: ignore[type-var]
