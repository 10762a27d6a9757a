"""`Idempotency-Key` over the real API (SPEC §8; ADR 0023, 0024), on SQLite and PostgreSQL:
requests racing with one key get one effect and one answer; answers that show a signing
secret are never cached, are given back only to the API key that asked, and every
showing again is in the audit log.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import anyio
import httpx
import pytest

from domain.values import Actor
from infrastructure.api.problems import problem_for
from tests.integration.infrastructure.api.conftest import Api, Tenant

pytestmark = pytest.mark.anyio

URL = "https://93.184.215.14/hooks"  # a public address: no DNS needed


def second_key(api: Api) -> Tenant:
    """Another API key of the shop's store (a system integration)."""
    key = api.services.webhooks.create_api_key(api.shop.store_id, None, Actor.system())
    return Tenant(api.shop.store_id, key["apiKey"])


def events(api: Api, suffix: str) -> int:
    recorder = api.services.commerce.recorder
    return sum(
        1
        for n in recorder.select_notifications(start=None, limit=10_000)
        if n.topic.endswith(suffix)
    )


async def post(
    api: Api, path: str, body: dict[str, Any] | None, key: str, tenant: Tenant | None = None
) -> httpx.Response:
    headers = {**(tenant or api.shop).headers, "idempotency-key": key}
    return await api.client.post(path, json=body if body is not None else {}, headers=headers)


async def audit(api: Api, kind: str) -> list[dict[str, Any]]:
    api.services.read_models.catch_up_all()
    response = await api.client.get(f"/v1/audit?kind={kind}", headers=api.shop.headers)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["data"]
    return entries


# Exactly once ---------------------------------------------------------------------------


