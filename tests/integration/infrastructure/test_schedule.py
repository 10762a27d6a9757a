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

import psycopg
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
    processes them, returning their deliveries in log order (the first webhook's; `other`
    adds a second webhook for everything, whose deliveries `of` finds)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = UUID(services.webhooks.create_store("Shop", SYSTEM)["storeId"])
        created = services.webhooks.create_webhook(self.store, SYSTEM, url=URL, event_types=["*"])
        self.webhook = UUID(created["id"])
        self.count = 0

    def other(self) -> UUID:
        created = self.services.webhooks.create_webhook(
            self.store, SYSTEM, url=URL + "2", event_types=["*"]
        )
        return UUID(created["id"])

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

    def of(self, webhook: UUID, deliveries: list[UUID]) -> list[UUID]:
        """The deliveries to ``webhook`` of the same events as ``deliveries``."""
        dispatch = self.services.dispatch
        return [delivery_id_of(dispatch.delivery(d).envelope_id, webhook) for d in deliveries]

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


def rows(schedule: Schedule) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the schedule's tables, in a stable order."""
    with schedule.db.transaction() as c:
        c.execute("SELECT * FROM due_deliveries ORDER BY delivery_id")
        due = [tuple(row) for row in c.fetchall()]
        c.execute("SELECT * FROM webhook_health ORDER BY webhook_id")
        health = [tuple(row) for row in c.fetchall()]
    return {"due_deliveries": due, "webhook_health": health}


def forget_everything(schedule: Schedule) -> None:
    """Empty the schedule's tables and move its position back to the log's start, as
    though every commit of it had been lost."""
    with schedule.db.transaction() as c:
        c.execute("DELETE FROM due_deliveries")
        c.execute("DELETE FROM webhook_health")
        c.execute("UPDATE due_tracking SET position = 0")


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


def test_one_batch_leaves_the_same_rows_as_one_event_per_batch(
    services: Services, settings: Settings, shop: Shop
) -> None:
    # Given two webhooks, four events delivered to both and claimed (A1..A4, B1..B4)
    other = shop.other()
    a = shop.deliveries(4)
    b = shop.of(other, a)
    now = after_processing()

    # And after that: A1 failed twice, A2 succeeded, A3 failed then succeeded, every B
    # failed, and two new events delivered to both: A6 succeeded, A5 failed, B5 failed
    # twice (the circuit of B opens), B6 not attempted yet
    shop.attempt(a[0], 1, 500, now)
    shop.attempt(a[0], 2, None, now + timedelta(seconds=5))
    shop.attempt(a[1], 1, 200, now + timedelta(seconds=1))
    shop.attempt(a[2], 1, 503, now + timedelta(seconds=2))
    shop.attempt(a[2], 2, 204, now + timedelta(seconds=7))
    for n, delivery in enumerate(b[:4]):
        shop.attempt(delivery, 1, 500, now + timedelta(seconds=n))
    a5, a6 = shop.deliveries(2)
    b5, b6 = shop.of(other, [a5, a6])
    shop.attempt(a6, 1, 200, now + timedelta(seconds=8))
    shop.attempt(a5, 1, 500, now + timedelta(seconds=8))
    shop.attempt(b5, 1, 500, now + timedelta(seconds=8))
    shop.attempt(b5, 2, 500, now + timedelta(seconds=13))

    def apply(limit: int) -> dict[str, list[tuple[Any, ...]]]:
        """Rows after the first eight deliveries one by one, a claim of them all, then
        the rest of the log in batches of ``limit`` events."""
        schedule = open_schedule(settings)
        try:
            forget_everything(schedule)
            for _ in range(8):
                assert schedule.catch_up(services.dispatch, limit=1) == 1
            assert len(schedule.claim(now, 10, LEASE)) == 8
            batches = 0
            while schedule.catch_up(services.dispatch, limit=limit):
                batches += 1
            assert schedule.position() == services.dispatch.recorder.max_notification_id()
            return {"batches": [(batches,)], **rows(schedule)}
        finally:
            schedule.close()

    # When the rest is applied one event per batch, and then from scratch in one batch
    one_by_one = apply(limit=1)
    at_once = apply(limit=1000)

    # Then both leave exactly the same rows
    assert one_by_one.pop("batches") == [(17,)]
    assert at_once.pop("batches") == [(1,)]
    assert at_once == one_by_one
    # And those are the expected ones: A1 at attempt 3, A4 still leased, A5 at attempt 2,
    # every B due again or new, and neither A2, A3 nor A6 (done) in the schedule
    due = {UUID(str(row[0])): (row[4], row[6]) for row in at_once["due_deliveries"]}
    assert set(due) == {a[0], a[3], a5, *b[:4], b5, b6}
    assert due[a[0]][0] == 3
    assert due[a[3]] == (1, pytest.approx(now.timestamp() + LEASE))
    assert due[a5] == (2, None)
    assert due[b5] == (3, None)
    # And B's six failures opened its circuit; A's last attempt failed, after a success
    health = {UUID(str(row[0])): row[1:] for row in at_once["webhook_health"]}
    assert health[other][0] == 6
    assert health[other][3] is not None
    assert health[shop.webhook][0] == 1
    assert health[shop.webhook][2] == pytest.approx((now + timedelta(seconds=8)).timestamp())


