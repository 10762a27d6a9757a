"""`GET /healthz` over the real Starlette app, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import httpx
import pytest

from domain.values import Actor
from infrastructure.api.app import create_app
from infrastructure.bootstrap import build
from infrastructure.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    services = build(settings)
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http, settings
    services.close()


async def test_health_reports_the_mode_and_the_event_store_position(
    client: tuple[httpx.AsyncClient, Settings],
) -> None:
    http, settings = client
    # Given a fresh service
    # When health is asked
    response = await http.get("/healthz")

    # Then it is ok, says which mode it runs in, and has recorded nothing yet
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["mode"] == ("embedded" if settings.embedded else "production")
    assert body["eventStorePosition"] == 0


async def test_health_follows_the_event_store(settings: Settings) -> None:
    # Given a service whose store recorded one event
    services = build(settings)
    services.commerce.register_customer(uuid4(), "a@example.com", "A", None, Actor.system())
    transport = httpx.ASGITransport(app=create_app(services))

    # When health is asked
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        body = (await http.get("/healthz")).json()
    services.close()

    # Then it reports the position of that event
    assert body["eventStorePosition"] >= 1
