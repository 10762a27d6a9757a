"""From a recorded store event to a signed, retried, audited delivery at a real receiver.

Every test runs embedded (SQLite, in-process broker) and on PostgreSQL + Redis.
"""

from __future__ import annotations

import json
import time
from typing import Any
from uuid import UUID

import pytest
from jsonschema import Draft202012Validator
from standardwebhooks import Webhook as Verifier

from application.catalog import data_schema
from domain.event_types import EVENT_CLASSES
from domain.values import Actor
from tests.e2e.conftest import Pipeline, wait_until
from tests.support.receiver import RecordedRequest, Reply

ANN = Actor.person("ann@shop.example")


# What drive_every_event_type records: each of the 23 types, one twice, and the stock
# change of the order's reservation.
EVENTS_DRIVEN = 25


def drive_every_event_type(p: Pipeline) -> None:
    """Record at least one event of each of the 23 types through the commerce app."""
    c, store = p.services.commerce, p.store_id
    customer = UUID(c.register_customer(store, "bob@example.com", "Bob", None, ANN)["id"])
    c.update_customer(store, customer, ANN, name="Robert")
    c.verify_customer(store, customer, Actor.system())
    c.save_customer_address(
        store, customer, ANN, line1="1 Main St", city="Berlin", postal_code="10115", country="DE"
    )
    product = UUID(c.create_product(store, "Mug", "A mug", ANN)["id"])
    c.update_product(store, product, ANN, description="A big mug")
    variant = UUID(c.create_variant(store, product, {"color": "red"}, ANN)["id"])
    c.update_variant(store, variant, {"color": "blue"}, ANN)
    sku = UUID(c.create_sku(store, variant, "MUG-1", "19.90", "EUR", 10, ANN)["id"])
    c.change_sku_price(store, sku, "17.50", "EUR", ANN)
    c.change_sku_stock(store, sku, ANN, delta=-2)
    order = UUID(c.place_order(store, customer, "EUR", [(sku, 2)], ANN)["id"])
    c.update_order_status(store, order, "processing", ANN)
    c.pay_order(store, order, "35.00", Actor.system())
    c.refund_order(store, order, "5.00", "scratched", ANN)
    subscription = UUID(c.start_subscription(store, customer, sku, "month", ANN)["id"])
    for action in ("payment-failure", "renew", "pause", "resume", "cancel"):
        c.change_subscription(store, subscription, action, Actor.system(), reason="declined")
    other = UUID(c.start_subscription(store, customer, sku, "year", ANN)["id"])
    c.change_subscription(store, other, "expire", Actor.system())
    c.request_customer_deletion(store, customer, ANN)


def verified(request: RecordedRequest, secret: str) -> dict[str, Any]:
    """The envelope, after the Standard Webhooks library verified its signature."""
    payload: dict[str, Any] = Verifier(secret).verify(request.body, request.headers)
    return payload


def test_every_event_type_arrives_signed_and_matching_its_schema(pipeline: Pipeline) -> None:
    # Given a webhook listening to everything
    webhook = pipeline.webhook(["*"])

    # When the store records an event of every type
    drive_every_event_type(pipeline)

    # Then an envelope of each type arrives, verified by the Standard Webhooks library,
    # whose data validates against the event catalog's schema
    requests = pipeline.receiver.wait_for_requests(EVENTS_DRIVEN, timeout=30)
    assert len(requests) == EVENTS_DRIVEN
    envelopes = [verified(r, webhook["secret"]) for r in requests]
    assert {e["eventType"] for e in envelopes} == set(EVENT_CLASSES)
    for request, envelope in zip(requests, envelopes, strict=True):
        schema = data_schema(envelope["eventType"])
        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        assert not list(validator.iter_errors(envelope["data"])), envelope["eventType"]
        assert envelope["storeId"] == str(pipeline.store_id)
        assert request.headers["webhook-id"] == envelope["eventId"]
        assert request.headers["webround-event-type"] == envelope["eventType"]
        assert request.headers["user-agent"].startswith("webround-webhooks/")
        assert request.headers["content-type"] == "application/json"
    # And initiatedBy is the person, or null for the system
    by_type = {e["eventType"]: e for e in envelopes}
    assert by_type["customer.registered"]["initiatedBy"] == "ann@shop.example"
    assert by_type["order.paid"]["initiatedBy"] is None


