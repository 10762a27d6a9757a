"""The commerce routes of SPEC §8 over the real Starlette app, on SQLite and on PostgreSQL.

Each route is called with the exact request body of §8; the tests check the status, the
entity JSON it answers, that a `GET` reads back the same JSON, the actor every command
records, tenant isolation between two stores, `Idempotency-Key`, and the business rules
of §2 answered as 409 (rule broken now) or 422 (a value that can never be right).
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import httpx
import pytest

from domain.event_types import event_type
from domain.values import Actor
from tests.integration.infrastructure.api.conftest import Api, Tenant

pytestmark = pytest.mark.anyio

JSON = dict[str, Any]
ANN = Actor.person("ann@shop.example")
CLERK = Actor.person("clerk@other.example")
PROBLEM = "application/problem+json"
HOOK_URL = "https://93.184.215.14/hook"  # a public address: the SSRF guard lets it through
ADDRESS = {
    "line1": "Hauptstraße 1",
    "city": "Berlin",
    "postalCode": "10115",
    "country": "DE",
}
SUBSCRIPTION_ACTIONS = ("renew", "pause", "resume", "cancel", "expire", "payment-failure")


# Helpers ----------------------------------------------------------------------------------


async def send(
    api: Api,
    tenant: Tenant,
    method: str,
    path: str,
    body: JSON | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One request with the tenant's key; `body` is sent as JSON when given."""
    all_headers = {**tenant.headers, **(headers or {})}
    if body is None:
        return await api.client.request(method, path, headers=all_headers)
    return await api.client.request(method, path, json=body, headers=all_headers)


async def expect(
    api: Api,
    tenant: Tenant,
    method: str,
    path: str,
    body: JSON | None = None,
    status: int = 200,
) -> JSON:
    """The JSON answer of a request that must succeed with `status`."""
    response = await send(api, tenant, method, path, body)
    assert response.status_code == status, f"{method} {path}: {response.text}"
    assert response.headers["content-type"].startswith("application/json")
    answer: JSON = response.json()
    return answer


