"""The read-side routes over the real API (§7, §8): `GET /v1/events`, `/v1/events/{eventId}`,
`/v1/deliveries`, `/v1/deliveries/{id}` and `/v1/audit`, on SQLite and PostgreSQL.

Webhooks are made and events sent again through the API (so the key's person is the
actor); store events and attempts are recorded through the applications, and the read
models are brought up to date with `catch_up_all` before each question. Every answer is
checked against the schema the OpenAPI document publishes for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import httpx
import pytest
from jsonschema import Draft202012Validator

from application.dispatch import AttemptResult
from domain.delivery import delivery_id_of, envelope_id_of, event_id_of
from domain.values import Actor
from infrastructure.api.app import ENDPOINTS

if TYPE_CHECKING:
    from tests.integration.infrastructure.api.conftest import Api, Tenant

pytestmark = pytest.mark.anyio

URL = "https://93.184.215.14/h"  # a public address: no DNS needed
ANN = Actor.person("ann@shop.example")  # the shop's key acts for Ann
PROBLEM = "application/problem+json"
SCHEMAS = {e.operation_id: e.response for e in ENDPOINTS}


# Helpers ----------------------------------------------------------------------------------


async def webhook(api: Api, event_types: list[str], tenant: Tenant | None = None) -> str:
    response = await api.client.post(
        "/v1/webhooks",
        json={"url": URL, "eventTypes": event_types},
        headers=(tenant or api.shop).headers,
    )
    assert response.status_code == 201, response.text
    webhook_id: str = response.json()["id"]
    return webhook_id


def product(api: Api, name: str, tenant: Tenant | None = None) -> str:
    """A product.created event, turned into its deliveries; its event id."""
    store = (tenant or api.shop).store_id
    created = api.services.commerce.create_product(store, name, None, ANN)
    while api.services.dispatch.process_new_events():
        pass
    return event_id_of(UUID(created["id"]), 1)


def customer(api: Api, name: str, tenant: Tenant | None = None) -> tuple[str, str]:
    """A customer.registered event, processed: (the customer id, the event id)."""
    store = (tenant or api.shop).store_id
    created = api.services.commerce.register_customer(
        store, f"{name.lower()}-{uuid4().hex[:6]}@example.com", name, None, ANN
    )
    while api.services.dispatch.process_new_events():
        pass
    return created["id"], event_id_of(UUID(created["id"]), 1)


def delivery(event_id: str, webhook_id: str) -> str:
    return str(delivery_id_of(envelope_id_of(event_id), UUID(webhook_id)))


def attempt(api: Api, delivery_id: str, number: int, status: int | None) -> None:
    api.services.dispatch.record_attempts(
        [
            AttemptResult(
                delivery=api.services.dispatch.ref(UUID(delivery_id)),
                number=number,
                started_at=datetime.now(UTC),
                duration_ms=20.0,
                status_code=status,
                error=None if status else "timeout",
                response_headers={"retry-after": "5"} if status == 503 else {},
                response_body="busy" if status == 503 else "",
                final=status == 410,
            )
        ]
    )


def catch_up(api: Api) -> None:
    while api.services.read_models.catch_up_all():
        pass


def now() -> str:
    time.sleep(0.005)
    moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(0.005)
    return moment


async def get(
    api: Api, path: str, operation: str, tenant: Tenant | None = None, **params: Any
) -> dict[str, Any]:
    """A 200 answer, checked against the schema the document publishes for ``operation``."""
    response = await api.client.get(path, params=params, headers=(tenant or api.shop).headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    validator = Draft202012Validator(
        SCHEMAS[operation], format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    errors = [e.message for e in validator.iter_errors(body)]
    assert errors == [], errors
    return body


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    return problem


def ids(page: dict[str, Any], key: str = "id") -> list[str]:
    return [row[key] for row in page["data"]]


@dataclass
class Shop:
    everything: str
    customers: str
    bob: str
    registered: str
    mug: str
    mark: str  # between Bob's registration and the mug
    replay: str


async def shop_history(api: Api) -> Shop:
    # Given two webhooks of the shop, Bob's registration (delivered to both) and a mug
    everything = await webhook(api, ["*"])
    customers = await webhook(api, ["customer.*"])
    bob, registered = customer(api, "Bob")
    mark = now()
    mug = product(api, "Mug")
    # One success, one failure that will be retried, one still untried
    attempt(api, delivery(registered, everything), 1, 200)
    attempt(api, delivery(registered, customers), 1, 503)
    # And Ann sends Bob's registration again to the customers webhook
    response = await api.client.post(
        f"/v1/events/{registered}/send-again",
        json={"webhookId": customers},
        headers=api.shop.headers,
    )
    assert response.status_code == 202, response.text
    [replay] = response.json()["deliveries"]
    catch_up(api)
    return Shop(everything, customers, bob, registered, mug, mark, replay["id"])


# Events -----------------------------------------------------------------------------------


async def test_the_event_list_answers_each_filter_and_both_orders(api: Api) -> None:
    shop = await shop_history(api)

    # When the events are listed without and with each filter
    newest = await get(api, "/v1/events", "list_events")
    oldest = await get(api, "/v1/events", "list_events", order="oldest")
    typed = await get(api, "/v1/events", "list_events", eventType="customer.registered")
    by_entity = await get(api, "/v1/events", "list_events", eventType="product.*")
    of_bob = await get(api, "/v1/events", "list_events", entityId=shop.bob)
    since = await get(api, "/v1/events", "list_events", since=shop.mark)
    until = await get(api, "/v1/events", "list_events", until=shop.mark)

    # Then each answers exactly the matching events, in the asked order
    assert ids(newest, "eventId") == [shop.mug, shop.registered]
    assert ids(oldest, "eventId") == [shop.registered, shop.mug]
    assert newest["nextCursor"] is None
    assert ids(typed, "eventId") == ids(of_bob, "eventId") == ids(until, "eventId")
    assert ids(typed, "eventId") == [shop.registered]
    assert ids(by_entity, "eventId") == ids(since, "eventId") == [shop.mug]
    # And each item tells how its deliveries stand
    assert oldest["data"][0]["deliveries"] == {"pending": 2, "succeeded": 1, "failed": 0}
    assert oldest["data"][0]["initiatedBy"] == "ann@shop.example"


async def test_an_event_answers_its_envelope_and_deliveries_per_webhook(api: Api) -> None:
    shop = await shop_history(api)

    # When Bob's registration is read
    event = await get(api, f"/v1/events/{shop.registered}", "get_event")

    # Then it has the envelope, and both webhooks' deliveries with their attempts
    assert event["eventId"] == shop.registered
    assert event["envelope"]["eventId"] == shop.registered
    assert event["envelope"]["data"]["customer"]["id"] == shop.bob
    groups = {g["webhookId"]: g["deliveries"] for g in event["deliveriesByWebhook"]}
    assert set(groups) == {shop.everything, shop.customers}
    [succeeded] = groups[shop.everything]
    assert succeeded["status"] == "succeeded"
    assert succeeded["attempts"][0]["statusCode"] == 200
    first, again = groups[shop.customers]
    assert first["status"] == "pending"
    [retry] = first["attempts"]
    assert retry["outcome"] == "retrying"
    assert retry["responseHeaders"] == {"retry-after": "5"}
    assert retry["responseBody"] == "busy"
    assert retry["nextAttemptAt"] == first["nextAttemptAt"]
    # And the "send again" is there, marked as Ann's replay
    assert (again["id"], again["replay"], again["requestedBy"]) == (
        shop.replay,
        True,
        "ann@shop.example",
    )


async def test_another_stores_or_an_unknown_event_is_404(api: Api) -> None:
    # Given an event of the other store
    await webhook(api, ["*"], tenant=api.other)
    foreign = product(api, "Theirs", tenant=api.other)
    catch_up(api)

    # When the shop asks for it, for an unknown event and for a malformed id
    for event_id in (foreign, "evt_" + "f" * 32, "hello"):
        response = await api.client.get(f"/v1/events/{event_id}", headers=api.shop.headers)

        # Then each is a 404 problem
        assert_problem(response, 404)
    # While the other store reads it
    event = await get(api, f"/v1/events/{foreign}", "get_event", tenant=api.other)
    assert event["eventId"] == foreign


# Deliveries -------------------------------------------------------------------------------


async def test_the_delivery_list_answers_each_filter_and_both_orders(api: Api) -> None:
    shop = await shop_history(api)
    to_everything = delivery(shop.registered, shop.everything)
    to_customers = delivery(shop.registered, shop.customers)
    mug = delivery(shop.mug, shop.everything)

    # When the deliveries are listed without and with each filter
    newest = await get(api, "/v1/deliveries", "list_deliveries")
    oldest = await get(api, "/v1/deliveries", "list_deliveries", order="oldest")
    by_webhook = await get(api, "/v1/deliveries", "list_deliveries", webhookId=shop.everything)
    by_event = await get(api, "/v1/deliveries", "list_deliveries", eventId=shop.mug)
    succeeded = await get(api, "/v1/deliveries", "list_deliveries", status="succeeded")
    pending = await get(api, "/v1/deliveries", "list_deliveries", status="pending")
    failed = await get(api, "/v1/deliveries", "list_deliveries", status="failed")
    since = await get(api, "/v1/deliveries", "list_deliveries", since=shop.mark)
    until = await get(api, "/v1/deliveries", "list_deliveries", until=shop.mark)

    # Then each answers exactly the matching deliveries
    assert ids(newest) == ids(oldest)[::-1]
    assert set(ids(oldest)[:2]) == {to_everything, to_customers}
    assert ids(oldest)[2:] == [mug, shop.replay]
    assert set(ids(by_webhook)) == {to_everything, mug}
    assert ids(by_event) == [mug]
    assert ids(succeeded) == [to_everything]
    assert set(ids(pending)) == {to_customers, mug, shop.replay}
    assert ids(failed) == []
    assert ids(since) == [shop.replay, mug]
    assert set(ids(until)) == {to_everything, to_customers}


async def test_a_delivery_answers_its_attempts_and_only_to_its_store(api: Api) -> None:
    shop = await shop_history(api)
    to_customers = delivery(shop.registered, shop.customers)
    # Given a second attempt that fails for good (410 Gone)
    attempt(api, to_customers, 2, 410)
    catch_up(api)

    # When the delivery is read
    found = await get(api, f"/v1/deliveries/{to_customers}", "get_delivery")

    # Then it has both attempts and has failed
    assert found["status"] == "failed"
    assert [(a["number"], a["statusCode"], a["outcome"]) for a in found["attempts"]] == [
        (1, 503, "retrying"),
        (2, 410, "failed"),
    ]
    # And the failed filter now finds it
    failed = await get(api, "/v1/deliveries", "list_deliveries", status="failed")
    assert ids(failed) == [to_customers]
    # And the other store, an unknown id and a malformed one get a 404
    for path, tenant in (
        (f"/v1/deliveries/{to_customers}", api.other),
        (f"/v1/deliveries/{uuid4()}", api.shop),
        ("/v1/deliveries/nope", api.shop),
    ):
        assert_problem(await api.client.get(path, headers=tenant.headers), 404)


# Audit ------------------------------------------------------------------------------------


async def test_the_audit_log_answers_who_did_what_and_when(api: Api) -> None:
    shop = await shop_history(api)
    # Given the customers webhook disabled by Ann with a reason, after a mark
    changed = now()
    response = await api.client.patch(
        f"/v1/webhooks/{shop.customers}",
        json={"enabled": False, "disabledReason": "maintenance"},
        headers=api.shop.headers,
    )
    assert response.status_code == 200, response.text
    catch_up(api)

    # When the audit log is asked who sent Bob's registration again
    sent_again = await get(
        api, "/v1/audit", "list_audit_entries", eventId=shop.registered, kind="delivery.sent_again"
    )
    # Then it was Ann, for the replay delivery
    [entry] = sent_again["data"]
    assert (entry["actor"], entry["deliveryId"]) == ("ann@shop.example", shop.replay)
    assert entry["occurredAt"] < changed

    # When it is asked for the failed attempts to the customers webhook
    failures = await get(
        api,
        "/v1/audit",
        "list_audit_entries",
        webhookId=shop.customers,
        kind="delivery.attempt_failed,delivery.failed",
    )
    # Then it is the one 503
    assert [(e["kind"], e["details"]["statusCode"]) for e in failures["data"]] == [
        ("delivery.attempt_failed", 503)
    ]

    # When it is asked what changed on that webhook, oldest first
    changes = await get(
        api,
        "/v1/audit",
        "list_audit_entries",
        webhookId=shop.customers,
        kind="webhook.",
        order="oldest",
    )
    # Then it was created and disabled, both by Ann
    assert [(e["kind"], e["actor"]) for e in changes["data"]] == [
        ("webhook.created", "ann@shop.example"),
        ("webhook.disabled", "ann@shop.example"),
    ]
    assert changes["data"][1]["details"] == {"reason": "maintenance"}

    # And the remaining filters narrow the log as asked
    by_delivery = await get(
        api, "/v1/audit", "list_audit_entries", deliveryId=shop.replay, actor="ann@shop.example"
    )
    assert [e["kind"] for e in by_delivery["data"]] == ["delivery.sent_again"]
    since = await get(api, "/v1/audit", "list_audit_entries", since=changed)
    assert [e["kind"] for e in since["data"]] == ["webhook.disabled"]
    until = await get(api, "/v1/audit", "list_audit_entries", until=changed, order="oldest")
    assert until["data"][0]["kind"] == "store.created"
    assert "webhook.disabled" not in [e["kind"] for e in until["data"]]


# Paging while new rows arrive ------------------------------------------------------------------


async def every_page(
    api: Api, path: str, operation: str, cursor: str | None, **params: Any
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while cursor is not None:
        page = await get(api, path, operation, cursor=cursor, **params)
        rows.extend(page["data"])
        cursor = page["nextCursor"]
    return rows


@pytest.mark.parametrize("order", ["newest", "oldest"])
async def test_pages_skip_and_repeat_nothing_while_events_arrive(api: Api, order: str) -> None:
    # Given five events
    await webhook(api, ["*"])
    before = [product(api, f"P{i}") for i in range(5)]
    catch_up(api)

    # When a first page of events, deliveries and audit entries is read, then three more
    # events arrive, then the rest of each list is read
    lists = {
        "/v1/events": "list_events",
        "/v1/deliveries": "list_deliveries",
        "/v1/audit": "list_audit_entries",
    }
    firsts = {
        path: await get(api, path, operation, limit=2, order=order)
        for path, operation in lists.items()
    }
    later = [product(api, f"Q{i}") for i in range(3)]
    catch_up(api)
    pages = {
        path: firsts[path]["data"]
        + await every_page(api, path, operation, firsts[path]["nextCursor"], limit=2, order=order)
        for path, operation in lists.items()
    }

    # Then no list skipped or repeated anything
    events = [e["eventId"] for e in pages["/v1/events"]]
    deliveries = [d["eventId"] for d in pages["/v1/deliveries"]]
    audit = [e["id"] for e in pages["/v1/audit"]]
    assert len(set(audit)) == len(audit)
    if order == "newest":
        # what was there at the first page, once each, newest first
        assert events == deliveries == before[::-1]
        assert len(audit) == 3 + 5  # store, key and webhook; five deliveries
    else:
        # what was there, then what arrived, once each
        assert events == deliveries == before + later
        assert len(audit) == 3 + 5 + 3


# Tenant isolation and bad requests ---------------------------------------------------------


async def test_no_list_answers_another_stores_rows(api: Api) -> None:
    shop = await shop_history(api)

    # When the other store lists events, deliveries and its audit log — also naming the
    # shop's webhook and event
    events = await get(api, "/v1/events", "list_events", tenant=api.other)
    deliveries = await get(
        api, "/v1/deliveries", "list_deliveries", tenant=api.other, webhookId=shop.everything
    )
    audit = await get(api, "/v1/audit", "list_audit_entries", tenant=api.other)
    about_shop = await get(
        api, "/v1/audit", "list_audit_entries", tenant=api.other, eventId=shop.registered
    )

    # Then it sees nothing of the shop's
    assert events["data"] == deliveries["data"] == about_shop["data"] == []
    assert [e["kind"] for e in audit["data"]] == ["api_key.created", "store.created"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/events", {"since": "last week"}, "since"),
        ("/v1/events", {"until": "2030-01-01T00:00:00"}, "until"),
        ("/v1/events", {"eventType": "order.teleported"}, "eventType"),
        ("/v1/events", {"entityId": "bob"}, "entityId"),
        ("/v1/events", {"order": "random"}, "order"),
        ("/v1/events", {"limit": "500"}, "limit"),
        ("/v1/events", {"cursor": "bm90IG91cnM"}, "cursor"),
        ("/v1/deliveries", {"status": "lost"}, "status"),
        ("/v1/deliveries", {"webhookId": "1"}, "webhookId"),
        ("/v1/deliveries", {"eventId": "1"}, "eventId"),
        ("/v1/deliveries", {"limit": "0"}, "limit"),
        ("/v1/audit", {"deliveryId": "x"}, "deliveryId"),
        ("/v1/audit", {"kind": "DELIVERY"}, "kind"),
        ("/v1/audit", {"actor": "a" * 300}, "actor"),
    ],
)
async def test_bad_query_parameters_are_422_naming_the_field(
    api: Api, path: str, params: dict[str, str], field: str
) -> None:
    # When a list is asked with a bad query parameter
    response = await api.client.get(path, params=params, headers=api.shop.headers)

    # Then it is a 422 problem naming that parameter
    problem = assert_problem(response, 422)
    assert [e["field"] for e in problem["errors"]] == [field]


async def test_a_cursor_of_one_list_does_not_continue_another(api: Api) -> None:
    # Given a cursor of the event list
    await webhook(api, ["*"])
    for i in range(3):
        product(api, f"P{i}")
    catch_up(api)
    cursor = (await get(api, "/v1/events", "list_events", limit=1))["nextCursor"]

    # When it is used for the deliveries, or for the audit log
    for path in ("/v1/deliveries", "/v1/audit"):
        response = await api.client.get(path, params={"cursor": cursor}, headers=api.shop.headers)

        # Then it is refused
        assert_problem(response, 422)


@pytest.mark.parametrize(
    "path", ["/v1/events", f"/v1/events/evt_{'0' * 32}", "/v1/deliveries", "/v1/audit"]
)
async def test_read_routes_require_a_key(api: Api, path: str) -> None:
    assert_problem(await api.client.get(path), 401)


async def test_the_document_describes_every_query_parameter(api: Api) -> None:
    # When the OpenAPI document is read
    document = (await api.client.get("/openapi.json")).json()

    # Then each read route lists its query parameters
    def parameters(path: str) -> set[str]:
        return {p["name"] for p in document["paths"][path]["get"]["parameters"]}

    paging = {"order", "limit", "cursor", "since", "until"}
    assert parameters("/v1/events") == paging | {"eventType", "entityId", "test"}
    assert parameters("/v1/events/feed") == {"cursor", "eventTypes", "wait", "limit"}
    assert parameters("/v1/deliveries") == paging | {"webhookId", "eventId", "status"}
    assert parameters("/v1/audit") == paging | {
        "webhookId",
        "eventId",
        "deliveryId",
        "actor",
        "kind",
    }
    for path in ("/v1/events/{eventId}", "/v1/deliveries/{id}"):
        assert "404" in document["paths"][path]["get"]["responses"]


@pytest.mark.parametrize("path", ["/v1/events", "/v1/deliveries", "/v1/audit"])
@pytest.mark.parametrize("until", ["2030-01-01T00:00:00Z", "2029-01-01T00:00:00Z"])
async def test_a_range_that_ends_where_it_begins_is_an_empty_page(
    api: Api, path: str, until: str
) -> None:
    # When a list is asked for a range that ends at or before its start (the document
    # allows any two times: JSON Schema cannot say "later than")
    params = {"since": "2030-01-01T00:00:00Z", "until": until}
    response = await api.client.get(path, params=params, headers=api.shop.headers)

    # Then it is an empty page, not an error
    assert response.status_code == 200, response.text
    assert response.json() == {"data": [], "nextCursor": None}
