"""Envelopes and Deliveries: what we send, and every attempt to send it.

An **Envelope** is created once per store event: the exact bytes every endpoint receives,
on every retry and every "Send again". A **Delivery** is one envelope on its way to one
webhook; it records each attempt and ends ``succeeded`` or ``failed``. The retry schedule
(§6) is defined here, once.
"""

from __future__ import annotations

import base64
import codecs
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidTransition
from domain.values import Actor

# §6: after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h (about 3 days in all).
DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
JITTER = 0.2
# A Retry-After is honoured within these bounds, so a receiver can neither make us hammer
# it nor park a delivery for longer than the whole schedule.
RETRY_AFTER_BOUNDS = (1.0, 86400.0)

_NAMESPACE = uuid5(NAMESPACE_URL, "https://webround.example/envelopes")

# A test event's id (`POST /v1/webhooks/{id}/test`) says what it is: nothing reads a log or
# a table to tell a test from a store event, and neither lists, replays nor recovers it
# (ADR 0027).
TEST_EVENT_PREFIX = "evt_test_"
EVENT_ID_PATTERN = r"^evt_(test_)?[0-9a-f]{32}$"
"""Every event id we give out: a store event's or a test event's."""


def event_id_of(originator_id: UUID, version: int) -> str:
    """The public id of a store event: stable across endpoints, retries and rebuilds."""
    return "evt_" + uuid5(_NAMESPACE, f"{originator_id}/{version}").hex


def new_test_event_id() -> str:
    """A fresh id for a test event."""
    return TEST_EVENT_PREFIX + uuid4().hex


def is_test_event(event_id: str) -> bool:
    return event_id.startswith(TEST_EVENT_PREFIX)


def envelope_id_of(event_id: str) -> UUID:
    return uuid5(_NAMESPACE, f"envelope/{event_id}")


