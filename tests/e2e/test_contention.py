"""Hot entities under contention (issue 18, ADR 0026), through the HTTP API with the whole
pipeline running (embedded SQLite, and PostgreSQL with Redis): a flash sale on one SKU
never oversells and never answers "try again"; concurrent updates of one customer all
apply, each delivered with a snapshot of its own version.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import anyio
import httpx
import pytest

from domain.values import Actor
from infrastructure.api.app import create_app
from tests.e2e.conftest import Pipeline, wait_until

pytestmark = pytest.mark.anyio

CLIENTS = 16


@pytest.fixture
async def api(pipeline: Pipeline) -> AsyncIterator[httpx.AsyncClient]:
    key = pipeline.services.webhooks.create_api_key(pipeline.store_id, None, Actor.system())
    transport = httpx.ASGITransport(app=create_app(pipeline.services))
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {key['apiKey']}"},
        timeout=60,
    ) as client:
        yield client


async def created(api: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post(path, json=body)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def sku_with_stock(api: httpx.AsyncClient, stock: int) -> dict[str, Any]:
    product = await created(api, "/v1/products", {"name": "Limited edition"})
    variant = await created(
        api, f"/v1/products/{product['id']}/variants", {"attributes": {"run": "first"}}
    )
    price = {"amount": "49.00", "currency": "EUR"}
    return await created(
        api, f"/v1/variants/{variant['id']}/skus", {"code": "LTD", "price": price, "stock": stock}
    )


async def in_parallel(clients: int, requests: list[Any], send: Any) -> list[httpx.Response]:
    """Send ``requests`` from ``clients`` concurrent clients, each one request at a time."""
    answers: list[httpx.Response] = []
    queue = list(requests)

    async def client() -> None:
        while queue:
            answers.append(await send(queue.pop()))

    async with anyio.create_task_group() as group:
        for _ in range(clients):
            group.start_soon(client)
    return answers


def delivered(pipeline: Pipeline, expected: int) -> dict[str, list[dict[str, Any]]]:
    """The envelopes the receiver got, one per event id (a retry is the same envelope),
    by event type, once ``expected`` distinct events arrived."""

    def distinct() -> dict[str, dict[str, Any]] | None:
        envelopes = (json.loads(r.body) for r in pipeline.receiver.requests)
        by_id = {e["eventId"]: e for e in envelopes}
        return by_id if len(by_id) >= expected else None

    by_type: dict[str, list[dict[str, Any]]] = {}
    for envelope in wait_until(distinct, timeout=90).values():
        by_type.setdefault(envelope["eventType"], []).append(envelope)
    return by_type


async def test_a_flash_sale_on_one_sku_never_oversells(
    pipeline: Pipeline, api: httpx.AsyncClient
) -> None:
    # Given a SKU with 150 in stock, a customer, and a webhook for orders and stock changes
    pipeline.webhook(["order.created", "sku.stock_changed"])
    sku = await sku_with_stock(api, 150)
    customer = await created(api, "/v1/customers", {"email": "fan@shop.example", "name": "Fan"})
    body = {
        "customerId": customer["id"],
        "currency": "EUR",
        "lines": [{"skuId": sku["id"], "quantity": 1}],
    }

    # When 16 clients place 200 orders of one item at once
    answers = await in_parallel(
        CLIENTS, list(range(200)), lambda _: api.post("/v1/orders", json=body)
    )

    # Then exactly 150 are placed and 50 refused for want of stock; none "try again"
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {201: 150, 409: 50}, [a.text for a in answers if a.status_code != 201][:3]
    refusals = [a.json()["detail"] for a in answers if a.status_code == 409]
    assert all("has 0 in stock" in detail for detail in refusals), set(refusals)
    # And the SKU ends at 0, after exactly 150 stock changes
    final = (await api.get(f"/v1/skus/{sku['id']}")).json()
    assert (final["stock"], final["version"]) == (0, 151)

    # And the webhook gets the 150 orders and the 150 stock changes, each change's
    # snapshot a stock level of its own, from 149 down to 0
    by_type = delivered(pipeline, 300)
    orders = {a.json()["id"] for a in answers if a.status_code == 201}
    assert {e["data"]["order"]["id"] for e in by_type["order.created"]} == orders
    levels = sorted(e["data"]["sku"]["stock"] for e in by_type["sku.stock_changed"])
    assert levels == list(range(150))
    assert all(e["data"]["change"]["delta"] == -1 for e in by_type["sku.stock_changed"])


async def test_concurrent_updates_of_one_customer_all_apply(
    pipeline: Pipeline, api: httpx.AsyncClient
) -> None:
    # Given a customer and a webhook for customer updates
    pipeline.webhook(["customer.updated"])
    customer = await created(api, "/v1/customers", {"email": "hot@shop.example", "name": "Hot"})
    path = f"/v1/customers/{customer['id']}"

    # When 16 clients send 20 updates each at once, every one a new name
    names = [f"name {client}-{n}" for client in range(CLIENTS) for n in range(20)]
    answers = await in_parallel(CLIENTS, names, lambda name: api.patch(path, json={"name": name}))

    # Then all 320 apply, and the customer's version is 321
    assert Counter(a.status_code for a in answers) == {200: 320}, [
        a.text for a in answers if a.status_code != 200
    ][:3]
    final = (await api.get(path)).json()
    assert final["version"] == 321
    # And the webhook gets 320 customer.updated envelopes, each the snapshot of a version
    # of its own, with the name that version set
    updates = delivered(pipeline, 320)["customer.updated"]
    assert len(updates) == 320
    versions = sorted(e["data"]["customer"]["version"] for e in updates)
    assert versions == list(range(2, 322))
    assert {e["data"]["customer"]["name"] for e in updates} == set(names)
    assert UUID(updates[0]["data"]["customer"]["id"]) == UUID(customer["id"])
