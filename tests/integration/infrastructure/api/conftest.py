"""An API client over the real app (httpx ASGITransport), on SQLite and PostgreSQL, with two
stores and their keys — so every test can check tenant isolation as well."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from uuid import UUID

import httpx
import pytest

from domain.values import Actor
from infrastructure.api.app import create_app
from infrastructure.bootstrap import Services, build
from infrastructure.settings import Settings

pytestmark = pytest.mark.anyio


@dataclass
class Tenant:
    store_id: UUID
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}


@dataclass
class Api:
    client: httpx.AsyncClient
    services: Services
    shop: Tenant  # a key acting for a person: ann@shop.example
    other: Tenant  # another store, with a system key


def make_tenant(services: Services, name: str, email: str | None) -> Tenant:
    store = services.webhooks.create_store(name, Actor.system())
    store_id = UUID(store["storeId"])
    key = services.webhooks.create_api_key(store_id, email, Actor.system())
    return Tenant(store_id, key["apiKey"])


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build(settings)
    yield built
    built.close()


@pytest.fixture
async def api(services: Services) -> AsyncIterator[Api]:
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Api(
            client,
            services,
            make_tenant(services, "Shop", "ann@shop.example"),
            make_tenant(services, "Other shop", None),
        )