def assert_problem(response: httpx.Response, status: int) -> JSON:
    """`response` is an RFC 9457 problem with this status; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: JSON = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    assert body["detail"]
    assert "Traceback" not in response.text
    return body


def notifications(api: Api) -> int:
    """How many events the commerce application has recorded so far."""
    return len(api.services.commerce.recorder.select_notifications(start=None, limit=1000))


def webhook_notifications(api: Api) -> int:
    """How many events the webhooks application has recorded so far."""
    return len(api.services.webhooks.recorder.select_notifications(start=None, limit=1000))


def recorded(api: Api) -> list[Any]:
    """Every commerce event recorded so far, as domain events, in log order."""
    app = api.services.commerce
    return [
        app.mapper.to_domain_event(n)
        for n in app.recorder.select_notifications(start=None, limit=1000)
    ]


async def create_customer(api: Api, tenant: Tenant, email: str = "bob@example.com") -> JSON:
    return await expect(api, tenant, "POST", "/v1/customers", {"email": email, "name": "Bob"}, 201)


async def create_sku(
    api: Api, tenant: Tenant, price: str = "19.90", currency: str = "EUR", stock: int = 10
) -> JSON:
    """A SKU (with its product and variant) priced `price` `currency`."""
    product = await expect(api, tenant, "POST", "/v1/products", {"name": "Mug"}, 201)
    variant = await expect(
        api,
        tenant,
        "POST",
        f"/v1/products/{product['id']}/variants",
        {"attributes": {"color": "red"}},
        201,
    )
    return await expect(
        api,
        tenant,
        "POST",
        f"/v1/variants/{variant['id']}/skus",
        {"code": "MUG-RED", "price": {"amount": price, "currency": currency}, "stock": stock},
        201,
    )


async def place_order(
    api: Api, tenant: Tenant, quantity: int = 2, price: str = "19.90"
) -> tuple[JSON, JSON, JSON]:
    """An order for `quantity` of a fresh SKU at `price` EUR: (order, customer, sku)."""
    customer = await create_customer(api, tenant)
    sku = await create_sku(api, tenant, price)
    order = await expect(
        api,
        tenant,
        "POST",
        "/v1/orders",
        {
            "customerId": customer["id"],
            "currency": "EUR",
            "lines": [{"skuId": sku["id"], "quantity": quantity}],
        },
        201,
    )
    # The SKU as the order left it: placing the order reserved its stock
    sku = await expect(api, tenant, "GET", f"/v1/skus/{sku['id']}")
    return order, customer, sku


async def start_subscription(api: Api, tenant: Tenant) -> JSON:
    customer = await create_customer(api, tenant)
    sku = await create_sku(api, tenant)
    return await expect(
        api,
        tenant,
        "POST",
        "/v1/subscriptions",
        {"customerId": customer["id"], "skuId": sku["id"], "interval": "month"},
        201,
    )


async def read_back(api: Api, tenant: Tenant, plural: str, entity: JSON) -> None:
    """`GET /v1/{plural}/{id}` answers exactly the JSON the last command answered."""
    assert await expect(api, tenant, "GET", f"/v1/{plural}/{entity['id']}") == entity


async def every_command(api: Api, tenant: Tenant, extra: JSON | None = None) -> list[str]:
    """Calls every commerce command of §8 once, with `extra` merged into each body, and
    returns the event types these commands must have recorded, in order."""
    more = extra or {}

    async def run(method: str, path: str, body: JSON, status: int = 200) -> JSON:
        return await expect(api, tenant, method, path, {**body, **more}, status)

    customer = await run("POST", "/v1/customers", {"email": "bob@example.com", "name": "Bob"}, 201)
    c = customer["id"]
    await run("PATCH", f"/v1/customers/{c}", {"name": "Robert"})
    await run("POST", f"/v1/customers/{c}/verify", {})
    await run("POST", f"/v1/customers/{c}/addresses", ADDRESS, 201)
    product = await run("POST", "/v1/products", {"name": "Mug"}, 201)
    await run("PATCH", f"/v1/products/{product['id']}", {"description": "A mug"})
    variant = await run(
        "POST", f"/v1/products/{product['id']}/variants", {"attributes": {"color": "red"}}, 201
    )
    await run("PATCH", f"/v1/variants/{variant['id']}", {"attributes": {"color": "blue"}})
    sku = await run(
        "POST",
        f"/v1/variants/{variant['id']}/skus",
        {"code": "MUG", "price": {"amount": "19.90", "currency": "EUR"}, "stock": 10},
        201,
    )
    s = sku["id"]
    await run("POST", f"/v1/skus/{s}/price", {"amount": "17.50", "currency": "EUR"})
    await run("POST", f"/v1/skus/{s}/stock", {"quantity": 7})
    await run("POST", f"/v1/skus/{s}/stock", {"delta": -2})
    order = await run(
        "POST",
        "/v1/orders",
        {"customerId": c, "currency": "EUR", "lines": [{"skuId": s, "quantity": 2}]},
        201,
    )
    o = order["id"]
    await run("POST", f"/v1/orders/{o}/status", {"status": "processing"})
    await run("POST", f"/v1/orders/{o}/payments", {"amount": "35.00"})
    await run("POST", f"/v1/orders/{o}/refunds", {"amount": "10.00", "reason": "chipped"})
    subscription = await run(
        "POST", "/v1/subscriptions", {"customerId": c, "skuId": s, "interval": "year"}, 201
    )
    for action in ("renew", "payment-failure", "pause", "resume", "cancel"):
        await run("POST", f"/v1/subscriptions/{subscription['id']}/{action}", {})
    other = await run(
        "POST", "/v1/subscriptions", {"customerId": c, "skuId": s, "interval": "month"}, 201
    )
    await run("POST", f"/v1/subscriptions/{other['id']}/expire", {})
    await run("POST", f"/v1/customers/{c}/deletion-request", {})
    return [
        "customer.registered",
        "customer.updated",
        "customer.verified",
        "customer.address_saved",
        "product.created",
        "product.updated",
        "variant.created",
        "variant.updated",
        "sku.created",
        "sku.price_changed",
        "sku.stock_changed",
        "sku.stock_changed",
        "order.created",
        "sku.stock_changed",  # the order reserved its 2
        "order.status_updated",
        "order.paid",
        "order.refunded",
        "subscription.created",
        "subscription.renewed",
        "subscription.payment_failed",
        "subscription.paused",
        "subscription.resumed",
        "subscription.cancelled",
        "subscription.created",
        "subscription.expired",
        "customer.deletion_requested",
    ]


# Every route, its status and the entity it answers ---------------------------------------


async def test_customer_routes_answer_the_customer_after_each_command(api: Api) -> None:
    # Given a store with nothing in it
    # When a customer registers
    customer = await expect(
        api,
        api.shop,
        "POST",
        "/v1/customers",
        {"email": "bob@example.com", "name": "Bob", "phone": "+49 30 1234"},
        201,
    )

    # Then the answer is the new customer, with its id, in this store
    assert customer["id"]
    assert customer["storeId"] == str(api.shop.store_id)
    assert customer["email"] == "bob@example.com"
    assert customer["name"] == "Bob"
    assert customer["phone"] == "+49 30 1234"
    assert customer["verified"] is False
    assert customer["addresses"] == []
    assert customer["deletionRequested"] is False
    assert customer["version"] == 1
    assert customer["createdAt"].endswith("Z")
    await read_back(api, api.shop, "customers", customer)
    c = customer["id"]

    # When the profile is updated, only the fields sent change
    updated = await expect(api, api.shop, "PATCH", f"/v1/customers/{c}", {"name": "Robert"})
    assert updated["name"] == "Robert"
    assert updated["email"] == "bob@example.com"
    assert updated["phone"] == "+49 30 1234"
    assert updated["version"] == 2
    await read_back(api, api.shop, "customers", updated)

    # When the customer is verified
    verified = await expect(api, api.shop, "POST", f"/v1/customers/{c}/verify")
    assert verified["verified"] is True
    await read_back(api, api.shop, "customers", verified)

    # When two addresses are saved, the second with a second line
    first = await expect(api, api.shop, "POST", f"/v1/customers/{c}/addresses", ADDRESS, 201)
    assert first["addresses"] == [{**ADDRESS, "line2": None}]
    second_address = {**ADDRESS, "line1": "Nebenweg 2", "line2": "Hinterhaus", "city": "Köln"}
    second = await expect(
        api, api.shop, "POST", f"/v1/customers/{c}/addresses", second_address, 201
    )
    assert second["id"] == c
    assert second["addresses"] == [{**ADDRESS, "line2": None}, second_address]
    await read_back(api, api.shop, "customers", second)

    # When the customer asks to be deleted
    deleted = await expect(api, api.shop, "POST", f"/v1/customers/{c}/deletion-request")
    assert deleted["deletionRequested"] is True
    assert deleted["version"] == 6
    await read_back(api, api.shop, "customers", deleted)


async def test_catalog_routes_answer_products_variants_and_skus(api: Api) -> None:
    # Given a store
    # When a product is created and then renamed
    product = await expect(
        api, api.shop, "POST", "/v1/products", {"name": "Mug", "description": "A mug"}, 201
    )
    assert product["id"]
    assert product["storeId"] == str(api.shop.store_id)
    assert (product["name"], product["description"]) == ("Mug", "A mug")
    await read_back(api, api.shop, "products", product)
    renamed = await expect(
        api, api.shop, "PATCH", f"/v1/products/{product['id']}", {"name": "Big mug"}
    )
    assert (renamed["name"], renamed["description"]) == ("Big mug", "A mug")
    assert renamed["version"] == 2
    await read_back(api, api.shop, "products", renamed)

    # When a variant is added and its attributes changed
    variant = await expect(
        api,
        api.shop,
        "POST",
        f"/v1/products/{product['id']}/variants",
        {"attributes": {"color": "red", "size": "M"}},
        201,
    )
    assert variant["id"]
    assert variant["productId"] == product["id"]
    assert variant["attributes"] == {"color": "red", "size": "M"}
    await read_back(api, api.shop, "variants", variant)
    recoloured = await expect(
        api,
        api.shop,
        "PATCH",
        f"/v1/variants/{variant['id']}",
        {"attributes": {"color": "blue", "size": "L"}},
    )
    assert recoloured["attributes"] == {"color": "blue", "size": "L"}
    await read_back(api, api.shop, "variants", recoloured)

    # When a SKU is added to the variant
    sku = await expect(
        api,
        api.shop,
        "POST",
        f"/v1/variants/{variant['id']}/skus",
        {"code": "MUG-BLUE-L", "price": {"amount": "19.90", "currency": "EUR"}, "stock": 10},
        201,
    )
    assert sku["id"]
    assert (sku["productId"], sku["variantId"]) == (product["id"], variant["id"])
    assert sku["code"] == "MUG-BLUE-L"
    assert sku["price"] == {"amount": "19.90", "currency": "EUR"}
    assert sku["stock"] == 10
    await read_back(api, api.shop, "skus", sku)
    s = sku["id"]

    # Then its price and stock follow each command
    repriced = await expect(
        api, api.shop, "POST", f"/v1/skus/{s}/price", {"amount": "17.50", "currency": "EUR"}
    )
    assert repriced["price"] == {"amount": "17.50", "currency": "EUR"}
    await read_back(api, api.shop, "skus", repriced)
    restocked = await expect(api, api.shop, "POST", f"/v1/skus/{s}/stock", {"quantity": 7})
    assert restocked["stock"] == 7
    await read_back(api, api.shop, "skus", restocked)
    moved = await expect(api, api.shop, "POST", f"/v1/skus/{s}/stock", {"delta": -2})
    assert moved["stock"] == 5
    assert moved["price"] == {"amount": "17.50", "currency": "EUR"}
    assert moved["version"] == 4
    await read_back(api, api.shop, "skus", moved)


async def test_order_routes_follow_an_order_from_placement_to_delivery(api: Api) -> None:
    # Given a customer and a SKU at 19.90 EUR
    customer = await create_customer(api, api.shop)
    sku = await create_sku(api, api.shop, "19.90")

    # When an order for 2 is placed
    order = await expect(
        api,
        api.shop,
        "POST",
        "/v1/orders",
        {
            "customerId": customer["id"],
            "currency": "EUR",
            "lines": [{"skuId": sku["id"], "quantity": 2}],
        },
        201,
    )

    # Then it totals 39.80 and nothing is paid yet
    assert order["id"]
    assert order["customerId"] == customer["id"]
    assert order["currency"] == "EUR"
    assert order["status"] == "pending"
    assert order["lines"] == [
        {
            "skuId": sku["id"],
            "quantity": 2,
            "unitPrice": {"amount": "19.90", "currency": "EUR"},
            "total": {"amount": "39.80", "currency": "EUR"},
        }
    ]
    assert order["total"] == {"amount": "39.80", "currency": "EUR"}
    assert order["amountPaid"] == {"amount": "0.00", "currency": "EUR"}
    assert order["amountDue"] == {"amount": "39.80", "currency": "EUR"}
    await read_back(api, api.shop, "orders", order)
    o = order["id"]

    # When it moves on, is paid in two parts and partly refunded
    processing = await expect(
        api, api.shop, "POST", f"/v1/orders/{o}/status", {"status": "processing"}
    )
    assert processing["status"] == "processing"
    part = await expect(api, api.shop, "POST", f"/v1/orders/{o}/payments", {"amount": "20.00"})
    assert part["amountPaid"] == {"amount": "20.00", "currency": "EUR"}
    assert part["amountDue"] == {"amount": "19.80", "currency": "EUR"}
    paid = await expect(api, api.shop, "POST", f"/v1/orders/{o}/payments", {"amount": "19.80"})
    assert paid["amountPaid"] == {"amount": "39.80", "currency": "EUR"}
    assert paid["amountDue"] == {"amount": "0.00", "currency": "EUR"}
    await read_back(api, api.shop, "orders", paid)
    refunded = await expect(
        api, api.shop, "POST", f"/v1/orders/{o}/refunds", {"amount": "10.00", "reason": "chipped"}
    )
    assert refunded["amountRefunded"] == {"amount": "10.00", "currency": "EUR"}
    assert refunded["amountPaid"] == {"amount": "39.80", "currency": "EUR"}
    await read_back(api, api.shop, "orders", refunded)
    shipped = await expect(api, api.shop, "POST", f"/v1/orders/{o}/status", {"status": "shipped"})
    assert shipped["status"] == "shipped"
    delivered = await expect(
        api, api.shop, "POST", f"/v1/orders/{o}/status", {"status": "delivered"}
    )
    assert delivered["status"] == "delivered"
    assert delivered["version"] == 7
    await read_back(api, api.shop, "orders", delivered)


async def test_an_order_keeps_the_unit_price_it_was_placed_at(api: Api) -> None:
    # Given an order for 2 x 19.90
    order, _, sku = await place_order(api, api.shop)

    # When the SKU's price changes afterwards
    await expect(
        api, api.shop, "POST", f"/v1/skus/{sku['id']}/price", {"amount": "25.00", "currency": "EUR"}
    )

    # Then the order still reads 19.90 each and 39.80 in all
    again = await expect(api, api.shop, "GET", f"/v1/orders/{order['id']}")
    assert again["lines"][0]["unitPrice"] == {"amount": "19.90", "currency": "EUR"}
    assert again["total"] == {"amount": "39.80", "currency": "EUR"}


async def test_subscription_routes_answer_the_status_after_each_action(api: Api) -> None:
    # Given a customer and a SKU at 19.90 EUR
    customer = await create_customer(api, api.shop)
    sku = await create_sku(api, api.shop)

    # When the customer subscribes monthly
    subscription = await expect(
        api,
        api.shop,
        "POST",
        "/v1/subscriptions",
        {"customerId": customer["id"], "skuId": sku["id"], "interval": "month"},
        201,
    )

    # Then the subscription is active at the SKU's price
    assert subscription["id"]
    assert (subscription["customerId"], subscription["skuId"]) == (customer["id"], sku["id"])
    assert subscription["interval"] == "month"
    assert subscription["price"] == {"amount": "19.90", "currency": "EUR"}
    assert subscription["status"] == "active"
    await read_back(api, api.shop, "subscriptions", subscription)
    path = f"/v1/subscriptions/{subscription['id']}"

    # And each action answers the status it leads to
    renewed = await expect(api, api.shop, "POST", f"{path}/renew")
    assert renewed["status"] == "active"
    assert renewed["currentPeriodEnd"] > subscription["currentPeriodEnd"]
    failed = await expect(
        api, api.shop, "POST", f"{path}/payment-failure", {"reason": "card declined"}
    )
    assert failed["status"] == "past_due"
    paused = await expect(api, api.shop, "POST", f"{path}/pause")
    assert paused["status"] == "paused"
    resumed = await expect(api, api.shop, "POST", f"{path}/resume")
    assert resumed["status"] == "active"
    cancelled = await expect(api, api.shop, "POST", f"{path}/cancel")
    assert cancelled["status"] == "cancelled"
    assert cancelled["version"] == 6
    await read_back(api, api.shop, "subscriptions", cancelled)

    # And another subscription can expire
    other = await start_subscription(api, api.shop)
    expired = await expect(api, api.shop, "POST", f"/v1/subscriptions/{other['id']}/expire")
    assert expired["status"] == "expired"
    await read_back(api, api.shop, "subscriptions", expired)


# Actors -----------------------------------------------------------------------------------


async def test_every_command_records_the_person_a_person_key_acts_for(api: Api) -> None:
    # Given the shop's key, which acts for ann@shop.example
    # When every commerce command is called once
    expected_types = await every_command(api, api.shop)

    # Then each recorded one event of its type, and each names ann as its actor
    events = recorded(api)
    assert [event_type(e) for e in events] == expected_types
    assert [e.actor for e in events] == [ANN] * len(expected_types)


async def test_every_command_of_a_system_key_records_the_system(api: Api) -> None:
    # Given the other store's system key
    # When every commerce command is called once
    expected_types = await every_command(api, api.other)

    # Then every event records the system as its actor
    events = recorded(api)
    assert [event_type(e) for e in events] == expected_types
    assert all(e.actor == Actor.system() for e in events)


async def test_a_system_key_records_the_person_named_by_initiated_by(api: Api) -> None:
    # Given the other store's system key
    # When every commerce command names clerk@other.example as its initiator
    expected_types = await every_command(api, api.other, {"initiatedBy": "clerk@other.example"})

    # Then every event records the clerk
    events = recorded(api)
    assert [event_type(e) for e in events] == expected_types
    assert all(e.actor == CLERK for e in events)


async def test_a_system_key_may_name_the_system_explicitly(api: Api) -> None:
    # Given the other store's system key
    # When a customer is registered with "initiatedBy": null
    await expect(
        api,
        api.other,
        "POST",
        "/v1/customers",
        {"email": "bob@example.com", "name": "Bob", "initiatedBy": None},
        201,
    )

    # Then the system is recorded
    assert [e.actor for e in recorded(api)] == [Actor.system()]


async def test_a_person_key_may_name_its_own_person(api: Api) -> None:
    # Given the shop's key, acting for ann
    # When ann names herself as initiator
    await expect(
        api,
        api.shop,
        "POST",
        "/v1/products",
        {"name": "Mug", "initiatedBy": "ann@shop.example"},
        201,
    )

    # Then ann is recorded
    assert [e.actor for e in recorded(api)] == [ANN]


@pytest.mark.parametrize("claimed", ["clerk@other.example", None], ids=["person", "system"])
async def test_a_person_key_cannot_record_another_actor(api: Api, claimed: str | None) -> None:
    # Given a customer and a product of the shop, whose key acts for ann
    customer = await create_customer(api, api.shop)
    product = await expect(api, api.shop, "POST", "/v1/products", {"name": "Mug"}, 201)
    before = notifications(api)
    attempts: list[tuple[str, str, JSON]] = [
        ("POST", "/v1/customers", {"email": "eve@example.com", "name": "Eve"}),
        ("PATCH", f"/v1/customers/{customer['id']}", {"name": "Eve"}),
        ("POST", f"/v1/customers/{customer['id']}/verify", {}),
        ("PATCH", f"/v1/products/{product['id']}", {"name": "Cup"}),
        ("POST", f"/v1/products/{product['id']}/variants", {"attributes": {"color": "red"}}),
    ]

    for method, path, body in attempts:
        # When a command claims another initiator (a person, or the system)
        response = await send(api, api.shop, method, path, {**body, "initiatedBy": claimed})

        # Then it is refused as invalid, naming the field
        problem = assert_problem(response, 422)
        assert problem["errors"][0]["field"] == "initiatedBy"

    # And nothing was recorded
    assert notifications(api) == before


# Tenant isolation -------------------------------------------------------------------------


async def _store_entities(api: Api, owner: Tenant) -> dict[str, JSON]:
    """One entity of each kind in the owner's store."""
    order, customer, sku = await place_order(api, owner)
    variant = await expect(api, owner, "GET", f"/v1/variants/{sku['variantId']}")
    product = await expect(api, owner, "GET", f"/v1/products/{sku['productId']}")
    subscription = await expect(
        api,
        owner,
        "POST",
        "/v1/subscriptions",
        {"customerId": customer["id"], "skuId": sku["id"], "interval": "month"},
        201,
    )
    return {
        "customers": customer,
        "products": product,
        "variants": variant,
        "skus": sku,
        "orders": order,
        "subscriptions": subscription,
    }