async def test_requests_racing_with_one_key_have_one_effect_and_one_answer(api: Api) -> None:
    # Given a registration that a client sends 8 times at once with one key (it timed out
    # and retried while the first attempts were still running)
    body = {"email": "bob@shop.example", "name": "Bob"}
    answers: list[httpx.Response] = []

    async def send() -> None:
        answers.append(await post(api, "/v1/customers", body, "register-bob"))

    # When they all arrive
    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(send)

    # Then one customer is registered, and every request is answered with it
    assert events(api, "Customer.Registered") == 1
    assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers]
    assert len({a.content for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) >= 1


async def test_a_change_sent_again_after_its_answer_was_lost_applies_once(api: Api) -> None:
    # Given a SKU with 10 in stock, its stock moved by -3 with a key
    sku = await api_sku(api, stock=10)
    path = f"/v1/skus/{sku}/stock"
    first = await post(api, path, {"delta": -3}, "sale-1")
    assert first.status_code == 200, first.text

    # When the same change is sent again with the key (its answer never arrived)
    again = await post(api, path, {"delta": -3}, "sale-1")

    # Then it is the first answer, and the stock moved once
    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    read = await api.client.get(f"/v1/skus/{sku}", headers=api.shop.headers)
    assert read.json()["stock"] == 7
    assert events(api, "Sku.StockChanged") == 1


async def api_sku(api: Api, stock: int) -> str:
    headers = api.shop.headers
    product = await api.client.post("/v1/products", json={"name": "Mug"}, headers=headers)
    variant = await api.client.post(
        f"/v1/products/{product.json()['id']}/variants",
        json={"attributes": {"color": "red"}},
        headers=headers,
    )
    sku = await api.client.post(
        f"/v1/variants/{variant.json()['id']}/skus",
        json={"code": "MUG", "price": {"amount": "9.90", "currency": "EUR"}, "stock": stock},
        headers=headers,
    )
    assert sku.status_code == 201, sku.text
    sku_id: str = sku.json()["id"]
    return sku_id


async def test_a_key_is_answered_only_to_the_api_key_that_sent_it(api: Api) -> None:
    # Given a customer registered with a key by the shop's API key
    body = {"email": "bob@shop.example", "name": "Bob"}
    first = await post(api, "/v1/customers", body, "register-bob")
    assert first.status_code == 201

    # When another API key of the same store sends the same request with the same key
    other = await post(api, "/v1/customers", body, "register-bob", second_key(api))

    # Then it is refused, naming the header, without the first answer or a new customer
    assert other.status_code == 422, other.text
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"
    assert "another API key" in other.json()["detail"]
    assert "bob@shop.example" not in other.text
    assert events(api, "Customer.Registered") == 1


def test_an_unreachable_database_is_a_503_with_retry_after() -> None:
    # Given the errors a database restart raises, through eventsourcing and directly
    import psycopg
    from eventsourcing.persistence import InterfaceError, OperationalError

    for error in (
        OperationalError("connection refused"),
        InterfaceError("connection closed"),
        psycopg.OperationalError("server closed the connection"),
    ):
        # When the API answers with it
        response = problem_for(error)

        # Then it is a 503 problem telling when to try again, never a 500
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == "application/problem+json"


# Answers that show a signing secret (ADR 0024) -----------------------------------------


async def test_answers_showing_a_secret_are_never_cached(api: Api) -> None:
    # Given a webhook created and its secret rotated, each with a key
    created = await post(api, "/v1/webhooks", {"url": URL, "eventTypes": ["*"]}, "create-1")
    rotate = f"/v1/webhooks/{created.json()['id']}/rotate-secret"
    rotated = await post(api, rotate, None, "rotate-1")

    # When each is sent again with its key
    created_again = await post(api, "/v1/webhooks", {"url": URL, "eventTypes": ["*"]}, "create-1")
    rotated_again = await post(api, rotate, None, "rotate-1")

    # Then every one of these answers forbids caching it
    for answer in (created, rotated, created_again, rotated_again):
        assert answer.status_code in (200, 201), answer.text
        assert "secret" in answer.json()
        assert answer.headers["cache-control"] == "no-store"
    # And answers without a secret carry no such restriction
    read = await api.client.get(f"/v1/webhooks/{created.json()['id']}", headers=api.shop.headers)
    assert "cache-control" not in read.headers


async def test_a_secret_is_shown_again_only_to_the_api_key_that_asked(api: Api) -> None:
    # Given a webhook created, and its secret rotated, with keys by the shop's API key
    body = {"url": URL, "eventTypes": ["*"]}
    created = await post(api, "/v1/webhooks", body, "create-1")
    rotate = f"/v1/webhooks/{created.json()['id']}/rotate-secret"
    rotated = await post(api, rotate, None, "rotate-1")
    other = second_key(api)

    # When another API key of the store sends the same requests with the same keys
    answers = [
        await post(api, "/v1/webhooks", body, "create-1", other),
        await post(api, rotate, None, "rotate-1", other),
    ]

    # Then neither secret is shown to it: the key is another request's
    for answer, first in zip(answers, (created, rotated), strict=True):
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"] == "Idempotency-Key"
        assert first.json()["secret"] not in answer.text
        assert "whsec_" not in answer.text
    # And nothing was created, rotated or shown again
    webhook = api.services.webhooks.get_webhook(api.shop.store_id, UUID(created.json()["id"]))
    assert webhook.version == 2  # created, rotated once
    assert await audit(api, "webhook.secret_shown_again") == []


async def test_a_secret_shown_again_is_audited(api: Api) -> None:
    # Given a webhook created with a key by the shop's API key (acting for Ann)
    body = {"url": URL, "eventTypes": ["*"]}
    created = await post(api, "/v1/webhooks", body, "create-1")
    webhook_id = created.json()["id"]

    # When the same request is sent again by the same API key
    again = await post(api, "/v1/webhooks", body, "create-1")

    # Then the first answer is given back, secret included
    assert again.status_code == 201
    assert again.json() == created.json()
    assert again.headers["idempotent-replayed"] == "true"
    # And the audit log says who was shown the secret again, through which API key
    [entry] = await audit(api, "webhook.secret_shown_again")
    key_id = api.shop.api_key.removeprefix("wr_").split("_", 1)[0]
    assert entry["webhookId"] == webhook_id
    assert entry["actor"] == "ann@shop.example"
    assert entry["details"] == {"keyId": key_id, "idempotencyKey": "create-1"}
    assert key_id in entry["summary"]
