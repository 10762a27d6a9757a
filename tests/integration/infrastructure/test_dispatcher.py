"""The dispatcher's isolation rules on real storage, with time under the test's control:
per-webhook concurrency, the circuit breaker, rate limits and auto-disable; and what a
pass costs: the position it remembers, and one send per pass.

No worker runs: messages the dispatcher would enqueue are collected, and attempts are
recorded directly on the dispatch application, as a worker would.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from application.dispatch import AttemptResult, Dispatch
from application.policies import WebhookPolicies
from domain.delivery import EnvelopeCreated
from domain.values import Actor
from infrastructure.bootstrap import Services, build
from infrastructure.dispatcher import Dispatcher
from infrastructure.schedule import Schedule
from infrastructure.settings import Settings

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class World:
    services: Services
    schedule: Schedule
    dispatcher: Dispatcher
    clock: Clock
    store_id: UUID
    sent: list[dict[str, Any]] = field(default_factory=list)
    sends: int = 0  # calls of the dispatcher's enqueue_many

    def enqueue_many(self, messages: list[dict[str, Any]]) -> None:
        self.sends += 1
        self.sent.extend(messages)

    def webhook(self, **fields: Any) -> UUID:
        created = self.services.webhooks.create_webhook(
            self.store_id,
            Actor.system(),
            url="https://93.184.215.14/hook",
            event_types=["customer.registered"],
            **fields,
        )
        return UUID(created["id"])

    def events(self, count: int) -> None:
        self.clock.advance(seconds=1)  # after the webhooks' creation
        for n in range(count):
            self.services.commerce.register_customer(
                self.store_id,
                f"c{n}-{self.clock.now.timestamp()}@x.example",
                "C",
                None,
                Actor.system(),
            )

    def pass_(self) -> list[dict[str, Any]]:
        """One dispatcher pass (after commits: its followers look); returns the messages
        it enqueued."""
        before = len(self.sent)
        self.dispatcher.nudge()
        self.dispatcher.step()
        return self.sent[before:]

    def fail(self, message: dict[str, Any], status: int = 500) -> None:
        """Record the message's attempt with this answer (a 2xx succeeds)."""
        self.services.dispatch.record_attempts(
            [
                AttemptResult(
                    self.services.dispatch.ref(UUID(message["deliveryId"])),
                    message["attempt"],
                    self.clock.now,
                    10.0,
                    status,
                )
            ]
        )


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    clock = Clock()
    settings = replace(
        settings, retry_schedule=(1, 1, 1, 1, 1, 1, 1, 1), auto_disable_after=5 * 86400
    )
    services = build(settings, clock=clock, jitter=lambda: 0.5)
    schedule = services.schedule()
    world = World(services, schedule, None, clock, UUID(int=0))  # type: ignore[arg-type]
    policies = WebhookPolicies(
        services.webhooks,
        lambda webhook_id: schedule.health(webhook_id).failing_since,
        timedelta(seconds=settings.auto_disable_after),
    )
    world.dispatcher = Dispatcher(
        services.dispatch,
        schedule,
        world.enqueue_many,
        policies=policies.follower(services.dispatch),
        per_webhook=2,
        clock=clock,
    )
    world.store_id = UUID(services.webhooks.create_store("Shop", Actor.system())["storeId"])
    yield world
    services.close()


def by_webhook(messages: list[dict[str, Any]], webhook_id: UUID) -> list[dict[str, Any]]:
    return [m for m in messages if m["webhookId"] == str(webhook_id)]


def envelopes(dispatch: Dispatch) -> list[Any]:
    notifications = dispatch.recorder.select_notifications(start=None, limit=100_000)
    events = [dispatch.mapper.to_domain_event(n) for n in notifications]
    return [e for e in events if isinstance(e, EnvelopeCreated)]


def commerce_head(services: Services) -> int:
    return services.commerce.recorder.max_notification_id() or 0


def test_one_webhook_never_has_more_than_its_share_in_flight(world: World) -> None:
    # Given two webhooks with a concurrency of 2 each, and 5 events
    slow, other = world.webhook(), world.webhook()
    world.events(5)

    # When the dispatcher runs while no attempt has come back
    first = world.pass_()
    second = world.pass_()

    # Then each webhook got exactly 2 in flight, and no more on the next pass
    assert len(by_webhook(first, slow)) == 2
    assert len(by_webhook(first, other)) == 2
    assert second == []


