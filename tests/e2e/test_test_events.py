"""A test event reaches the endpoint as any event does: signed, schema-valid, recorded."""

from __future__ import annotations

from uuid import UUID

from jsonschema import Draft202012Validator

from application.catalog import data_schema
from domain.values import Actor
from tests.e2e.conftest import Pipeline, wait_until
from tests.e2e.test_dispatch import verified


def test_a_test_event_arrives_signed_and_its_attempt_is_recorded(pipeline: Pipeline) -> None:
    # Given a webhook for customer events
    webhook = pipeline.webhook(["customer.*"])

    # When a test customer.verified is sent to it
    sent = pipeline.services.dispatch.send_test(
        pipeline.store_id,
        UUID(webhook["id"]),
        Actor.person("ann@shop.example"),
        "customer.verified",
    )

    # Then the endpoint receives it, and the Standard Webhooks library verifies it
    [request] = pipeline.receiver.wait_for_requests(1, timeout=15)
    envelope = verified(request, webhook["secret"])
    assert envelope == sent["envelope"]
    assert envelope["test"] is True
    assert request.headers["webhook-id"] == sent["eventId"]
    assert request.headers["webround-delivery-id"] == sent["deliveryId"]
    # And its data is valid against the catalog's schema of its type
    validator = Draft202012Validator(
        data_schema("customer.verified"), format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    assert list(validator.iter_errors(envelope["data"])) == []
    # And the attempt is recorded on its delivery, as on any other
    delivery = wait_until(
        lambda: (d := pipeline.services.dispatch.delivery(UUID(sent["deliveryId"]))).finished and d
    )
    assert delivery.status == "succeeded"
    assert [a.status_code for a in delivery.attempts] == [200]
