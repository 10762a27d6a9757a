"""The delivery schedule as a pure mapping (`projections.schedule`): which dispatch events
make a delivery due, due again, or done — on real events of the Delivery aggregate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from domain.customer import Customer
from domain.delivery import Delivery, Envelope, RetryPolicy, delivery_id_of
from domain.values import Actor
from projections.schedule import Done, Due, Outcome, Retry, outcome_of, schedule_change

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy((5, 300))  # three attempts in all


def middle() -> float:
    return 0.5  # no jitter: the delays are exactly the schedule's


def new_delivery() -> Delivery:
    envelope_id, webhook_id = uuid4(), uuid4()
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


def attempt(delivery: Delivery, number: int, status: int | None, **extra: Any) -> Any:
    """Record an attempt started ``number`` minutes after NOW; return its event."""
    recorded = delivery.record_attempt(
        number=number,
        started_at=NOW + timedelta(minutes=number),
        duration_ms=10.0,
        status_code=status,
        error=None if status else "connection",
        detail=None,
        response_headers={},
        response_body="",
        policy=POLICY,
        random=middle,
        **extra,
    )
    assert recorded
    (attempted,) = delivery.collect_events()
    return attempted


def test_a_scheduled_delivery_is_due_at_its_due_time() -> None:
    # Given a new delivery
    delivery = new_delivery()

    # When its Scheduled event is mapped
    (scheduled,) = delivery.collect_events()

    # Then it is due for its first attempt at its due time, with everything to send it
    assert schedule_change(scheduled) == Due(
        delivery_id=delivery.id,
        webhook_id=delivery.webhook_id,
        envelope_id=delivery.envelope_id,
        store_id=delivery.store_id,
        due_at=NOW,
    )


def test_a_failed_attempt_with_a_next_time_is_a_retry_of_the_next_number() -> None:
    # Given a delivery whose first attempt failed with a 500
    delivery = new_delivery()
    delivery.collect_events()
    attempted = attempt(delivery, 1, 500)

    # When the Attempted event is mapped
    # Then the next attempt (number 2) is due 5 s after the first started
    assert schedule_change(attempted) == Retry(
        delivery_id=delivery.id,
        next_attempt=2,
        due_at=NOW + timedelta(minutes=1, seconds=5),
    )


def test_the_second_failure_schedules_attempt_three() -> None:
    # Given a delivery that failed twice
    delivery = new_delivery()
    delivery.collect_events()
    attempt(delivery, 1, 500)
    second = attempt(delivery, 2, None)

    # When the second Attempted event is mapped
    # Then attempt 3 is due 300 s after the second started
    assert schedule_change(second) == Retry(delivery.id, 3, NOW + timedelta(minutes=2, seconds=300))


@pytest.mark.parametrize(
    ("statuses", "extra", "outcome"),
    [
        pytest.param([200], {}, "succeeded", id="success"),
        pytest.param([204], {}, "succeeded", id="success-204"),
        pytest.param([500, 500, 500], {}, "failed", id="schedule-exhausted"),
        pytest.param([500], {"final": True}, "failed", id="final"),
    ],
)
def test_an_attempt_without_a_next_time_is_done(
    statuses: list[int], extra: dict[str, Any], outcome: str
) -> None:
    # Given a delivery whose last attempt leaves nothing more to do
    delivery = new_delivery()
    delivery.collect_events()
    events = [attempt(delivery, n, status, **extra) for n, status in enumerate(statuses, 1)]
    assert delivery.status == outcome

    # When that last Attempted event is mapped
    # Then the delivery is done
    assert events[-1].next_attempt_at is None
    assert schedule_change(events[-1]) == Done(delivery.id)
    # And the attempts before it were retries
    assert all(isinstance(schedule_change(e), Retry) for e in events[:-1])


def test_other_events_change_nothing() -> None:
    # Given an Envelope's creation, a store event, and something that is no event at all
    envelope = Envelope("evt_x", "customer.registered", uuid4(), uuid4(), NOW, 1, "{}")
    customer = Customer.register(uuid4(), "a@example.com", "A", None, Actor.system())
    others = [*envelope.collect_events(), *customer.collect_events(), object(), None]

    # When they are mapped
    # Then none changes the schedule
    assert [schedule_change(e) for e in others] == [None, None, None, None]


@pytest.mark.parametrize(
    ("status", "succeeded"), [(200, True), (299, True), (500, False), (None, False)]
)
def test_each_attempt_is_an_outcome_for_its_webhooks_health(
    status: int | None, succeeded: bool
) -> None:
    # Given an attempt that succeeded or failed
    delivery = new_delivery()
    delivery.collect_events()
    attempted = attempt(delivery, 1, status)

    # When its outcome is taken
    # Then it counts for the delivery's webhook, at the attempt's start
    assert outcome_of(attempted) == Outcome(
        webhook_id=delivery.webhook_id, succeeded=succeeded, at=NOW + timedelta(minutes=1)
    )


def test_only_attempts_have_an_outcome() -> None:
    # Given a delivery's Scheduled event
    (scheduled,) = new_delivery().collect_events()

    # Then it says nothing about the webhook's health
    assert outcome_of(scheduled) is None
    assert outcome_of(object()) is None
