"""Private PostgreSQL and Redis servers for fault tests: started, restarted, torn down.

Fault tests stop and restart the database and the broker mid-run. They must never do that
to the machine's shared services (other test runs use them), so each test gets servers of
its own on spare ports, with their data in a temporary folder::

    with PrivatePostgres.start() as postgres:       # initdb, pg_ctl start, CREATE DATABASE
        url = postgres.url                           # postgresql://postgres@127.0.0.1:P/test
        postgres.restart(down_for=2.0)               # immediate stop (a crash), then start

    with PrivateRedis.start() as redis:              # redis-server, no persistence
        redis.restart(down_for=1.0)                  # SIGKILL, then a new empty server

PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres`` user
and its programs run through ``runuser``. ``Unavailable`` says why a server cannot be
started here (no binaries), for the caller to skip or fail.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from tests.support.receiver import free_port

__all__ = ["PrivatePostgres", "PrivateRedis", "Unavailable"]


class Unavailable(RuntimeError):
    """The server's programs are not installed (or cannot run) on this machine."""


def _wait_for_port(port: int, timeout: float, alive: object = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        if callable(alive) and not alive():
            raise RuntimeError(f"the server on port {port} exited while starting")
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered on port {port} within {timeout} s")


# --- PostgreSQL --------------------------------------------------------------------------


def _postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian layout first, then PATH)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: (
            int(Path(path).parent.parent.name) if Path(path).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise Unavailable("PostgreSQL's initdb is not installed")
    return Path(initdb).resolve().parent


class PrivatePostgres:
    """A PostgreSQL cluster of its own: ``initdb`` in a temporary folder, a spare port,
    trust authentication, a ``test`` database."""

    def __init__(self, max_connections: int = 300) -> None:
        self.max_connections = max_connections
        self.bin = _postgres_bin()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="webround-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "postgres.log"
        self.sockets.mkdir()
        self._as: list[str] = []
        if os.geteuid() == 0:
            # initdb and postgres refuse root: the cluster belongs to `postgres`.
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.root, ignore_errors=True)
                raise Unavailable("running as root and there is no postgres user") from None
            for path in (self.root, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.running = False

    @classmethod
    def start(cls, max_connections: int = 300) -> PrivatePostgres:
        """A new cluster, running, with its ``test`` database (torn down on failure)."""
        server = cls(max_connections)
        try:
            server._run(
                "initdb", "-D", str(server.data), "-A", "trust", "-U", "postgres", "--no-sync"
            )
            server.up()
            import psycopg

            with psycopg.connect(server.dsn("postgres"), autocommit=True) as connection:
                connection.execute("CREATE DATABASE test")
        except BaseException:
            server.close()
            raise
        return server

    def dsn(self, database: str = "test") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.dsn("test")

    def up(self) -> None:
        """Start the server (``pg_ctl -w``: returns once it accepts connections)."""
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} "
            # Many processes of one installation each keep small pools (a test of what
            # happens when they are too many gives fewer).
            f"-c max_connections={self.max_connections} -c superuser_reserved_connections=0 "
            # An immediate stop is a crash of the server, not of the machine: the page
            # cache survives it, so skipping fsync loses nothing here and saves seconds.
            "-c fsync=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        self.running = True

    def down(self) -> None:
        """Stop at once, as if the server crashed (``-m immediate``: no checkpoint; every
        client's connection is cut)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self.running = False

    def restart(self, down_for: float = 2.0) -> None:
        self.down()
        time.sleep(down_for)
        self.up()

    def close(self) -> None:
        """Stop the server if it runs and delete its folder (always safe to call)."""
        try:
            if self.running or (self.data / "postmaster.pid").exists():
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    self.down()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [*self._as, str(self.bin / program), *args],
            capture_output=True,
            text=True,
            timeout=90,
            cwd=self.root,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({done.returncode}): {done.stdout}{done.stderr}\n"
                f"{self.log_tail()}"
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# --- Redis -------------------------------------------------------------------------------


class PrivateRedis:
    """A ``redis-server`` of its own on a spare port, keeping nothing on disk: a restart
    comes back empty, as a broker that lost its data."""

    def __init__(self) -> None:
        program = shutil.which("redis-server")
        if program is None:
            raise Unavailable("redis-server is not installed")
        self.program = program
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="webround-redis-"))
        self.log_path = self.root / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    @classmethod
    def start(cls) -> PrivateRedis:
        server = cls()
        try:
            server.up()
        except BaseException:
            server.close()
            raise
        return server

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def up(self) -> None:
        assert self._process is None, "already running"
        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root)]
        # Nothing on disk: a restart comes back empty, every queued message lost.
        options += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [self.program, *options],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.starts += 1
        process = self._process
        _wait_for_port(self.port, timeout=20, alive=lambda: process.poll() is None)

    def down(self) -> None:
        """SIGKILL: every queued message is gone with it."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def restart(self, down_for: float = 1.0) -> None:
        self.down()
        time.sleep(down_for)
        self.up()

    def close(self) -> None:
        try:
            self.down()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
