"""Running followers (`application.follow`): woken by commits, idle otherwise.

`Signals` says which sources committed since a runner last looked: saves in this process
raise them directly (`application.recorded`), PostgreSQL's NOTIFY from other processes
through a `CommitListener` (`infrastructure.wakeup`). A runner pulls a follower when its
source was signalled or its last pull found work, and otherwise sleeps — until a signal,
or until the time its caller names (the next retry falling due, a lease running out), or
at the latest ``max_idle`` seconds (a safety net for a notification that never came).

`transient` tells the failures that say nothing about the events (the database away, a
lock timed out, the pool exhausted) from the ones that do (a follower isolates those as
poison events, see `application.follow`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError
from psycopg_pool import PoolTimeout

from application.follow import Follower, Item

log = logging.getLogger("webround.followers")


def transient(error: BaseException) -> bool:
    """Whether ``error`` is a failure of the moment rather than of the data."""
    return isinstance(
        error,
        OperationalError
        | InterfaceError
        | psycopg.OperationalError
        | psycopg.InterfaceError
        | PoolTimeout
        | sqlite3.OperationalError
        | ConnectionError
        | TimeoutError,
    )


class Signals:
    """Which sources committed since they were last taken, and one event to wait on. A
    wait that runs out unsignalled is a poll: every source counts as signalled once
    (commits nothing could signal — another process's, on SQLite or without a
    listener — are found so)."""

    def __init__(self) -> None:
        self._raised: set[str] = set()
        self._polling = False
        self._polled: set[str] = set()  # taken since the last wait ran out
        self._lock = threading.Lock()
        self._event = threading.Event()

    def raise_(self, *sources: str) -> None:
        with self._lock:
            self._raised.update(sources)
        self._event.set()

    def wake(self) -> None:
        """Wake the runner without saying what changed (a stop, a new owner)."""
        self._event.set()

    def begin(self) -> None:
        """Before a pass: a signal raised from now on makes the next `wait` return."""
        self._event.clear()

    def take(self, source: str) -> bool:
        """Whether ``source`` was signalled since the last take, or the last wait ran
        out (and forget it)."""
        with self._lock:
            polled = self._polling and source not in self._polled
            if polled:
                self._polled.add(source)
            if source in self._raised:
                self._raised.discard(source)
                return True
            return polled

    def wait(self, timeout: float) -> None:
        signalled = self._event.wait(max(timeout, 0.0))
        with self._lock:
            self._polling = not signalled
            self._polled = set()


class Pulled:
    """A follower and when to pull it: after its source was signalled, or while its
    last pull found work."""

    def __init__(self, follower: Follower, signals: Signals) -> None:
        self.follower = follower
        self._signals = signals
        self._busy = True  # look once at start

    def pull(self) -> int:
        if not (self._signals.take(self.follower.source.name) or self._busy):
            return 0
        self._busy = True  # until a pull succeeds: a failed one is tried again
        done = self.follower.pull()
        self._busy = done > 0
        return done

    def again(self) -> None:
        """Pull at the next pass whatever the signals say (its lanes changed)."""
        self._busy = True


def poison_counter(count: Callable[[str], None]) -> Callable[[str, Item, Exception], None]:
    """An ``on_poison`` callback that counts skipped events by follower."""

    def on_poison(follower: str, item: Item, error: Exception) -> None:
        count(follower)

    return on_poison


def prepare(followers: Iterable[Follower], on_poison: Callable[[str], None]) -> None:
    """Give followers the infrastructure's failure classification and poison counter."""
    for follower in followers:
        follower.transient = transient
        follower.on_poison = poison_counter(on_poison)


class Runner:
    """A daemon thread that runs ``step`` (which returns how much work it found) until
    stopped; when a step finds nothing, it sleeps until a signal, ``idle()`` seconds,
    or ``max_idle``. A failing step is logged and retried after a second."""

    def __init__(
        self,
        name: str,
        step: Callable[[], int],
        signals: Signals,
        idle: Callable[[], float] | None = None,
        max_idle: float | Callable[[], float] = 30.0,
    ) -> None:
        self.name = name
        self._step = step
        self._signals = signals
        self._idle = idle
        self._max_idle = max_idle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Runner:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._signals.begin()
            try:
                busy = self._step()
            except Exception as error:
                log.warning("%s: a pass failed (%s); retrying", self.name, _summary(error))
                self._stop.wait(1.0)
                continue
            if busy or self._stop.is_set():
                continue
            wait = self._max_idle() if callable(self._max_idle) else self._max_idle
            if self._idle is not None:
                try:
                    wait = min(wait, self._idle())
                except Exception as error:
                    log.warning("%s: %s; polling", self.name, _summary(error))
                    wait = min(wait, 1.0)
            self._signals.wait(wait)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._signals.wake()
        if self._thread.ident is not None:
            self._thread.join(timeout=timeout)


def _summary(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def sources_of(channels: Iterable[str], by_channel: dict[str, str]) -> list[str]:
    return [by_channel[c] for c in channels if c in by_channel]
