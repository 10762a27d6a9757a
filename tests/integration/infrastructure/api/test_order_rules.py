"""The rules a shop owner expects of orders (issue 17, ADR 0025), over the real API on
SQLite and PostgreSQL: an order takes at most what is in stock and reserves it, a
cancelled order puts it back, and a customer who asked to be deleted buys nothing more.
"""

from __future__ import annotations

from typing import Any

import pytest

from domain.event_types import event_type
from tests.integration.infrastructure.api.conftest import Api
from tests.integration.infrastructure.api.test_commerce_routes import (
    ANN,
    assert_problem,
    create_customer,
    create_sku,
    expect,
    notifications,
    recorded,
    send,
)

pytestmark = pytest.mark.anyio

JSON = dict[str, Any]


def order_body(customer: JSON, *lines: tuple[JSON, int]) -> JSON:
    return {
        "customerId": customer["id"],
        "currency": "EUR",
        "lines": [{"skuId": sku["id"], "quantity": quantity} for sku, quantity in lines],
    }


async def stock_of(api: Api, sku: JSON) -> int:
    read = await expect(api, api.shop, "GET", f"/v1/skus/{sku['id']}")
    stock: int = read["stock"]
    return stock


async def test_placing_an_order_reserves_its_stock(api: Api) -> None:
    # Given two SKUs with 10 in stock each
    customer = await create_customer(api, api.shop)
    mug, cup = await create_sku(api, api.shop), await create_sku(api, api.shop)
    before = notifications(api)

    # When an order takes 3 mugs and 2 cups
    order = await expect(
        api, api.shop, "POST", "/v1/orders", order_body(customer, (mug, 3), (cup, 2)), 201
    )

    # Then the SKUs have 7 and 8 left
    assert (await stock_of(api, mug), await stock_of(api, cup)) == (7, 8)
    # And the order and both stock changes were recorded together, by the order's actor
    events = recorded(api)[before:]
    assert [event_type(e) for e in events] == [
        "order.created",
        "sku.stock_changed",
        "sku.stock_changed",
    ]
    assert str(events[0].originator_id) == order["id"]
    assert [(e.quantity, e.delta) for e in events[1:]] == [(7, -3), (8, -2)]
    assert {e.actor for e in events} == {ANN}


async def test_an_order_over_the_stock_is_refused_and_reserves_nothing(api: Api) -> None:
    # Given a SKU with 2 in stock and another with 10
    customer = await create_customer(api, api.shop)
    scarce, plenty = await create_sku(api, api.shop, stock=2), await create_sku(api, api.shop)
    before = notifications(api)

    # When an order asks for 5 of the plentiful one and 3 of the scarce one (over two lines)
    body = order_body(customer, (plenty, 5), (scarce, 1), (scarce, 2))
    response = await send(api, api.shop, "POST", "/v1/orders", body)

    # Then it is a 409 saying what is missing, and nothing was recorded or reserved
    problem = assert_problem(response, 409)
    assert "has 2 in stock; the order asks for 3" in problem["detail"]
    assert notifications(api) == before
    assert (await stock_of(api, scarce), await stock_of(api, plenty)) == (2, 10)


async def test_an_order_may_take_the_last_item(api: Api) -> None:
    customer = await create_customer(api, api.shop)
    sku = await create_sku(api, api.shop, stock=2)
    await expect(api, api.shop, "POST", "/v1/orders", order_body(customer, (sku, 2)), 201)
    assert await stock_of(api, sku) == 0
    again = await send(api, api.shop, "POST", "/v1/orders", order_body(customer, (sku, 1)))
    assert_problem(again, 409)


async def test_cancelling_an_order_puts_its_stock_back(api: Api) -> None:
    # Given an order that reserved 4 of a SKU's 10, now processing
    customer, sku = await create_customer(api, api.shop), await create_sku(api, api.shop)
    order = await expect(api, api.shop, "POST", "/v1/orders", order_body(customer, (sku, 4)), 201)
    path = f"/v1/orders/{order['id']}/status"
    await expect(api, api.shop, "POST", path, {"status": "processing"})
    before = notifications(api)

    # When it is cancelled
    cancelled = await expect(api, api.shop, "POST", path, {"status": "cancelled"})

    # Then the SKU has its 10 again, the release recorded with the cancellation
    assert cancelled["status"] == "cancelled"
    assert await stock_of(api, sku) == 10
    events = recorded(api)[before:]
    assert [event_type(e) for e in events] == ["order.status_updated", "sku.stock_changed"]
    assert events[1].delta == 4


async def test_a_customer_who_asked_to_be_deleted_buys_nothing_more(api: Api) -> None:
    # Given a customer who asked to be deleted, and a SKU
    customer, sku = await create_customer(api, api.shop), await create_sku(api, api.shop)
    await expect(api, api.shop, "POST", f"/v1/customers/{customer['id']}/deletion-request")
    before = notifications(api)

    # When an order is placed for them, and a subscription started
    ordered = await send(api, api.shop, "POST", "/v1/orders", order_body(customer, (sku, 1)))
    subscribed = await send(
        api,
        api.shop,
        "POST",
        "/v1/subscriptions",
        {"customerId": customer["id"], "skuId": sku["id"], "interval": "month"},
    )

    # Then both are refused as a rule of the customer's state, and nothing is recorded
    for response in (ordered, subscribed):
        assert "asked to be deleted" in assert_problem(response, 409)["detail"]
    assert notifications(api) == before
    assert await stock_of(api, sku) == 10