def test_a_webhook_gets_only_the_types_it_listens_to(pipeline: Pipeline) -> None:
    # Given one webhook for orders only and one for a single customer event
    orders = pipeline.webhook(["order.*"])
    verified_only = pipeline.webhook(["customer.verified"])

    # When every event type is recorded
    drive_every_event_type(pipeline)

    # Then each webhook's deliveries are exactly of its types
    wait_until(lambda: len(pipeline.deliveries_of(orders["id"])) == 4)
    wait_until(lambda: len(pipeline.deliveries_of(verified_only["id"])) == 1)
    assert {d.event_type for d in pipeline.deliveries_of(orders["id"])} == {
        "order.created",
        "order.status_updated",
        "order.paid",
        "order.refunded",
    }


def test_snapshots_show_the_past_exactly(pipeline: Pipeline) -> None:
    # Given an order for Ann of a SKU at 19.90
    webhook = pipeline.webhook(["order.*"])
    c, store = pipeline.services.commerce, pipeline.store_id
    customer = UUID(c.register_customer(store, "ann@example.com", "Ann", None, ANN)["id"])
    product = UUID(c.create_product(store, "Mug", None, ANN)["id"])
    variant = UUID(c.create_variant(store, product, {"color": "red"}, ANN)["id"])
    sku = UUID(c.create_sku(store, variant, "MUG", "19.90", "EUR", 5, ANN)["id"])
    order = UUID(c.place_order(store, customer, "EUR", [(sku, 1)], ANN)["id"])

    # When the customer is renamed and the SKU repriced, and then the order is paid
    c.update_customer(store, customer, ANN, name="Annabel")
    c.change_sku_price(store, sku, "25.00", "EUR", ANN)
    c.pay_order(store, order, "19.90", ANN)

    # Then the order.created envelope shows the world before the changes (webhooks may
    # arrive in any order, so they are told apart by type)
    envelopes = [verified(r, webhook["secret"]) for r in pipeline.receiver.wait_for_requests(2)]
    first, paid = sorted(envelopes, key=lambda e: e["eventType"] != "order.created")
    assert first["eventType"] == "order.created"
    assert first["data"]["customer"]["name"] == "Ann"
    assert first["data"]["order"]["lines"][0]["sku"]["price"]["amount"] == "19.90"
    # And order.paid shows everything before it: new name, new SKU price, frozen line price
    assert paid["eventType"] == "order.paid"
    assert paid["data"]["customer"]["name"] == "Annabel"
    assert paid["data"]["order"]["lines"][0]["sku"]["price"]["amount"] == "25.00"
    assert paid["data"]["order"]["lines"][0]["unitPrice"]["amount"] == "19.90"
    assert paid["data"]["order"]["amountPaid"]["amount"] == "19.90"
    assert paid["data"]["change"] == {"amount": {"amount": "19.90", "currency": "EUR"}}


def test_a_receiver_failing_twice_then_answering_gets_three_attempts(pipeline: Pipeline) -> None:
    # Given a receiver that fails twice before it answers 200
    webhook = pipeline.webhook(["customer.registered"])
    pipeline.receiver.enqueue(Reply(status=500, body=b"down"), Reply(status=503))

    # When an event is recorded
    pipeline.services.commerce.register_customer(pipeline.store_id, "c@x.example", "C", None, ANN)

    # Then three attempts are recorded and the delivery succeeded
    delivery = wait_until(lambda: _finished(pipeline, webhook["id"]))
    assert delivery.status == "succeeded"
    assert [a.status_code for a in delivery.attempts] == [500, 503, 200]
    assert delivery.attempts[0].response_body == "down"
    assert [a.number for a in delivery.attempts] == [1, 2, 3]
    # And every attempt carried the same webhook-id and body, with its own attempt number
    requests = pipeline.receiver.requests
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1
    assert [r.headers["webround-attempt"] for r in requests] == ["1", "2", "3"]


