"""The durable delivery schedule (`infrastructure.schedule`) on both backends: SQLite in the
test's data directory and PostgreSQL in the test's private schema (`open_schedule`).

The schedule follows a real dispatch log; time is whatever ``now`` each call is given, so
leases and due times are checked without waiting for them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from application.dispatch import AttemptResult
from domain.customer import Customer
from domain.delivery import delivery_id_of, envelope_id_of, event_id_of
from domain.values import Actor
from infrastructure.bootstrap import Services, build, open_schedule
from infrastructure.schedule import Claimed, Schedule
from infrastructure.settings import Settings

SYSTEM = Actor.system()
URL = "https://93.184.215.14/h"
LEASE = 30.0


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build(settings, jitter=lambda: 0.5)  # jitter 0.5: delays are the schedule's
    yield built
    built.close()


@pytest.fixture
def schedule(services: Services, settings: Settings) -> Iterator[Schedule]:
    opened = open_schedule(settings)
    yield opened
    opened.close()


@pytest.fixture
def second(services: Services, settings: Settings) -> Iterator[Schedule]:
    """Another schedule on the same storage, as another dispatcher process would open it."""
    opened = open_schedule(settings)
    yield opened
    opened.close()


class Shop:
    """A store with one webhook for everything; each `deliveries(n)` records n events and
    processes them, returning their deliveries in log order."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = UUID(services.webhooks.create_store("Shop", SYSTEM)["storeId"])
        created = services.webhooks.create_webhook(self.store, SYSTEM, url=URL, event_types=["*"])
        self.webhook = UUID(created["id"])
        self.count = 0

    def deliveries(self, n: int) -> list[UUID]:
        customers = []
        for _ in range(n):
            self.count += 1
            customers.append(
                Customer.register(self.store, f"c{self.count}@example.com", "C", None, SYSTEM)
            )
        self.services.commerce.save(*customers)
        while self.services.dispatch.process_new_events():
            pass
        return [
            delivery_id_of(envelope_id_of(event_id_of(c.id, 1)), self.webhook) for c in customers
        ]

    def attempt(self, delivery_id: UUID, number: int, status: int | None, at: datetime) -> None:
        changed = self.services.dispatch.record_attempts(
            [
                AttemptResult(
                    delivery_id, number, at, 10.0, status, "connection" if not status else None
                )
            ]
        )
        assert changed


@pytest.fixture
def shop(services: Services) -> Shop:
    return Shop(services)


def after_processing() -> datetime:
    """A moment when every first delivery recorded so far is due."""
    return datetime.now(UTC) + timedelta(seconds=1)


def ids(claimed: list[Claimed]) -> list[UUID]:
    return [c.delivery_id for c in claimed]


# Catching up ------------------------------------------------------------------------------


