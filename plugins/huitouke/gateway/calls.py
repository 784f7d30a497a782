"""How one API call of the simulator meets its faults, shared by every API module.

An API module parses the request, then hands :func:`call_with_faults` two functions: ``accept``
(record the messages and build the normal answer) and ``refuse`` (this API's answer for a fault
that accepts nothing). The order of events is what makes the faults honest: latency first; a
refused call records nothing; a timed-out call may have recorded before hanging
(``timeout_accepts``) or records only after it (``timeout_accepts_late``: a backend still working
when the client gave up); a dropped call always has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from huitouke.gateway.state import CallFault, GatewayState

__all__ = ["RAW_SEND_KEY", "call_with_faults", "drop_connection"]

RAW_SEND_KEY = "huitouke.gateway.raw_send"  # set by server.GatewayApp: the ASGI server's own send
REFUSALS = {CallFault.INSUFFICIENT_BALANCE, CallFault.SERVER_ERROR, CallFault.RATE_LIMITED}


async def call_with_faults(
    request: Request,
    state: GatewayState,
    api: str,
    accept: Callable[[], Response],
    refuse: Callable[[CallFault], Response],
) -> Response:
    """Answer one call: sleep the latency, draw the call's fault, then refuse, hang, accept or
    accept-and-drop. ``refuse`` gets INSUFFICIENT_BALANCE, SERVER_ERROR, RATE_LIMITED or TIMEOUT
    (the answer sent after hanging, which a client that gave up never reads)."""
    faults = state.faults
    if faults.latency_ms > 0:
        await asyncio.sleep(faults.latency_ms / 1000)
    fault = state.decide_call_fault(api)
    if fault in REFUSALS:
        return refuse(fault)
    if fault is CallFault.TIMEOUT:
        await asyncio.sleep(faults.hang_s)
        return refuse(fault)
    if fault is CallFault.TIMEOUT_LATE:  # the work finishes even when the client has given up
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[Response] = loop.create_future()
        loop.call_later(faults.hang_s, lambda: finished.set_result(accept()))
        return await asyncio.shield(finished)  # a disconnect cancels the request, not the work
    response = accept()
    if fault is CallFault.TIMEOUT_ACCEPTED:
        await asyncio.sleep(faults.hang_s)
    elif fault is CallFault.DROP:
        await drop_connection(request)
    return response


async def drop_connection(request: Request) -> None:
    """Close the TCP connection now, without any HTTP response.

    ASGI has no "abort" message (an app that raises gets a 500 from the server), so this reaches
    the connection through uvicorn's own ``send`` (a bound method of its request cycle, which
    holds the transport), kept in the scope by ``server.GatewayApp``. It aborts the transport and
    waits until uvicorn has seen the disconnect, so nothing the endpoint returns is written.
    """
    raw_send = request.scope.get(RAW_SEND_KEY)
    cycle = getattr(raw_send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("dropping a connection needs the app served by uvicorn through GatewayApp")
    transport.abort()
    for _ in range(100):
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0)
    cycle.disconnected = True
