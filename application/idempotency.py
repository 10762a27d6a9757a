"""Idempotency-Keys recorded with the events of the command they answer (ADR 0023).

A command sent with an ``Idempotency-Key`` must have one effect however often it is sent
and whatever crashes on the way: its events and the record of its key are one fact. So
the record is written by the event store, in the transaction that writes the events:

- The edge (the API, the dashboard) opens a `KeyedCommand` around one call of a command
  (``with keyed(command): ...``). It knows the key, the request's fingerprint, the API
  key that sent it, and how to turn the command's result into the stored answer (sealed:
  an answer may hold a signing secret).
- An application whose commands take keys saves through `KeyedSaves.save_answering`,
  which hands the answer to ``Application.save(..., idempotency=KeyRecord)``; the
  recorder (infrastructure) inserts it beside the events, in one transaction.
- Two requests with one key racing: the second transaction meets the first one's record,
  rolls back whole, and the recorder raises `AlreadyAnswered`; the edge then answers the
  first request's answer.

The key travels in a context variable rather than as a parameter of every command
method: it belongs to the request, not to the command, and no rule ever reads it. It is
set by the edge for exactly one call, in the thread that runs it, and consumed by the
first save of that call (a command saves once; a later save records no second answer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import Application


@dataclass(frozen=True)
class Answer:
    """What a replay answers: the status, the body as stored (sealed), its media type."""

    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True)
class KeyRecord:
    """One key's record: which request it named, who sent it, when, and the answer."""

    store_id: UUID
    key: str
    fingerprint: str  # of the request's method, path and body
    key_id: str  # the API key that sent the request (a replay is only for it)
    recorded_at: datetime
    answer: Answer


class AlreadyAnswered(Exception):
    """Another request with this key was recorded first; nothing of this one was saved."""

    def __init__(self, store_id: UUID, key: str) -> None:
        super().__init__(f"the Idempotency-Key {key!r} of store {store_id} is already answered")
        self.store_id = store_id
        self.key = key


@dataclass
class KeyedCommand:
    """One request's key, on its way from the edge to the save that records it."""

    store_id: UUID
    key: str
    fingerprint: str
    key_id: str
    at: datetime
    # The edge's: the command's result as the answer to store (and to send).
    answer: Callable[[Any], Answer]
    recorded: KeyRecord | None = None  # set once a save recorded the key

    def record_for(self, result: Any) -> KeyRecord:
        """The record answering the command's ``result``."""
        return self.record_with(self.answer(result))

    def record_with(self, answer: Answer) -> KeyRecord:
        return KeyRecord(self.store_id, self.key, self.fingerprint, self.key_id, self.at, answer)


_current: ContextVar[KeyedCommand | None] = ContextVar("keyed_command", default=None)


@contextmanager
def keyed(command: KeyedCommand) -> Iterator[KeyedCommand]:
    """Run the body as the one call that ``command``'s key names."""
    token = _current.set(command)
    try:
        yield command
    finally:
        _current.reset(token)


class KeyedSaves(Application[UUID]):
    """An eventsourcing `Application` whose commands take Idempotency-Keys.

    Its recorder must accept ``idempotency=KeyRecord`` in ``insert_events`` (the keyed
    recorders of `infrastructure.idempotency`); other recorders ignore the argument.
    """

    def save_answering(self, *aggregates: Any, result: Any) -> None:
        """Save the aggregates' new events; when a keyed call is running and its key is
        not recorded yet, record it with them, answering ``result``."""
        command = _current.get()
        if command is None or command.recorded is not None:
            self.save(*aggregates)
            return
        record = command.record_for(result)
        self.save(*aggregates, idempotency=record)
        command.recorded = record