def _commands_on(entities: dict[str, JSON]) -> list[tuple[str, str, JSON]]:
    """Every command of §8 addressed to one of these entities, with a valid body."""
    c, p, v, s, o, sub = (
        entities[k]["id"]
        for k in ("customers", "products", "variants", "skus", "orders", "subscriptions")
    )
    return [
        ("PATCH", f"/v1/customers/{c}", {"name": "Mallory"}),
        ("POST", f"/v1/customers/{c}/verify", {}),
        ("POST", f"/v1/customers/{c}/addresses", ADDRESS),
        ("POST", f"/v1/customers/{c}/deletion-request", {}),
        ("PATCH", f"/v1/products/{p}", {"name": "Stolen"}),
        ("POST", f"/v1/products/{p}/variants", {"attributes": {"color": "black"}}),
        ("PATCH", f"/v1/variants/{v}", {"attributes": {"color": "black"}}),
        (
            "POST",
            f"/v1/variants/{v}/skus",
            {"code": "X", "price": {"amount": "1.00", "currency": "EUR"}, "stock": 1},
        ),
        ("POST", f"/v1/skus/{s}/price", {"amount": "0.01", "currency": "EUR"}),
        ("POST", f"/v1/skus/{s}/stock", {"quantity": 0}),
        ("POST", f"/v1/skus/{s}/stock", {"delta": -1}),
        ("POST", f"/v1/orders/{o}/status", {"status": "cancelled"}),
        ("POST", f"/v1/orders/{o}/payments", {"amount": "1.00"}),
        ("POST", f"/v1/orders/{o}/refunds", {"amount": "1.00"}),
        *[("POST", f"/v1/subscriptions/{sub}/{action}", {}) for action in SUBSCRIPTION_ACTIONS],
    ]


