"""The gateway simulator's HTTP server: its APIs side by side, the ``/_sim/`` introspection
endpoints tests use, and a uvicorn server in a background thread (:class:`GatewayServer`) or in
the foreground (:func:`serve`, the ``huitouke gateway`` command).

Each API lives in its own module exposing ``routes(state) -> list[BaseRoute]`` (full paths: the
webhook mounts itself under ``/webhook``; the Aliyun- and Twilio-shaped APIs use the paths their
SDKs call). :data:`API_MODULES` names them; a module not written yet is skipped.

For tests and the demo only: never a production endpoint.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from huitouke.gateway.calls import RAW_SEND_KEY
from huitouke.gateway.state import GatewayFaults, GatewayState
from huitouke.pii import get_logger

__all__ = [
    "API_MODULES",
    "DEFAULT_TOKEN",
    "GatewayApp",
    "GatewayProcess",
    "GatewayServer",
    "build_app",
    "serve",
]

log = get_logger(__name__)

DEFAULT_TOKEN = "test-token"
API_MODULES = {
    "webhook": "huitouke.gateway.webhook",
    "aliyun": "huitouke.gateway.aliyun",
    "twilio": "huitouke.gateway.twilio",
}


class GatewayApp(Starlette):
    """A Starlette app that keeps the ASGI server's own ``send`` in the scope, so an endpoint can
    drop its connection without a response (:func:`huitouke.gateway.calls.drop_connection`)."""

    def __init__(self, state: GatewayState, routes: list[BaseRoute]) -> None:
        super().__init__(routes=routes)
        self.gateway_state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        scope[RAW_SEND_KEY] = send
        await super().__call__(scope, receive, send)


def _api_routes(state: GatewayState, apis: Iterable[str]) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for api in apis:
        module_name = API_MODULES[api]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            log.debug("gateway API %s not available (no module %s)", api, module_name)
            continue
        routes.extend(module.routes(state))
    return routes


def _sim_routes(state: GatewayState) -> list[BaseRoute]:
    async def accepted(request: Request) -> JSONResponse:
        return JSONResponse({"messages": state.accepted()})

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(state.stats())

    async def reset(request: Request) -> JSONResponse:
        state.reset()
        return JSONResponse({"reset": True})

    async def faults(request: Request) -> JSONResponse:
        try:
            changed = state.set_faults(**(await request.json()))
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(vars(changed))

    async def reply(request: Request) -> JSONResponse:
        body = await request.json()
        if not body.get("from") or "text" not in body:
            return JSONResponse({"error": "need 'from' and 'text'"}, status_code=400)
        state.add_reply(str(body["from"]), str(body["text"]), body.get("api"))
        return JSONResponse({"added": True})

    async def reject(request: Request) -> JSONResponse:
        body = await request.json()
        if not body.get("to"):
            return JSONResponse({"error": "need 'to' and 'code' (null: stop rejecting)"}, status_code=400)
        state.reject_number(str(body["to"]), body.get("code"))
        return JSONResponse({"rejecting": body.get("code")})

    return [
        Route("/_sim/accepted", accepted, methods=["GET"]),
        Route("/_sim/reject", reject, methods=["POST"]),
        Route("/_sim/stats", stats, methods=["GET"]),
        Route("/_sim/reset", reset, methods=["POST"]),
        Route("/_sim/faults", faults, methods=["GET", "POST"]),
        Route("/_sim/reply", reply, methods=["POST"]),
    ]


def build_app(state: GatewayState, apis: Iterable[str] = ("webhook", "aliyun", "twilio")) -> GatewayApp:
    """The simulator's app: the APIs asked for (those whose module exists) and ``/_sim/``."""
    return GatewayApp(state, _api_routes(state, apis) + _sim_routes(state))


def _config(app: GatewayApp, host: str, port: int) -> uvicorn.Config:
    # asyncio loop (latency is an asyncio.sleep), no access log: the per-request path stays lean.
    return uvicorn.Config(
        app, host=host, port=port, loop="asyncio", lifespan="off", access_log=False,
        log_level="warning", backlog=4096, timeout_keep_alive=30, timeout_graceful_shutdown=2,
    )  # fmt: skip


