"""The delivery schedule as a pure mapping (`application.schedule`): which dispatch events
make a delivery due, due again, or done — on real events of the Delivery aggregate — and
how a batch of changes and outcomes folds into few row operations."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from application.schedule import (
    Change,
    Done,
    Due,
    Folded,
    HealthRecord,
    Outcome,
    Retry,
    fold_changes,
    fold_outcomes,
    outcome_of,
    schedule_change,
)
from domain.customer import Customer
from domain.delivery import CircuitPolicy, Delivery, Envelope, RetryPolicy, delivery_id_of
from domain.values import Actor

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


# Folding a batch --------------------------------------------------------------------------

DELIVERY, WEBHOOK = uuid4(), uuid4()
DUE = Due(DELIVERY, WEBHOOK, uuid4(), uuid4(), NOW)


def retry(number: int, minutes: int = 0) -> Retry:
    return Retry(DELIVERY, number, NOW + timedelta(minutes=minutes))


Row = tuple[int, datetime, bool]  # attempt, due_at, leased


def one_at_a_time(row: Row | None, changes: list[Change]) -> Row | None:
    """The delivery's row after each change is applied on its own, as the SQL statements
    do: a Due inserts unless there is a row, a Retry moves a row to a higher attempt
    (and ends its lease), a Done deletes the row."""
    for change in changes:
        if isinstance(change, Due):
            row = row or (change.attempt, change.due_at, False)
        elif isinstance(change, Retry):
            if row is not None and row[0] < change.next_attempt:
                row = (change.next_attempt, change.due_at, False)
        else:
            row = None
    return row


def folded_into(row: Row | None, folded: Folded) -> Row | None:
    """The row after a folded batch's deletes, then updates, then inserts."""
    if DELIVERY in folded.deletes:
        row = None
    for update in folded.updates:
        if row is not None and row[0] < update.next_attempt:
            row = (update.next_attempt, update.due_at, False)
    for insert in folded.inserts:
        row = row or (insert.attempt, insert.due_at, False)
    return row


def sequences(length: int) -> list[list[Change]]:
    alphabet: list[Change] = [DUE, retry(2, 1), retry(3, 2), retry(2, 3), Done(DELIVERY)]
    return [list(s) for n in range(1, length + 1) for s in itertools.product(alphabet, repeat=n)]


@pytest.mark.parametrize(
    "before",
    [
        pytest.param(None, id="no-row"),
        pytest.param((1, NOW, True), id="leased-row-at-1"),
        pytest.param((2, NOW, False), id="row-at-2"),
        pytest.param((3, NOW, True), id="leased-row-at-3"),
    ],
)
def test_a_folded_batch_leaves_the_row_each_change_in_turn_would(before: Row | None) -> None:
    # Given every sequence of up to four changes of one delivery, and its row before the
    # batch; a Due only where there is no row yet (it comes from the delivery's first
    # event, so no earlier batch made its row)
    cases = [s for s in sequences(4) if not (isinstance(s[0], Due) and before is not None)]
    assert len(cases) > 500

    for changes in cases:
        # When the batch is folded
        folded = fold_changes(changes)

        # Then its row operations leave the row each change applied in turn leaves
        assert folded_into(before, folded) == one_at_a_time(before, changes), changes
        # And that with at most one operation of each kind
        assert len(folded.deletes) <= 1
        assert len(folded.updates) <= 1
        assert len(folded.inserts) <= 1


def test_a_delivery_scheduled_and_done_in_one_batch_needs_no_row() -> None:
    # Given a delivery scheduled, then done, in one batch
    # When the batch is folded
    folded = fold_changes([DUE, Done(DELIVERY)])

    # Then there is nothing to write for it
    assert folded == Folded()


def test_retries_after_a_due_in_one_batch_insert_the_row_at_the_last_attempt() -> None:
    # Given a delivery scheduled, then failed twice, in one batch
    # When the batch is folded
    folded = fold_changes([DUE, retry(2, 1), retry(3, 6)])

    # Then its row is inserted as the last retry left it, and nothing else is written
    assert folded == Folded(inserts=[replace(DUE, attempt=3, due_at=NOW + timedelta(minutes=6))])


def test_retries_of_an_earlier_row_fold_into_one_update_that_an_old_retry_never_undoes() -> None:
    # Given two retries of a row from an earlier batch, the later one for an older attempt
    # When the batch is folded
    folded = fold_changes([retry(3, 2), retry(2, 3)])

    # Then one update moves the row to attempt 3, where its attempt is lower
    assert folded == Folded(updates=[retry(3, 2)])


