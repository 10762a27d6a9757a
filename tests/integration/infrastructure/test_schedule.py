"""The durable delivery schedule (`infrastructure.schedule`) on both backends: the tables
live beside the dispatch events (the SQLite file in the test's data directory, or the
test's private PostgreSQL schema) and are written in the same transaction as the events.

Time is whatever ``now`` each call is given, so leases and due times are checked without
waiting for them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from eventsourcing.persistence import PersistenceError
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder

from application.dispatch import AttemptResult
from domain.customer import Customer
from domain.delivery import delivery_id_of, envelope_id_of, event_id_of
from domain.values import Actor
from infrastructure.bootstrap import Services, build
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
def schedule(services: Services) -> Schedule:
    return services.schedule()


@pytest.fixture
def other_process(settings: Settings) -> Iterator[Services]:
    """The same storage opened again, as another process would."""
    opened = build(settings, jitter=lambda: 0.5)
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

    def result(
        self, delivery_id: UUID, number: int, status: int | None, at: datetime
    ) -> AttemptResult:
        ref = self.services.dispatch.ref(delivery_id)
        return AttemptResult(ref, number, at, 10.0, status, "connection" if not status else None)

    def attempt(self, delivery_id: UUID, number: int, status: int | None, at: datetime) -> None:
        changed = self.services.dispatch.record_attempts(
            [self.result(delivery_id, number, status, at)]
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


def rows(schedule: Schedule) -> dict[UUID, tuple[int, float, float | None]]:
    """Every due row: delivery -> (attempt, due at, lease until)."""
    with schedule._transaction(write=False) as c:  # the test reads the table itself
        c.execute(
            schedule._d.sql(
                "SELECT delivery_id, attempt, due_at, lease_until FROM {t}due_deliveries"
            )
        )
        return {UUID(str(r[0])): (int(r[1]), float(r[2]), r[3]) for r in c.fetchall()}


# Written with the events -----------------------------------------------------------------


def test_a_scheduled_delivery_is_a_due_row_as_soon_as_it_is_recorded(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given two deliveries just recorded (no follower has run)
    first, second_ = shop.deliveries(2)

    # Then each is a row due for attempt 1, with what sending it needs
    assert schedule.pending() == 2
    claimed = schedule.claim(after_processing(), 10, LEASE)
    assert sorted(ids(claimed)) == sorted([first, second_])
    for row in claimed:
        delivery = services.dispatch.delivery(row.delivery_id)
        assert row == Claimed(
            delivery.id, shop.webhook, delivery.envelope_id, shop.store, attempt=1
        )


def test_another_process_sees_the_rows_and_leases_of_the_first(
    schedule: Schedule, other_process: Services, shop: Shop
) -> None:
    # Given two deliveries claimed by this process
    shop.deliveries(2)
    now = after_processing()
    assert len(schedule.claim(now, 10, LEASE)) == 2

    # When another process claims on the same storage
    # Then it sees both rows in flight, and takes none of them
    assert other_process.schedule().pending() == 2
    assert other_process.schedule().in_flight(now) == 2
    assert other_process.schedule().claim(now, 10, LEASE) == []


def test_rows_and_events_commit_together_or_not_at_all(
    services: Services, schedule: Schedule, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a claimed delivery, and an event store whose insert of the events fails at
    # the database after the schedule's rows were written in the same transaction
    (delivery,) = shop.deliveries(1)
    now = after_processing()
    schedule.claim(now, 10, LEASE)
    before = rows(schedule)
    recorder = services.dispatch.recorder

    def fail_on_the_server(curs: Any, *args: Any, **kwargs: Any) -> Any:
        curs.execute("SELECT 1 / 0")  # the server refuses: the transaction is aborted
        return []

    if isinstance(recorder, PostgresApplicationRecorder):
        monkeypatch.setattr(recorder, "_insert_stored_events", fail_on_the_server)
    else:
        monkeypatch.setattr(
            SQLiteApplicationRecorder,
            "_insert_events",
            lambda *a, **k: (_ for _ in ()).throw(sqlite3.OperationalError("disk I/O error")),
        )

    # When its failed attempt is recorded, the save fails
    with pytest.raises(PersistenceError):
        services.dispatch.record_attempts([shop.result(delivery, 1, 500, now)])
    monkeypatch.undo()

    # Then neither the attempt nor its retry row exist: the row is as it was
    assert services.dispatch.delivery(delivery).attempts == []
    assert rows(schedule) == before
    assert schedule.health(shop.webhook).consecutive_failures == 0


def test_an_attempt_is_recorded_only_when_its_delivery_is_due_for_it(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given a delivery that failed once (due for attempt 2) and one that succeeded
    waiting, done = shop.deliveries(2)
    now = after_processing()
    shop.attempt(waiting, 1, 500, now)
    shop.attempt(done, 1, 200, now)
    head = services.dispatch.recorder.max_notification_id()
    before = rows(schedule)

    # When attempts it is not due for are recorded: attempt 1 again, attempt 3, and
    # any attempt of the finished delivery
    refused = services.dispatch.record_attempts(
        [
            shop.result(waiting, 1, 200, now),
            shop.result(waiting, 3, 200, now),
            shop.result(done, 2, 200, now),
        ]
    )

    # Then none is recorded and nothing changes
    assert refused == []
    assert services.dispatch.recorder.max_notification_id() == head
    assert rows(schedule) == before

    # When the attempt it is due for is recorded
    # Then it is
    assert services.dispatch.record_attempts([shop.result(waiting, 2, 200, now)])
    assert schedule.pending() == 0


def test_many_attempts_in_one_save_leave_the_rows_each_would_leave(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given two webhooks and four events delivered to both, all claimed
    other = shop.other()
    a = shop.deliveries(4)
    b = shop.of(other, a)
    now = after_processing()
    assert len(schedule.claim(now, 100, LEASE)) == 8

    # When their first attempts are recorded in one save (a worker's group commit): A1
    # and A3 fail, A2 succeeds, A4 is gone (410), every B fails
    recorded = services.dispatch.record_attempts(
        [
            shop.result(a[0], 1, 500, now),
            shop.result(a[1], 1, 200, now),
            shop.result(a[2], 1, 503, now + timedelta(seconds=1)),
            shop.result(a[3], 1, 410, now),
            *(shop.result(d, 1, 500, now + timedelta(seconds=n)) for n, d in enumerate(b)),
        ]
    )

    # Then all eight are recorded, the failed ones due again 5 s after they started
    # (unleased), the finished ones gone from the schedule
    assert len(recorded) == 8
    due = rows(schedule)
    assert set(due) == {a[0], a[2], *b}
    assert due[a[0]] == (2, pytest.approx((now + timedelta(seconds=5)).timestamp()), None)
    assert due[a[2]][:2] == (2, pytest.approx((now + timedelta(seconds=6)).timestamp()))
    # And each webhook's health counts its outcomes in order: A's last two failed after
    # a success (the 410 counts), B failed four times in a row (closed: threshold 5)
    assert schedule.health(shop.webhook).consecutive_failures == 2
    assert schedule.health(other).consecutive_failures == 4
    assert schedule.health(other).state(now) == "closed"


@pytest.mark.parametrize("workers", [4])
def test_concurrent_group_commits_never_deadlock_and_count_every_outcome(
    settings: Settings, workers: int
) -> None:
    # Given 3 webhooks and 40 events delivered to each, and four processes' recorders
    services = build(settings, jitter=lambda: 0.5)
    others = [build(settings, jitter=lambda: 0.5) for _ in range(workers - 1)]
    try:
        shop = Shop(services)
        hooks = [shop.webhook, shop.other(), shop.other()]
        firsts = shop.deliveries(40)
        deliveries = [d for w in hooks for d in shop.of(w, firsts)]
        now = after_processing()
        results = [shop.result(d, 1, 500, now) for d in deliveries]

        # When they record the failed first attempts at once, each in groups of 10 taken
        # in an order of its own (every group touches all three webhooks' health rows)
        start = threading.Barrier(workers)
        errors: list[BaseException] = []
        apps = [services, *others]

        def record(n: int) -> None:
            mine = results[n::workers]
            mine = mine[::-1] if n % 2 else mine
            try:
                start.wait(timeout=10)
                for i in range(0, len(mine), 10):
                    apps[n].dispatch.record_attempts(mine[i : i + 10])
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=record, args=(n,)) for n in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

        # Then every attempt is recorded once and every webhook counted 40 failures
        assert errors == []
        assert all(not t.is_alive() for t in threads)
        schedule = services.schedule()
        assert {schedule.health(w).consecutive_failures for w in hooks} == {40}
        assert {d: r[0] for d, r in rows(schedule).items()} == dict.fromkeys(deliveries, 2)
    finally:
        for other in others:
            other.close()
        services.close()


# Claiming and leases ----------------------------------------------------------------------


def test_only_due_rows_are_claimed_earliest_first(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given three deliveries; the first failed at `now` and is due again 5 s later
    retried, earlier, later = shop.deliveries(3)
    now = after_processing()
    shop.attempt(retried, 1, 500, now)
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
    now = after_processing()
    assert ids(schedule.claim(now, 10, LEASE)) == [delivery]

    # When its attempt fails at `now` and the schedule catches up
    shop.attempt(delivery, 1, 503, now)

    # Then it is no longer in flight, not due before 5 s, and due at 5 s for attempt 2,
    # well within the old lease
    assert schedule.in_flight(now) == 0
    assert schedule.claim(now + timedelta(seconds=4), 10, LEASE) == []
    (row,) = schedule.claim(now + timedelta(seconds=5), 10, LEASE)
    assert (row.delivery_id, row.attempt) == (delivery, 2)

    # When the second attempt fails too
    shop.attempt(delivery, 2, 500, now + timedelta(seconds=5))

    # Then attempt 3 is due 300 s after the second started
    assert schedule.claim(now + timedelta(seconds=304), 10, LEASE) == []
    (row,) = schedule.claim(now + timedelta(seconds=305), 10, LEASE)
    assert row.attempt == 3


def test_done_deliveries_leave_the_schedule(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given three due rows
    succeeded, gone, waiting = shop.deliveries(3)
    now = after_processing()

    # When one succeeds and one is answered 410 Gone (failed for good)
    shop.attempt(succeeded, 1, 200, now)
    shop.attempt(gone, 1, 410, now)

    # Then only the third is left, and only it is ever claimed
    assert schedule.pending() == 1
    assert ids(schedule.claim(now + timedelta(days=30), 10, LEASE)) == [waiting]


def test_a_delivery_whose_schedule_ran_out_leaves_the_schedule(settings: Settings) -> None:
    # Given a one-retry schedule and a delivery that fails twice
    quick = Settings(**{**settings.__dict__, "retry_schedule": (5.0,)})
    services = build(quick, jitter=lambda: 0.5)
    schedule = services.schedule()
    try:
        shop = Shop(services)
        (delivery,) = shop.deliveries(1)
        now = after_processing()
        shop.attempt(delivery, 1, 500, now)
        shop.attempt(delivery, 2, 500, now + timedelta(seconds=5))

        # When the schedule catches up with all of it at once

        # Then the delivery (failed for good) is not in the schedule
        assert services.dispatch.delivery(delivery).status == "failed"
        assert schedule.pending() == 0
    finally:
        services.close()


def test_postpone_moves_the_due_time_and_ends_the_lease(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given a claimed row
    (delivery,) = shop.deliveries(1)
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
    assert schedule.pending() == 0

    # When it is sent again
    delivery = services.dispatch.delivery(first)
    (sent,) = services.dispatch.send_again(
        shop.store, delivery.event_id, Actor.person("ann@shop.example"), shop.webhook
    )

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

    # Then the circuit is closed and the rest of B's are claimed
    assert schedule.health(other).state(half_open) == "closed"
    rest = schedule.claim(half_open + timedelta(seconds=1), 100, LEASE)
    assert sorted(ids(rest)) == sorted(set(b) - {probe.delivery_id})


def test_a_claim_brings_the_deliveries_in_flight_to_at_most_max_in_flight(
    services: Services, schedule: Schedule, shop: Shop
) -> None:
    # Given six due rows
    shop.deliveries(6)
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
    other = build(settings)
    first, second = services.schedule(), other.schedule()
    try:
        # Given 60 due rows
        deliveries = Shop(services).deliveries(60)
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
        other.close()
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
    schedule = services.schedule()
    dsn, _, query = postgres_url.partition("?")
    try:
        # Given four due rows, two of them locked by another transaction (as a concurrent
        # claim holds the rows it is taking)
        deliveries = Shop(services).deliveries(4)
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
        services.close()


# Upgrading ----------------------------------------------------------------------------------


def test_a_schedule_kept_by_an_earlier_version_is_taken_over(settings: Settings) -> None:
    # Given an installation of an earlier version: its schedule a projection with its
    # own position (embedded: in schedule.sqlite), which had applied the first of two
    # deliveries when the processes stopped
    services = build(settings, jitter=lambda: 0.5)
    shop = Shop(services)
    first, second = shop.deliveries(2)
    head = services.dispatch.recorder.max_notification_id()
    applied_up_to = head - 1  # the second delivery's Scheduled event: not applied yet
    schedule = services.schedule()
    kept = rows(schedule)[first]
    with schedule._transaction() as c:  # the test lays the old tables out itself
        c.execute("DELETE FROM due_deliveries")
    if settings.database_url is not None:
        with schedule._transaction() as c:
            c.execute("CREATE TABLE due_tracking (id bigint PRIMARY KEY, position bigint)")
            c.execute("INSERT INTO due_tracking VALUES (1, %s)", (applied_up_to,))
            c.execute(
                "INSERT INTO due_deliveries (delivery_id, webhook_id, envelope_id, store_id,"
                " attempt, due_at) VALUES (%s, %s, %s, %s, 1, %s)",
                (str(first), str(shop.webhook), "e", str(shop.store), kept[1]),
            )
    else:
        legacy = sqlite3.connect(settings.data_dir / "schedule.sqlite")
        legacy.executescript(
            "CREATE TABLE due_deliveries (delivery_id TEXT PRIMARY KEY, webhook_id TEXT,"
            " envelope_id TEXT, store_id TEXT, attempt INTEGER, due_at REAL, lease_until REAL);"
            "CREATE TABLE webhook_health (webhook_id TEXT PRIMARY KEY, consecutive_failures"
            " INTEGER, failing_since REAL, last_success_at REAL, open_until REAL);"
            "CREATE TABLE due_tracking (id INTEGER PRIMARY KEY, position INTEGER);"
        )
        legacy.execute("INSERT INTO due_tracking VALUES (1, ?)", (applied_up_to,))
        legacy.execute(
            "INSERT INTO due_deliveries VALUES (?, ?, 'e', ?, 1, ?, NULL)",
            (str(first), str(shop.webhook), str(shop.store), kept[1]),
        )
        legacy.commit()
        legacy.close()
    services.close()

    # When this version starts on it
    upgraded = build(settings, jitter=lambda: 0.5)
    try:
        # Then both deliveries are due: the one the old schedule held, and the one it
        # had not applied yet
        due = rows(upgraded.schedule())
        assert set(due) == {first, second}
        assert due[first][:2] == kept[:2]
        # And the old position is gone: starting again changes nothing
        if settings.database_url is None:
            assert not (settings.data_dir / "schedule.sqlite").exists()
    finally:
        upgraded.close()
    again = build(settings, jitter=lambda: 0.5)
    try:
        assert set(rows(again.schedule())) == {first, second}
    finally:
        again.close()


@pytest.mark.postgres
def test_a_process_starting_takes_no_lock_its_running_peers_hold(
    tmp_path: Path, postgres_url: str
) -> None:
    import threading as _threading

    # Given an installation, and a running process in the middle of writes to our tables
    # (a transaction holding the locks a writer holds: ROW EXCLUSIVE)
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url)
    build(settings).close()
    dsn, _, query = postgres_url.partition("?")
    options = f"-c search_path={query.removeprefix('schema=')}"
    tables = [
        "due_deliveries",
        "webhook_health",
        "skipped_events",
        "webround_idempotency",
        "rm_events",
        "rm_deliveries",
    ]
    with psycopg.connect(dsn, options=options) as writer:
        for table in tables:
            writer.execute(f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE")

        # When another process starts (building every application and view)
        started: list[Services] = []
        starting = _threading.Thread(target=lambda: started.append(build(settings)), daemon=True)
        starting.start()
        starting.join(timeout=20)

        # Then it does not wait for that writer (DDL of tables and indexes that exist
        # would, and could deadlock with it)
        assert not starting.is_alive(), "the start waited for a running writer's locks"
        writer.rollback()
    for services in started:
        services.close()
