"""One active dispatcher per installation (SPEC §10), by lock.

Any number of `webround dispatcher` processes may run; the one holding the lock
dispatches and projects, the others stand by and try again every second.

- PostgreSQL: a session-level ``pg_try_advisory_lock`` on a dedicated autocommit
  connection. Its key is derived from the schema name, so installations in different
  schemas of one database do not block each other. The server releases the lock when the
  session ends — a holder killed with ``kill -9`` frees it as soon as its socket closes.
  The holder checks its connection every second (``SELECT 1``) and stops dispatching at
  once when it is gone: by then another process may already hold the lock.
- SQLite (embedded): ``fcntl.flock`` on ``<data dir>/dispatcher.lock``, which the kernel
  releases when the holding process dies; the same guarantee between processes of one
  machine (the only place the SQLite files can be shared).

The lock is not what keeps dispatch correct — the schedule's positions and claims are
transactional and delivery is at-least-once — it keeps two dispatchers from wasting work
and racing each other into retries. In the second between a holder losing its
connection and noticing, both may dispatch; that only risks a duplicate send.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from infrastructure.settings import Settings

log = logging.getLogger("webround.leader")

RETRY_SECONDS = 1.0
CHECK_SECONDS = 1.0


class LeaderLock(Protocol):
    description: str

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True when this process holds it now."""

    def healthy(self) -> bool:
        """Still held? False once the lock may have passed to another process."""

    def release(self) -> None:
        """Let go (idempotent)."""


def lock_key(schema: str) -> int:
    """The advisory-lock key of an installation: a signed 64-bit digest of its schema."""
    digest = hashlib.blake2b(f"webround.dispatcher:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresLock:
    """``pg_try_advisory_lock`` held by a session of its own."""

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        self.schema = parse_qs(parts.query).get("schema", ["public"])[0]
        self.key = lock_key(self.schema)
        self.description = f"PostgreSQL advisory lock {self.key} (schema {self.schema})"
        self._dsn = database_url.split("?", 1)[0]
        self._connection: Any = None

    def try_acquire(self) -> bool:
        import psycopg

        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=5,
                application_name="webround dispatcher lock",
                # A peer that vanished without closing the socket is noticed in seconds.
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=1,
                keepalives_count=3,
                tcp_user_timeout=5000,
            )
        try:
            row = self._connection.execute(
                "SELECT pg_try_advisory_lock(%s)", (self.key,)
            ).fetchone()
        except Exception:
            self._drop()
            raise
        return bool(row and row[0])

    def healthy(self) -> bool:
        if self._connection is None or self._connection.closed:
            return False
        try:
            self._connection.execute("SELECT 1").fetchone()
        except Exception:
            self._drop()
            return False
        return True

    def release(self) -> None:
        # Unlock first: closing the session would release it too, but only once the
        # server has noticed, a moment later.
        if self._connection is not None and not self._connection.closed:
            try:
                self._connection.execute("SELECT pg_advisory_unlock_all()")
            except Exception:
                log.debug("unlocking failed; closing the session releases it", exc_info=True)
        self._drop()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                log.debug("closing the lock connection failed", exc_info=True)


class FileLock:
    """``flock`` on a file of the data directory (embedded mode)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"file lock {path}"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        import fcntl

        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def healthy(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        import fcntl

        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def dispatcher_lock(settings: Settings) -> LeaderLock:
    if settings.database_url is None:
        return FileLock(settings.data_dir / "dispatcher.lock")
    return PostgresLock(settings.database_url)


def run_as_leader(
    lock: LeaderLock,
    start: Callable[[], Callable[[], None]],
    stop: threading.Event,
    *,
    retry_seconds: float = RETRY_SECONDS,
    check_seconds: float = CHECK_SECONDS,
    on_change: Callable[[bool], None] | None = None,
) -> None:
    """Until ``stop``: stand by until ``lock`` is ours, then run what ``start`` starts
    (it returns the function that stops it) for as long as the lock stays healthy.

    Losing the lock stops the active part at once and goes back to standby; ``stop``
    stops it and releases the lock.
    """
    standby_said = False
    while not stop.is_set():
        try:
            acquired = lock.try_acquire()
        except Exception as error:
            log.warning("cannot reach the dispatcher lock (%s); retrying", error)
            stop.wait(retry_seconds)
            continue
        if not acquired:
            if not standby_said:
                log.info(
                    "dispatcher on standby: another dispatcher is active; "
                    "trying for the lock every %g s",
                    retry_seconds,
                    extra={"lock": lock.description},
                )
                standby_said = True
            stop.wait(retry_seconds)
            continue
        standby_said = False
        try:
            stop_active = start()
        except Exception:
            log.exception("the dispatcher could not start; releasing the lock, retrying")
            lock.release()
            stop.wait(retry_seconds)
            continue
        log.info("dispatcher active: holding the lock", extra={"lock": lock.description})
        if on_change is not None:
            on_change(True)
        try:
            while not stop.wait(check_seconds):
                if not lock.healthy():
                    log.error(
                        "dispatcher lock lost (its connection dropped): "
                        "dispatching stopped, back on standby",
                        extra={"lock": lock.description},
                    )
                    break
        finally:
            try:
                if on_change is not None:
                    on_change(False)
                stop_active()
            finally:
                lock.release()
    log.info("dispatcher stopped", extra={"lock": lock.description})


class Leadership:
    """`run_as_leader` in a background thread, stopped (lock released) by `close`."""

    def __init__(
        self,
        lock: LeaderLock,
        start: Callable[[], Callable[[], None]],
        *,
        on_change: Callable[[bool], None] | None = None,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self.lock = lock
        self._stop = threading.Event()
        self.active = threading.Event()

        def changed(active: bool) -> None:
            (self.active.set if active else self.active.clear)()
            if on_change is not None:
                on_change(active)

        self._thread = threading.Thread(
            target=run_as_leader,
            args=(lock, start, self._stop),
            kwargs={"on_change": changed, "check_seconds": check_seconds},
            name="leader",
            daemon=True,
        )

    def start(self) -> Leadership:
        self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout)