@pytest.mark.parametrize("owner_is_shop", [True, False], ids=["shop-owns", "other-owns"])
async def test_another_store_can_neither_read_nor_change_an_entity(
    api: Api, owner_is_shop: bool
) -> None:
    # Given one entity of each kind in the owner's store
    owner, intruder = (api.shop, api.other) if owner_is_shop else (api.other, api.shop)
    entities = await _store_entities(api, owner)
    before = notifications(api)

    for plural, entity in entities.items():
        # When the other store reads it
        response = await send(api, intruder, "GET", f"/v1/{plural}/{entity['id']}")

        # Then it is not found, exactly as an id that never existed
        foreign = assert_problem(response, 404)
        unknown_id = str(uuid4())
        unknown = assert_problem(
            await send(api, intruder, "GET", f"/v1/{plural}/{unknown_id}"), 404
        )
        assert foreign == {**unknown, "detail": unknown["detail"].replace(unknown_id, entity["id"])}

    for method, path, body in _commands_on(entities):
        # When the other store sends any command to it
        response = await send(api, intruder, method, path, body)

        # Then it is not found
        assert_problem(response, 404)

    # And nothing was recorded, and the owner still reads every entity unchanged
    assert notifications(api) == before
    for plural, entity in entities.items():
        assert await expect(api, owner, "GET", f"/v1/{plural}/{entity['id']}") == entity