def test_a_done_row_of_an_earlier_batch_is_deleted_whatever_came_before() -> None:
    # Given a row from an earlier batch, retried then done in this one
    # When the batch is folded
    folded = fold_changes([retry(2, 1), Done(DELIVERY)])

    # Then the row is deleted, and nothing else is written
    assert folded == Folded(deletes=[DELIVERY])


def test_each_delivery_is_folded_on_its_own_in_first_seen_order() -> None:
    # Given changes of three deliveries, interleaved
    first, second, third = uuid4(), uuid4(), uuid4()
    due = Due(second, WEBHOOK, uuid4(), uuid4(), NOW)
    changes: list[Change] = [
        Retry(first, 2, NOW),
        due,
        Done(third),
        Retry(first, 3, NOW),
        Retry(second, 2, NOW),
    ]

    # When the batch is folded
    folded = fold_changes(changes)

    # Then each delivery has its own operation
    assert folded == Folded(
        deletes=[third],
        updates=[Retry(first, 3, NOW)],
        inserts=[replace(due, attempt=2)],
    )


# Folding outcomes into health -------------------------------------------------------------

CIRCUIT = CircuitPolicy(threshold=3, cooldown=30.0, max_cooldown=100.0)


def at(seconds: int, succeeded: bool, webhook_id: UUID = WEBHOOK) -> Outcome:
    return Outcome(webhook_id, succeeded, NOW + timedelta(seconds=seconds))


def test_consecutive_failures_open_the_circuit_at_the_threshold_and_double_its_cool_down() -> None:
    # Given a webhook without a record, and failures one second apart
    failures = [at(s, False) for s in range(5)]

    # When they are folded one by one
    records = [fold_outcomes({}, failures[: n + 1], CIRCUIT)[WEBHOOK] for n in range(5)]

    # Then the circuit stays closed below the threshold, then opens for 30 s, 60 s, 100 s
    # (the maximum) after the failure that opened it; failing since the first failure
    assert [r.consecutive_failures for r in records] == [1, 2, 3, 4, 5]
    assert [r.open_until for r in records] == [
        None,
        None,
        NOW + timedelta(seconds=2 + 30),
        NOW + timedelta(seconds=3 + 60),
        NOW + timedelta(seconds=4 + 100),
    ]
    assert {r.failing_since for r in records} == {NOW}
    assert {r.last_success_at for r in records} == {None}


def test_a_success_closes_the_circuit_and_clears_the_failures() -> None:
    # Given a webhook whose circuit is open
    current = {WEBHOOK: HealthRecord(4, NOW, None, NOW + timedelta(seconds=60))}

    # When a success is folded in, then a failure
    closed = fold_outcomes(current, [at(10, True)], CIRCUIT)[WEBHOOK]
    failed_again = fold_outcomes(current, [at(10, True), at(11, False)], CIRCUIT)[WEBHOOK]

    # Then the success closes the circuit and clears the record but for the success
    assert closed == HealthRecord(0, None, NOW + timedelta(seconds=10), None)
    # And the next failure counts from one, failing since it, the success remembered
    assert failed_again == HealthRecord(
        1, NOW + timedelta(seconds=11), NOW + timedelta(seconds=10), None
    )


def test_outcomes_count_on_from_the_current_record_of_each_webhook_only() -> None:
    # Given two webhooks: one with two failures on record, one without a record, and a
    # third with a record but no outcome in this batch
    other, untouched = uuid4(), uuid4()
    current = {
        WEBHOOK: HealthRecord(2, NOW - timedelta(hours=1), NOW - timedelta(days=1), None),
        untouched: HealthRecord(7, NOW, None, NOW),
    }

    # When a batch of their outcomes is folded, interleaved
    records = fold_outcomes(
        current, [at(1, False), at(2, False, other), at(3, True, other)], CIRCUIT
    )

    # Then the first counts on from its record (third failure: the circuit opens)
    assert records[WEBHOOK] == HealthRecord(
        3, NOW - timedelta(hours=1), NOW - timedelta(days=1), NOW + timedelta(seconds=1 + 30)
    )
    # And the second from an empty one, its last outcome a success
    assert records[other] == HealthRecord(0, None, NOW + timedelta(seconds=3), None)
    # And the webhook without outcomes is not in the result
    assert untouched not in records


def test_folding_in_one_batch_equals_folding_one_outcome_at_a_time() -> None:
    # Given a mix of outcomes of two webhooks
    other = uuid4()
    outcomes = [at(s, s % 4 == 3, WEBHOOK if s % 3 else other) for s in range(20)]

    # When they are folded all at once, and one at a time from each result
    at_once = fold_outcomes({}, outcomes, CIRCUIT)
    one_by_one: dict[UUID, HealthRecord] = {}
    for outcome in outcomes:
        one_by_one.update(fold_outcomes(one_by_one, [outcome], CIRCUIT))

    # Then the records are the same
    assert at_once == one_by_one
