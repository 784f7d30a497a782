"""Column lists and keys of the stored tables, read off :mod:`huitouke.store.schema`.

A frame that is a table's rows takes its columns from the table, and a unique key is the one
the table declares: so no list of column names or key is typed a second time next to the schema.
"""

from __future__ import annotations

from sqlalchemy import Table, UniqueConstraint

__all__ = ["columns_of", "unique_key"]


def columns_of(table: Table, without: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The table's column names in their declared order, less ``without``."""
    missing = set(without) - set(table.columns.keys())
    if missing:
        raise KeyError(f"{table.name} has no column {', '.join(sorted(missing))}")
    return tuple(c.name for c in table.columns if c.name not in without)


def unique_key(table: Table) -> tuple[str, ...]:
    """The columns of the table's unique constraint (its primary key when it declares none)."""
    unique = [c for c in table.constraints if isinstance(c, UniqueConstraint) and c is not table.primary_key]
    if len(unique) > 1:
        raise ValueError(f"{table.name} has {len(unique)} unique constraints: name the key")
    columns = unique[0].columns if unique else table.primary_key.columns
    return tuple(c.name for c in columns)