async def test_another_store_cannot_order_or_subscribe_with_foreign_skus_or_customers(
    api: Api,
) -> None:
    # Given the shop's customer and SKU, and the other store's own customer and SKU
    shop_customer = await create_customer(api, api.shop)
    shop_sku = await create_sku(api, api.shop)
    own_customer = await create_customer(api, api.other)
    own_sku = await create_sku(api, api.other)
    before = notifications(api)
    attempts = [
        ("/v1/orders", {"customerId": own_customer["id"], "skuId": shop_sku["id"]}),
        ("/v1/orders", {"customerId": shop_customer["id"], "skuId": own_sku["id"]}),
        ("/v1/subscriptions", {"customerId": own_customer["id"], "skuId": shop_sku["id"]}),
        ("/v1/subscriptions", {"customerId": shop_customer["id"], "skuId": own_sku["id"]}),
    ]

    for path, refs in attempts:
        # When the other store orders or subscribes with one foreign reference
        if path == "/v1/orders":
            body: JSON = {
                "customerId": refs["customerId"],
                "currency": "EUR",
                "lines": [{"skuId": refs["skuId"], "quantity": 1}],
            }
        else:
            body = {**refs, "interval": "month"}
        response = await send(api, api.other, "POST", path, body)

        # Then the foreign entity is not found
        assert_problem(response, 404)

    # And nothing was recorded
    assert notifications(api) == before


async def test_another_store_cannot_see_or_touch_a_webhook(api: Api) -> None:
    # Given a webhook of the shop
    webhook = await expect(
        api, api.shop, "POST", "/v1/webhooks", {"url": HOOK_URL, "eventTypes": ["order.*"]}, 201
    )
    assert webhook["secret"].startswith("whsec_")
    shown = await expect(api, api.shop, "GET", f"/v1/webhooks/{webhook['id']}")
    before = webhook_notifications(api)
    w = webhook["id"]
    attempts: list[tuple[str, str, JSON | None]] = [
        ("GET", f"/v1/webhooks/{w}", None),
        ("PATCH", f"/v1/webhooks/{w}", {"url": "https://93.184.215.15/stolen"}),
        ("PATCH", f"/v1/webhooks/{w}", {"enabled": False}),
        ("POST", f"/v1/webhooks/{w}/rotate-secret", {}),
        ("DELETE", f"/v1/webhooks/{w}", None),
    ]

    for method, path, body in attempts:
        # When the other store reads, changes, rotates or deletes it
        response = await send(api, api.other, method, path, body)

        # Then it is not found
        assert_problem(response, 404)

    # And the other store's list does not show it, while the shop's does
    assert await expect(api, api.other, "GET", "/v1/webhooks") == {"data": [], "nextCursor": None}
    listed = await expect(api, api.shop, "GET", "/v1/webhooks")
    assert [item["id"] for item in listed["data"]] == [w]

    # And nothing was recorded, and the webhook is unchanged
    assert webhook_notifications(api) == before
    assert await expect(api, api.shop, "GET", f"/v1/webhooks/{w}") == shown


