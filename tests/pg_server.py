"""A throw-away PostgreSQL server for the tests, started from the installed server binaries.

PostgreSQL refuses to run as root, so under root the cluster is created and started as the
``postgres`` user (``runuser``). The server listens on 127.0.0.1 on a free port, trusts local
connections, and is stopped (``-m immediate``) and deleted at the end of the session.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """The server binaries are missing or the server would not start; the message says why."""


def find_bindir() -> Path | None:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    for path in candidates:
        if Path(path, "initdb").exists():
            return Path(path)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    bindir: Path
    root: Path
    port: int
    as_user: str | None

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> None:
        result = self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        if result.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        result = self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        if result.returncode != 0:
            log = (
                (self.root / "server.log").read_text(errors="replace")
                if (self.root / "server.log").exists()
                else ""
            )
            raise PostgresUnavailable(f"pg_ctl start failed: {result.stderr.strip()} {log[-2000:]}")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def _admin(self, *statements: str, params: tuple = ()) -> None:
        """Run statements as the superuser, outside a transaction (CREATE DATABASE needs that)."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement, params or None)
        finally:
            conn.close()

    def create_database(self, name: str, owner: str | None = None) -> str:
        """A new empty database (dropped first if it exists), owned by ``owner`` if given
        (:meth:`create_role`); its URL as the superuser."""
        owned = f' OWNER "{owner}"' if owner else ""
        self._admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"{owned}')
        return self.url(name)

    def create_role(self, name: str, password: str) -> None:
        """A login role with a password, as a deployment has one per application. The test server
        trusts local connections, so the password is carried, not checked."""
        self._admin(f'DROP ROLE IF EXISTS "{name}"')
        self._admin(f'CREATE ROLE "{name}" LOGIN PASSWORD %s', params=(password,))

    def role_url(self, role: str, password: str, database: str) -> str:
        """The SQLAlchemy URL of ``database`` as ``role``."""
        return f"postgresql+psycopg2://{role}:{password}@127.0.0.1:{self.port}/{database}"


def start_postgres() -> PostgresServer:
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable(
            "no PostgreSQL server binaries (initdb) found; install Debian's postgresql package"
        )
    root = Path(tempfile.mkdtemp(prefix="huitouke-pg-"))
    as_user = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable(
                "running as root and there is no postgres user to run the server as"
            ) from None
        os.chmod(root, 0o700)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = "postgres"
    server = PostgresServer(bindir=bindir, root=root, port=free_port(), as_user=as_user)
    server.start()
    return server
