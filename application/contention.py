"""Commands on aggregates that others write too: they take turns, or run again (ADR 0026).

eventsourcing's optimistic concurrency refuses a save when another writer saved one of
the same aggregates after it was read (`IntegrityError`). For the client that is no
error: a command that lost such a race is run again on the fresh state — read, rules
checked, changes saved — so its answer is what the rules say of the latest state
(success, or a refusal such as insufficient stock). Two measures make the race rare and
its loss harmless:

- **Turns.** In one process, commands that write the same aggregates wait for each
  other (a lock per stripe of aggregate ids; a command takes all its stripes at once, in
  stripe order, so no two commands can wait for each other in a circle). A hot entity
  then costs a queue, not wasted work.
- **Running again.** Against writers in other processes, a command that lost runs again
  after a random pause (full jitter, growing from `FIRST_PAUSE` to `LONGEST_PAUSE`), at
  most `ATTEMPTS` times; then `ConcurrentChange` (a 409), which the edge counts.

An attempt must do all of its reading inside: it runs again from the start.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Final, TypeVar
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from application.errors import ConcurrentChange

T = TypeVar("T")

# With turns, a command meets at most one contender per other process: losing 20 races in
# a row to one other process is a one-in-a-million event, and takes about a second.
ATTEMPTS: Final = 20
FIRST_PAUSE: Final = 0.005  # seconds; doubled after each lost race
LONGEST_PAUSE: Final = 0.1
STRIPES: Final = 1024


def _nothing() -> None:
    pass


class Contention:
    """Turns and attempts for the commands of one application."""

    def __init__(
        self,
        *,
        attempts: int = ATTEMPTS,
        on_retry: Callable[[], None] = _nothing,
        on_exhausted: Callable[[], None] = _nothing,
        pause: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = random.random,
    ) -> None:
        if attempts < 1:
            raise ValueError("a command needs at least one attempt")
        self.attempts = attempts
        self._on_retry = on_retry
        self._on_exhausted = on_exhausted
        self._pause = pause
        self._random = random
        self._stripes = [threading.Lock() for _ in range(STRIPES)]

    def run(self, writes: Iterable[UUID], attempt: Callable[[], T], what: str) -> T:
        """``attempt()`` — read, check, save — in turn with this process's other writers
        of ``writes`` (the ids of the aggregates it may change), run again on fresh state
        while another process wins the race, up to `attempts` times."""
        stripes = sorted({hash(aggregate_id) % STRIPES for aggregate_id in writes})
        for number in range(self.attempts):
            with self._turn(stripes):
                try:
                    return attempt()
                except IntegrityError:
                    pass  # another process saved first: again, on what it saved
            if number + 1 == self.attempts:
                break
            self._on_retry()
            self._pause(self._random() * min(LONGEST_PAUSE, FIRST_PAUSE * 2**number))
        self._on_exhausted()
        raise ConcurrentChange(f"{what} is being changed concurrently; try again")

    @contextmanager
    def _turn(self, stripes: list[int]) -> Iterator[None]:
        taken: list[threading.Lock] = []
        try:
            for stripe in stripes:
                lock = self._stripes[stripe]
                lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()
