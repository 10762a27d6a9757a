"""Deliveries and the retry schedule of §6."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent

from domain.delivery import (
    DEFAULT_RETRY_SCHEDULE,
    Delivery,
    RetryPolicy,
    delivery_id_of,
    envelope_id_of,
    event_id_of,
    storable_excerpt,
)
from domain.errors import InvalidTransition
from domain.values import Actor

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy((5, 300, 1800))


def middle() -> float:
    return 0.5


def new_delivery() -> Delivery:
    envelope_id = uuid4()
    webhook_id = uuid4()
    return Delivery(
        delivery_id_of(envelope_id, webhook_id),
        envelope_id,
        "evt_x",
        "order.paid",
        uuid4(),
        webhook_id,
        NOW,
        False,
        Actor.system(),
    )


def attempt(delivery: Delivery, number: int, status: int | None, **extra: object) -> bool:
    fields: dict[str, Any] = {
        "number": number,
        "started_at": NOW,
        "duration_ms": 12.5,
        "status_code": status,
        "error": None if status else "timeout",
        "detail": None,
        "response_headers": {},
        "response_body": "",
        "policy": POLICY,
        "random": middle,
    }
    return delivery.record_attempt(**{**fields, **extra})


def test_the_default_schedule_is_the_one_of_section_6() -> None:
    # Given the default policy
    policy = RetryPolicy()

    # Then it waits 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h: ten attempts
    assert DEFAULT_RETRY_SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    assert policy.max_attempts == 10


@pytest.mark.parametrize(("draw", "factor"), [(0.0, 0.8), (0.5, 1.0), (0.999999, 1.2)])
def test_retries_are_jittered_by_twenty_percent(draw: float, factor: float) -> None:
    # Given a failed first attempt
    # When the next attempt is scheduled with a given random draw
    at = POLICY.next_attempt_at(1, NOW, lambda: draw)

    # Then it is 5 s ± 20% later
    assert at is not None
    assert (at - NOW).total_seconds() == pytest.approx(5 * factor, rel=1e-4)


def test_the_schedule_ends_after_its_last_entry() -> None:
    # Given a schedule of three delays (four attempts)
    # When the fourth attempt fails
    # Then there is no next attempt
    assert POLICY.next_attempt_at(3, NOW, middle) is not None
    assert POLICY.next_attempt_at(4, NOW, middle) is None


@pytest.mark.parametrize(("given", "expected"), [(7, 7), (0, 1), (10**9, 86400)])
def test_retry_after_replaces_the_delay_within_bounds(given: float, expected: float) -> None:
    # Given a receiver asking to wait ``given`` seconds
    # When the next attempt is scheduled
    at = POLICY.next_attempt_at(1, NOW, middle, retry_after=given)

    # Then its wait is honoured, clamped to [1 s, 24 h]
    assert at == NOW + timedelta(seconds=expected)


def test_a_success_ends_the_delivery() -> None:
    # Given a delivery that failed once
    delivery = new_delivery()
    attempt(delivery, 1, 500)
    assert delivery.status == "pending"
    assert delivery.next_attempt_at == NOW + timedelta(seconds=5)

    # When the second attempt succeeds
    attempt(delivery, 2, 204)

    # Then it succeeded, with both attempts on record and nothing more due
    assert delivery.status == "succeeded"
    assert [a.status_code for a in delivery.attempts] == [500, 204]
    assert delivery.next_attempt_at is None


def test_exhausting_the_schedule_fails_the_delivery() -> None:
    # Given a delivery whose every attempt fails
    delivery = new_delivery()

    # When all four attempts of the schedule fail
    for number in range(1, 5):
        attempt(delivery, number, None)

    # Then it failed, and a further attempt is refused
    assert delivery.status == "failed"
    assert len(delivery.attempts) == 4
    with pytest.raises(InvalidTransition):
        attempt(delivery, 5, 200)


def test_a_final_attempt_fails_at_once() -> None:
    # Given a fresh delivery
    delivery = new_delivery()

    # When the receiver answers 410 Gone (a final answer)
    attempt(delivery, 1, 410, final=True)

    # Then no retry is scheduled
    assert delivery.status == "failed"
    assert delivery.next_attempt_at is None


def test_recording_the_same_attempt_twice_records_it_once() -> None:
    # Given an attempt recorded once (a redelivered message reports it again)
    delivery = new_delivery()
    assert attempt(delivery, 1, 500)

    # When it is recorded again
    again = attempt(delivery, 1, 500)

    # Then the duplicate is ignored
    assert again is False
    assert len(delivery.attempts) == 1
    assert len(delivery.collect_events()) == 2  # scheduled + one attempt


def test_ids_are_derived_so_reprocessing_cannot_duplicate() -> None:
    # Given the same store event seen twice
    originator, webhook = uuid4(), uuid4()

    # When its ids are derived each time
    first, second = event_id_of(originator, 3), event_id_of(originator, 3)

    # Then they are equal, carry no dot (webhook-id rule), and differ for another version
    assert first == second
    assert "." not in first
    assert first.startswith("evt_")
    assert event_id_of(originator, 4) != first
    assert delivery_id_of(envelope_id_of(first), webhook) == delivery_id_of(
        envelope_id_of(second), webhook
    )


# --- Attempts recorded before the body's encoding was (version 1) --------------------------


def _as_version_1(body: str) -> tuple[Application[UUID], StoredEvent]:
    """An `Attempted` event as version 1 stored it: no class version, no encoding."""
    app: Application[UUID] = Application()
    delivery = new_delivery()
    attempt(delivery, 1, 500, response_body="x")
    stored = app.mapper.to_stored_event(delivery.collect_events()[-1])
    state = json.loads(stored.state)
    del state["class_version"], state["response_body_encoding"]
    state["response_body"] = body
    old = StoredEvent(
        stored.originator_id, stored.originator_version, stored.topic, json.dumps(state).encode()
    )
    return app, old


@pytest.mark.parametrize(
    ("stored_body", "body", "encoding"),
    [
        ("internal error", "internal error", "text"),
        ("\x1f\ufffd\x08\x00\x00binary", "H++/vQgAAGJpbmFyeQ==", "base64"),
    ],
    ids=["text", "with-nul"],
)
def test_an_attempt_recorded_by_version_1_still_loads(
    stored_body: str, body: str, encoding: str
) -> None:
    # Given an attempt stored before attempts said how their body is kept
    app, old = _as_version_1(stored_body)

    # When it is read back
    event: Any = app.mapper.to_domain_event(old)

    # Then its body is text as it was, or — holding a NUL no PostgreSQL text can take —
    # base64 of the text's UTF-8 bytes, marked as such
    assert (event.response_body, event.response_body_encoding) == (body, encoding)
    if encoding == "base64":
        assert base64.b64decode(body).decode() == stored_body


def test_a_new_attempt_records_how_its_body_is_kept() -> None:
    # Given a delivery
    delivery = new_delivery()

    # When an attempt with a binary answer is recorded
    attempt(delivery, 1, 500, response_body="AAE=", response_body_encoding="base64")

    # Then the attempt says its body is base64
    assert delivery.attempts[0].response_body_encoding == "base64"


@pytest.mark.parametrize(
    ("excerpt", "cut", "expected"),
    [
        (b"plain", False, ("plain", "text")),
        ("Zoë\x1b".encode(), False, ("Zoë\x1b", "text")),
        (b"a\x00b", False, ("YQBi", "base64")),
        (b"\xff", False, ("/w==", "base64")),
        ("aé".encode()[:2], True, ("a", "text")),  # a character split by the 16 KiB cut
        ("aé".encode()[:2], False, ("YcM=", "base64")),  # the same bytes, the whole body
    ],
)
def test_an_excerpt_is_kept_as_text_or_base64(
    excerpt: bytes, cut: bool, expected: tuple[str, str]
) -> None:
    assert storable_excerpt(excerpt, cut=cut) == expected
