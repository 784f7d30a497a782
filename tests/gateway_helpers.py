"""Test helpers for the gateway simulator (its fixtures, ``gateway`` and ``gw``, are in conftest)."""

from __future__ import annotations

import dataclasses

from huitouke.gateway.state import GatewayFaults


def faults_exactly(gw, **changes) -> None:
    """Set the simulator's faults to the defaults with ``changes``, keeping what it recorded."""
    wanted = GatewayFaults(**changes)
    gw.state.set_faults(**{f.name: getattr(wanted, f.name) for f in dataclasses.fields(wanted)})
