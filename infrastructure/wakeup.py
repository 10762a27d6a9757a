"""Wake the dispatcher when something is committed, instead of polling for it.

eventsourcing's PostgreSQL recorders run ``NOTIFY <channel>`` in every transaction that
records events (the channel is the events table's name, e.g. ``commerce_events``), and
PostgreSQL delivers it to listeners when — and only if — the transaction commits.
`CommitListener` holds one connection of its own that LISTENs on some such channels and
calls ``on_commit(channels)`` with the channels notified when notifications arrive (once
for all those read together: waking a follower is idempotent).

Notification channels are database-wide, not per schema: installations (or test runs)
sharing a database in separate schemas wake each other's dispatchers. That is harmless:
a spurious wake-up costs one pass that finds nothing.

Nothing is lost when the listener is not listening (not yet connected, the database away,
closed): the dispatcher then polls as often as it does without a listener (`IDLE_POLL`;
`IDLE_LISTENING` while listening), and after each (re)connection the listener nudges
once for whatever it may have missed.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger("webround.wakeup")

# Without traffic the connection is probed this often (a dead peer behind a silent
# network can leave a socket open for hours; a failed probe reconnects).
PROBE_EVERY = 30.0
# Reconnection backoff: first wait, doubling up to the second.
BACKOFF_MIN, BACKOFF_MAX = 0.2, 10.0


class CommitListener:
    """A daemon thread listening on ``channels`` of the PostgreSQL database ``dsn``."""

    def __init__(
        self,
        dsn: str,
        channels: Sequence[str],
        on_commit: Callable[[frozenset[str]], None],
        *,
        name: str = "commit-listener",
    ) -> None:
        self._dsn = dsn
        self._channels = tuple(dict.fromkeys(channels))
        self._on_commit = on_commit
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._backend_pid: int | None = None
        # `close` writes a byte here to interrupt the thread's `select` at once.
        self._interrupt_r, self._interrupt_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend of the listening connection (None when not connected):
        the row in ``pg_stat_activity``, application_name ``webround commit listener``."""
        return self._backend_pid

    @property
    def listening(self) -> bool:
        """True while LISTEN is in place (notifications will arrive)."""
        return self._listening.is_set()

    def wait_listening(self, timeout: float) -> bool:
        return self._listening.wait(timeout)

    def start(self) -> CommitListener:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):  # already closed
            self._interrupt_w.send(b"x")
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=10)
        self._interrupt_r.close()
        self._interrupt_w.close()

    def _run(self) -> None:
        backoff = BACKOFF_MIN
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._dsn,
                    autocommit=True,
                    connect_timeout=5,
                    application_name="webround commit listener",
                    # A peer gone silently (a network partition) is noticed within about a
                    # minute by TCP, and the probe of `_listen` fails: reconnect.
                    keepalives=1,
                    keepalives_idle=30,
                    keepalives_interval=10,
                    keepalives_count=3,
                ) as conn:
                    self._backend_pid = conn.info.backend_pid
                    for channel in self._channels:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self._listening.set()
                    if backoff > BACKOFF_MIN:
                        log.info("listening for commits again")
                    backoff = BACKOFF_MIN
                    # Commits before LISTEN took effect were not notified: one pass
                    # looks for them.
                    self._on_commit(frozenset(self._channels))
                    self._listen(conn)
                self._listening.clear()
                self._backend_pid = None
            except Exception as error:  # the database went away, or refused us
                self._listening.clear()
                self._backend_pid = None
                if self._stop.is_set():
                    break
                log.warning(
                    "commit listener: %s: %s; the dispatcher polls until it reconnects "
                    "(next try in %.1f s)",
                    error.__class__.__name__,
                    str(error).strip().splitlines()[0] if str(error).strip() else "",
                    backoff,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        self._listening.clear()

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stop.is_set():
            watched = [conn.fileno(), self._interrupt_r.fileno()]
            readable, _, _ = select.select(watched, [], [], PROBE_EVERY)
            if self._stop.is_set():
                return
            if not readable:
                # Quiet for a while: make sure the connection is alive (raises if not).
                # Notifications read while it runs wait in psycopg's backlog, which
                # `notifies` below returns first.
                conn.execute("SELECT 1")
            # Read what arrived without blocking (timeout=0); a closed connection
            # raises here. Any number of notifications make one call.
            channels = frozenset(n.channel for n in conn.notifies(timeout=0))
            if channels:
                self._on_commit(channels)
