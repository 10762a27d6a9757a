"""Test events (POST /v1/webhooks/{id}/test): a signed, schema-valid sample envelope marked
as a test, delivered and recorded like any other — and never taken for a store event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from jsonschema import Draft202012Validator

from application.catalog import CATALOG
from application.dispatch import AttemptResult
from domain.values import Actor
from tests.integration.infrastructure.api.conftest import Api
from tests.integration.infrastructure.api.test_recover_replay import LONG_AGO, make_webhook, settle

pytestmark = pytest.mark.anyio


async def send_test(api: Api, webhook_id: str, **body: Any) -> Any:
    return await api.client.post(
        f"/v1/webhooks/{webhook_id}/test", json=body or None, headers=api.shop.headers
    )


async def get(api: Api, path: str, **params: Any) -> Any:
    response = await api.client.get(path, params=params, headers=api.shop.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_test_event_is_a_schema_valid_sample_delivered_like_any_other(api: Api) -> None:
    # Given a webhook for order events
    webhook_id = await make_webhook(api, ["order.*"])

    # When the merchant sends it a test order.paid
    response = await send_test(api, webhook_id, eventType="order.paid")

    # Then a test envelope is made, its data valid against the catalog's schema
    assert response.status_code == 202, response.text
    sent = response.json()
    assert sent["eventId"].startswith("evt_test_")
    assert sent["eventType"] == "order.paid"
    envelope = sent["envelope"]
    assert envelope["test"] is True
    assert envelope["eventId"] == sent["eventId"]
    assert envelope["storeId"] == str(api.shop.store_id)
    assert envelope["initiatedBy"] == "ann@shop.example"
    validator = Draft202012Validator(
        CATALOG["order.paid"].schema, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    assert list(validator.iter_errors(envelope["data"])) == []
    # And it is recorded as a delivery to the webhook, visible like any other
    settle(api)
    delivery = await get(api, f"/v1/deliveries/{sent['deliveryId']}")
    assert delivery["webhookId"] == webhook_id
    assert delivery["status"] == "pending"
    assert delivery["test"] is True
    assert delivery["replay"] is False
    assert delivery["requestedBy"] == "ann@shop.example"
    listed = await get(api, "/v1/deliveries", webhookId=webhook_id)
    assert [d["id"] for d in listed["data"]] == [sent["deliveryId"]]
    # And its attempts are recorded on it as on any delivery
    api.services.dispatch.record_attempts(
        [
            AttemptResult(
                api.services.dispatch.ref(UUID(sent["deliveryId"])), 1, datetime.now(UTC), 3.0, 204
            )
        ]
    )
    settle(api)
    event = await get(api, f"/v1/events/{sent['eventId']}")
    assert event["test"] is True
    assert event["envelope"] == envelope
    [group] = event["deliveriesByWebhook"]
    [attempt] = group["deliveries"][0]["attempts"]
    assert (attempt["statusCode"], attempt["outcome"]) == (204, "succeeded")
    # And the audit log says a test was sent, and by whom
    audit = await get(api, "/v1/audit", kind="delivery.test")
    [entry] = audit["data"]
    assert (entry["actor"], entry["summary"]) == ("ann@shop.example", "test order.paid to deliver")


async def test_test_events_are_not_store_events(api: Api) -> None:
    # Given a store event and a test event, both delivered to a webhook that failed them
    webhook_id = await make_webhook(api, ["customer.*"])
    start = await get(api, "/v1/events/feed")  # `webround listen` starts following
    api.services.commerce.register_customer(
        api.shop.store_id, "real@x.example", "Real", None, Actor.system()
    )
    test = (await send_test(api, webhook_id)).json()
    settle(api)
    deliveries = await get(api, "/v1/deliveries", webhookId=webhook_id)
    api.services.dispatch.record_attempts(
        [
            AttemptResult(
                api.services.dispatch.ref(UUID(d["id"])), 1, datetime.now(UTC), 3.0, 500, final=True
            )
            for d in deliveries["data"]
        ]
    )
    settle(api)

    # Then the events list shows the store event only, unless asked for test events
    listed = await get(api, "/v1/events")
    assert [e["eventType"] for e in listed["data"]] == ["customer.registered"]
    assert listed["data"][0]["test"] is False
    tests = await get(api, "/v1/events", test="true")
    assert [e["eventId"] for e in tests["data"]] == [test["eventId"]]
    # And neither the feed of `webround listen` nor replay nor recover include it
    fed = await get(api, "/v1/events/feed", cursor=start["cursor"])
    assert [e["eventType"] for e in fed["data"]] == ["customer.registered"]
    for action in ("replay", "recover"):
        response = await api.client.post(
            f"/v1/webhooks/{webhook_id}/{action}",
            json={"since": LONG_AGO},
            headers=api.shop.headers,
        )
        assert response.json()["count"] == 1, action
    settle(api)
    again = await get(api, "/v1/deliveries", webhookId=webhook_id)
    resent = [d for d in again["data"] if d["replay"]]
    assert {d["eventId"] for d in resent} == {listed["data"][0]["eventId"]}
    # And sending a test event again goes to one webhook named, never to every listener
    refused = await api.client.post(
        f"/v1/events/{test['eventId']}/send-again", headers=api.shop.headers
    )
    assert refused.status_code == 409
    assert "webhookId" in refused.json()["detail"]
    named = await api.client.post(
        f"/v1/events/{test['eventId']}/send-again",
        json={"webhookId": webhook_id},
        headers=api.shop.headers,
    )
    assert named.status_code == 202


async def test_a_test_event_goes_only_where_it_can(api: Api) -> None:
    webhook_id = await make_webhook(api, ["customer.*"])

    # An event type the webhook does not listen to is refused, naming the field
    response = await send_test(api, webhook_id, eventType="order.paid")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "eventType"
    # Another store's webhook does not exist for this key
    other = await api.client.post(f"/v1/webhooks/{webhook_id}/test", headers=api.other.headers)
    assert other.status_code == 404
    # A disabled webhook is not sent to
    await api.client.patch(
        f"/v1/webhooks/{webhook_id}", json={"enabled": False}, headers=api.shop.headers
    )
    disabled = await send_test(api, webhook_id)
    assert disabled.status_code == 409
    # And nothing was recorded for any of these
    settle(api)
    assert (await get(api, "/v1/deliveries", webhookId=webhook_id))["data"] == []
