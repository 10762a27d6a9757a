"""The commerce lists of SPEC §11 — `GET /v1/customers|products|skus|orders|subscriptions`
— over the real app, on SQLite and PostgreSQL: paged by cursor like every list, filtered,
one store's entities only, each item as `GET` of the entity answers it.

Lists read the entities read model, which follows the commands a few milliseconds
behind: the tests catch it up before reading, as the dispatcher does continuously.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.infrastructure.api.conftest import Api, Tenant
from tests.integration.infrastructure.api.test_commerce_routes import (
    assert_problem,
    create_customer,
    create_sku,
    expect,
    send,
)

pytestmark = pytest.mark.anyio

JSON = dict[str, Any]


async def listed(api: Api, path: str, tenant: Tenant | None = None) -> JSON:
    """A list's answer, once the read model has caught up with every command."""
    api.services.read_models.catch_up_all()
    return await expect(api, tenant or api.shop, "GET", path)


async def every_page(api: Api, path: str) -> list[JSON]:
    items: list[JSON] = []
    separator = "&" if "?" in path else "?"
    page = await listed(api, path)
    items += page["data"]
    while page["nextCursor"]:
        page = await listed(api, f"{path}{separator}cursor={page['nextCursor']}")
        items += page["data"]
    return items


async def order(api: Api, customer: JSON, sku: JSON, quantity: int = 1) -> JSON:
    body = {
        "customerId": customer["id"],
        "currency": "EUR",
        "lines": [{"skuId": sku["id"], "quantity": quantity}],
    }
    return await expect(api, api.shop, "POST", "/v1/orders", body, 201)


async def test_a_list_pages_through_every_entity_newest_first(api: Api) -> None:
    # Given 7 customers registered one after the other
    emails = [f"c{n}@shop.example" for n in range(7)]
    for email in emails:
        await create_customer(api, api.shop, email)

    # When the list is read 3 at a time, newest first, and oldest first
    newest = await every_page(api, "/v1/customers?limit=3")
    oldest = await every_page(api, "/v1/customers?limit=3&order=oldest")

    # Then every customer is there once, in creation order either way
    assert [c["email"] for c in newest] == emails[::-1]
    assert [c["email"] for c in oldest] == emails
    # And each item is the customer as `GET` answers it
    for customer in newest:
        assert await expect(api, api.shop, "GET", f"/v1/customers/{customer['id']}") == customer


async def test_paging_while_entities_are_created_skips_and_repeats_nothing(api: Api) -> None:
    # Given 4 products and the first page of 2, oldest first
    for n in range(4):
        await expect(api, api.shop, "POST", "/v1/products", {"name": f"P{n}"}, 201)
    first = await listed(api, "/v1/products?limit=2&order=oldest")

    # When 2 more are created before the next pages are read
    for n in range(4, 6):
        await expect(api, api.shop, "POST", "/v1/products", {"name": f"P{n}"}, 201)
    rest = await every_page(api, f"/v1/products?limit=2&order=oldest&cursor={first['nextCursor']}")

    # Then the pages continue exactly where the first stopped, the new ones at the end
    assert [p["name"] for p in first["data"] + rest] == [f"P{n}" for n in range(6)]


async def test_a_list_holds_only_the_stores_own_entities(api: Api) -> None:
    # Given a customer in each store
    mine = await create_customer(api, api.shop, "mine@shop.example")
    await create_customer(api, api.other, "theirs@other.example")

    # When each store lists its customers
    # Then each sees only its own
    assert (await listed(api, "/v1/customers"))["data"] == [mine]
    theirs = (await listed(api, "/v1/customers", api.other))["data"]
    assert [c["email"] for c in theirs] == ["theirs@other.example"]