def test_a_receiver_that_always_fails_ends_failed_after_the_schedule(pipeline: Pipeline) -> None:
    # Given a receiver that always answers 500
    webhook = pipeline.webhook(["customer.registered"])
    pipeline.receiver.behaviour = Reply(status=500)

    # When an event is recorded
    pipeline.services.commerce.register_customer(pipeline.store_id, "d@x.example", "D", None, ANN)

    # Then it is tried once plus once per schedule entry (0.2, 0.2, 0.4 s), then failed
    delivery = wait_until(lambda: _finished(pipeline, webhook["id"]))
    assert delivery.status == "failed"
    assert len(delivery.attempts) == 4
    assert delivery.attempts[-1].next_attempt_at is None
    gaps = [
        (b.started_at - a.started_at).total_seconds()
        for a, b in zip(delivery.attempts, delivery.attempts[1:], strict=False)
    ]
    assert all(gap >= delay * 0.99 for gap, delay in zip(gaps, (0.2, 0.2, 0.4), strict=True))
    assert len(pipeline.receiver.requests) == 4


def test_410_gone_disables_the_webhook_at_once(pipeline: Pipeline) -> None:
    # Given a receiver that answers 410 Gone
    webhook = pipeline.webhook(["customer.registered"])
    pipeline.receiver.behaviour = Reply(status=410)

    # When an event is recorded
    pipeline.services.commerce.register_customer(pipeline.store_id, "e@x.example", "E", None, ANN)

    # Then the delivery failed without retries and the webhook is disabled, with the reason
    delivery = wait_until(lambda: _finished(pipeline, webhook["id"]))
    assert delivery.status == "failed"
    assert len(delivery.attempts) == 1
    read = wait_until(
        lambda: (
            w
            if not (
                w := pipeline.services.webhooks.read_webhook(pipeline.store_id, UUID(webhook["id"]))
            )["enabled"]
            else None
        )
    )
    assert "410" in read["disabledReason"]


def test_a_timeout_is_recorded_as_such(pipeline: Pipeline) -> None:
    # Given a webhook with a 1 s timeout and a receiver that takes 3 s
    webhook = pipeline.webhook(["customer.registered"], timeout_seconds=1)
    pipeline.receiver.enqueue(Reply(status=200, delay=3))

    # When an event is recorded
    pipeline.services.commerce.register_customer(pipeline.store_id, "f@x.example", "F", None, ANN)

    # Then the first attempt is a timeout of about a second, and the retry succeeds
    delivery = wait_until(lambda: _finished(pipeline, webhook["id"]))
    first = delivery.attempts[0]
    assert first.error == "timeout"
    assert first.status_code is None
    assert 900 <= first.duration_ms < 2500
    assert delivery.status == "succeeded"


def test_retry_after_is_honoured(pipeline: Pipeline) -> None:
    # Given a receiver that answers 429 with Retry-After: 1 (the schedule says 0.2 s)
    webhook = pipeline.webhook(["customer.registered"])
    pipeline.receiver.enqueue(Reply(status=429, headers={"retry-after": "1"}))

    # When an event is recorded
    pipeline.services.commerce.register_customer(pipeline.store_id, "g@x.example", "G", None, ANN)

    # Then the second attempt waited the second asked for, not the schedule's 0.2 s
    delivery = wait_until(lambda: _finished(pipeline, webhook["id"]))
    first, second = delivery.attempts
    assert first.status_code == 429
    assert first.response_headers.get("retry-after") == "1"
    assert (second.started_at - first.started_at).total_seconds() >= 0.99
    assert delivery.status == "succeeded"