# Idempotency-Key --------------------------------------------------------------------------


async def test_a_repeated_creation_with_the_same_key_is_replayed(api: Api) -> None:
    # Given a customer registration sent with an Idempotency-Key
    body = {"email": "bob@example.com", "name": "Bob"}
    key = {"idempotency-key": "register-bob-1"}
    first = await send(api, api.shop, "POST", "/v1/customers", body, key)
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    after_first = notifications(api)

    # When the same request is sent again with the same key
    second = await send(api, api.shop, "POST", "/v1/customers", body, key)

    # Then it answers the first result byte for byte, marked as a replay
    assert second.status_code == 201
    assert second.content == first.content
    assert second.headers["content-type"] == first.headers["content-type"]
    assert second.headers["idempotent-replayed"] == "true"

    # And only one customer was recorded
    assert after_first == 1
    assert notifications(api) == 1


async def test_a_repeated_payment_with_the_same_key_is_paid_once(api: Api) -> None:
    # Given an order of 39.80, paid 20.00 with an Idempotency-Key
    order, _, _ = await place_order(api, api.shop)
    path = f"/v1/orders/{order['id']}/payments"
    key = {"idempotency-key": "pay-1"}
    first = await send(api, api.shop, "POST", path, {"amount": "20.00"}, key)
    assert first.status_code == 200
    before = notifications(api)

    # When the payment is retried with the same key
    second = await send(api, api.shop, "POST", path, {"amount": "20.00"}, key)

    # Then it is a replay and the order is paid only once
    assert second.status_code == 200
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    assert notifications(api) == before
    again = await expect(api, api.shop, "GET", f"/v1/orders/{order['id']}")
    assert again["amountPaid"] == {"amount": "20.00", "currency": "EUR"}


async def test_the_same_key_with_another_body_is_refused(api: Api) -> None:
    # Given a registration sent with a key
    key = {"idempotency-key": "k-1"}
    first = await send(
        api, api.shop, "POST", "/v1/customers", {"email": "bob@example.com", "name": "Bob"}, key
    )
    assert first.status_code == 201

    # When the key is reused for another body, or another route
    other_body = await send(
        api, api.shop, "POST", "/v1/customers", {"email": "eve@example.com", "name": "Eve"}, key
    )
    other_route = await send(api, api.shop, "POST", "/v1/products", {"name": "Mug"}, key)

    # Then both are refused as invalid, naming the header, and nothing more is recorded
    for response in (other_body, other_route):
        problem = assert_problem(response, 422)
        assert problem["errors"][0]["field"] == "Idempotency-Key"
        assert "idempotent-replayed" not in response.headers
    assert notifications(api) == 1


async def test_an_idempotency_key_belongs_to_one_store(api: Api) -> None:
    # Given the shop registered a customer with a key
    body = {"email": "bob@example.com", "name": "Bob"}
    key = {"idempotency-key": "shared-key"}
    mine = await send(api, api.shop, "POST", "/v1/customers", body, key)
    assert mine.status_code == 201

    # When the other store sends the same request with the same key
    theirs = await send(api, api.other, "POST", "/v1/customers", body, key)

    # Then it runs on its own: a new customer of the other store, not a replay
    assert theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"]
    assert theirs.json()["storeId"] == str(api.other.store_id)
    assert notifications(api) == 2


async def test_a_refused_command_is_replayed_as_the_same_refusal(api: Api) -> None:
    # Given an order of 39.80 and an over-payment sent with a key, refused with 409
    order, _, _ = await place_order(api, api.shop)
    path = f"/v1/orders/{order['id']}/payments"
    key = {"idempotency-key": "too-much"}
    first = await send(api, api.shop, "POST", path, {"amount": "50.00"}, key)
    assert_problem(first, 409)
    before = notifications(api)

    # When the same request is retried
    second = await send(api, api.shop, "POST", path, {"amount": "50.00"}, key)

    # Then the same 409 is replayed, byte for byte, and nothing is recorded
    assert second.status_code == 409
    assert second.content == first.content
    assert second.headers["content-type"].startswith(PROBLEM)
    assert second.headers["idempotent-replayed"] == "true"
    assert notifications(api) == before


async def test_without_a_key_two_identical_commands_record_two_events(api: Api) -> None:
    # Given no Idempotency-Key
    body = {"email": "bob@example.com", "name": "Bob"}

    # When the same registration is sent twice
    first = await expect(api, api.shop, "POST", "/v1/customers", body, 201)
    second = await expect(api, api.shop, "POST", "/v1/customers", body, 201)

    # Then two customers are recorded
    assert first["id"] != second["id"]
    assert notifications(api) == 2


# Business rules: 409 for a rule broken now, 422 for a value that is never right ---------


async def _assert_refused(api: Api, path: str, body: JSON | None, status: int, *words: str) -> JSON:
    """The shop's command is refused with `status`, a detail naming `words`, and records
    nothing."""
    before = notifications(api)
    problem = assert_problem(await send(api, api.shop, "POST", path, body), status)
    for word in words:
        assert word in problem["detail"], problem["detail"]
    assert notifications(api) == before
    return problem


