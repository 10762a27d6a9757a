"""Recover and Replay (§6): resending a webhook's failed deliveries, and backfilling events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from application.dispatch import AttemptResult
from domain.values import Actor
from tests.integration.infrastructure.api.conftest import Api

pytestmark = pytest.mark.anyio

LONG_AGO = "2000-01-01T00:00:00Z"


async def make_webhook(api: Api, event_types: list[str]) -> str:
    response = await api.client.post(
        "/v1/webhooks",
        json={"url": "https://93.184.215.14/hook", "eventTypes": event_types},
        headers=api.shop.headers,
    )
    assert response.status_code == 201
    webhook_id: str = response.json()["id"]
    return webhook_id


def deliveries_to(api: Api, webhook_id: str) -> list[Any]:
    return api.services.read_models.query(
        "SELECT delivery_id, event_id, status, replay, requested_by FROM rm_deliveries "
        "WHERE webhook_id = ? ORDER BY position",
        [webhook_id],
    )


def settle(api: Api) -> None:
    api.services.dispatch.process_new_events()
    api.services.read_models.catch_up_all()


async def test_recover_sends_again_every_failed_delivery_in_the_range(api: Api) -> None:
    # Given a webhook with three deliveries: two failed for good, one succeeded
    webhook_id = await make_webhook(api, ["customer.registered"])
    for n in range(3):
        api.services.commerce.register_customer(
            api.shop.store_id, f"r{n}@x.example", "R", None, Actor.system()
        )
    settle(api)
    first = deliveries_to(api, webhook_id)
    now = datetime.now(UTC)
    api.services.dispatch.record_attempts(
        [
            AttemptResult(
                api.services.dispatch.ref(UUID(d["delivery_id"])), 1, now, 5.0, status, final=True
            )
            for d, status in zip(first, (500, 410, 200), strict=True)
        ]
    )
    settle(api)

    # When the merchant recovers the webhook since long ago
    response = await api.client.post(
        f"/v1/webhooks/{webhook_id}/recover", json={"since": LONG_AGO}, headers=api.shop.headers
    )

    # Then the two failed events get new deliveries, marked as replays by the merchant
    assert response.status_code == 202
    assert response.json()["count"] == 2
    settle(api)
    replays = [d for d in deliveries_to(api, webhook_id) if d["replay"]]
    assert sorted(d["event_id"] for d in replays) == sorted(d["event_id"] for d in first[:2])
    assert {d["requested_by"] for d in replays} == {"ann@shop.example"}
    # And the recover is in the audit log with its actor
    audit = await api.client.get(
        "/v1/audit",
        params={"webhookId": webhook_id, "kind": "webhook.recovered"},
        headers=api.shop.headers,
    )
    (entry,) = audit.json()["data"]
    assert entry["actor"] == "ann@shop.example"
    assert "2 failed deliveries" in entry["summary"]


async def test_a_range_that_ended_before_the_failures_recovers_nothing(api: Api) -> None:
    # Given a failed delivery today
    webhook_id = await make_webhook(api, ["customer.registered"])
    api.services.commerce.register_customer(
        api.shop.store_id, "x@x.example", "X", None, Actor.system()
    )
    settle(api)
    (delivery,) = deliveries_to(api, webhook_id)
    api.services.dispatch.record_attempts(
        [
            AttemptResult(
                api.services.dispatch.ref(UUID(delivery["delivery_id"])),
                1,
                datetime.now(UTC),
                5.0,
                500,
                final=True,
            )
        ]
    )
    settle(api)

    # When recovering a range that ended yesterday
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    response = await api.client.post(
        f"/v1/webhooks/{webhook_id}/recover",
        json={"since": LONG_AGO, "until": yesterday},
        headers=api.shop.headers,
    )

    # Then nothing is sent
    assert response.json()["count"] == 0


async def test_replay_backfills_matching_events_of_the_range(api: Api) -> None:
    # Given events recorded before a webhook existed: customers and a product
    for n in range(3):
        api.services.commerce.register_customer(
            api.shop.store_id, f"b{n}@x.example", "B", None, Actor.system()
        )
    api.services.commerce.create_product(api.shop.store_id, "Mug", None, Actor.system())
    settle(api)
    webhook_id = await make_webhook(api, ["customer.*", "product.*"])
    settle(api)
    assert deliveries_to(api, webhook_id) == []

    # When the merchant replays only customer.registered since long ago
    response = await api.client.post(
        f"/v1/webhooks/{webhook_id}/replay",
        json={"since": LONG_AGO, "eventTypes": ["customer.registered"]},
        headers=api.shop.headers,
    )

    # Then the three customer events are backfilled, not the product one
    assert response.status_code == 202
    assert response.json()["count"] == 3
    settle(api)
    assert len(deliveries_to(api, webhook_id)) == 3


async def test_recover_and_replay_refuse_bad_input_and_foreign_webhooks(api: Api) -> None:
    # Given a webhook of the shop
    webhook_id = await make_webhook(api, ["*"])

    # When another store, a bad time, an unknown event type or a disabled webhook is used
    foreign = await api.client.post(
        f"/v1/webhooks/{webhook_id}/recover", json={"since": LONG_AGO}, headers=api.other.headers
    )
    bad_time = await api.client.post(
        f"/v1/webhooks/{webhook_id}/replay", json={"since": "yesterday"}, headers=api.shop.headers
    )
    bad_type = await api.client.post(
        f"/v1/webhooks/{webhook_id}/replay",
        json={"since": LONG_AGO, "eventTypes": ["order.shipped"]},
        headers=api.shop.headers,
    )
    await api.client.patch(
        f"/v1/webhooks/{webhook_id}", json={"enabled": False}, headers=api.shop.headers
    )
    disabled = await api.client.post(
        f"/v1/webhooks/{webhook_id}/replay", json={"since": LONG_AGO}, headers=api.shop.headers
    )

    # Then each gets its clear problem
    assert foreign.status_code == 404
    assert bad_time.status_code == 422
    assert bad_type.status_code == 422
    assert disabled.status_code == 409


async def test_a_range_that_ends_before_it_begins_selects_nothing(api: Api) -> None:
    # Given a webhook
    webhook_id = await make_webhook(api, ["*"])

    # When a recover and a replay name an `until` at or before their `since` (the
    # document allows any two times: JSON Schema cannot say "later than")
    answers = [
        await api.client.post(
            f"/v1/webhooks/{webhook_id}/{action}",
            json={"since": "2030-01-02T00:00:00Z", "until": until},
            headers=api.shop.headers,
        )
        for action in ("recover", "replay")
        for until in ("2030-01-01T00:00:00Z", "2030-01-02T00:00:00Z")
    ]

    # Then each is taken, and says it sent nothing
    assert [(a.status_code, a.json()["count"]) for a in answers] == [(202, 0)] * 4


async def test_a_disable_reason_without_disabling_is_refused(api: Api) -> None:
    # Given an enabled webhook
    webhook_id = await make_webhook(api, ["*"])

    # When a reason is sent without "enabled": false
    response = await api.client.patch(
        f"/v1/webhooks/{webhook_id}",
        json={"disabledReason": "maintenance"},
        headers=api.shop.headers,
    )

    # Then it is refused naming the field, and the webhook stays enabled
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "disabledReason"
    read = await api.client.get(f"/v1/webhooks/{webhook_id}", headers=api.shop.headers)
    assert read.json()["enabled"] is True