def test_send_again_resends_the_same_bytes_as_a_replay(pipeline: Pipeline) -> None:
    # Given an event delivered once
    webhook = pipeline.webhook(["customer.registered"])
    pipeline.services.commerce.register_customer(pipeline.store_id, "h@x.example", "H", None, ANN)
    (original,) = pipeline.receiver.wait_for_requests(1)
    event_id = original.headers["webhook-id"]
    time.sleep(1.1)  # so the new signature's timestamp differs

    # When the merchant asks to send it again to that webhook
    sent = pipeline.services.dispatch.send_again(
        pipeline.store_id, event_id, ANN, UUID(webhook["id"])
    )

    # Then the receiver gets the same body and webhook-id with a fresh timestamp and signature
    again = pipeline.receiver.wait_for_requests(2)[1]
    assert again.body == original.body
    assert again.headers["webhook-id"] == event_id
    assert again.headers["webhook-timestamp"] != original.headers["webhook-timestamp"]
    assert again.headers["webhook-signature"] != original.headers["webhook-signature"]
    assert (
        verified(again, webhook["secret"])["envelopeId"] == json.loads(original.body)["envelopeId"]
    )
    # And the new delivery is marked as a replay, with who asked
    replay = pipeline.services.dispatch.delivery(UUID(sent[0]["id"]))
    assert replay.replay is True
    assert replay.requested_by == ANN
    assert again.headers["webround-delivery-id"] == sent[0]["id"]


def test_during_a_rotation_both_secrets_sign(pipeline: Pipeline) -> None:
    # Given a webhook whose secret was just rotated
    webhook = pipeline.webhook(["customer.registered"])
    rotated = pipeline.services.webhooks.rotate_secret(pipeline.store_id, UUID(webhook["id"]), ANN)

    # When an event is delivered
    pipeline.services.commerce.register_customer(pipeline.store_id, "i@x.example", "I", None, ANN)
    (request,) = pipeline.receiver.wait_for_requests(1)

    # Then a receiver holding either secret verifies it: two signatures in one header
    assert len(request.headers["webhook-signature"].split()) == 2
    assert verified(request, webhook["secret"])
    assert verified(request, rotated["secret"])


def test_events_before_a_webhook_existed_are_not_sent_to_it(pipeline: Pipeline) -> None:
    # Given an event recorded before the webhook was created
    pipeline.services.commerce.register_customer(pipeline.store_id, "j@x.example", "J", None, ANN)
    time.sleep(0.05)
    webhook = pipeline.webhook(["customer.registered"])

    # When a second event is recorded
    pipeline.services.commerce.register_customer(pipeline.store_id, "k@x.example", "K", None, ANN)

    # Then only the second one is delivered
    (request,) = pipeline.receiver.wait_for_requests(1)
    time.sleep(0.3)
    assert len(pipeline.receiver.requests) == 1
    assert json.loads(request.body)["data"]["customer"]["email"] == "k@x.example"
    assert len(pipeline.deliveries_of(webhook["id"])) == 1


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_the_basic_flow_on_rabbitmq(rabbitmq_pipeline: Pipeline) -> None:
    # Given a webhook, with PostgreSQL and RabbitMQ underneath
    webhook = rabbitmq_pipeline.webhook(["customer.*"])

    # When a customer registers
    rabbitmq_pipeline.services.commerce.register_customer(
        rabbitmq_pipeline.store_id, "rabbit@x.example", "R", None, ANN
    )

    # Then the signed envelope arrives and the delivery succeeded
    (request,) = rabbitmq_pipeline.receiver.wait_for_requests(1, timeout=20)
    assert verified(request, webhook["secret"])["eventType"] == "customer.registered"
    delivery = wait_until(lambda: _finished(rabbitmq_pipeline, webhook["id"]))
    assert delivery.status == "succeeded"


def _finished(pipeline: Pipeline, webhook_id: str) -> Any:
    deliveries = pipeline.deliveries_of(webhook_id)
    return deliveries[0] if deliveries and deliveries[0].finished else None
