"""The params of a manual run (``dry_run``, ``campaigns``), checked in the task as well as by
Airflow's JSON schema: a run triggered with conf the form did not validate (the REST API, the
CLI, ``dag.test``) fails at its first task with one line naming the bad value.

The values are read from the run's conf; an absent one means the default (``dry_run`` false,
``campaigns`` all), which is also what a scheduled run has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["RunOptions", "RunParamError", "run_options"]


class RunParamError(ValueError):
    """A run's param is wrong; the message names the param and the value."""


@dataclass(frozen=True)
class RunOptions:
    """What a run's params ask: ``dry_run`` (plan and render, send nothing) and ``campaigns``
    (None: every campaign; else only these are rendered and sent)."""

    dry_run: bool = False
    campaigns: tuple[str, ...] | None = None

    def selects(self, campaign: str) -> bool:
        return self.campaigns is None or campaign in self.campaigns


def _dry_run(value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RunParamError(f"param dry_run: expected true or false, got {value!r}")
    return value


def _campaigns(value: Any, known: list[str]) -> tuple[str, ...] | None:
    if value is None or (isinstance(value, list | tuple) and not value):
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise RunParamError(f"param campaigns: expected a list of campaign names, got {value!r}")
    unknown = [name for name in value if name not in known]
    if unknown:
        raise RunParamError(
            f"param campaigns: unknown campaign {', '.join(repr(n) for n in unknown)}; "
            f"the playbook's campaigns: {', '.join(known)}"
        )
    return tuple(dict.fromkeys(value))


def run_options(conf: Mapping[str, Any] | None, known_campaigns: Iterable[str]) -> RunOptions:
    """The run's :class:`RunOptions` from its conf, checked against the playbook's campaigns."""
    conf = conf or {}
    return RunOptions(_dry_run(conf.get("dry_run")), _campaigns(conf.get("campaigns"), list(known_campaigns)))
