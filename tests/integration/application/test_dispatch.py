"""The dispatch application on real storage (SQLite and PostgreSQL), without a dispatcher
thread, a worker or a receiver: the tests call `process_new_events` themselves.

Covers exactly-once envelope creation (§6), fan-out to the webhooks that want an event,
exact snapshots as of the event's log position (§5), group-committed attempts with
duplicate detection, and "Send again".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking

from application.directory import WebhookDirectory
from application.dispatch import AttemptResult, DeliveryRef, Dispatch
from application.errors import Conflict, NotFound
from application.follow import Batch, Item
from domain.customer import Customer
from domain.delivery import (
    DeliveryScheduled,
    EnvelopeCreated,
    delivery_id_of,
    envelope_id_of,
    event_id_of,
)
from domain.values import Actor
from infrastructure.bootstrap import Services, build
from infrastructure.history import event_history
from infrastructure.persistence import application_env
from infrastructure.settings import Settings
from projections.envelopes import build_envelope

ANN = Actor.person("ann@shop.example")
SYSTEM = Actor.system()
URL = "https://93.184.215.14/h"  # a public address: no DNS, accepted by the SSRF guard
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def services(settings: Settings, clock: Clock) -> Iterator[Services]:
    built = build(settings, clock=clock, jitter=lambda: 0.5)  # jitter 0.5: no jitter
    yield built
    built.close()


@pytest.fixture
def store(services: Services) -> UUID:
    return UUID(services.webhooks.create_store("Shop", SYSTEM)["storeId"])


# Helpers ----------------------------------------------------------------------------------


def webhook(services: Services, store: UUID, event_types: list[str], **fields: Any) -> UUID:
    created = services.webhooks.create_webhook(
        store, SYSTEM, url=URL, event_types=event_types, **fields
    )
    return UUID(created["id"])


def dispatch_events(dispatch: Dispatch) -> list[Any]:
    notifications = dispatch.recorder.select_notifications(start=None, limit=100_000)
    return [dispatch.mapper.to_domain_event(n) for n in notifications]


def envelopes(dispatch: Dispatch) -> list[Any]:
    return [e for e in dispatch_events(dispatch) if isinstance(e, EnvelopeCreated)]


def scheduled(dispatch: Dispatch) -> list[Any]:
    return [e for e in dispatch_events(dispatch) if isinstance(e, DeliveryScheduled)]


def head(dispatch: Dispatch) -> int:
    return dispatch.recorder.max_notification_id() or 0


def commerce_head(services: Services) -> int:
    return services.commerce.recorder.max_notification_id() or 0


def customer(services: Services, store: UUID, name: str = "Bob") -> UUID:
    email = f"{name.lower()}-{uuid4().hex[:6]}@example.com"
    return UUID(services.commerce.register_customer(store, email, name, None, ANN)["id"])


def process_all(dispatch: Dispatch) -> int:
    total = 0
    while processed := dispatch.process_new_events():
        total += processed
    return total


def body_of(dispatch: Dispatch, store: UUID, entity_id: UUID, version: int) -> dict[str, Any]:
    envelope = dispatch.envelope(store, event_id_of(entity_id, version))
    parsed: dict[str, Any] = json.loads(envelope.body)
    return parsed


def result(
    services: Services, delivery_id: UUID, number: int, status: int | None, **extra: Any
) -> AttemptResult:
    return AttemptResult(
        delivery=services.dispatch.ref(delivery_id),
        number=number,
        started_at=T0 + timedelta(minutes=number),
        duration_ms=12.0,
        status_code=status,
        error=None if status else "connection",
        **extra,
    )


def two_deliveries(services: Services, store: UUID) -> tuple[UUID, UUID]:
    """One event fanned out to two webhooks: the ids of its two deliveries."""
    first, second = webhook(services, store, ["*"]), webhook(services, store, ["customer.*"])
    event_id = event_id_of(customer(services, store), 1)
    assert services.dispatch.process_new_events() == 1
    envelope_id = envelope_id_of(event_id)
    return delivery_id_of(envelope_id, first), delivery_id_of(envelope_id, second)


# Exactly once -----------------------------------------------------------------------------


def test_processing_again_creates_nothing_new(services: Services, store: UUID) -> None:
    # Given a webhook for everything and three store events
    webhook(services, store, ["*"])
    bob = customer(services, store)
    services.commerce.update_customer(store, bob, ANN, name="Robert")
    services.commerce.create_product(store, "Mug", None, ANN)

    # When the dispatch processes the new events
    assert services.dispatch.process_new_events() == 3

    # Then there is one envelope and one delivery per event, and the position is the head
    assert len(envelopes(services.dispatch)) == 3
    assert len(scheduled(services.dispatch)) == 3
    assert services.dispatch.position == commerce_head(services)
    recorded = head(services.dispatch)

    # When it processes again
    # Then nothing is new and nothing more is recorded
    assert services.dispatch.process_new_events() == 0
    assert head(services.dispatch) == recorded
    assert len(envelopes(services.dispatch)) == 3


def test_a_second_dispatch_resumes_after_the_first(
    services: Services, store: UUID, settings: Settings
) -> None:
    # Given a dispatch that processed two events
    webhook(services, store, ["*"])
    customer(services, store, "Ann")
    customer(services, store, "Bob")
    assert services.dispatch.process_new_events() == 2

    # When another process opens a dispatch on the same storage
    other = build(settings)
    try:
        # Then it starts at the first's position and finds nothing to do
        assert other.dispatch.position == services.dispatch.position == commerce_head(services)
        assert other.dispatch.process_new_events() == 0

        # When two more events are recorded and the second dispatch processes them
        customer(services, store, "Cid")
        customer(services, store, "Dee")
        assert other.dispatch.process_new_events() == 2

        # Then the first one sees that position and creates nothing twice
        assert services.dispatch.process_new_events() == 0
        assert services.dispatch.position == commerce_head(services)
    finally:
        other.close()
    created = envelopes(services.dispatch)
    assert len(created) == 4
    assert len({e.event_id for e in created}) == 4
    assert len({e.originator_id for e in scheduled(services.dispatch)}) == 4


def test_deterministic_ids_refuse_a_second_envelope_even_if_the_position_were_lost(
    services: Services, store: UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an event processed once
    webhook(services, store, ["*"])
    customer(services, store)
    assert services.dispatch.process_new_events() == 1
    recorded = head(services.dispatch)

    # When the fan-out is handed that event again, its tracking record allowing it (as
    # if the record had been lost and moved on past it since)
    [notification] = services.commerce.recorder.select_notifications(start=None, limit=10)
    event = services.commerce.mapper.to_domain_event(notification)
    ahead = notification.id + 1000
    again = Batch(
        "commerce",
        [Item(notification, event, ("commerce",))],
        ahead,
        [Tracking("commerce", ahead)],
        {"commerce": notification.id},
    )

    # Then the store refuses the duplicate envelope and records nothing
    with pytest.raises(IntegrityError):
        services.dispatch.fan_out.view.apply(again)
    assert head(services.dispatch) == recorded


def test_250_events_in_batches_of_100_take_three_calls(services: Services, store: UUID) -> None:
    # Given a webhook for everything and 250 store events
    webhook(services, store, ["*"])
    customers = [
        Customer.register(store, f"c{i}@example.com", f"C{i}", None, ANN) for i in range(250)
    ]
    services.commerce.save(*customers)
    positions = [
        n.id for n in services.commerce.recorder.select_notifications(start=None, limit=1000)
    ]
    assert len(positions) == 250

    # When the dispatch processes them 100 at a time
    counts, reached = [], []
    while processed := services.dispatch.process_new_events(limit=100):
        counts.append(processed)
        reached.append(services.dispatch.position)

    # Then it took three calls of 100, 100 and 50, each committing its position
    assert counts == [100, 100, 50]
    assert reached == [positions[99], positions[199], positions[249]]
    # And each event has exactly one envelope, at its own log position, and one delivery
    created = envelopes(services.dispatch)
    assert sorted(e.event_id for e in created) == sorted(event_id_of(c.id, 1) for c in customers)
    assert sorted(e.position for e in created) == positions
    assert len(scheduled(services.dispatch)) == 250


# Fan-out ----------------------------------------------------------------------------------


def test_each_event_goes_to_every_enabled_webhook_that_wants_it(
    services: Services, store: UUID
) -> None:
    # Given webhooks for everything, for orders, for one exact type, a disabled one,
    # and one of another store
    everything = webhook(services, store, ["*"])
    orders = webhook(services, store, ["order.*"])
    exact = webhook(services, store, ["customer.registered"])
    disabled = webhook(services, store, ["*"], enabled=False)
    other_store = UUID(services.webhooks.create_store("Other", SYSTEM)["storeId"])
    foreign = webhook(services, other_store, ["*"])

    # And events of customers, the catalog and an order
    c, s = services.commerce, store
    bob = customer(services, store)
    product = UUID(c.create_product(s, "Mug", None, ANN)["id"])
    variant = UUID(c.create_variant(s, product, {"color": "red"}, ANN)["id"])
    sku = UUID(c.create_sku(s, variant, "MUG", "10.00", "EUR", 5, ANN)["id"])
    order = UUID(c.place_order(s, bob, "EUR", [(sku, 1)], ANN)["id"])
    # And a webhook created only now, followed by one more event
    late = webhook(services, store, ["*"])
    c.pay_order(s, order, "10.00", SYSTEM)

    # When every event is processed at once
    assert process_all(services.dispatch) == 7

    # Then every event has an envelope
    created = envelopes(services.dispatch)
    assert sorted(e.event_type for e in created) == sorted(
        [
            "customer.registered",
            "product.created",
            "variant.created",
            "sku.created",
            "order.created",
            "sku.stock_changed",  # the order's reservation
            "order.paid",
        ]
    )
    # And each webhook got exactly the events it listens to, recorded after it existed
    by_webhook: dict[UUID, list[str]] = {}
    for event in scheduled(services.dispatch):
        by_webhook.setdefault(event.webhook_id, []).append(event.event_type)
    assert sorted(by_webhook[everything]) == sorted(e.event_type for e in created)
    assert sorted(by_webhook[orders]) == ["order.created", "order.paid"]
    assert by_webhook[exact] == ["customer.registered"]
    assert by_webhook[late] == ["order.paid"]
    assert disabled not in by_webhook
    assert foreign not in by_webhook
    # And each first delivery has the id derived from its envelope and webhook, and is due
    # when the event happened, as the system's, not a replay
    envelope_by_id = {e.originator_id: e for e in created}
    for event in scheduled(services.dispatch):
        envelope = envelope_by_id[event.envelope_id]
        assert event.originator_id == delivery_id_of(envelope.originator_id, event.webhook_id)
        assert event.event_id == envelope.event_id
        assert event.store_id == store
        assert event.due_at == envelope.occurred_at
        assert event.replay is False
        assert event.actor == SYSTEM


def test_a_webhook_of_another_store_gets_only_that_stores_events(
    services: Services, store: UUID
) -> None:
    # Given a webhook for everything in another store
    other_store = UUID(services.webhooks.create_store("Other", SYSTEM)["storeId"])
    foreign = webhook(services, other_store, ["*"])

    # When both stores record an event
    customer(services, store)
    theirs = customer(services, other_store)
    assert process_all(services.dispatch) == 2

    # Then the other store's webhook gets only its own store's event
    (delivery,) = scheduled(services.dispatch)
    assert delivery.webhook_id == foreign
    assert delivery.event_id == event_id_of(theirs, 1)


# Exact snapshots --------------------------------------------------------------------------


def test_an_event_processed_after_later_changes_still_shows_the_past(
    services: Services, store: UUID
) -> None:
    # Given an order for Ann of a SKU at 19.90
    c, s = services.commerce, store
    ann = customer(services, store, "Ann")
    product = UUID(c.create_product(s, "Mug", None, ANN)["id"])
    variant = UUID(c.create_variant(s, product, {"color": "red"}, ANN)["id"])
    sku = UUID(c.create_sku(s, variant, "MUG", "19.90", "EUR", 5, ANN)["id"])
    order = UUID(c.place_order(s, ann, "EUR", [(sku, 1)], ANN)["id"])
    # And, before anything is processed, Ann renamed, the SKU repriced, the order paid
    c.update_customer(s, ann, ANN, name="Annabel")
    c.change_sku_price(s, sku, "25.00", "EUR", ANN)
    c.update_product(s, product, ANN, name="Big mug")
    c.pay_order(s, order, "19.90", ANN)

    # When everything is processed at once (the order's stock reservation included)
    assert process_all(services.dispatch) == 10

    # Then order.created shows the world as it was when the order was placed
    created = body_of(services.dispatch, store, order, 1)["data"]
    assert created["customer"]["name"] == "Ann"
    assert created["customer"]["version"] == 1
    line = created["order"]["lines"][0]
    assert line["sku"]["price"]["amount"] == "19.90"
    assert line["sku"]["version"] == 1
    assert line["product"]["name"] == "Mug"
    assert created["order"]["version"] == 1
    assert created["order"]["amountPaid"]["amount"] == "0.00"
    # And order.paid shows everything before it: the new name, price and product name
    paid = body_of(services.dispatch, store, order, 2)["data"]
    assert paid["customer"]["name"] == "Annabel"
    assert paid["order"]["lines"][0]["sku"]["price"]["amount"] == "25.00"
    assert paid["order"]["lines"][0]["product"]["name"] == "Big mug"
    assert paid["order"]["lines"][0]["unitPrice"]["amount"] == "19.90"
    assert paid["order"]["amountPaid"]["amount"] == "19.90"
    # And the SKU's creation shows its product before the rename
    sku_created = body_of(services.dispatch, store, sku, 1)["data"]
    assert sku_created["product"]["name"] == "Mug"
    assert sku_created["sku"]["price"]["amount"] == "19.90"


def test_each_event_of_an_entity_shows_its_own_version_whoever_fanned_out_the_last(
    services: Services, store: UUID
) -> None:
    # Given a customer registered and renamed, fanned out here (the fan-out keeps the
    # entity as of its last event and applies the next one to it, reading nothing)
    ann = customer(services, store, "Ann")
    services.commerce.update_customer(store, ann, ANN, name="Annabel")
    process_all(services.dispatch)
    # And a phone number added, fanned out by another process (its partition moved)
    services.commerce.update_customer(store, ann, ANN, phone="+15550100")
    other = build(services.settings)
    try:
        assert process_all(other.dispatch) == 1
    finally:
        other.close()

    # When this process takes the partition back (reading its position afresh) and
    # fans out a rename
    fan_out = services.dispatch.fan_out
    fan_out.follow_lanes(fan_out.lanes)
    services.commerce.update_customer(store, ann, ANN, name="Annie")
    assert process_all(services.dispatch) == 1

    # Then every envelope shows the customer exactly as of its own event: the last one
    # has the phone that was added where this process did not see it
    expected = [("Ann", None), ("Annabel", None), ("Annabel", "+15550100"), ("Annie", "+15550100")]
    for version, (name, phone) in enumerate(expected, start=1):
        data = body_of(services.dispatch, store, ann, version)["data"]["customer"]
        assert (data["name"], data["phone"], data["version"]) == (name, phone, version)


def test_an_orders_stock_reservation_is_delivered_with_its_snapshot(
    services: Services, store: UUID
) -> None:
    # Given a webhook for SKU events, and an order of 2 of a SKU with 5 in stock
    listener = webhook(services, store, ["sku.*"])
    c, s = services.commerce, store
    product = UUID(c.create_product(s, "Mug", None, ANN)["id"])
    variant = UUID(c.create_variant(s, product, {"color": "red"}, ANN)["id"])
    sku = UUID(c.create_sku(s, variant, "MUG", "19.90", "EUR", 5, ANN)["id"])
    c.place_order(s, customer(services, store), "EUR", [(sku, 2)], ANN)

    # When the events are processed
    process_all(services.dispatch)

    # Then the reservation is a sku.stock_changed envelope like any other: the SKU as the
    # order left it, what changed, and who placed the order
    reserved = body_of(services.dispatch, store, sku, 2)
    assert reserved["eventType"] == "sku.stock_changed"
    assert reserved["initiatedBy"] == "ann@shop.example"
    assert reserved["data"]["sku"]["stock"] == 3
    assert reserved["data"]["change"] == {"quantity": 3, "delta": -2}
    assert [e.event_type for e in scheduled(services.dispatch) if e.webhook_id == listener] == [
        "sku.created",
        "sku.stock_changed",
    ]


def test_a_rebuilt_projection_makes_byte_identical_envelopes(
    services: Services, store: UUID, tmp_path: Path
) -> None:
    # Given envelopes built while the store changed, and a change recorded after them
    c, s = services.commerce, store
    ann = customer(services, store, "Ann")
    product = UUID(c.create_product(s, "Mug", None, ANN)["id"])
    variant = UUID(c.create_variant(s, product, {"color": "red"}, ANN)["id"])
    sku = UUID(c.create_sku(s, variant, "MUG", "19.90", "EUR", 5, ANN)["id"])
    order = UUID(c.place_order(s, ann, "EUR", [(sku, 1)], ANN)["id"])
    c.update_customer(s, ann, ANN, name="Annabel")
    assert process_all(services.dispatch) == 7  # the order's stock reservation included
    c.change_sku_price(s, sku, "25.00", "EUR", ANN)
    originals = {e.event_id: e.body for e in envelopes(services.dispatch)}

    # When a fresh dispatch, on storage of its own, rebuilds the projection from the start
    rebuilt = Dispatch(
        env=application_env(Settings(data_dir=tmp_path / "rebuild"), Dispatch.name),
        commerce=services.commerce,
        directory=WebhookDirectory(services.webhooks),
        history=event_history,
        build_envelope=build_envelope,
    )
    try:
        assert process_all(rebuilt) == 8

        # Then every envelope has the same event id and the very same bytes
        again = {e.event_id: e.body for e in envelopes(rebuilt)}
    finally:
        rebuilt.close()
    assert {k: again[k] for k in originals} == originals
    assert len(again) == 8
    assert json.loads(again[event_id_of(order, 1)])["data"]["customer"]["name"] == "Ann"


# Attempts ---------------------------------------------------------------------------------


def test_attempts_of_several_deliveries_commit_together(
    services: Services, store: UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two deliveries of one event
    failing, healthy = two_deliveries(services, store)
    recorder = services.dispatch.recorder
    writes: list[int] = []
    insert_events = recorder.insert_events

    def counted(*args: Any, **kwargs: Any) -> Any:
        writes.append(len(args[0]))
        return insert_events(*args, **kwargs)

    monkeypatch.setattr(recorder, "insert_events", counted)

    # When a failed attempt on one and a success on the other are recorded in one call
    changed = services.dispatch.record_attempts(
        [result(services, failing, 1, 500, response_body="down"), result(services, healthy, 1, 200)]
    )

    # Then both are recorded, in one write of two events
    assert {e.originator_id for e in changed} == {failing, healthy}
    assert writes == [2]
    # And the failed one waits for attempt 2, 5 s after the first started
    stored = services.dispatch.delivery(failing)
    assert stored.status == "pending"
    assert [(a.number, a.status_code, a.response_body) for a in stored.attempts] == [
        (1, 500, "down")
    ]
    assert stored.next_attempt_at == T0 + timedelta(minutes=1, seconds=5)
    # And the other succeeded
    done = services.dispatch.delivery(healthy)
    assert done.status == "succeeded"
    assert done.next_attempt_at is None


def test_two_attempts_of_one_delivery_in_one_call_are_both_recorded(
    services: Services, store: UUID
) -> None:
    # Given a delivery
    delivery_id, _ = two_deliveries(services, store)

    # When its first two failed attempts are recorded in one call
    changed = services.dispatch.record_attempts(
        [result(services, delivery_id, 1, 500), result(services, delivery_id, 2, 503)]
    )

    # Then both are recorded, and the delivery waits 300 s for the third
    assert [(e.originator_id, e.number) for e in changed] == [(delivery_id, 1), (delivery_id, 2)]
    stored = services.dispatch.delivery(delivery_id)
    assert [a.number for a in stored.attempts] == [1, 2]
    assert stored.next_attempt_at == T0 + timedelta(minutes=2, seconds=300)


def test_a_duplicate_attempt_number_is_ignored(services: Services, store: UUID) -> None:
    # Given a delivery whose attempt 1 failed
    duplicated, other = two_deliveries(services, store)
    services.dispatch.record_attempts([result(services, duplicated, 1, 500)])
    recorded = head(services.dispatch)

    # When attempt 1 is reported again (a redelivered message), now as a success
    # Then nothing changes and nothing is written
    assert services.dispatch.record_attempts([result(services, duplicated, 1, 200)]) == []
    assert head(services.dispatch) == recorded
    stored = services.dispatch.delivery(duplicated)
    assert [(a.number, a.status_code) for a in stored.attempts] == [(1, 500)]
    assert stored.status == "pending"

    # When a duplicate and a new attempt come in one call
    changed = services.dispatch.record_attempts(
        [result(services, duplicated, 1, 200), result(services, other, 1, 200)]
    )

    # Then only the new one is recorded
    assert [e.originator_id for e in changed] == [other]
    assert len(services.dispatch.delivery(duplicated).attempts) == 1


def test_attempts_on_a_finished_delivery_are_ignored(services: Services, store: UUID) -> None:
    # Given a delivery that succeeded and one the receiver answered 410 Gone
    succeeded, gone = two_deliveries(services, store)
    services.dispatch.record_attempts(
        [result(services, succeeded, 1, 200), result(services, gone, 1, 410)]
    )
    assert services.dispatch.delivery(gone).status == "failed"  # 410: no retry
    recorded = head(services.dispatch)

    # When later attempts are reported on them
    changed = services.dispatch.record_attempts(
        [result(services, succeeded, 2, 500), result(services, gone, 2, 200)]
    )

    # Then nothing is recorded: both keep their single attempt and their outcome
    assert changed == []
    assert head(services.dispatch) == recorded
    assert [a.number for a in services.dispatch.delivery(succeeded).attempts] == [1]
    assert services.dispatch.delivery(succeeded).status == "succeeded"
    assert services.dispatch.delivery(gone).status == "failed"


def test_an_attempt_recorded_meanwhile_by_another_worker_is_not_recorded_twice(
    services: Services, store: UUID, settings: Settings
) -> None:
    # Given two deliveries, and another worker (another process) that recorded attempt 1
    # of the first meanwhile (a redelivered message handled twice at once)
    raced, other_delivery = two_deliveries(services, store)
    other = build(settings)
    try:
        other.dispatch.record_attempts([result(services, raced, 1, 500)])
    finally:
        other.close()

    # When this worker records attempt 1 of both in one call
    changed = services.dispatch.record_attempts(
        [result(services, raced, 1, 200), result(services, other_delivery, 1, 200)]
    )

    # Then the raced delivery has the first record of attempt 1 only, and the other
    # delivery's attempt is kept
    assert [e.originator_id for e in changed] == [other_delivery]
    assert [(a.number, a.status_code) for a in services.dispatch.delivery(raced).attempts] == [
        (1, 500)
    ]
    assert services.dispatch.delivery(other_delivery).status == "succeeded"


def test_an_attempt_on_an_unknown_delivery_is_refused(services: Services) -> None:
    # Given an attempt on a delivery that does not exist (a forged or corrupt message)
    unknown = DeliveryRef(uuid4(), uuid4(), uuid4(), "evt_unknown")
    recorded = head(services.dispatch)

    # When it is recorded
    changed = services.dispatch.record_attempts([AttemptResult(unknown, 1, T0, 5.0, 200)])

    # Then nothing is written: no event of a delivery that was never scheduled
    assert changed == []
    assert head(services.dispatch) == recorded
    with pytest.raises(NotFound):
        services.dispatch.delivery(unknown.delivery_id)


def test_a_delivery_scheduled_before_ordering_existed_still_loads(
    services: Services, store: UUID
) -> None:
    # Given a delivery whose Scheduled event was stored in its first form (class version
    # 1: no entity or log position), as installations before this version hold them
    delivery_id, _ = two_deliveries(services, store)
    dispatch = services.dispatch
    current = dispatch.recorder.select_events(delivery_id)[0]
    state = json.loads(current.state)
    assert state.pop("class_version") == 2
    del state["entity_id"], state["position"]
    old = StoredEvent(current.originator_id, 1, current.topic, json.dumps(state).encode())

    # When it is read
    event = dispatch.mapper.to_domain_event(old)

    # Then it is upcast: no entity and no position, everything else as stored
    assert (event.entity_id, event.position) == (None, None)
    assert event.originator_id == delivery_id


# Send again -------------------------------------------------------------------------------


class Sent:
    """A processed customer.registered event and the store's webhooks."""

    def __init__(self, services: Services, store: UUID) -> None:
        self.everything = webhook(services, store, ["*"])
        self.customers = webhook(services, store, ["customer.*"])
        self.orders = webhook(services, store, ["order.*"])
        self.disabled = webhook(services, store, ["*"], enabled=False)
        self.event_id = event_id_of(customer(services, store), 1)
        assert services.dispatch.process_new_events() == 1