def delivery_id_of(envelope_id: UUID, webhook_id: UUID) -> UUID:
    """The id of the first delivery of an envelope to a webhook: creating it twice is
    impossible, whatever restarts or re-processing happen."""
    return uuid5(_NAMESPACE, f"delivery/{envelope_id}/{webhook_id}")


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again after a failed attempt, and when to give up."""

    schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1

    def next_attempt_at(
        self,
        attempt: int,
        now: datetime,
        random: Callable[[], float],
        retry_after: float | None = None,
    ) -> datetime | None:
        """The time of the attempt after failed attempt number ``attempt`` (1-based), or
        None when the schedule is exhausted. ``random()`` is in [0, 1): ±20% jitter."""
        if attempt >= self.max_attempts:
            return None
        if retry_after is not None:
            low, high = RETRY_AFTER_BOUNDS
            delay = min(max(retry_after, low), high)
        else:
            delay = self.schedule[attempt - 1] * (1 - JITTER + 2 * JITTER * random())
        return now + timedelta(seconds=delay)


class Envelope(Aggregate):
    """The message of one store event, serialised once and never changed."""

    @staticmethod
    def create_id(event_id: str) -> UUID:
        return envelope_id_of(event_id)

    @event("Created")
    def __init__(
        self,
        event_id: str,
        event_type: str,
        store_id: UUID,
        entity_id: UUID,
        occurred_at: datetime,
        position: int,
        body: str,
    ) -> None:
        self.event_id = event_id
        self.event_type = event_type
        self.store_id = store_id
        self.entity_id = entity_id
        self.occurred_at = occurred_at
        self.position = position
        self.body = body


# How an attempt's response body excerpt is kept: as the text it is, when it is UTF-8
# without NUL; else as base64 of its exact bytes (a gzip or binary answer, a NUL), so
# every store (PostgreSQL text included) can hold it and nothing is lost.
BodyEncoding = Literal["text", "base64"]


def storable_excerpt(excerpt: bytes, *, cut: bool = False) -> tuple[str, BodyEncoding]:
    """The first bytes of a response body as recorded: ``(text, "text")`` when they are
    UTF-8 without NUL — where ``cut`` (the body went on) a character split by the cut is
    left out —, else ``(base64 of the bytes, "base64")``."""
    # Not final where the body was cut: a character split by the cut waits for bytes
    # that never come, and is left out; any other invalid byte raises.
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        text: str | None = decoder.decode(excerpt, final=not cut)
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text:
        return text, "text"
    return base64.b64encode(excerpt).decode("ascii"), "base64"


@dataclass(frozen=True)
class Attempt:
    number: int
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None
    detail: str | None
    response_headers: dict[str, str]
    response_body: str
    next_attempt_at: datetime | None
    response_body_encoding: BodyEncoding = "text"

    @property
    def succeeded(self) -> bool:
        return succeeded(self.status_code)


def succeeded(status_code: int | None) -> bool:
    """A 2xx answer: the one kind of success (§6)."""
    return status_code is not None and 200 <= status_code < 300


def verdict(
    number: int,
    started_at: datetime,
    status_code: int | None,
    policy: RetryPolicy,
    random: Callable[[], float],
    retry_after: float | None = None,
    final: bool = False,
) -> tuple[datetime | None, str]:
    """What attempt ``number`` leaves its delivery with: when the next attempt is due
    (None: no more) and the outcome, ``succeeded``, ``retrying`` or ``failed``. A failed
    attempt is retried by ``policy`` unless ``final`` (410 Gone, the webhook deleted) or
    the schedule is used up. A function of the attempt alone: recording it needs no read
    of the delivery."""
    if succeeded(status_code):
        return None, "succeeded"
    next_at = None if final else policy.next_attempt_at(number, started_at, random, retry_after)
    return next_at, ("retrying" if next_at else "failed")


class Delivery(Aggregate):
    """One envelope on its way to one webhook, with the record of every attempt.

    Its versions are fixed by its attempts: ``Scheduled`` is version 1 and attempt N is
    version N + 1, so an attempt can be recorded without reading the delivery (`attempted`)
    and a second record of the same attempt is refused by the event store."""

    @dataclass(frozen=True)
    class Scheduled(Aggregate.Created):
        delivery_id: UUID
        envelope_id: UUID
        event_id: str
        event_type: str
        store_id: UUID
        webhook_id: UUID
        due_at: datetime
        replay: bool
        actor: Actor
        # The envelope's entity and log position: what ordered delivery waits on.
        entity_id: UUID | None
        position: int | None

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["entity_id"] = None
            state["position"] = None

    @dataclass(frozen=True)
    class Attempted(Aggregate.Event):
        """An attempt, as recorded. Version 2 added ``response_body_encoding``."""

        webhook_id: UUID
        store_id: UUID
        event_id: str
        number: int
        started_at: datetime
        duration_ms: float
        status_code: int | None
        error: str | None
        detail: str | None
        response_headers: dict[str, str]
        response_body: str
        next_attempt_at: datetime | None
        outcome: str
        response_body_encoding: BodyEncoding

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            # Version 1 kept the body as text decoded with replacement characters, NUL
            # included — which PostgreSQL's text cannot hold. Such a body becomes base64
            # of that text's UTF-8 bytes; any other stays text.
            body = state.get("response_body") or ""
            if "\x00" in body:
                state["response_body"] = base64.b64encode(body.encode("utf-8")).decode("ascii")
                state["response_body_encoding"] = "base64"
            else:
                state["response_body_encoding"] = "text"

    @staticmethod
    def create_id(delivery_id: UUID) -> UUID:
        return delivery_id

    @event(Scheduled)
    def __init__(
        self,
        delivery_id: UUID,
        envelope_id: UUID,
        event_id: str,
        event_type: str,
        store_id: UUID,
        webhook_id: UUID,
        due_at: datetime,
        replay: bool,
        actor: Actor,
        entity_id: UUID | None = None,
        position: int | None = None,
    ) -> None:
        self.envelope_id = envelope_id
        self.event_id = event_id
        self.event_type = event_type
        self.store_id = store_id
        self.webhook_id = webhook_id
        self.replay = replay
        self.requested_by = actor
        self.entity_id = entity_id
        self.position = position
        self.attempts: list[Attempt] = []
        self.status = "pending"
        self.next_attempt_at: datetime | None = due_at

    @property
    def finished(self) -> bool:
        return self.status != "pending"

    def record_attempt(self, **attempt: Any) -> bool:
        """Record an attempt on this delivery in memory (its arguments: `attempted`'s,
        but the delivery's); False when that attempt was recorded already."""
        if any(a.number == attempt["number"] for a in self.attempts):
            return False
        if self.finished:
            raise InvalidTransition(f"delivery {self.id} is already {self.status}")
        event = Delivery.attempted(
            self.id,
            webhook_id=self.webhook_id,
            store_id=self.store_id,
            event_id=self.event_id,
            **attempt,
        )
        self._attempted(**_fields(event))
        return True

    @staticmethod
    def attempted(
        delivery_id: UUID,
        *,
        webhook_id: UUID,
        store_id: UUID,
        event_id: str,
        number: int,
        started_at: datetime,
        duration_ms: float,
        status_code: int | None,
        error: str | None,
        detail: str | None,
        response_headers: dict[str, str],
        response_body: str,
        policy: RetryPolicy,
        random: Callable[[], float],
        retry_after: float | None = None,
        final: bool = False,
        response_body_encoding: BodyEncoding = "text",
    ) -> Delivery.Attempted:
        """The event of attempt ``number`` of a delivery, made without reading it: at
        version ``number + 1`` (see the class). Its retry is decided by `verdict`. The
        event store refuses it for an attempt recorded already; infrastructure's
        schedule refuses it for a delivery not due for that attempt."""
        next_at, outcome = verdict(
            number, started_at, status_code, policy, random, retry_after, final
        )
        return Delivery.Attempted(
            originator_id=delivery_id,
            originator_version=number + 1,
            timestamp=Delivery.Attempted.create_timestamp(),
            webhook_id=webhook_id,
            store_id=store_id,
            event_id=event_id,
            number=number,
            started_at=started_at,
            duration_ms=duration_ms,
            status_code=status_code,
            error=error,
            detail=detail,
            response_headers=response_headers,
            response_body=response_body,
            next_attempt_at=next_at,
            outcome=outcome,
            response_body_encoding=response_body_encoding,
        )

    @event(Attempted)
    def _attempted(
        self,
        webhook_id: UUID,
        store_id: UUID,
        event_id: str,
        number: int,
        started_at: datetime,
        duration_ms: float,
        status_code: int | None,
        error: str | None,
        detail: str | None,
        response_headers: dict[str, str],
        response_body: str,
        next_attempt_at: datetime | None,
        outcome: str,
        response_body_encoding: BodyEncoding,
    ) -> None:
        self.attempts.append(
            Attempt(
                number,
                started_at,
                duration_ms,
                status_code,
                error,
                detail,
                response_headers,
                response_body,
                next_attempt_at,
                response_body_encoding,
            )
        )
        self.next_attempt_at = next_attempt_at
        self.status = "pending" if outcome == "retrying" else outcome


def _fields(event: Delivery.Attempted) -> dict[str, Any]:
    """An attempt event's own fields (the arguments of `Delivery._attempted`)."""
    common = {"originator_id", "originator_version", "timestamp"}
    return {k: getattr(event, k) for k in event.__dataclass_fields__ if k not in common}


# Short names for code outside this module.
DeliveryScheduled = Delivery.Scheduled
DeliveryAttempted = Delivery.Attempted
EnvelopeCreated = Envelope.Created


@dataclass(frozen=True)
class CircuitPolicy:
    """When to stop hammering an endpoint that keeps failing, and when to probe it again.

    After ``threshold`` consecutive failed attempts the circuit opens: the webhook's
    deliveries are held for a cool-down that doubles with each further failure (up to
    ``max_cooldown``). Once it has passed, one delivery probes the endpoint (half-open);
    a success closes the circuit. A webhook failing for ``disable_after`` without a single
    success is disabled.
    """

    threshold: int = 5
    cooldown: float = 30.0
    max_cooldown: float = 600.0
    disable_after: timedelta = timedelta(days=5)

    def open_until(self, consecutive_failures: int, failed_at: datetime) -> datetime | None:
        if consecutive_failures < self.threshold:
            return None
        doublings = min(consecutive_failures - self.threshold, 20)
        delay = min(self.cooldown * 2**doublings, self.max_cooldown)
        return failed_at + timedelta(seconds=delay)

    def should_disable(self, failing_since: datetime | None, now: datetime) -> bool:
        return failing_since is not None and now - failing_since >= self.disable_after