def test_a_delivery_scheduled_and_attempted_in_one_batch_gets_its_last_row_or_none(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given three deliveries attempted before the schedule saw them: one succeeded, one
    # failed twice, one failed for good (410 Gone)
    succeeded, failed, gone = shop.deliveries(3)
    now = after_processing()
    shop.attempt(succeeded, 1, 200, now)
    shop.attempt(failed, 1, 500, now)
    shop.attempt(failed, 2, 500, now + timedelta(seconds=5))
    shop.attempt(gone, 1, 410, now)

    # When the schedule catches up with all of it in one batch
    assert schedule.catch_up(services.dispatch) == 7

    # Then only the twice-failed delivery is in the schedule, due for attempt 3 at 300 s
    # after its second attempt
    assert schedule.pending() == 1
    assert schedule.claim(now + timedelta(seconds=304), 10, LEASE) == []
    (row,) = schedule.claim(now + timedelta(seconds=305), 10, LEASE)
    assert (row.delivery_id, row.attempt) == (failed, 3)


def test_a_schedule_whose_last_commits_were_lost_applies_them_again(
    services: Services, settings: Settings, shop: Shop
) -> None:
    # Given a schedule that caught up with two deliveries, then lost its commits (on
    # PostgreSQL its commits do not wait for the WAL flush: a server crash can lose them)
    schedule = Schedule(open_schedule(settings).db, recheck_after=0.0)
    try:
        first = shop.deliveries(2)
        assert schedule.catch_up(services.dispatch) == 2
        forget_everything(schedule)

        # When it catches up with nothing new in the log
        # Then it reads its position again and applies the two again
        assert schedule.catch_up(services.dispatch) == 2
        assert schedule.pending() == 2

        # When it loses them again, and a third delivery is recorded
        forget_everything(schedule)
        third = shop.deliveries(1)

        # Then its next batch applies all three, from where the position really was
        assert schedule.catch_up(services.dispatch) == 3
        assert sorted(ids(schedule.claim(after_processing(), 10, LEASE))) == sorted(first + third)
        assert schedule.position() == services.dispatch.recorder.max_notification_id()
    finally:
        schedule.close()


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


def test_a_webhook_never_has_more_than_its_share_in_flight(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given two webhooks with four due deliveries each, each due half a second after the
    # one before, alternately A's and B's
    other = shop.other()
    a = shop.deliveries(4)
    b = shop.of(other, a)
    schedule.catch_up(services.dispatch)
    now = after_processing()
    for n, (to_a, to_b) in enumerate(zip(a, b, strict=True)):
        schedule.postpone(to_a, now - timedelta(seconds=10 - n))
        schedule.postpone(to_b, now - timedelta(seconds=9.5 - n))

    # When deliveries are claimed two per webhook at most
    claimed = schedule.claim(now, 10, LEASE, per_webhook=2)

    # Then the two oldest of each are, oldest first
    assert ids(claimed) == [a[0], b[0], a[1], b[1]]
    # And while they are in flight no other is
    assert schedule.claim(now, 10, LEASE, per_webhook=2) == []

    # When one of A's succeeds
    shop.attempt(a[0], 1, 200, now)
    schedule.catch_up(services.dispatch)

    # Then one more of A's is claimed, the oldest left, and none of B's
    assert ids(schedule.claim(now, 10, LEASE, per_webhook=2)) == [a[2]]
    # And once the leases run out, the two oldest of each again
    later = now + timedelta(seconds=LEASE + 1)
    assert sorted(ids(schedule.claim(later, 10, LEASE, per_webhook=2))) == sorted(
        [a[1], a[2], b[0], b[1]]
    )


def test_an_open_circuit_holds_its_webhooks_rows_and_a_half_open_one_lets_one_probe(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given a healthy webhook A and a webhook B whose first five deliveries failed at
    # `now` (the circuit's threshold: open for 30 s), each with eight due deliveries
    other = shop.other()
    a = shop.deliveries(8)
    b = shop.of(other, a)
    now = after_processing()
    for delivery in b[:5]:
        shop.attempt(delivery, 1, 500, now)
    schedule.catch_up(services.dispatch)
    assert schedule.health(other).state(now) == "open"
    assert schedule.health(other).open_until == now + timedelta(seconds=30)

    # When deliveries are claimed while B's circuit is open (its retries due since 5 s)
    open_ = now + timedelta(seconds=10)
    claimed = schedule.claim(open_, 100, LEASE)

    # Then all of A's are claimed and none of B's
    assert sorted(ids(claimed)) == sorted(a)
    assert schedule.claim(open_, 100, LEASE) == []

    # When B's cool-down has ended (half-open)
    half_open = now + timedelta(seconds=30)
    assert schedule.health(other).state(half_open) == "half-open"
    (probe,) = schedule.claim(half_open, 100, LEASE)

    # Then one of B's is claimed as a probe, its oldest due, and no other while it is out
    assert probe.delivery_id in b[5:]
    assert schedule.claim(half_open + timedelta(seconds=1), 100, LEASE) == []

    # When the probe succeeds
    shop.attempt(probe.delivery_id, 1, 200, half_open)
    schedule.catch_up(services.dispatch)

    # Then the circuit is closed and the rest of B's are claimed
    assert schedule.health(other).state(half_open) == "closed"
    rest = schedule.claim(half_open + timedelta(seconds=1), 100, LEASE)
    assert sorted(ids(rest)) == sorted(set(b) - {probe.delivery_id})


def test_a_claim_brings_the_deliveries_in_flight_to_at_most_max_in_flight(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given six due rows
    shop.deliveries(6)
    schedule.catch_up(services.dispatch)
    now = after_processing()

    # When up to ten are claimed with at most four in flight
    # Then four are, and none more while they are in flight
    assert len(schedule.claim(now, 10, LEASE, max_in_flight=4)) == 4
    assert schedule.claim(now, 10, LEASE, max_in_flight=4) == []
    assert schedule.claim(now, 10, LEASE, max_in_flight=3) == []  # already over: none
    # And the limit still applies when the room is larger
    assert len(schedule.claim(now, 1, LEASE, max_in_flight=100)) == 1
    assert len(schedule.claim(now, 10, LEASE, max_in_flight=100)) == 1
    assert schedule.in_flight(now) == 6


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


@pytest.mark.postgres
def test_a_claim_on_postgres_takes_at_once_the_rows_no_one_else_holds(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url)
    services = build(settings)
    schedule = open_schedule(settings)
    dsn, _, query = postgres_url.partition("?")
    try:
        # Given four due rows, two of them locked by another transaction (as a concurrent
        # claim holds the rows it is taking)
        deliveries = Shop(services).deliveries(4)
        schedule.catch_up(services.dispatch)
        now = after_processing()
        held = deliveries[:2]
        options = f"-c search_path={query.removeprefix('schema=')}"
        with psycopg.connect(dsn, options=options) as other:
            other.execute(
                "SELECT 1 FROM due_deliveries WHERE delivery_id = ANY(%s) FOR UPDATE",
                ([str(d) for d in held],),
            )

            # When the schedule claims meanwhile
            claimed: list[Claimed] = []
            claiming = threading.Thread(
                target=lambda: claimed.extend(schedule.claim(now, 10, LEASE)), daemon=True
            )
            claiming.start()
            claiming.join(timeout=10)

            # Then it does not wait for those locks (claims waiting for each other's
            # locks could deadlock), and takes the other two
            assert not claiming.is_alive()
            assert sorted(ids(claimed)) == sorted(deliveries[2:])

        # And once the other transaction ended, the two it held are claimed
        assert sorted(ids(schedule.claim(now, 10, LEASE))) == sorted(held)
    finally:
        schedule.close()
        services.close()
