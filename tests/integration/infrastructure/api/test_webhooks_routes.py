"""Webhook configuration over the real API (SPEC §3, §8): create, read, list, change, enable
and disable, rotate the secret, delete — on SQLite and on PostgreSQL.

Target URLs are public IP literals so no test depends on DNS; hostile targets must be refused
before anything is recorded, on creation and on every change of the URL.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import anyio
import httpx
import pytest

from domain.values import Actor
from domain.webhook import Webhook
from infrastructure.api.app import create_app
from infrastructure.bootstrap import Services, build
from infrastructure.settings import Settings

if TYPE_CHECKING:
    from tests.integration.infrastructure.api.conftest import Api, Tenant

pytestmark = pytest.mark.anyio

URL = "https://93.184.215.14/hooks"  # a public address: no DNS needed
OTHER_URL = "https://[2606:4700:4700::1111]/webround"
SECRET = re.compile(r"^whsec_([A-Za-z0-9+/]{43}=)$")
PERSON = Actor.person("ann@shop.example")
PROBLEM = "application/problem+json"


# Helpers ----------------------------------------------------------------------------------


async def create(api: Api, tenant: Tenant | None = None, **fields: Any) -> httpx.Response:
    body = {"url": URL, "eventTypes": ["order.*"], **fields}
    return await api.client.post("/v1/webhooks", json=body, headers=(tenant or api.shop).headers)


async def created(api: Api, tenant: Tenant | None = None, **fields: Any) -> dict[str, Any]:
    response = await create(api, tenant, **fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def patch(api: Api, webhook_id: str, body: dict[str, Any]) -> httpx.Response:
    return await api.client.patch(f"/v1/webhooks/{webhook_id}", json=body, headers=api.shop.headers)


async def get(api: Api, webhook_id: str, tenant: Tenant | None = None) -> httpx.Response:
    return await api.client.get(f"/v1/webhooks/{webhook_id}", headers=(tenant or api.shop).headers)


async def list_all(api: Api, tenant: Tenant | None = None) -> list[dict[str, Any]]:
    response = await api.client.get("/v1/webhooks?limit=200", headers=(tenant or api.shop).headers)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def events_of(services: Services, webhook_id: str | UUID) -> list[Any]:
    """The recorded events of one webhook, in order, read from the notification log."""
    app = services.webhooks
    notifications = app.recorder.select_notifications(start=None, limit=1000)
    events = [app.mapper.to_domain_event(n) for n in notifications]
    return [e for e in events if str(e.originator_id) == str(webhook_id)]


def position(services: Services) -> int:
    return services.webhooks.recorder.max_notification_id() or 0


def parse_time(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


def assert_invalid(response: httpx.Response, field: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem: dict[str, Any] = response.json()
    assert problem["status"] == 422
    fields = [error["field"] for error in problem["errors"]]
    # The field itself, or a part of it (`eventTypes[0]`, `headers.X-Bad`).
    assert any(f == field or f.startswith((f"{field}[", f"{field}.")) for f in fields), problem
    return problem


def assert_secret_hidden(response: httpx.Response, *secrets: str) -> None:
    assert "secret" not in response.json()
    for secret in secrets:
        assert secret not in response.text
        assert secret.removeprefix("whsec_") not in response.text


# Creation and reads -----------------------------------------------------------------------


async def test_creation_shows_the_signing_secret_once(api: Api) -> None:
    # Given a store
    # When it registers a webhook
    response = await create(api, description="orders to the ERP")

    # Then the answer is 201 with the webhook and a whsec_ secret of 32 random bytes
    assert response.status_code == 201, response.text
    body = response.json()
    match = SECRET.fullmatch(body["secret"])
    assert match, body["secret"]
    assert len(base64.b64decode(match.group(1), validate=True)) == 32
    assert UUID(body["id"])
    assert body["storeId"] == str(api.shop.store_id)
    assert body["url"] == URL
    assert body["eventTypes"] == ["order.*"]
    assert body["description"] == "orders to the ERP"
    secret, webhook_id = body["secret"], body["id"]

    # And no later answer shows the secret again: not a read, a list, a change
    assert_secret_hidden(await get(api, webhook_id), secret)
    listing = await api.client.get("/v1/webhooks", headers=api.shop.headers)
    assert listing.status_code == 200
    assert all("secret" not in item for item in listing.json()["data"])
    assert secret.removeprefix("whsec_") not in listing.text
    changed = await patch(api, webhook_id, {"description": "changed"})
    assert changed.status_code == 200, changed.text
    assert_secret_hidden(changed, secret)


async def test_two_webhooks_get_different_secrets(api: Api) -> None:
    # Given two webhooks of the same store
    first, second = await created(api), await created(api)

    # Then their ids and secrets differ
    assert first["id"] != second["id"]
    assert first["secret"] != second["secret"]


async def test_creation_defaults(api: Api) -> None:
    # Given a webhook registered with only its url and event types
    body = await created(api)

    # Then it has the documented defaults
    assert body["timeoutSeconds"] == 15
    assert body["enabled"] is True
    assert body["disabledReason"] is None
    assert body["description"] == ""
    assert body["headers"] == {}
    assert body["rateLimit"] is None
    assert body["previousSecretExpiresAt"] is None
    assert body["version"] == 1
    assert parse_time(body["createdAt"]) <= parse_time(body["updatedAt"])

    # And a read answers the same webhook, without the secret
    read = (await get(api, body["id"])).json()
    assert read == {k: v for k, v in body.items() if k != "secret"}
    assert read["circuit"]["state"] == "closed"


async def test_a_webhook_created_disabled_says_why(api: Api) -> None:
    # When a webhook is registered disabled
    body = await created(api, enabled=False)

    # Then it is disabled with a reason
    assert body["enabled"] is False
    assert body["disabledReason"]


async def test_every_field_can_be_set_on_creation(api: Api) -> None:
    # When a webhook is registered with every optional field
    body = await created(
        api,
        url=OTHER_URL,
        eventTypes=["customer.registered", "order.paid"],
        description="all fields",
        headers={"X-Shop": "one"},
        timeoutSeconds=30,
        rateLimit=2.5,
    )

    # Then the answer holds them (header values redacted)
    assert body["url"] == OTHER_URL
    assert sorted(body["eventTypes"]) == ["customer.registered", "order.paid"]
    assert body["description"] == "all fields"
    assert body["headers"] == {"X-Shop": "[redacted]"}
    assert body["timeoutSeconds"] == 30
    assert body["rateLimit"] == 2.5


async def test_another_store_cannot_see_or_touch_a_webhook(api: Api) -> None:
    # Given a webhook of the shop
    webhook_id = (await created(api))["id"]
    headers = api.other.headers

    # When another store asks for it, changes, rotates or deletes it
    answers = [
        await api.client.get(f"/v1/webhooks/{webhook_id}", headers=headers),
        await api.client.patch(
            f"/v1/webhooks/{webhook_id}", json={"description": "x"}, headers=headers
        ),
        await api.client.post(f"/v1/webhooks/{webhook_id}/rotate-secret", headers=headers),
        await api.client.delete(f"/v1/webhooks/{webhook_id}", headers=headers),
    ]

    # Then every answer is 404, and its list does not hold it
    assert [a.status_code for a in answers] == [404, 404, 404, 404]
    assert all(a.headers["content-type"].startswith(PROBLEM) for a in answers)
    assert await list_all(api, api.other) == []
    # And the shop's webhook is untouched
    assert (await get(api, webhook_id)).json()["version"] == 1


async def test_webhook_routes_require_a_key(api: Api) -> None:
    # When the webhooks are asked for without a key, or with a wrong one
    missing = await api.client.get("/v1/webhooks")
    wrong = await api.client.post(
        "/v1/webhooks",
        json={"url": URL, "eventTypes": ["*"]},
        headers={"authorization": "Bearer wr_0000000000000000_nope"},
    )

    # Then both are 401 problems, and nothing was created
    assert missing.status_code == 401
    assert wrong.status_code == 401
    assert wrong.headers["content-type"].startswith(PROBLEM)
    assert await list_all(api) == []


async def test_an_unknown_webhook_is_404(api: Api) -> None:
    # When a webhook that never existed, or an id that is no UUID, is asked for
    unknown = await get(api, "3f1d5a8e-93a4-4f63-9a0c-7f1c0f4f8a11")
    garbage = await get(api, "not-a-uuid")

    # Then both are 404 problems
    assert unknown.status_code == 404
    assert garbage.status_code == 404
    assert unknown.headers["content-type"].startswith(PROBLEM)


# Listing ----------------------------------------------------------------------------------


async def test_the_list_pages_through_every_webhook_once(api: Api) -> None:
    # Given five webhooks
    ids = [(await created(api, description=f"hook {n}"))["id"] for n in range(5)]

    # When the list is read two at a time, following nextCursor
    seen: list[str] = []
    pages: list[int] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = await api.client.get("/v1/webhooks", params=params, headers=api.shop.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"data", "nextCursor"}
        assert all("secret" not in item for item in page["data"])
        pages.append(len(page["data"]))
        seen += [item["id"] for item in page["data"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break

    # Then every webhook appears exactly once, in creation order, and the end says so
    assert seen == ids
    assert pages == [2, 2, 1]
    assert cursor is None


async def test_a_page_that_holds_everything_has_no_next_cursor(api: Api) -> None:
    # Given two webhooks
    ids = [(await created(api))["id"] for _ in range(2)]

    # When a page of exactly two and one of the default size are read
    exact = await api.client.get("/v1/webhooks?limit=2", headers=api.shop.headers)
    default = await api.client.get("/v1/webhooks", headers=api.shop.headers)

    # Then each holds both webhooks and no cursor
    for response in (exact, default):
        assert [item["id"] for item in response.json()["data"]] == ids
        assert response.json()["nextCursor"] is None


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=-1",
        "limit=abc",
        "limit=2.5",
        "limit=",
        "cursor=%21%21%21",
        "cursor=abc",
        "cursor=" + "A" * 40,
    ],
)
async def test_bad_paging_parameters_are_refused(api: Api, query: str) -> None:
    # Given a webhook
    await created(api)

    # When the list is asked for with a bad limit or a cursor we never gave out
    response = await api.client.get(f"/v1/webhooks?{query}", headers=api.shop.headers)

    # Then it is a 422 naming the parameter
    assert_invalid(response, query.split("=")[0])


async def test_paging_survives_the_deletion_of_the_cursor_webhook(api: Api) -> None:
    # Given four webhooks, and the first page of two read
    ids = [(await created(api))["id"] for _ in range(4)]
    first = (await api.client.get("/v1/webhooks?limit=2", headers=api.shop.headers)).json()
    assert [item["id"] for item in first["data"]] == ids[:2]

    # When the last webhook of that page is deleted before the next page is read
    assert (
        await api.client.delete(f"/v1/webhooks/{ids[1]}", headers=api.shop.headers)
    ).status_code == 204
    second = await api.client.get(
        "/v1/webhooks", params={"limit": 2, "cursor": first["nextCursor"]}, headers=api.shop.headers
    )

    # Then the next page continues after it: nothing repeated, nothing skipped
    assert second.status_code == 200
    assert [item["id"] for item in second.json()["data"]] == ids[2:]


async def test_the_last_page_has_no_cursor_when_only_deleted_webhooks_follow(api: Api) -> None:
    # Given three webhooks of which the last was deleted
    ids = [(await created(api))["id"] for _ in range(3)]
    deleted = await api.client.delete(f"/v1/webhooks/{ids[2]}", headers=api.shop.headers)
    assert deleted.status_code == 204

    # When a page of two is read
    page = (await api.client.get("/v1/webhooks?limit=2", headers=api.shop.headers)).json()

    # Then it holds both remaining webhooks and says it is the last page
    assert [item["id"] for item in page["data"]] == ids[:2]
    assert page["nextCursor"] is None


async def test_a_cursor_of_another_store_shows_only_the_askers_webhooks(api: Api) -> None:
    # Given the other store's cursor after its first webhook, and the shop's two webhooks
    for _ in range(2):
        await created(api, api.other)
    foreign = (
        await api.client.get("/v1/webhooks", params={"limit": 1}, headers=api.other.headers)
    ).json()["nextCursor"]
    mine = [(await created(api))["id"] for _ in range(2)]

    # When the shop pages with it (a cursor is a place in a list, nothing more)
    response = await api.client.get(
        "/v1/webhooks", params={"limit": 5, "cursor": foreign}, headers=api.shop.headers
    )

    # Then it is the shop's own list from that place: nothing of the other store
    assert response.status_code == 200, response.text
    assert [w["id"] for w in response.json()["data"]] == mine[1:]


async def test_a_cursor_that_is_not_ours_is_refused(api: Api) -> None:
    # When the list is asked with an old-style or made-up cursor
    for cursor in (base64.urlsafe_b64encode(b"x" * 16).decode().rstrip("="), "ev_1", "wh_x"):
        response = await api.client.get(
            "/v1/webhooks", params={"cursor": cursor}, headers=api.shop.headers
        )

        # Then it is refused, naming the cursor
        assert_invalid(response, "cursor")


# Changes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"url": OTHER_URL}, {"url": OTHER_URL}),
        (
            {"eventTypes": ["order.paid", "customer.registered"]},
            {"eventTypes": ["customer.registered", "order.paid"]},
        ),
        ({"eventTypes": ["*"]}, {"eventTypes": ["*"]}),
        ({"description": "new words"}, {"description": "new words"}),
        ({"headers": {"X-Trace": "abc"}}, {"headers": {"X-Trace": "[redacted]"}}),
        ({"timeoutSeconds": 30}, {"timeoutSeconds": 30}),
        ({"timeoutSeconds": 1}, {"timeoutSeconds": 1}),
        ({"rateLimit": 2.5}, {"rateLimit": 2.5}),
    ],
    ids=[
        "url",
        "event-types",
        "all-events",
        "description",
        "headers",
        "timeout",
        "timeout-1",
        "rate",
    ],
)
async def test_each_field_can_be_changed(
    api: Api, changes: dict[str, Any], expected: dict[str, Any]
) -> None:
    # Given a webhook
    before = await created(api)

    # When one field is changed
    response = await patch(api, before["id"], changes)

    # Then the answer and every later read show the change, and nothing else changed
    assert response.status_code == 200, response.text
    after = response.json()
    assert {k: after[k] for k in expected} == expected
    assert after["version"] == before["version"] + 1
    unchanged = set(before) - set(expected) - {"secret", "version", "updatedAt"}
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}
    assert (await get(api, before["id"])).json() == after
    # And one Updated event holds it
    events = events_of(api.services, before["id"])
    assert [type(e).__qualname__ for e in events] == ["Webhook.Created", "Webhook.Updated"]


async def test_headers_and_rate_limit_can_be_removed(api: Api) -> None:
    # Given a webhook with custom headers and a rate limit
    body = await created(api, headers={"X-One": "1"}, rateLimit=3)

    # When both are cleared
    response = await patch(api, body["id"], {"headers": {}, "rateLimit": None})

    # Then the webhook has neither
    assert response.status_code == 200, response.text
    assert response.json()["headers"] == {}
    assert response.json()["rateLimit"] is None
    webhook = api.services.webhooks.get_webhook(api.shop.store_id, UUID(body["id"]))
    assert webhook.sealed_headers is None


async def test_a_change_to_the_same_values_records_nothing(api: Api) -> None:
    # Given a webhook
    body = await created(api, description="same")

    # When it is "changed" to what it already is
    response = await patch(api, body["id"], {"description": "same", "eventTypes": ["order.*"]})

    # Then it answers the webhook unchanged and records no event
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 1
    assert len(events_of(api.services, body["id"])) == 1


@pytest.mark.parametrize(
    "body",
    [{}, {"secret": "whsec_AAAA"}, {"id": "3f1d5a8e-93a4-4f63-9a0c-7f1c0f4f8a11"}, {"url": 5}],
    ids=["empty", "secret", "id", "url-type"],
)
async def test_a_change_must_name_known_fields(api: Api, body: dict[str, Any]) -> None:
    # Given a webhook
    webhook_id = (await created(api))["id"]

    # When an empty change, or one of a field that cannot be set, is sent
    response = await patch(api, webhook_id, body)

    # Then it is a 422 and nothing changed
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert len(events_of(api.services, webhook_id)) == 1


async def test_disable_with_a_reason_then_enable(api: Api) -> None:
    # Given an enabled webhook
    webhook_id = (await created(api))["id"]

    # When it is disabled for maintenance
    disabled = await patch(api, webhook_id, {"enabled": False, "disabledReason": "maintenance"})

    # Then it is disabled with that reason, in the answer and in reads
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["enabled"] is False
    assert disabled.json()["disabledReason"] == "maintenance"
    assert (await get(api, webhook_id)).json()["disabledReason"] == "maintenance"

    # When it is enabled again
    enabled = await patch(api, webhook_id, {"enabled": True})

    # Then it is enabled and the reason is gone
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["enabled"] is True
    assert enabled.json()["disabledReason"] is None
    assert (await get(api, webhook_id)).json()["enabled"] is True
    # And the Disabled event kept the reason
    events = events_of(api.services, webhook_id)
    assert [type(e).__qualname__ for e in events] == [
        "Webhook.Created",
        "Webhook.Disabled",
        "Webhook.Enabled",
    ]
    assert events[1].reason == "maintenance"


async def test_disable_without_a_reason_gets_one(api: Api) -> None:
    # Given an enabled webhook
    webhook_id = (await created(api))["id"]

    # When it is disabled without a reason
    response = await patch(api, webhook_id, {"enabled": False})

    # Then it is disabled with a default reason
    assert response.json()["enabled"] is False
    assert response.json()["disabledReason"]


async def test_delete_removes_the_webhook(api: Api) -> None:
    # Given two webhooks
    gone, kept = (await created(api))["id"], (await created(api))["id"]

    # When one is deleted
    response = await api.client.delete(f"/v1/webhooks/{gone}", headers=api.shop.headers)

    # Then the answer is 204 without a body
    assert response.status_code == 204
    assert response.content == b""
    # And it is gone from reads, the list, changes and a second delete
    assert (await get(api, gone)).status_code == 404
    assert [item["id"] for item in await list_all(api)] == [kept]
    assert (await patch(api, gone, {"description": "x"})).status_code == 404
    again = await api.client.delete(f"/v1/webhooks/{gone}", headers=api.shop.headers)
    assert again.status_code == 404
    rotate = await api.client.post(f"/v1/webhooks/{gone}/rotate-secret", headers=api.shop.headers)
    assert rotate.status_code == 404


# Secret rotation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "grace"),
    [(None, timedelta(hours=24)), ({"gracePeriodSeconds": 60}, timedelta(seconds=60))],
    ids=["default-grace", "60s-grace"],
)
async def test_rotation_returns_a_new_secret_and_keeps_the_old_one_for_a_while(
    api: Api, body: dict[str, Any] | None, grace: timedelta
) -> None:
    # Given a webhook and its secret
    first = await created(api)

    # When its secret is rotated
    before = datetime.now(UTC)
    response = await api.client.post(
        f"/v1/webhooks/{first['id']}/rotate-secret", json=body, headers=api.shop.headers
    )
    after = datetime.now(UTC)

    # Then the answer holds a new, different secret, shown this once
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert SECRET.fullmatch(rotated["secret"])
    assert rotated["secret"] != first["secret"]
    # And the old secret signs until now + the grace period
    expires = parse_time(rotated["previousSecretExpiresAt"])
    assert before + grace - timedelta(seconds=5) <= expires <= after + grace + timedelta(seconds=5)
    # And reads show the expiry but neither secret
    read = await get(api, first["id"])
    assert read.json()["previousSecretExpiresAt"] == rotated["previousSecretExpiresAt"]
    assert_secret_hidden(read, first["secret"], rotated["secret"])
    # And both secrets are kept sealed: the new one first, the old one with its expiry
    webhook = api.services.webhooks.get_webhook(api.shop.store_id, UUID(first["id"]))
    keeper = api.services.keeper
    opened = [keeper.open_secret(webhook.id, s.sealed).reveal() for s in webhook.secrets]
    assert opened == [rotated["secret"], first["secret"]]
    assert webhook.secrets[1].expires_at == expires


@pytest.mark.parametrize("grace", [-1, 7 * 86400 + 1, "60", 1.5])
async def test_rotation_refuses_a_bad_grace_period(api: Api, grace: object) -> None:
    # Given a webhook
    webhook_id = (await created(api))["id"]

    # When its secret is rotated with a grace period out of 0..7 days or not whole seconds
    response = await api.client.post(
        f"/v1/webhooks/{webhook_id}/rotate-secret",
        json={"gracePeriodSeconds": grace},
        headers=api.shop.headers,
    )

    # Then it is refused and the secret stays
    assert_invalid(response, "gracePeriodSeconds")
    assert len(events_of(api.services, webhook_id)) == 1


# Validation of fields ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_types",
    [
        ["order.paid"],
        ["order.*"],
        ["*"],
        ["customer.registered", "subscription.*", "sku.stock_changed"],
        ["variant.updated", "product.*"],
    ],
)
async def test_event_type_filters_that_are_accepted(api: Api, event_types: list[str]) -> None:
    # When a webhook subscribes to exact names, entity.* or *
    response = await create(api, eventTypes=event_types)

    # Then it is registered with those filters
    assert response.status_code == 201, response.text
    assert sorted(response.json()["eventTypes"]) == sorted(event_types)


@pytest.mark.parametrize(
    "event_types",
    [
        ["order.shipped"],
        ["nope.*"],
        [],
        ["order"],
        ["order.paid", "ORDER.PAID"],
        ["order.*.*"],
        ["webhook.created"],
        [""],
        "order.paid",
    ],
)
async def test_event_type_filters_that_are_refused(api: Api, event_types: object) -> None:
    # Given a webhook to change later
    existing = (await created(api))["id"]

    # When a webhook is registered, or changed, with an unknown event type or none at all
    on_create = await create(api, eventTypes=event_types)
    on_change = await patch(api, existing, {"eventTypes": event_types})

    # Then both are 422 naming eventTypes, and nothing was recorded
    for response in (on_create, on_change):
        assert_invalid(response, "eventTypes")
    assert len(await list_all(api)) == 1
    assert len(events_of(api.services, existing)) == 1


@pytest.mark.parametrize("timeout", [0, 31, -5, 15.5, "15", None])
async def test_timeouts_outside_1_to_30_seconds_are_refused(api: Api, timeout: object) -> None:
    # Given a webhook to change later
    existing = (await created(api))["id"]

    # When a webhook is registered, or changed, with such a timeout
    on_create = await create(api, timeoutSeconds=timeout)
    on_change = await patch(api, existing, {"timeoutSeconds": timeout})

    # Then both are 422 naming timeoutSeconds
    for response in (on_create, on_change):
        assert_invalid(response, "timeoutSeconds")
    assert (await get(api, existing)).json()["timeoutSeconds"] == 15


@pytest.mark.parametrize("rate", [0, -1, "2", 10_001, 1e-300, 5e-324, 0.009])
async def test_bad_rate_limits_are_refused(api: Api, rate: object) -> None:
    # When a webhook is registered, or changed, with a rate limit outside 0.01 to 10,000
    # deliveries a second (1e-300 used to abort dispatcher passes: 1/rate overflows)
    existing = (await created(api))["id"]
    on_create = await create(api, rateLimit=rate)
    on_change = await patch(api, existing, {"rateLimit": rate})

    # Then each is a 422 naming rateLimit
    for response in (on_create, on_change):
        assert_invalid(response, "rateLimit")


@pytest.mark.parametrize("rate", [0.01, 10_000])
async def test_rate_limits_at_the_bounds_are_accepted(api: Api, rate: float) -> None:
    # When a webhook is registered with the slowest or the fastest rate there is
    body = await created(api, rateLimit=rate)

    # Then it keeps it
    assert body["rateLimit"] == rate


async def test_unknown_fields_and_a_missing_url_are_refused(api: Api) -> None:
    # When a webhook is registered with a field we do not know, or without its url
    unknown = await create(api, secret="whsec_" + "A" * 44)
    missing = await api.client.post(
        "/v1/webhooks", json={"eventTypes": ["*"]}, headers=api.shop.headers
    )

    # Then each is a 422 naming the field
    assert_invalid(unknown, "secret")
    assert_invalid(missing, "url")
    assert await list_all(api) == []


# Custom headers ---------------------------------------------------------------------------


async def test_custom_header_values_are_redacted_in_every_read(api: Api) -> None:
    # Given a webhook with custom headers
    headers = {"X-Api-Token": "tok-very-private", "Authorization": "Basic c2VjcmV0"}
    body = await created(api, headers=headers)
    webhook_id = body["id"]
    redacted = dict.fromkeys(headers, "[redacted]")

    # When it is created, read, listed, changed and its secret rotated
    answers = [
        body,
        (await get(api, webhook_id)).json(),
        (await list_all(api))[0],
        (await patch(api, webhook_id, {"description": "d"})).json(),
        (
            await api.client.post(
                f"/v1/webhooks/{webhook_id}/rotate-secret", headers=api.shop.headers
            )
        ).json(),
    ]

    # Then every answer names the headers and shows none of their values
    for answer in answers:
        assert answer["headers"] == redacted
        assert "tok-very-private" not in str(answer)
        assert "c2VjcmV0" not in str(answer)
    # And the values are kept, sealed, for the sender
    sealed = api.services.webhooks.get_webhook(api.shop.store_id, UUID(webhook_id)).sealed_headers
    assert sealed is not None
    assert "tok-very-private" not in sealed
    assert api.services.keeper.open_headers(UUID(webhook_id), sealed) == headers


@pytest.mark.parametrize(
    "name",
    [
        "Content-Type",
        "content-length",
        "webhook-signature",
        "Webhook-Id",
        "webround-x",
        "Webround-Event-Type",
        "Host",
        "User-Agent",
        "Transfer-Encoding",
        "Accept-Encoding",  # was accepted, then silently dropped by the sender
        "Connection",
        "TE",
        "Upgrade",
        "Expect",
    ],
)
async def test_reserved_header_names_are_refused(api: Api, name: str) -> None:
    # Given a webhook to change later
    existing = (await created(api))["id"]

    # When a webhook is registered, or changed, with a header we set ourselves
    on_create = await create(api, headers={name: "mine"})
    on_change = await patch(api, existing, {"headers": {"X-Fine": "ok", name: "mine"}})

    # Then both are 422 naming headers and the header, and nothing was recorded
    for response in (on_create, on_change):
        problem = assert_invalid(response, "headers")
        assert name in problem["detail"]
    assert len(await list_all(api)) == 1
    assert (await get(api, existing)).json()["headers"] == {}


@pytest.mark.parametrize(
    "headers",
    [{"Bad Name": "v"}, {"X-Ok": "line\r\nInjected: 1"}, {"X-Ok": 5}, {"": "v"}],
    ids=["space-in-name", "crlf-in-value", "number-value", "empty-name"],
)
async def test_malformed_headers_are_refused(api: Api, headers: dict[str, Any]) -> None:
    # When a webhook is registered with a header that cannot be sent as such
    response = await create(api, headers=headers)

    # Then it is a 422 about headers
    assert response.status_code == 422, response.text
    assert any(e["field"].startswith("headers") for e in response.json()["errors"])


# Bad input never answers 500 -------------------------------------------------------------


def _raw(body: str) -> bytes:
    return body.encode()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            '{"url": "https://93.184.215.14/", "eventTypes": ["*"], "rateLimit": NaN}',
            id="rate-limit-NaN",
        ),
        pytest.param(
            '{"url": "https://93.184.215.14/", "eventTypes": ["*"], "description": "\\ud800"}',
            id="lone-surrogate",
        ),
        pytest.param(
            '{"url": "https://93.184.215.14/", "eventTypes": ["*"], "timeoutSeconds": Infinity}',
            id="timeout-Infinity",
        ),
        pytest.param(
            '{"url": "https://93.184.215.14/", "eventTypes": ["*"], "rateLimit": -Infinity}',
            id="rate-limit-minus-Infinity",
        ),
        pytest.param('{"url": "https://93.184.215.14/", "eventTypes": ["*"]', id="truncated"),
        pytest.param("[]", id="array"),
        pytest.param('"text"', id="string"),
        pytest.param("null", id="null"),
        pytest.param('{"url": null, "eventTypes": null}', id="nulls"),
    ],
)
async def test_bad_bodies_are_refused_without_recording_anything(api: Api, body: str) -> None:
    # Given a store with one webhook
    await created(api)
    recorded = position(api.services)

    # When a body that is not valid JSON for a webhook is sent
    response = await api.client.post(
        "/v1/webhooks",
        content=_raw(body),
        headers={**api.shop.headers, "content-type": "application/json"},
    )

    # Then it is a 400 or 422 problem, nothing is recorded, and the store still reads fine
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert position(api.services) == recorded
    assert len(await list_all(api)) == 1


async def test_a_body_must_be_json(api: Api) -> None:
    # When a webhook is sent as a form, and as an oversized body
    form = await api.client.post(
        "/v1/webhooks", data={"url": URL, "eventTypes": "*"}, headers=api.shop.headers
    )
    huge = await api.client.post(
        "/v1/webhooks",
        json={"url": URL, "eventTypes": ["*"], "description": "x" * (1024 * 1024)},
        headers=api.shop.headers,
    )

    # Then they are 415 and 413 problems
    assert form.status_code == 415
    assert huge.status_code == 413
    assert huge.headers["content-type"].startswith(PROBLEM)


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(
            "limit=%C2%B2",  # "²": str.isdigit() says yes, int() says no
            id="superscript-two",
        ),
        pytest.param("limit=%00", id="nul"),
        pytest.param("cursor=%F0%9F%98%80", id="emoji-cursor"),
    ],
)
async def test_odd_paging_parameters_are_422_not_500(api: Api, query: str) -> None:
    # When the list is asked for with a parameter no client should send
    response = await api.client.get(f"/v1/webhooks?{query}", headers=api.shop.headers)

    # Then it is a 422 naming the parameter
    assert_invalid(response, query.split("=")[0])


async def test_an_idempotency_key_with_a_tab_is_refused(api: Api) -> None:
    # When a webhook is created with an Idempotency-Key holding a TAB
    response = await api.client.post(
        "/v1/webhooks",
        json={"url": URL, "eventTypes": ["*"]},
        headers={**api.shop.headers, "idempotency-key": "key\twith-tab"},
    )

    # Then it is a 422 naming the header
    assert_invalid(response, "Idempotency-Key")


async def test_webhooks_created_at_once_in_one_store_all_exist(api: Api) -> None:
    # Given a store's integrations creating 8 webhooks at the same moment (each creation
    # also changes the store, so their saves collide and are tried again)
    answers: list[httpx.Response] = []

    async def create_one(number: int) -> None:
        answers.append(await create(api, description=f"hook {number}"))

    # When they all arrive
    async with anyio.create_task_group() as group:
        for number in range(8):
            group.start_soon(create_one, number)

    # Then every webhook the API said it created exists, with its creation recorded,
    # and the store lists exactly those
    made = [a.json()["id"] for a in answers if a.status_code == 201]
    assert made, [a.text for a in answers]
    for webhook_id in made:
        assert (await get(api, webhook_id)).status_code == 200
        assert type(events_of(api.services, webhook_id)[0]).__name__ == "Created"
    assert sorted(w["id"] for w in await list_all(api)) == sorted(made)


async def test_an_idempotency_key_replays_the_creation(api: Api) -> None:
    # Given a webhook created with an Idempotency-Key
    headers = {**api.shop.headers, "idempotency-key": "create-erp-hook"}
    body = {"url": URL, "eventTypes": ["order.*"]}
    first = await api.client.post("/v1/webhooks", json=body, headers=headers)

    # When the same request is sent again, and the key is reused for another body
    again = await api.client.post("/v1/webhooks", json=body, headers=headers)
    other = await api.client.post(
        "/v1/webhooks", json={**body, "description": "other"}, headers=headers
    )

    # Then the repeat answers the first webhook and creates nothing; the misuse is a 422
    assert first.status_code == 201
    assert again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert_invalid(other, "Idempotency-Key")
    assert len(await list_all(api)) == 1


# The audit trail --------------------------------------------------------------------------


async def test_every_change_is_an_event_with_its_actor(api: Api) -> None:
    # Given a key that acts for ann@shop.example
    # When she creates, changes, disables, enables, rotates and deletes a webhook
    webhook_id = (await created(api))["id"]
    steps = [
        await patch(api, webhook_id, {"description": "v2", "timeoutSeconds": 20}),
        await patch(api, webhook_id, {"enabled": False, "disabledReason": "maintenance"}),
        await patch(api, webhook_id, {"enabled": True}),
        await api.client.post(f"/v1/webhooks/{webhook_id}/rotate-secret", headers=api.shop.headers),
        await api.client.delete(f"/v1/webhooks/{webhook_id}", headers=api.shop.headers),
    ]
    assert [r.status_code for r in steps] == [200, 200, 200, 200, 204]

    # Then each change is one event of the webhook, in order, and each names her
    events = events_of(api.services, webhook_id)
    assert [type(e).__qualname__ for e in events] == [
        "Webhook.Created",
        "Webhook.Updated",
        "Webhook.Disabled",
        "Webhook.Enabled",
        "Webhook.SecretRotated",
        "Webhook.Deleted",
    ]
    assert all(isinstance(e, Webhook.Event) for e in events)
    assert [e.actor for e in events] == [PERSON] * 6
    assert events[1].changes == {"description": "v2", "timeout_seconds": 20}
    assert events[2].reason == "maintenance"


async def test_a_system_key_records_the_system_or_the_person_it_names(api: Api) -> None:
    # Given the other store's system key
    # When it creates one webhook on its own and one on behalf of a person
    own = (await created(api, api.other))["id"]
    for_bob = (await created(api, api.other, initiatedBy="bob@other.example"))["id"]
    await api.client.patch(
        f"/v1/webhooks/{own}",
        json={"enabled": False, "initiatedBy": "carol@other.example"},
        headers=api.other.headers,
    )

    # Then the events name the system, or the person it named
    assert [e.actor for e in events_of(api.services, own)] == [
        Actor.system(),
        Actor.person("carol@other.example"),
    ]
    assert [e.actor for e in events_of(api.services, for_bob)] == [
        Actor.person("bob@other.example")
    ]


async def test_a_personal_key_cannot_record_another_actor(api: Api) -> None:
    # When ann's key claims someone else initiated the creation
    response = await create(api, initiatedBy="mallory@shop.example")

    # Then it is refused and nothing is created
    assert_invalid(response, "initiatedBy")
    assert await list_all(api) == []


# SSRF through the API ---------------------------------------------------------------------

HOSTILE_TARGETS = [
    ("https://127.0.0.1/", "loopback"),
    ("https://127.0.0.1:8443/hooks", "loopback"),
    ("https://2130706433/", "loopback"),
    ("https://0x7f000001/", "loopback"),
    ("https://0177.0.0.1/", "loopback"),
    ("https://0x7f.1/", "loopback"),
    ("https://127.1/", "loopback"),
    ("https://[::1]/", "loopback"),
    ("https://[::ffff:127.0.0.1]/", "loopback"),
    ("https://[::ffff:7f00:1]/", "loopback"),
    ("https://[::127.0.0.1]/", "loopback"),
    ("https://169.254.169.254/latest/meta-data", "metadata"),
    ("https://169.254.169.254./latest/meta-data", "metadata"),
    ("https://0xa9fea9fe/", "metadata"),
    ("https://[::ffff:a9fe:a9fe]/", "metadata"),
    ("https://10.0.0.1/", "private"),
    ("https://192.168.1.1/", "private"),
    ("https://172.16.0.1/", "private"),
    ("https://100.64.0.1/", "private"),
    ("https://0.0.0.0/", "unspecified"),
    ("https://0/", "unspecified"),
    ("https://[::]/", "unspecified"),
    ("https://224.0.0.1/", "multicast"),
    ("https://[ff02::1]/", "multicast"),
    ("https://255.255.255.255/", "reserved"),
    ("https://[2001:db8::1]/", "reserved"),
    ("https://[fe80::1]/", "link-local"),
    ("https://[fe80::1%25eth0]/", "zone id"),
    ("https://[fc00::1]/", "private"),
    ("https://localhost/", "loopback"),
    ("https://LOCALHOST./", "loopback"),
    ("https://foo.localhost/", "loopback"),
    ("https://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", "loopback"),  # fullwidth 127.0.0.1
    ("https://%31%32%37.0.0.1/", "percent-encoded"),
    ("https://user@127.0.0.1/", "user name or password"),
    ("https://user:pw@93.184.215.14/", "user name or password"),
    ("https://[64:ff9b::7f00:1]/", "loopback"),
    ("https://[2002:7f00:1::]/", "loopback"),
    ("http://93.184.215.14/", "must use https"),
    ("ftp://x/", "must use https"),
    ("file:///etc/passwd", "must use https"),
    ("https://93.184.215.14\\@127.0.0.1/", "backslash"),
]


@pytest.mark.parametrize(("url", "why"), HOSTILE_TARGETS, ids=[u for u, _ in HOSTILE_TARGETS])
async def test_hostile_targets_are_refused_on_creation_and_on_change(
    api: Api, url: str, why: str
) -> None:
    # Given a webhook with a public target, and the log position
    existing = await created(api)
    recorded = position(api.services)

    # When a webhook is registered with the hostile target, or the existing one moved there
    on_create = await create(api, url=url)
    on_change = await patch(api, existing["id"], {"url": url})

    # Then both are 422 on the url field, and the problem says why (in its detail, or in
    # the field's error when the URL has not even the shape the document publishes)
    for response in (on_create, on_change):
        problem = assert_invalid(response, "url")
        said = " ".join([problem["detail"], *(e["message"] for e in problem["errors"])])
        assert why in said.lower(), problem
    # And nothing was recorded: no webhook, no change
    assert position(api.services) == recorded
    assert [item["id"] for item in await list_all(api)] == [existing["id"]]
    assert (await get(api, existing["id"])).json()["url"] == URL


@pytest.fixture
async def loopback_api(
    settings: Settings,
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """The app with 127.0.0.0/8 allow-listed (WEBROUND_ALLOWED_TARGETS), and a key."""
    allowed = dataclasses.replace(settings, allowed_targets=(ipaddress.ip_network("127.0.0.0/8"),))
    services = build(allowed)
    store = services.webhooks.create_store("Dev shop", Actor.system())
    key = services.webhooks.create_api_key(UUID(store["storeId"]), None, Actor.system())
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client, {"authorization": f"Bearer {key['apiKey']}"}
    services.close()


async def test_an_allow_listed_loopback_target_is_accepted(
    loopback_api: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    client, headers = loopback_api
    # Given 127.0.0.0/8 is allow-listed
    # When a webhook targets plain http on loopback, and is moved to another loopback address
    response = await client.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9999/hook", "eventTypes": ["*"]},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    moved = await client.patch(
        f"/v1/webhooks/{response.json()['id']}",
        json={"url": "http://127.0.0.2:9998/hook"},
        headers=headers,
    )

    # Then both are accepted
    assert response.json()["url"] == "http://127.0.0.1:9999/hook"
    assert moved.status_code == 200, moved.text
    assert moved.json()["url"] == "http://127.0.0.2:9998/hook"

    # But what the allow-list does not name is still refused, and http only for it
    for url, why in [
        ("https://10.0.0.1/", "private"),
        ("https://169.254.169.254/", "metadata"),
        ("https://[::1]/", "loopback"),
        ("http://93.184.215.14/", "https"),
    ]:
        refused = await client.post(
            "/v1/webhooks", json={"url": url, "eventTypes": ["*"]}, headers=headers
        )
        assert refused.status_code == 422, (url, refused.text)
        assert why in refused.json()["detail"], (url, refused.json())


# A store's webhooks are capped (issue #12, item 3) ---------------------------------------


@pytest.fixture
async def capped_api(
    settings: Settings,
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], dict[str, str]]]:
    """The app with WEBROUND_MAX_WEBHOOKS_PER_STORE=2, and the keys of two stores."""
    services = build(dataclasses.replace(settings, max_webhooks_per_store=2))
    keys = []
    for name in ("Busy shop", "Quiet shop"):
        store = services.webhooks.create_store(name, Actor.system())
        key = services.webhooks.create_api_key(UUID(store["storeId"]), None, Actor.system())
        keys.append({"authorization": f"Bearer {key['apiKey']}"})
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client, keys[0], keys[1]
    services.close()


async def test_a_store_cannot_have_more_webhooks_than_the_setting_allows(
    capped_api: tuple[httpx.AsyncClient, dict[str, str], dict[str, str]],
) -> None:
    client, busy, quiet = capped_api
    body = {"url": URL, "eventTypes": ["*"]}
    # Given a store at the limit of two webhooks
    first, second = [await client.post("/v1/webhooks", json=body, headers=busy) for _ in "ab"]
    assert (first.status_code, second.status_code) == (201, 201)

    # When it registers a third
    third = await client.post("/v1/webhooks", json=body, headers=busy)

    # Then it is a 409 problem naming the setting, and nothing is registered
    assert third.status_code == 409, third.text
    assert third.headers["content-type"].startswith(PROBLEM)
    assert "WEBROUND_MAX_WEBHOOKS_PER_STORE=2" in third.json()["detail"]
    listed = (await client.get("/v1/webhooks", headers=busy)).json()["data"]
    assert len(listed) == 2
    # And another store is not limited by it
    assert (await client.post("/v1/webhooks", json=body, headers=quiet)).status_code == 201
    # And once one is deleted, there is room again
    deleted = await client.delete(f"/v1/webhooks/{first.json()['id']}", headers=busy)
    assert deleted.status_code == 204
    assert (await client.post("/v1/webhooks", json=body, headers=busy)).status_code == 201


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Token": "abc\n"},
        {"X-Token": "abc\r\n"},
        {"X-Token": "a\x00b"},
        {"X-Token": "a\x0bb"},
        {"X-Token": "a\x1bb"},
        {"X-Token": " abc"},
        {"X-Token": "abc\t"},
        {"X-Token": "café"},
        {"X-Token\n": "abc"},
        {"X-Token": "a", "x-token": "b"},
    ],
    ids=[
        "trailing-newline",
        "trailing-crlf",
        "nul",
        "vertical-tab",
        "escape",
        "leading-space",
        "trailing-tab",
        "non-ascii",
        "name-with-newline",
        "twice-by-case",
    ],
)
async def test_headers_the_sender_could_not_send_are_refused(
    api: Api, headers: dict[str, str]
) -> None:
    # Given a webhook to change later
    existing = (await created(api))["id"]

    # When a webhook is registered, or changed, with a header no HTTP request can carry
    # as given (these were accepted, and then made every delivery fail)
    on_create = await create(api, headers=headers)
    on_change = await patch(api, existing, {"headers": headers})

    # Then both are 422 naming the headers, and nothing was recorded
    for response in (on_create, on_change):
        assert_invalid(response, "headers")
    assert len(await list_all(api)) == 1
    assert (await get(api, existing)).json()["headers"] == {}


async def test_header_values_with_inner_spaces_and_tabs_are_kept(api: Api) -> None:
    # When a webhook is registered with values HTTP allows: inner spaces and tabs, empty
    headers = {"Authorization": "Bearer  tok\tx", "X-Empty": ""}
    body = await created(api, headers=headers)

    # Then they are kept as given, for the sender
    sealed = api.services.webhooks.get_webhook(api.shop.store_id, UUID(body["id"])).sealed_headers
    assert sealed is not None
    assert api.services.keeper.open_headers(UUID(body["id"]), sealed) == headers


def test_every_header_the_sender_drops_is_refused_at_registration() -> None:
    # The sender sets its framing headers itself and drops a caller's: a merchant must
    # never be able to configure one (it would be accepted, then silently not sent).
    from domain.webhook import RESERVED_HEADERS
    from infrastructure.sender import _RESERVED_REQUEST_HEADERS

    assert _RESERVED_REQUEST_HEADERS <= RESERVED_HEADERS