async def test_a_payment_above_the_amount_due_is_a_conflict(api: Api) -> None:
    # Given an order of 39.80
    order, _, _ = await place_order(api, api.shop)
    path = f"/v1/orders/{order['id']}/payments"

    # When more than is due is paid, then the rest once all is paid
    # Then both are refused with a detail that says what is due
    await _assert_refused(api, path, {"amount": "39.81"}, 409, "exceeds", "39.80")
    await expect(api, api.shop, "POST", path, {"amount": "39.80"})
    await _assert_refused(api, path, {"amount": "0.01"}, 409, "exceeds", "0.00")


async def test_a_refund_above_the_amount_paid_is_a_conflict(api: Api) -> None:
    # Given an order of 39.80 of which 20.00 is paid
    order, _, _ = await place_order(api, api.shop)
    o = order["id"]
    await expect(api, api.shop, "POST", f"/v1/orders/{o}/payments", {"amount": "20.00"})
    path = f"/v1/orders/{o}/refunds"

    # When more than was paid is refunded, and again once everything was refunded
    # Then both are refused
    await _assert_refused(api, path, {"amount": "20.01"}, 409, "exceeds", "20.00")
    await expect(api, api.shop, "POST", path, {"amount": "20.00"})
    await _assert_refused(api, path, {"amount": "0.01"}, 409, "exceeds")


async def test_a_stock_delta_below_zero_is_a_conflict(api: Api) -> None:
    # Given a SKU with 10 in stock
    sku = await create_sku(api, api.shop, stock=10)

    # When 11 are taken away
    await _assert_refused(api, f"/v1/skus/{sku['id']}/stock", {"delta": -11}, 409, "10", "negative")

    # Then the stock is still 10
    assert (await expect(api, api.shop, "GET", f"/v1/skus/{sku['id']}"))["stock"] == 10


async def test_an_order_status_outside_the_state_machine_is_a_conflict(api: Api) -> None:
    # Given a pending order
    order, _, _ = await place_order(api, api.shop)
    path = f"/v1/orders/{order['id']}/status"

    # When it is shipped before processing
    # Then it is refused, naming both statuses
    await _assert_refused(api, path, {"status": "shipped"}, 409, "pending", "shipped")

    # When it is cancelled, nothing can follow, and a cancelled order takes no payment
    await expect(api, api.shop, "POST", path, {"status": "cancelled"})
    for status in ("processing", "pending", "delivered", "cancelled"):
        await _assert_refused(api, path, {"status": status}, 409, "cancelled")
    await _assert_refused(
        api, f"/v1/orders/{order['id']}/payments", {"amount": "1.00"}, 409, "cancelled"
    )


async def test_a_delivered_order_cannot_be_cancelled(api: Api) -> None:
    # Given a delivered order
    order, _, _ = await place_order(api, api.shop)
    path = f"/v1/orders/{order['id']}/status"
    for status in ("processing", "shipped", "delivered"):
        await expect(api, api.shop, "POST", path, {"status": status})

    # When it is cancelled
    # Then it is refused
    await _assert_refused(api, path, {"status": "cancelled"}, 409, "delivered", "cancelled")


async def test_only_a_paused_subscription_resumes(api: Api) -> None:
    # Given an active subscription
    subscription = await start_subscription(api, api.shop)

    # When it is resumed
    # Then it is refused, saying why
    await _assert_refused(
        api, f"/v1/subscriptions/{subscription['id']}/resume", None, 409, "resume", "active"
    )


@pytest.mark.parametrize("ending", ["cancel", "expire"])
async def test_nothing_happens_to_an_ended_subscription(api: Api, ending: str) -> None:
    # Given a cancelled (or expired) subscription
    subscription = await start_subscription(api, api.shop)
    path = f"/v1/subscriptions/{subscription['id']}"
    ended = await expect(api, api.shop, "POST", f"{path}/{ending}")

    for action in SUBSCRIPTION_ACTIONS:
        # When any action is applied to it
        # Then it is refused, saying the subscription has ended
        await _assert_refused(api, f"{path}/{action}", None, 409, ended["status"])

    # And it reads as it was
    assert await expect(api, api.shop, "GET", path) == ended


async def test_a_customer_who_asked_to_be_deleted_accepts_no_changes(api: Api) -> None:
    # Given a customer who asked to be deleted
    customer = await create_customer(api, api.shop)
    c = customer["id"]
    gone = await expect(api, api.shop, "POST", f"/v1/customers/{c}/deletion-request")
    before = notifications(api)

    # When the profile is changed, verified, given an address or asked to be deleted again
    responses = [
        await send(api, api.shop, "PATCH", f"/v1/customers/{c}", {"name": "Bobby"}),
        await send(api, api.shop, "POST", f"/v1/customers/{c}/verify"),
        await send(api, api.shop, "POST", f"/v1/customers/{c}/addresses", ADDRESS),
        await send(api, api.shop, "POST", f"/v1/customers/{c}/deletion-request"),
    ]

    # Then each is refused with a detail that says why, and nothing changes
    for response in responses:
        assert "deleted" in assert_problem(response, 409)["detail"]
    assert notifications(api) == before
    assert await expect(api, api.shop, "GET", f"/v1/customers/{c}") == gone


async def test_verifying_twice_is_a_conflict(api: Api) -> None:
    # Given a verified customer
    customer = await create_customer(api, api.shop)
    await expect(api, api.shop, "POST", f"/v1/customers/{customer['id']}/verify")

    # When it is verified again
    # Then it is refused
    await _assert_refused(api, f"/v1/customers/{customer['id']}/verify", None, 409, "verified")


