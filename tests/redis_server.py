"""A throw-away Redis server for the tests (the Celery broker), started from the installed binary.

The server listens on 127.0.0.1 on a free port, keeps nothing on disk (no RDB snapshots, no
append-only file), works in a temporary folder (its log and pid file), and is shut down and the
folder deleted at the end of the session. Redis runs as root without complaint, so unlike
tests/pg_server.py no other user is needed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pg_server import free_port


class RedisUnavailable(RuntimeError):
    """The server binary is missing or the server would not start; the message says why."""


@dataclass
class RedisServer:
    binary: Path
    root: Path
    port: int
    process: subprocess.Popen | None = None

    def url(self, database: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    @property
    def log_path(self) -> Path:
        return self.root / "redis.log"

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait until it answers PING."""
        args = [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.root),
            "--logfile", str(self.log_path),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None:
                raise RedisUnavailable(f"redis-server exited ({self.process.returncode}): {self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RedisUnavailable(f"redis-server did not answer in {timeout:.0f} s: {self._log_tail()}")
            time.sleep(0.1)

    def ping(self) -> bool:
        """True when the server answers PING (the protocol by hand: no client library needed)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Shut the server down (SIGTERM, then SIGKILL) and delete its folder. Safe to repeat."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)


def start_redis() -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable("no redis-server binary found; install Debian's redis-server package")
    root = Path(tempfile.mkdtemp(prefix="huitouke-redis-"))
    server = RedisServer(binary=Path(binary), root=root, port=free_port())
    server.start()
    return server