@pytest.fixture
def sent(services: Services, store: UUID) -> Sent:
    return Sent(services, store)


def test_send_again_to_one_webhook_is_a_replay_requested_by_the_person(
    services: Services, store: UUID, sent: Sent, clock: Clock
) -> None:
    # Given a processed event, and a moment later
    clock.now = T0 + timedelta(hours=3)

    # When Ann sends it again to one webhook
    answer = services.dispatch.send_again(store, sent.event_id, ANN, sent.everything)

    # Then there is one new delivery, to that webhook
    (new,) = answer
    assert new["webhookId"] == str(sent.everything)
    delivery = services.dispatch.delivery(UUID(new["id"]))
    # And it is not the first delivery, but of the same envelope and event
    envelope_id = envelope_id_of(sent.event_id)
    assert delivery.id != delivery_id_of(envelope_id, sent.everything)
    assert delivery.envelope_id == envelope_id
    assert delivery.event_id == sent.event_id
    assert delivery.event_type == "customer.registered"
    assert delivery.store_id == store
    assert delivery.webhook_id == sent.everything
    # And it is a replay, requested by Ann, due now
    assert delivery.replay is True
    assert delivery.requested_by == ANN
    assert delivery.next_attempt_at == clock.now
    assert delivery.status == "pending"
    assert delivery.attempts == []