async def test_an_unknown_currency_is_invalid(api: Api) -> None:
    # Given a customer and a EUR SKU
    customer = await create_customer(api, api.shop)
    sku = await create_sku(api, api.shop)
    variant_id = sku["variantId"]

    # When an order, a SKU or a price names a currency that does not exist
    # Then each is refused as invalid, naming the currency field
    cases: list[tuple[str, JSON]] = [
        (
            "/v1/orders",
            {
                "customerId": customer["id"],
                "currency": "XXX",
                "lines": [{"skuId": sku["id"], "quantity": 1}],
            },
        ),
        (
            f"/v1/variants/{variant_id}/skus",
            {"code": "X", "price": {"amount": "1.00", "currency": "ABC"}, "stock": 1},
        ),
        (f"/v1/skus/{sku['id']}/price", {"amount": "1.00", "currency": "QQQ"}),
        (f"/v1/skus/{sku['id']}/price", {"amount": "1.00", "currency": "eur"}),
    ]
    for path, body in cases:
        problem = await _assert_refused(api, path, body, 422)
        assert any(e["field"].endswith("currency") for e in problem["errors"]), problem


async def test_an_amount_with_more_decimals_than_its_currency_is_invalid(api: Api) -> None:
    # Given a SKU in EUR and an order of 39.80
    order, _, sku = await place_order(api, api.shop)

    # When amounts with 3 decimals in EUR (or any in JPY) are sent
    # Then each is refused as invalid, naming the amount
    cases: list[tuple[str, JSON]] = [
        (f"/v1/skus/{sku['id']}/price", {"amount": "19.999", "currency": "EUR"}),
        (f"/v1/skus/{sku['id']}/price", {"amount": "19.5", "currency": "JPY"}),
        (
            f"/v1/variants/{sku['variantId']}/skus",
            {"code": "X", "price": {"amount": "1.005", "currency": "EUR"}, "stock": 1},
        ),
        (f"/v1/orders/{order['id']}/payments", {"amount": "10.005"}),
        (f"/v1/orders/{order['id']}/payments", {"amount": "0.00"}),
        (f"/v1/orders/{order['id']}/payments", {"amount": "-1.00"}),
        (f"/v1/orders/{order['id']}/refunds", {"amount": "1.001"}),
    ]
    for path, body in cases:
        problem = await _assert_refused(api, path, body, 422)
        assert any(e["field"].endswith("amount") for e in problem["errors"]), problem

    # And the price is still 19.90
    assert (await expect(api, api.shop, "GET", f"/v1/skus/{sku['id']}"))["price"] == {
        "amount": "19.90",
        "currency": "EUR",
    }


async def test_an_unknown_order_status_is_invalid(api: Api) -> None:
    # Given a pending order
    order, _, _ = await place_order(api, api.shop)

    # When it is moved to a status that does not exist
    problem = await _assert_refused(
        api, f"/v1/orders/{order['id']}/status", {"status": "teleported"}, 422
    )

    # Then the answer names the field and the statuses there are
    assert problem["errors"][0]["field"] == "status"
    assert "processing" in problem["errors"][0]["message"]


async def test_an_order_line_quantity_of_zero_is_invalid(api: Api) -> None:
    # Given a customer and a SKU
    customer = await create_customer(api, api.shop)
    sku = await create_sku(api, api.shop)

    # When an order line asks for 0
    problem = await _assert_refused(
        api,
        "/v1/orders",
        {
            "customerId": customer["id"],
            "currency": "EUR",
            "lines": [{"skuId": sku["id"], "quantity": 0}],
        },
        422,
    )

    # Then the answer names the line's quantity
    assert [e["field"] for e in problem["errors"]] == ["lines[0].quantity"]


async def test_an_order_line_quantity_written_as_a_float_is_not_a_server_error(api: Api) -> None:
    # Given a customer and a SKU at 19.90
    customer = await create_customer(api, api.shop)
    sku = await create_sku(api, api.shop)

    # When an order line's quantity is written 2.0
    response = await send(
        api,
        api.shop,
        "POST",
        "/v1/orders",
        {
            "customerId": customer["id"],
            "currency": "EUR",
            "lines": [{"skuId": sku["id"], "quantity": 2.0}],
        },
    )

    # Then it is either refused as invalid or placed as 2 x 19.90 — never a 500
    assert response.status_code in (201, 422), response.text
    if response.status_code == 201:
        assert response.json()["total"] == {"amount": "39.80", "currency": "EUR"}


async def test_a_stock_level_written_as_a_float_stays_an_integer(api: Api) -> None:
    # Given a SKU with 10 in stock
    sku = await create_sku(api, api.shop)

    # When the stock is set to 7.0
    response = await send(api, api.shop, "POST", f"/v1/skus/{sku['id']}/stock", {"quantity": 7.0})

    # Then it is refused, or the stock reads back as the integer 7
    if response.status_code != 422:
        assert response.status_code == 200
        stock = (await expect(api, api.shop, "GET", f"/v1/skus/{sku['id']}"))["stock"]
        assert type(stock) is int
        assert stock == 7


async def test_a_customer_phone_can_be_cleared(api: Api) -> None:
    # Given a customer with a phone number
    customer = await expect(
        api,
        api.shop,
        "POST",
        "/v1/customers",
        {"email": "bob@example.com", "name": "Bob", "phone": "+49 30 1234"},
        201,
    )

    # When the phone is set to null
    response = await send(
        api, api.shop, "PATCH", f"/v1/customers/{customer['id']}", {"phone": None}
    )

    # Then the customer has no phone any more (or null is refused outright)
    if response.status_code != 422:
        assert response.status_code == 200
        assert response.json()["phone"] is None
        assert (await expect(api, api.shop, "GET", f"/v1/customers/{customer['id']}"))[
            "phone"
        ] is None


async def test_a_product_description_can_be_cleared(api: Api) -> None:
    # Given a product with a description
    product = await expect(
        api, api.shop, "POST", "/v1/products", {"name": "Mug", "description": "A mug"}, 201
    )

    # When the description is set to null
    response = await send(
        api, api.shop, "PATCH", f"/v1/products/{product['id']}", {"description": None}
    )

    # Then the product has no description any more (or null is refused outright)
    if response.status_code != 422:
        assert response.status_code == 200
        assert response.json()["description"] is None