async def test_lists_filter_by_their_relations_and_status(api: Api) -> None:
    # Given two customers, two SKUs of two products, orders and subscriptions between them
    ann = await create_customer(api, api.shop, "ann@shop.example")
    bob = await create_customer(api, api.shop, "bob@shop.example")
    mug = await create_sku(api, api.shop)
    cup = await create_sku(api, api.shop)
    ann_mug = await order(api, ann, mug)
    await order(api, bob, mug)
    ann_cup = await order(api, ann, cup)
    await expect(
        api, api.shop, "POST", f"/v1/orders/{ann_cup['id']}/status", {"status": "processing"}
    )
    body = {"customerId": ann["id"], "skuId": cup["id"], "interval": "month"}
    ann_sub = await expect(api, api.shop, "POST", "/v1/subscriptions", body, 201)
    body = {"customerId": bob["id"], "skuId": cup["id"], "interval": "year"}
    bob_sub = await expect(api, api.shop, "POST", "/v1/subscriptions", body, 201)
    await expect(api, api.shop, "POST", f"/v1/subscriptions/{bob_sub['id']}/pause")

    async def ids(path: str) -> list[str]:
        return [item["id"] for item in (await listed(api, path))["data"]]

    # When the lists are filtered
    # Then each answers exactly the matching entities, in their current state
    assert await ids(f"/v1/orders?customerId={ann['id']}&order=oldest") == [
        ann_mug["id"],
        ann_cup["id"],
    ]
    assert await ids(f"/v1/orders?customerId={ann['id']}&status=processing") == [ann_cup["id"]]
    assert await ids("/v1/orders?status=cancelled") == []
    assert await ids(f"/v1/skus?productId={mug['productId']}") == [mug["id"]]
    assert await ids(f"/v1/skus?variantId={cup['variantId']}") == [cup["id"]]
    assert len(await ids("/v1/skus?code=MUG-RED")) == 2
    assert await ids(f"/v1/subscriptions?skuId={cup['id']}&status=active") == [ann_sub["id"]]
    assert await ids(f"/v1/subscriptions?customerId={bob['id']}") == [bob_sub["id"]]
    assert await ids("/v1/customers?email=bob@shop.example") == [bob["id"]]


async def test_lists_filter_by_creation_time(api: Api) -> None:
    # Given three customers
    made = [await create_customer(api, api.shop, f"c{n}@shop.example") for n in range(3)]

    # When the list is asked from the second one's creation on, and before the third's
    since = made[1]["createdAt"]
    until = made[2]["createdAt"]
    page = await listed(api, f"/v1/customers?since={since}&until={until}")

    # Then only the second is listed (since inclusive, until exclusive)
    assert [c["id"] for c in page["data"]] == [made[1]["id"]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("customerId=42", "customerId"),
        ("status=lost", "status"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("order=sideways", "order"),
        ("since=yesterday", "since"),
        ("cursor=bm90LWEtY3Vyc29y", "cursor"),
    ],
)
async def test_a_bad_filter_is_a_422_naming_it(api: Api, query: str, field: str) -> None:
    # When a list is asked with a bad value
    response = await send(api, api.shop, "GET", f"/v1/orders?{query}")

    # Then it is refused, naming the query parameter
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["field"] == field


async def test_a_cursor_continues_its_own_list_only(api: Api) -> None:
    # Given a cursor of the customer list, newest first, after the newest customer
    for n in range(3):
        await create_customer(api, api.shop, f"c{n}@shop.example")
    cursor = (await listed(api, "/v1/customers?limit=1"))["nextCursor"]

    # When it is used for the order list, or for oldest-first customers
    other_list = await send(api, api.shop, "GET", f"/v1/orders?cursor={cursor}")
    other_order = await send(api, api.shop, "GET", f"/v1/customers?order=oldest&cursor={cursor}")

    # Then another list refuses it, naming the cursor; the other order goes on from its
    # place the other way (nothing is newer than the newest) — ADR 0020
    assert assert_problem(other_list, 422)["errors"][0]["field"] == "cursor"
    assert other_order.status_code == 200, other_order.text
    assert other_order.json() == {"data": [], "nextCursor": None}