def _listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket made with ``proto=IPPROTO_TCP``: asyncio sets TCP_NODELAY on accepted
    connections only when their proto says TCP, and ``socket.create_server`` leaves it 0. Without
    it, a response's headers and body (two writes) meet the client's delayed ACK: about 40 ms lost
    on every call after a connection's first."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(4096)
    except OSError:
        sock.close()
        raise
    return sock


class GatewayServer:
    """The simulator on a background thread, for tests and benchmarks::

    with GatewayServer(GatewayFaults(rate_5xx=0.2, seed=1)) as gw:
        requests.post(gw.url + "/webhook/messages", ...)
        gw.state.stats()
    """

    def __init__(
        self,
        faults: GatewayFaults | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = DEFAULT_TOKEN,
        apis: Iterable[str] = ("webhook", "aliyun", "twilio"),
        own_process: bool = False,
    ) -> None:
        # In a process of its own (``serve``), the records are kept out of the garbage collector's walks.
        self.state = GatewayState(faults, token=token, freeze_records=own_process)
        self.app = build_app(self.state, apis)
        self._socket = _listening_socket(host, port)
        self.host, self.port = self._socket.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._server = uvicorn.Server(_config(self.app, self.host, self.port))
        self._thread: threading.Thread | None = None

    def start(self) -> GatewayServer:
        """Serve on a background thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self.run, name="gateway-simulator", daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the gateway simulator did not start")
            self._thread.join(0.01)
        return self

    def run(self) -> None:
        """Serve in this thread until stopped (in the main thread: until SIGINT/SIGTERM)."""
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def stop(self) -> None:
        """Stop now: hanging calls (timeout faults) are not waited for."""
        self._server.should_exit = True
        self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._socket.close()

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GatewayProcess:
    """The simulator in its own process (``python -m huitouke.gateway.cli``), read through its
    ``/_sim/`` endpoints. For benchmarks: a simulator in the sender's process shares its GIL and
    halves a one-message-a-call sender's rate::

        with GatewayProcess(GatewayFaults(latency_ms=5)) as gw:
            ...  # send to gw.url + "/webhook"
            assert gw.stats()["duplicates"] == 0
    """

    def __init__(self, faults: GatewayFaults | None = None, *, token: str = DEFAULT_TOKEN) -> None:
        self.faults = faults or GatewayFaults()
        self.token = token
        self.url = ""
        self._process: subprocess.Popen[str] | None = None
        self.log_lines: list[str] = []

    def start(self, timeout_s: float = 30.0) -> GatewayProcess:
        command = [sys.executable, "-m", "huitouke.gateway.cli", "--port", "0", "--token", self.token]
        plugins = str(Path(__file__).resolve().parents[2])  # this huitouke, whatever is installed
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [plugins, os.environ.get("PYTHONPATH")])),
        }
        self._process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
        found = threading.Event()
        threading.Thread(target=self._read_log, args=(found,), daemon=True).start()
        if not found.wait(timeout_s):
            self.stop()
            raise RuntimeError(
                "the gateway simulator process did not start: " + " | ".join(self.log_lines[-5:])
            )
        self.set_faults(**vars(self.faults))
        return self

    def _read_log(self, found: threading.Event) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:  # drained to the end, so the pipe never fills
            self.log_lines = [*self.log_lines[-99:], line.rstrip()]
            match = re.search(r"listening on (http://\S+) ", line)
            if match and not found.is_set():
                self.url = match.group(1)
                found.set()

    def _sim(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}/_sim/{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())

    def stats(self) -> dict[str, Any]:
        return self._sim("GET", "stats")

    def accepted(self) -> list[dict[str, Any]]:
        return self._sim("GET", "accepted")["messages"]

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        return self._sim("POST", "faults", changes)

    def reset(self) -> None:
        self._sim("POST", "reset", {})

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1", port: int = 8765, faults: GatewayFaults | None = None, token: str = DEFAULT_TOKEN
) -> None:
    """Serve the simulator in the foreground until interrupted (``huitouke gateway``); logs one
    line at INFO with its URL and faults once it listens."""
    server = GatewayServer(faults, host=host, port=port, token=token, own_process=True)
    log.info(
        "gateway simulator listening on %s (webhook base URL %s/webhook); %s",
        server.url, server.url, server.state.faults.describe(),
    )  # fmt: skip
    try:
        server.run()
    finally:
        server.stop()
