"""Hostile input never stops the read side (issue #12, item 1).

A receiver may answer anything: a gzip body, a binary one, one holding a 0x00 byte (which
PostgreSQL `text` cannot hold). The attempt is recorded with the exact bytes, as base64
and marked so, and the read models — events, deliveries, audit — keep following on
SQLite and PostgreSQL. And on PostgreSQL, one store's hostile input of all three kinds
(NUL in `initiatedBy`, in `disabledReason`, answers of NUL and gzip bytes) never stalls
another store's read side, and a rebuild of every read model then checksums the same.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import pytest
from starlette.applications import Starlette

from domain.values import Actor
from infrastructure.api.app import create_app
from infrastructure.bootstrap import (
    Services,
)
from infrastructure.queries import Queries
from infrastructure.settings import Settings
from tests.e2e.conftest import Pipeline, wait_until
from tests.e2e.test_projections_cli import webround
from tests.support.receiver import Receiver, Reply

ANN = Actor.person("ann@shop.example")


def caught_up(pipeline: Pipeline) -> None:
    """Bring every read model up to date (what the projector thread does)."""
    while pipeline.services.read_models.catch_up_all():
        pass


@pytest.mark.parametrize(
    "answer",
    [b"\x00", b"ok\x00binary\xff\xfe", gzip.compress(b'{"received": true}')],
    ids=["nul", "binary", "gzip"],
)
def test_an_answer_of_any_bytes_is_recorded_and_read_back_exactly(
    pipeline: Pipeline, answer: bytes
) -> None:
    # Given a receiver answering bytes that are no storable text
    webhook = pipeline.webhook(["customer.registered"])
    pipeline.receiver.behaviour = Reply(status=200, body=answer)

    # When an event is delivered to it
    pipeline.services.commerce.register_customer(pipeline.store_id, "c@x.example", "C", None, ANN)
    delivery = wait_until(lambda: _succeeded(pipeline, webhook["id"]))

    # Then the attempt holds the exact bytes, as base64, and says so
    attempt = delivery.attempts[0]
    assert attempt.response_body_encoding == "base64"
    assert base64.b64decode(attempt.response_body) == answer
    # And the read models take it in: the delivery, its attempt and the event are listed
    caught_up(pipeline)
    queries = Queries(pipeline.services.read_models)
    shown = queries.get_delivery(pipeline.store_id, delivery.id)
    assert shown["attempts"][0]["responseBodyEncoding"] == "base64"
    assert base64.b64decode(shown["attempts"][0]["responseBody"]) == answer
    assert queries.list_events(pipeline.store_id)["data"]


def _succeeded(pipeline: Pipeline, webhook_id: str) -> Any:
    deliveries = pipeline.deliveries_of(webhook_id)
    return deliveries[0] if deliveries and deliveries[0].status == "succeeded" else None


# One store's hostile input beside another store's traffic, on PostgreSQL ------------------


# The installation of `running` (tests/e2e/conftest.py: API services, a dispatcher, a
# worker and the read-model projector, the key check recorded), on PostgreSQL only: the
# database whose `text` cannot hold U+0000.
on_postgres = pytest.mark.parametrize("cli_settings", ["postgres"], indirect=True)


@pytest.mark.postgres
@on_postgres
def test_one_stores_hostile_input_never_stalls_another_stores_read_side(
    cli_settings: Settings, running: tuple[Services, Receiver]
) -> None:
    services, _ = running
    settings = cli_settings
    api = Api(create_app(services))
    hostile, healthy = (tenant(services, name) for name in ("Hostile", "Healthy"))
    with Receiver() as binary, Receiver(Reply(status=204)) as fine:
        # Given a hostile store whose receiver answers a NUL byte, then a gzip body
        binary.behaviour = Reply(status=200, body=b"\x00")
        binary.enqueue(Reply(status=200, body=b"\x00"), Reply(status=500, body=GZIP))
        hook = create_webhook(api, hostile, binary.url + "hooks")
        # And a healthy store with its own endpoint
        create_webhook(api, healthy, fine.url + "hooks")
        time.sleep(0.01)

        # When the hostile store sends a NUL in initiatedBy and in a disable reason,
        # and its events reach its receiver (whose answers hold NUL and gzip bytes) ...
        refused = [
            api.post(
                "/v1/customers",
                json={"email": "a@b.example", "name": "x", "initiatedBy": "a\u0000@b.c"},
                headers=hostile.headers,
            ),
            api.patch(
                f"/v1/webhooks/{hook}",
                json={"enabled": False, "disabledReason": "x\u0000y"},
                headers=hostile.headers,
            ),
        ]
        for n in range(3):
            created = api.post(
                "/v1/customers",
                json={"email": f"h{n}@hostile.example", "name": f"H{n}"},
                headers=hostile.headers,
            )
            assert created.status_code == 201, created.text
        # ... while the healthy store's events keep coming
        names = [f"Ann {n}" for n in range(5)]
        for name in names:
            api.post(
                "/v1/customers",
                json={"email": f"{name.split()[1]}@healthy.example", "name": name},
                headers=healthy.headers,
            )
            time.sleep(0.05)

        # Then the NUL-bearing inputs were refused, naming their fields
        assert [r.status_code for r in refused] == [422, 422]
        assert [r.json()["errors"][0]["field"] for r in refused] == [
            "initiatedBy",
            "disabledReason",
        ]
        # And within seconds the healthy store's events, deliveries and audit entries are
        # on the read side
        wait_until(lambda: read_side_holds(api, healthy, len(names)), timeout=20)
        # And so are the hostile store's answers, kept as base64 of their bytes
        attempts = wait_until(lambda: answered(api, hostile, 3), timeout=20)
        assert {a["responseBodyEncoding"] for a in attempts} == {"base64"}
        assert {base64.b64decode(a["responseBody"]) for a in attempts} >= {b"\x00", GZIP}

    # And a rebuild of every read model succeeds, with the same checksum
    wait_until(lambda: all(s.lag == 0 for s in services.read_models.status()))
    before = webround(settings, "projections", "checksum")
    rebuilt = webround(settings, "projections", "rebuild", "--all")
    after = webround(settings, "projections", "checksum")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert after.stdout.strip() == before.stdout.strip() != ""


GZIP = gzip.compress(b'{"received": true}')


class Api:
    """The real app over its ASGI interface, called from this (synchronous) test."""

    def __init__(self, app: Starlette) -> None:
        self._app = app

    def _call(self, method: str, path: str, **options: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self._app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await client.request(method, path, **options)

        return asyncio.run(call())

    def get(self, path: str, **options: Any) -> httpx.Response:
        return self._call("GET", path, **options)

    def post(self, path: str, **options: Any) -> httpx.Response:
        return self._call("POST", path, **options)

    def patch(self, path: str, **options: Any) -> httpx.Response:
        return self._call("PATCH", path, **options)


@dataclass
class Tenant:
    store_id: UUID
    headers: dict[str, str]


def tenant(services: Services, name: str) -> Tenant:
    store = UUID(services.webhooks.create_store(name, Actor.system())["storeId"])
    key = services.webhooks.create_api_key(store, None, Actor.system())["apiKey"]
    return Tenant(store, {"authorization": f"Bearer {key}"})


def create_webhook(api: Api, owner: Tenant, url: str) -> str:
    response = api.post(
        "/v1/webhooks", json={"url": url, "eventTypes": ["customer.*"]}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    webhook_id: str = response.json()["id"]
    return webhook_id


def read_side_holds(api: Api, owner: Tenant, events: int) -> bool:
    listed = {
        path: api.get(f"/v1/{path}", params={"limit": 200}, headers=owner.headers).json()["data"]
        for path in ("events", "deliveries", "audit")
    }
    succeeded = [d for d in listed["deliveries"] if d["status"] == "succeeded"]
    attempted = [e for e in listed["audit"] if e["kind"] == "delivery.succeeded"]
    return len(listed["events"]) == len(succeeded) == len(attempted) == events


def answered(api: Api, owner: Tenant, count: int) -> list[dict[str, Any]] | None:
    deliveries = api.get("/v1/deliveries", headers=owner.headers).json()["data"]
    attempts = [
        attempt
        for delivery in deliveries
        for attempt in api.get(f"/v1/deliveries/{delivery['id']}", headers=owner.headers).json()[
            "attempts"
        ]
    ]
    return attempts if len(attempts) >= count else None
