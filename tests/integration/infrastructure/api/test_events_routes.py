"""`POST /v1/events/{eventId}/send-again` over the real API (SPEC §6 "Send again", §8), on
SQLite and PostgreSQL.

Events are recorded through the commerce application and turned into envelopes by calling
`process_new_events` directly: no dispatcher, no worker, no receiver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import httpx
import pytest

from domain.delivery import DeliveryScheduled, envelope_id_of, event_id_of
from domain.values import Actor

if TYPE_CHECKING:
    from tests.integration.infrastructure.api.conftest import Api, Tenant

pytestmark = pytest.mark.anyio

URL = "https://93.184.215.14/h"  # a public address: no DNS needed
ANN = Actor.person("ann@shop.example")  # the shop's key acts for Ann
PROBLEM = "application/problem+json"


# Helpers ----------------------------------------------------------------------------------


async def webhook(
    api: Api, event_types: list[str], tenant: Tenant | None = None, **fields: Any
) -> str:
    body = {"url": URL, "eventTypes": event_types, **fields}
    response = await api.client.post(
        "/v1/webhooks", json=body, headers=(tenant or api.shop).headers
    )
    assert response.status_code == 201, response.text
    webhook_id: str = response.json()["id"]
    return webhook_id


def processed_event(api: Api, tenant: Tenant | None = None) -> str:
    """Record a customer.registered event and make its envelope; its event id."""
    store = (tenant or api.shop).store_id
    customer = api.services.commerce.register_customer(
        store, f"c-{uuid4().hex[:8]}@example.com", "C", None, ANN
    )
    assert api.services.dispatch.process_new_events() >= 1
    return event_id_of(UUID(customer["id"]), 1)


async def send_again(
    api: Api,
    event_id: str,
    body: dict[str, Any] | None = None,
    tenant: Tenant | None = None,
    idempotency_key: str | None = None,
) -> httpx.Response:
    headers = dict((tenant or api.shop).headers)
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return await api.client.post(
        f"/v1/events/{event_id}/send-again",
        json=body if body is not None else {},
        headers=headers,
    )


def replays(api: Api) -> list[Any]:
    """Every delivery recorded as a replay, read from the dispatch log."""
    dispatch = api.services.dispatch
    notifications = dispatch.recorder.select_notifications(start=None, limit=10_000)
    events = [dispatch.mapper.to_domain_event(n) for n in notifications]
    scheduled: list[Any] = [e for e in events if isinstance(e, DeliveryScheduled)]
    return [e for e in scheduled if e.replay]


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    return problem


# Send again -------------------------------------------------------------------------------


async def test_send_again_goes_to_every_enabled_webhook_listening(api: Api) -> None:
    # Given webhooks for everything, for customers, for orders, and a disabled one
    everything = await webhook(api, ["*"])
    customers = await webhook(api, ["customer.*"])
    await webhook(api, ["order.*"])
    await webhook(api, ["*"], enabled=False)
    event_id = processed_event(api)

    # When the event is sent again without naming a webhook
    response = await send_again(api, event_id)

    # Then the answer is 202 with one new delivery per enabled webhook that listens
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["eventId"] == event_id
    assert sorted(d["webhookId"] for d in body["deliveries"]) == sorted([everything, customers])
    # And each is a replay of the same envelope, requested by the key's person
    for item in body["deliveries"]:
        delivery = api.services.dispatch.delivery(UUID(item["id"]))
        assert delivery.replay is True
        assert delivery.requested_by == ANN
        assert delivery.envelope_id == envelope_id_of(event_id)
        assert str(delivery.webhook_id) == item["webhookId"]
    assert len(replays(api)) == 2


async def test_send_again_to_one_webhook(api: Api) -> None:
    # Given two webhooks that both listen to the event
    await webhook(api, ["*"])
    chosen = await webhook(api, ["customer.registered"])
    event_id = processed_event(api)

    # When the event is sent again to one of them
    response = await send_again(api, event_id, {"webhookId": chosen})

    # Then only that webhook gets a new delivery
    assert response.status_code == 202, response.text
    (item,) = response.json()["deliveries"]
    assert item["webhookId"] == chosen
    assert [str(e.originator_id) for e in replays(api)] == [item["id"]]


async def test_a_system_key_may_name_the_person_who_asked(api: Api) -> None:
    # Given the other store's system key and its webhook and event
    chosen = await webhook(api, ["*"], tenant=api.other)
    event_id = processed_event(api, api.other)

    # When it sends the event again on behalf of a named person
    response = await send_again(
        api, event_id, {"webhookId": chosen, "initiatedBy": "ops@other.example"}, api.other
    )

    # Then the replay records that person as the requester
    assert response.status_code == 202, response.text
    (item,) = response.json()["deliveries"]
    delivery = api.services.dispatch.delivery(UUID(item["id"]))
    assert delivery.requested_by == Actor.person("ops@other.example")


async def test_send_again_with_no_body_at_all_is_accepted(api: Api) -> None:
    # Given a webhook and a processed event
    target = await webhook(api, ["*"])
    event_id = processed_event(api)

    # When the request has no body
    response = await api.client.post(f"/v1/events/{event_id}/send-again", headers=api.shop.headers)

    # Then it is sent again to every listening webhook
    assert response.status_code == 202, response.text
    assert [d["webhookId"] for d in response.json()["deliveries"]] == [target]


async def test_an_unknown_event_is_not_found(api: Api) -> None:
    # Given a webhook, and an event recorded but not processed yet
    await webhook(api, ["*"])
    store = api.shop.store_id
    customer = api.services.commerce.register_customer(store, "u@example.com", "U", None, ANN)
    unprocessed = event_id_of(UUID(customer["id"]), 1)

    # When an event id nobody knows, or one with no envelope yet, is sent again
    # Then the answer is 404 and nothing is recorded
    for event_id in ("evt_" + "0" * 32, unprocessed):
        assert_problem(await send_again(api, event_id), 404)
    assert replays(api) == []


async def test_another_stores_event_is_not_found(api: Api) -> None:
    # Given the shop's processed event, and a webhook of the other store
    await webhook(api, ["*"])
    event_id = processed_event(api)
    foreign = await webhook(api, ["*"], tenant=api.other)

    # When the other store asks to send it again, to all or to its own webhook
    # Then the event is not found for it
    assert_problem(await send_again(api, event_id, tenant=api.other), 404)
    assert_problem(await send_again(api, event_id, {"webhookId": foreign}, api.other), 404)
    assert replays(api) == []


async def test_another_stores_webhook_is_not_found(api: Api) -> None:
    # Given the shop's processed event and a webhook of the other store
    event_id = processed_event(api)
    foreign = await webhook(api, ["*"], tenant=api.other)

    # When the shop names that webhook, or one that never existed
    # Then it is not found
    for webhook_id in (foreign, str(uuid4())):
        assert_problem(await send_again(api, event_id, {"webhookId": webhook_id}), 404)
    assert replays(api) == []


async def test_a_disabled_webhook_is_a_conflict(api: Api) -> None:
    # Given a disabled webhook and a processed event
    disabled = await webhook(api, ["*"], enabled=False)
    event_id = processed_event(api)

    # When the event is sent again to it
    response = await send_again(api, event_id, {"webhookId": disabled})

    # Then the answer is 409, saying why, and nothing is recorded
    problem = assert_problem(response, 409)
    assert "disabled" in problem["detail"]
    assert replays(api) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"webhookId": "not-a-uuid"}, "webhookId", id="not-a-uuid"),
        pytest.param({"webhookId": 42}, "webhookId", id="not-a-string"),
        pytest.param({"webhookId": None}, "webhookId", id="null"),
        pytest.param({"webhook": str(uuid4())}, "webhook", id="unknown-field"),
    ],
)
async def test_a_malformed_body_is_invalid(api: Api, body: dict[str, Any], field: str) -> None:
    # Given a processed event and a webhook that would take it
    await webhook(api, ["*"])
    event_id = processed_event(api)

    # When the body's webhook id is malformed, or a field is unknown
    response = await send_again(api, event_id, body)

    # Then the answer is 422 naming the field, and nothing is recorded
    problem = assert_problem(response, 422)
    assert field in [error["field"] for error in problem["errors"]]
    assert replays(api) == []


async def test_an_idempotency_key_makes_a_repeat_create_nothing(api: Api) -> None:
    # Given a webhook and a processed event
    target = await webhook(api, ["*"])
    event_id = processed_event(api)
    body = {"webhookId": target}

    # When the same send-again is posted twice with one Idempotency-Key
    first = await send_again(api, event_id, body, idempotency_key="resend-1")
    again = await send_again(api, event_id, body, idempotency_key="resend-1")

    # Then the repeat answers the first answer and records no second delivery
    assert first.status_code == again.status_code == 202, again.text
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert len(replays(api)) == 1

    # When another key is used
    third = await send_again(api, event_id, body, idempotency_key="resend-2")

    # Then that is a new request: a second replay
    assert third.status_code == 202, third.text
    assert third.json()["deliveries"][0]["id"] != first.json()["deliveries"][0]["id"]
    assert len(replays(api)) == 2


async def test_without_an_api_key_it_is_unauthenticated(api: Api) -> None:
    # Given a processed event
    event_id = processed_event(api)

    # When it is sent again without a key
    response = await api.client.post(f"/v1/events/{event_id}/send-again", json={})

    # Then the answer is 401
    assert_problem(response, 401)
    assert replays(api) == []