def test_sending_again_twice_makes_two_deliveries(
    services: Services, store: UUID, sent: Sent
) -> None:
    # When an event is sent again twice to the same webhook
    first = services.dispatch.send_again(store, sent.event_id, ANN, sent.customers)
    second = services.dispatch.send_again(store, sent.event_id, SYSTEM, sent.customers)

    # Then each time is a delivery of its own, with its own requester
    assert first[0]["id"] != second[0]["id"]
    assert services.dispatch.delivery(UUID(second[0]["id"])).requested_by == SYSTEM


def test_send_again_without_a_webhook_goes_to_every_enabled_matching_one(
    services: Services, store: UUID, sent: Sent
) -> None:
    # When the event is sent again without naming a webhook
    answer = services.dispatch.send_again(store, sent.event_id, ANN)

    # Then it goes to the enabled webhooks that listen to customer.registered: not to the
    # orders webhook, not to the disabled one
    assert sorted(d["webhookId"] for d in answer) == sorted(
        [str(sent.everything), str(sent.customers)]
    )
    for item in answer:
        delivery = services.dispatch.delivery(UUID(item["id"]))
        assert delivery.replay is True
        assert delivery.requested_by == ANN
        assert str(delivery.webhook_id) == item["webhookId"]


def test_send_again_to_a_disabled_webhook_is_a_conflict(
    services: Services, store: UUID, sent: Sent
) -> None:
    # Given the dispatch log as it is
    recorded = head(services.dispatch)

    # When the event is sent again to a disabled webhook
    # Then it is refused, and nothing is recorded
    with pytest.raises(Conflict, match="disabled"):
        services.dispatch.send_again(store, sent.event_id, ANN, sent.disabled)
    assert head(services.dispatch) == recorded