def test_an_endpoint_that_keeps_failing_is_held_then_probed(world: World) -> None:
    # Given a webhook whose endpoint fails, and a healthy one
    bad, good = world.webhook(), world.webhook()
    world.events(8)

    # When the bad endpoint fails five attempts in a row (the circuit's threshold) while
    # the healthy one answers every delivery
    failures = 0
    while failures < 5:
        for message in world.pass_():
            if message["webhookId"] == str(bad):
                world.fail(message)
                failures += 1
            else:
                world.fail(message, status=200)
        world.clock.advance(seconds=2)  # past the 1 s retry
    for message in by_webhook(world.pass_(), good):
        world.fail(message, status=200)
    world.pass_()  # the schedule learns the last outcomes

    # Then its deliveries are held while the circuit is open, visible as such
    health = world.schedule.health(bad)
    assert health.state(world.clock.now) == "open"
    assert health.consecutive_failures >= 5
    assert by_webhook(world.pass_(), bad) == []
    # And the healthy webhook's deliveries still flow
    world.events(1)
    assert len(by_webhook(world.pass_(), good)) == 1
    # And after the cool-down (30 s, doubling with each failure past the threshold)
    # exactly one delivery probes the endpoint
    assert health.open_until is not None
    assert health.open_until - world.clock.now <= timedelta(seconds=60)
    world.clock.now = health.open_until + timedelta(seconds=1)
    probe = by_webhook(world.pass_(), bad)
    assert len(probe) == 1
    assert health.to_json(world.clock.now)["state"] == "half-open"
    # And a success closes the circuit again
    world.services.dispatch.record_attempts(
        [
            AttemptResult(
                world.services.dispatch.ref(UUID(probe[0]["deliveryId"])),
                probe[0]["attempt"],
                world.clock.now,
                5.0,
                204,
            )
        ]
    )
    world.pass_()
    assert world.schedule.health(bad).state(world.clock.now) == "closed"


def test_a_rate_limit_spaces_deliveries_out(world: World) -> None:
    # Given a webhook limited to 1 delivery per second, and 3 events
    limited = world.webhook(rate_limit=1.0)
    world.events(3)

    # When the dispatcher runs at one instant, then a second later
    now = by_webhook(world.pass_(), limited)
    world.clock.advance(seconds=1.01)
    later = by_webhook(world.pass_(), limited)

    # Then one went at once and one more a second later (the rest wait their turn)
    assert len(now) == 1
    assert len(later) == 1


def test_a_webhook_failing_for_five_days_is_disabled_with_its_reason(world: World) -> None:
    # Given a webhook whose every attempt fails, from T0 on
    webhook = world.webhook()
    world.events(1)
    (message,) = by_webhook(world.pass_(), webhook)
    world.fail(message)

    # When its retry fails four days later, it is still enabled
    world.clock.advance(days=4)
    (retry,) = by_webhook(world.pass_(), webhook)
    world.fail(retry)
    world.pass_()
    assert world.services.webhooks.read_webhook(world.store_id, webhook)["enabled"] is True

    # When the next one fails after the fifth day has passed without a success
    world.clock.advance(days=1, seconds=2)
    (last,) = by_webhook(world.pass_(), webhook)
    world.fail(last)
    world.pass_()

    # Then it is disabled, with the reason recorded by the system
    read = world.services.webhooks.read_webhook(world.store_id, webhook)
    assert read["enabled"] is False
    assert "5 days" in read["disabledReason"]
    # And enabling it again is one call, and it starts with a clean record: its next
    # failure does not disable it again
    world.services.webhooks.update_webhook(
        world.store_id, webhook, Actor.person("a@b.example"), enabled=True
    )
    assert world.schedule.health(webhook).failing_since is None
    world.clock.advance(seconds=1)
    (again,) = by_webhook(world.pass_(), webhook)
    world.fail(again)
    world.pass_()
    assert world.services.webhooks.read_webhook(world.store_id, webhook)["enabled"] is True


def test_a_success_within_five_days_keeps_the_webhook(world: World) -> None:
    # Given a webhook that failed at T0 and succeeded on day 3
    webhook = world.webhook()
    world.events(2)
    first, second = by_webhook(world.pass_(), webhook)
    world.fail(first)
    world.clock.advance(days=3)
    world.fail(second, status=200)

    # When its first delivery fails again on day 6
    world.clock.advance(days=3)
    (retry,) = by_webhook(world.pass_(), webhook)
    world.fail(retry)
    world.pass_()

    # Then it is not disabled: it has not failed for five days in a row
    assert world.services.webhooks.read_webhook(world.store_id, webhook)["enabled"] is True