def test_catch_up_makes_each_scheduled_delivery_a_due_row(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given two deliveries in the dispatch log
    first, second_ = shop.deliveries(2)

    # When the schedule catches up
    applied = schedule.catch_up(services.dispatch)

    # Then each is a row due for attempt 1, with what sending it needs
    assert applied == 2
    assert schedule.pending() == 2
    claimed = schedule.claim(after_processing(), 10, LEASE)
    assert sorted(ids(claimed)) == sorted([first, second_])
    for row in claimed:
        delivery = services.dispatch.delivery(row.delivery_id)
        assert row == Claimed(
            delivery.id, shop.webhook, delivery.envelope_id, shop.store, attempt=1
        )
    # And the schedule's position is the dispatch log's head
    assert schedule.position() == services.dispatch.recorder.max_notification_id()


def test_catch_up_is_exactly_once(services: Services, schedule: Schedule, shop: Shop) -> None:
    # Given a schedule that caught up with three deliveries
    shop.deliveries(3)
    assert schedule.catch_up(services.dispatch) == 3
    position = schedule.position()

    # When it catches up again with nothing new
    # Then nothing is applied and nothing moves
    assert schedule.catch_up(services.dispatch) == 0
    assert schedule.pending() == 3
    assert schedule.position() == position

    # When two more deliveries are recorded
    shop.deliveries(2)

    # Then only those are applied, and the position advances to the new head
    assert schedule.catch_up(services.dispatch) == 2
    assert schedule.pending() == 5
    assert schedule.position() > position
    assert schedule.position() == services.dispatch.recorder.max_notification_id()


def test_catch_up_in_small_steps_applies_everything_once(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given five deliveries, each envelope before its delivery in the log
    shop.deliveries(5)

    # When the schedule catches up two notifications at a time
    applied, steps = 0, 0
    while step := schedule.catch_up(services.dispatch, limit=2):
        applied, steps = applied + step, steps + 1

    # Then every delivery is one row, and the whole log was read
    assert applied == 5
    assert steps > 1
    assert schedule.pending() == 5
    assert schedule.position() == services.dispatch.recorder.max_notification_id()


def test_a_second_schedule_on_the_same_storage_sees_the_first_ones_rows(
    services: Services, schedule: Schedule, second: Schedule, shop: Shop
) -> None:
    # Given a schedule that caught up with two deliveries
    shop.deliveries(2)
    schedule.catch_up(services.dispatch)

    # When a second schedule opens the same storage
    # Then it sees the same rows and position and has nothing to apply
    assert second.pending() == 2
    assert second.position() == schedule.position()
    assert second.catch_up(services.dispatch) == 0

    # When the second catches up with a new delivery
    (new,) = shop.deliveries(1)
    assert second.catch_up(services.dispatch) == 1

    # Then the first sees it, and neither applies it again
    assert schedule.pending() == 3
    assert schedule.catch_up(services.dispatch) == 0
    # And a row the first claimed is leased for the second as well
    now = after_processing()
    assert len(schedule.claim(now, 10, LEASE)) == 3
    assert second.claim(now, 10, LEASE) == []
    assert second.in_flight(now) == 3
    assert new in ids(schedule.claim(now + timedelta(seconds=LEASE + 1), 10, LEASE))


def test_a_schedule_overtaken_by_another_applies_nothing(
    services: Services,
    schedule: Schedule,
    second: Schedule,
    shop: Shop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a delivery, and a second schedule that read the log just before the first
    # schedule caught up, saw the delivery succeed and removed it
    (delivery,) = shop.deliveries(1)
    now = after_processing()
    recorder = services.dispatch.recorder
    select = recorder.select_notifications
    overtaken: list[bool] = []

    def read_then_get_overtaken(*args: Any, **kwargs: Any) -> Any:
        found = select(*args, **kwargs)
        if not overtaken:
            overtaken.append(True)
            schedule.catch_up(services.dispatch)
            shop.attempt(delivery, 1, 200, now)
            schedule.catch_up(services.dispatch)
        return found

    monkeypatch.setattr(recorder, "select_notifications", read_then_get_overtaken)

    # When the second schedule applies what it read
    # Then it is refused, rather than bring the finished delivery back
    with pytest.raises(RuntimeError, match="another process"):
        second.catch_up(services.dispatch)
    assert overtaken == [True]
    assert second.pending() == 0
    assert second.position() == services.dispatch.recorder.max_notification_id()


# Claiming and leases ----------------------------------------------------------------------


def test_only_due_rows_are_claimed_earliest_first(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given three deliveries; the first failed at `now` and is due again 5 s later
    retried, earlier, later = shop.deliveries(3)
    now = after_processing()
    shop.attempt(retried, 1, 500, now)
    schedule.catch_up(services.dispatch)
    # (and the other two due at distinct moments, the later one listed first)
    schedule.postpone(later, now - timedelta(seconds=1))
    schedule.postpone(earlier, now - timedelta(seconds=2))

    # When rows are claimed before anything was due
    # Then none is
    long_ago = now - timedelta(days=1)
    assert schedule.claim(long_ago, 10, LEASE) == []

    # When rows are claimed one at a time at `now`
    # Then the earliest due comes first, and the retry (not due yet) does not come at all
    assert ids(schedule.claim(now, 1, LEASE)) == [earlier]
    assert ids(schedule.claim(now, 10, LEASE)) == [later]
    assert schedule.claim(now + timedelta(seconds=4.9), 10, LEASE) == []

    # When its due time comes
    (row,) = schedule.claim(now + timedelta(seconds=5), 10, LEASE)

    # Then the retry is claimed, for attempt 2
    assert (row.delivery_id, row.attempt) == (retried, 2)


def test_a_claimed_row_is_not_claimed_again_until_its_lease_runs_out(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given two due rows, claimed at `now` for 30 s
    shop.deliveries(2)
    schedule.catch_up(services.dispatch)
    now = after_processing()
    assert len(schedule.claim(now, 10, LEASE)) == 2

    # When they are claimed again within the lease
    # Then none comes back, and both count as in flight
    assert schedule.claim(now + timedelta(seconds=1), 10, LEASE) == []
    assert schedule.claim(now + timedelta(seconds=LEASE - 0.5), 10, LEASE) == []
    assert schedule.in_flight(now + timedelta(seconds=LEASE - 0.5)) == 2
    assert schedule.pending() == 2

    # When the lease has run out (a worker died with the messages)
    later = now + timedelta(seconds=LEASE + 1)

    # Then nothing is in flight and both are claimed again
    assert schedule.in_flight(later) == 0
    assert len(schedule.claim(later, 10, LEASE)) == 2
    assert schedule.in_flight(later) == 2


def test_released_leases_are_claimable_at_once(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given three due rows, two of them claimed
    shop.deliveries(3)
    schedule.catch_up(services.dispatch)
    now = after_processing()
    assert len(schedule.claim(now, 2, LEASE)) == 2

    # When the leases are released (the in-process broker lost its messages)
    released = schedule.release_leases()

    # Then the two leased rows were released and every row is claimable at once
    assert released == 2
    assert schedule.in_flight(now) == 0
    assert len(schedule.claim(now, 10, LEASE)) == 3
    # And releasing again after claiming all three releases three
    assert schedule.release_leases() == 3
    assert schedule.release_leases() == 0


def test_a_retry_moves_the_due_time_and_clears_the_lease(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given a row claimed at `now` for 30 s
    (delivery,) = shop.deliveries(1)
    schedule.catch_up(services.dispatch)
    now = after_processing()
    assert ids(schedule.claim(now, 10, LEASE)) == [delivery]

    # When its attempt fails at `now` and the schedule catches up
    shop.attempt(delivery, 1, 503, now)
    assert schedule.catch_up(services.dispatch) == 1

    # Then it is no longer in flight, not due before 5 s, and due at 5 s for attempt 2,
    # well within the old lease
    assert schedule.in_flight(now) == 0
    assert schedule.claim(now + timedelta(seconds=4), 10, LEASE) == []
    (row,) = schedule.claim(now + timedelta(seconds=5), 10, LEASE)
    assert (row.delivery_id, row.attempt) == (delivery, 2)

    # When the second attempt fails too
    shop.attempt(delivery, 2, 500, now + timedelta(seconds=5))
    schedule.catch_up(services.dispatch)

    # Then attempt 3 is due 300 s after the second started
    assert schedule.claim(now + timedelta(seconds=304), 10, LEASE) == []
    (row,) = schedule.claim(now + timedelta(seconds=305), 10, LEASE)
    assert row.attempt == 3


def test_done_deliveries_leave_the_schedule(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given three due rows
    succeeded, gone, waiting = shop.deliveries(3)
    schedule.catch_up(services.dispatch)
    now = after_processing()

    # When one succeeds and one is answered 410 Gone (failed for good)
    shop.attempt(succeeded, 1, 200, now)
    shop.attempt(gone, 1, 410, now)
    assert schedule.catch_up(services.dispatch) == 2

    # Then only the third is left, and only it is ever claimed
    assert schedule.pending() == 1
    assert ids(schedule.claim(now + timedelta(days=30), 10, LEASE)) == [waiting]


def test_a_delivery_whose_schedule_ran_out_leaves_the_schedule(settings: Settings) -> None:
    # Given a one-retry schedule and a delivery that fails twice
    quick = Settings(**{**settings.__dict__, "retry_schedule": (5.0,)})
    services = build(quick, jitter=lambda: 0.5)
    schedule = open_schedule(quick)
    try:
        shop = Shop(services)
        (delivery,) = shop.deliveries(1)
        now = after_processing()
        shop.attempt(delivery, 1, 500, now)
        shop.attempt(delivery, 2, 500, now + timedelta(seconds=5))

        # When the schedule catches up with all of it at once
        assert schedule.catch_up(services.dispatch) == 3

        # Then the delivery (failed for good) is not in the schedule
        assert services.dispatch.delivery(delivery).status == "failed"
        assert schedule.pending() == 0
    finally:
        schedule.close()
        services.close()


def test_postpone_moves_the_due_time_and_ends_the_lease(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given a claimed row
    (delivery,) = shop.deliveries(1)
    schedule.catch_up(services.dispatch)
    now = after_processing()
    schedule.claim(now, 10, LEASE)

    # When it is postponed by a minute (e.g. the endpoint's circuit is open)
    schedule.postpone(delivery, now + timedelta(minutes=1))

    # Then it is not in flight, not due before the minute, and due then for the same attempt
    assert schedule.in_flight(now) == 0
    assert schedule.claim(now + timedelta(seconds=59), 10, LEASE) == []
    (row,) = schedule.claim(now + timedelta(minutes=1), 10, LEASE)
    assert (row.delivery_id, row.attempt) == (delivery, 1)


def test_a_replay_is_due_when_it_was_asked_for(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given a delivered event
    (first,) = shop.deliveries(1)
    now = after_processing()
    shop.attempt(first, 1, 200, now)
    schedule.catch_up(services.dispatch)
    assert schedule.pending() == 0

    # When it is sent again
    delivery = services.dispatch.delivery(first)
    (sent,) = services.dispatch.send_again(
        shop.store, delivery.event_id, Actor.person("ann@shop.example"), shop.webhook
    )
    assert schedule.catch_up(services.dispatch) == 1

    # Then the new delivery is a due row for attempt 1
    (row,) = schedule.claim(datetime.now(UTC) + timedelta(seconds=1), 10, LEASE)
    assert (str(row.delivery_id), row.attempt) == (sent["id"], 1)
    assert row.envelope_id == delivery.envelope_id


# Concurrency ------------------------------------------------------------------------------


def claim_concurrently(settings: Settings) -> None:
    """Two schedule instances, two threads each, claim 60 due rows three at a time."""
    services = build(settings)
    first, second = open_schedule(settings), open_schedule(settings)
    try:
        # Given 60 due rows
        deliveries = Shop(services).deliveries(60)
        first.catch_up(services.dispatch)
        now = after_processing()

        # When two schedules claim three at a time, at once, from two threads each
        start = threading.Barrier(4)
        claimed: list[list[UUID]] = [[], [], [], []]
        errors: list[BaseException] = []

        def claim_all(instance: Schedule, into: list[UUID]) -> None:
            try:
                start.wait(timeout=10)
                while batch := instance.claim(now, 3, LEASE):
                    into.extend(ids(batch))
            except BaseException as error:  # reported below, not lost in the thread
                errors.append(error)

        instances = (first, second, first, second)
        threads = [
            threading.Thread(target=claim_all, args=(instance, into))
            for instance, into in zip(instances, claimed, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        first.close()
        second.close()
        services.close()

    # Then no row went to two claimers, and every row went to one
    assert errors == []
    everything = [d for batch in claimed for d in batch]
    assert len(everything) == len(set(everything)), f"{len(everything)} claims of 60 rows"
    assert sorted(everything) == sorted(deliveries)


def test_concurrent_claims_on_sqlite_never_hand_out_a_row_twice(tmp_path: Path) -> None:
    claim_concurrently(Settings(data_dir=tmp_path / "data"))


@pytest.mark.postgres
def test_concurrent_claims_on_postgres_never_hand_out_a_row_twice(
    tmp_path: Path, postgres_url: str
) -> None:
    claim_concurrently(Settings(data_dir=tmp_path / "data", database_url=postgres_url))