def test_send_again_to_a_deleted_or_foreign_webhook_is_not_found(
    services: Services, store: UUID, sent: Sent
) -> None:
    # Given a deleted webhook and a webhook of another store
    services.webhooks.delete_webhook(store, sent.orders, ANN)
    other_store = UUID(services.webhooks.create_store("Other", SYSTEM)["storeId"])
    foreign = webhook(services, other_store, ["*"])

    # When the event is sent again to either, or to a webhook that never existed
    # Then none is found
    for webhook_id in (sent.orders, foreign, uuid4()):
        with pytest.raises(NotFound):
            services.dispatch.send_again(store, sent.event_id, ANN, webhook_id)


def test_send_again_of_an_unknown_event_is_not_found(
    services: Services, store: UUID, sent: Sent
) -> None:
    # Given an event recorded but not yet processed (it has no envelope yet)
    unprocessed = event_id_of(customer(services, store), 1)

    # When an unknown, malformed or unprocessed event is sent again
    # Then it is not found
    for event_id in ("evt_" + "0" * 32, "nonsense", unprocessed):
        with pytest.raises(NotFound):
            services.dispatch.send_again(store, event_id, ANN)


def test_send_again_of_another_stores_event_is_not_found(
    services: Services, store: UUID, sent: Sent
) -> None:
    # Given another store with a webhook of its own
    other_store = UUID(services.webhooks.create_store("Other", SYSTEM)["storeId"])
    foreign = webhook(services, other_store, ["*"])
    recorded = head(services.dispatch)

    # When that store asks to send this store's event again
    # Then the event is not found for it, and nothing is recorded
    with pytest.raises(NotFound):
        services.dispatch.send_again(other_store, sent.event_id, ANN)
    with pytest.raises(NotFound):
        services.dispatch.send_again(other_store, sent.event_id, ANN, foreign)
    assert head(services.dispatch) == recorded