# What a pass costs ------------------------------------------------------------------------


def test_a_pass_sends_its_messages_together(world: World) -> None:
    # Given two webhooks (two deliveries in flight each) and 3 events
    first, second = world.webhook(), world.webhook()
    world.events(3)

    # When the dispatcher makes one pass
    sent = world.pass_()

    # Then the 4 messages it may hand out went in one send, in the order claimed
    assert world.sends == 1
    assert len(by_webhook(sent, first)) == len(by_webhook(sent, second)) == 2
    # And a pass with nothing to hand out sends nothing at all
    assert world.pass_() == []
    assert world.sends == 1


def test_the_position_is_read_once_then_remembered(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a webhook and an event, and the tracking table's reads counted
    world.webhook()
    world.events(1)
    recorder: Any = world.services.dispatch.recorder
    reads = []
    read = recorder.tracking_positions

    def counted(names: list[str]) -> dict[str, int]:
        reads.append(names)
        return read(names)  # type: ignore[no-any-return]

    monkeypatch.setattr(recorder, "tracking_positions", counted)

    # When the dispatcher makes a pass, an event is recorded, it makes another, then idles
    first = world.pass_()
    world.events(1)
    second = world.pass_()
    idle = world.pass_()

    # Then each pass processed the new event once: one message each, nothing when idle
    assert len(first) == len(second) == 1
    assert first[0]["eventId"] != second[0]["eventId"]
    assert idle == []
    # And the positions of every partition were read from the tracking table at once,
    # then known
    assert len(reads) == 1
    assert world.services.dispatch.position == commerce_head(world.services)


def test_a_dispatch_moved_past_by_another_resumes_without_duplicates(
    world: World, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a dispatcher that processed an event (and so remembers its position)
    world.webhook()
    world.events(1)
    assert len(world.pass_()) == 1

    # When another dispatch on the same storage (a standby that was active meanwhile)
    # processes two more events
    world.events(2)
    other = build(settings)
    try:
        assert other.dispatch.process_new_events() == 2
    finally:
        other.close()
    # And one more event is recorded, and the first dispatcher makes three passes
    world.events(1)
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            world.pass_()

    # Then no pass failed, and every event has exactly one envelope
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    created = envelopes(world.services.dispatch)
    assert len(created) == 4
    assert len({e.event_id for e in created}) == 4
    # And it carries on from the head of the store's log
    assert world.services.dispatch.position == commerce_head(world.services)
    world.events(1)
    assert world.services.dispatch.process_new_events() == 1


# One bad item never costs the others their pass (issue #12, item 2) ------------------------


def test_a_poisoned_item_never_stops_another_stores_delivery_in_the_same_pass(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a webhook stored (by an earlier version) with a rate of 1e-300 deliveries a
    # second, whose second delivery's wait no time arithmetic can hold
    poisoned = world.webhook()
    webhook = world.services.webhooks.get_webhook(world.store_id, poisoned)
    webhook._updated(changes={"rate_limit": 1e-300}, actor=Actor.system())  # no check, as then
    world.services.webhooks.save(webhook)
    world.events(2)
    # And another store with a healthy webhook and one event, due in the same pass
    other = UUID(world.services.webhooks.create_store("Other", Actor.system())["storeId"])
    healthy = world.services.webhooks.create_webhook(
        other, Actor.system(), url="https://93.184.215.14/ok", event_types=["*"]
    )["id"]
    world.services.commerce.register_customer(other, "o@x.example", "O", None, Actor.system())

    # When the dispatcher runs one pass
    with caplog.at_level(logging.ERROR, logger="webround.dispatcher"):
        sent = world.pass_()

    # Then the other store's delivery went out in that pass, and so did the first of
    # the poisoned webhook's (its token was there)
    assert {m["webhookId"] for m in sent} == {healthy, str(poisoned)}
    assert len(sent) == 2
    # And the poisoned one was left to its lease, logged by id and error class, without
    # customer data
    (record,) = [r for r in caplog.records if "OverflowError" in r.getMessage()]
    assert str(record.getMessage()).startswith("delivery ")
    assert "@x.example" not in caplog.text
