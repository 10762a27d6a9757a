"""The dashboard over the real app (httpx ASGITransport, https so the Secure cookie is
kept), on SQLite and PostgreSQL, with two stores: a shop with a person's key and another
store with a system key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import pytest

from domain.values import Actor
from infrastructure.api.app import create_app
from infrastructure.bootstrap import Services, build
from infrastructure.settings import Settings
from tests.integration.infrastructure.dashboard.pages import Page

BASE = "https://testserver"
URL = "https://93.184.215.14/hooks"  # a public address: no DNS needed


@dataclass
class Tenant:
    store_id: UUID
    api_key: str
    key_id: str


@dataclass
class Dashboard:
    client: httpx.AsyncClient
    services: Services
    shop: Tenant  # a key acting for a person: ann@shop.example
    other: Tenant  # another store, with a system key

    async def sign_in(self, tenant: Tenant | None = None) -> httpx.Response:
        page = await self.page("/dashboard/sign-in")
        form = page.form("/dashboard/sign-in")
        return await self.client.post(
            "/dashboard/sign-in",
            data={**form.fields, "api_key": (tenant or self.shop).api_key},
        )

    async def page(self, path: str, status: int = 200) -> Page:
        response = await self.client.get(path)
        assert response.status_code == status, (path, response.status_code, response.text[:500])
        return Page(response.text)

    async def submit(
        self, page_path: str, action: str, data: dict[str, Any] | None = None
    ) -> httpx.Response:
        """Post the form of ``page_path`` that posts to ``action``, as a browser would."""
        form = (await self.page(page_path)).form(action)
        return await self.client.post(action, data={**form.fields, **(data or {})})

    def webhook(self, tenant: Tenant | None = None, **fields: Any) -> dict[str, Any]:
        created: dict[str, Any] = self.services.webhooks.create_webhook(
            (tenant or self.shop).store_id,
            Actor.system(),
            **{"url": URL, "event_types": ["*"], **fields},
        )
        return created


def make_tenant(services: Services, name: str, email: str | None) -> Tenant:
    store = services.webhooks.create_store(name, Actor.system())
    store_id = UUID(store["storeId"])
    key = services.webhooks.create_api_key(store_id, email, Actor.system())
    return Tenant(store_id, key["apiKey"], key["keyId"])


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build(settings)
    yield built
    built.close()


@pytest.fixture
async def dashboard(services: Services) -> AsyncIterator[Dashboard]:
    async for dashboard in _over(services):
        yield dashboard


async def dashboard_with(settings: Settings) -> AsyncIterator[Dashboard]:
    """A dashboard on services of these settings (for a test of a setting)."""
    services = build(settings)
    try:
        async for dashboard in _over(services):
            yield dashboard
    finally:
        services.close()


async def _over(services: Services) -> AsyncIterator[Dashboard]:
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield Dashboard(
            client,
            services,
            make_tenant(services, "Shop", "ann@shop.example"),
            make_tenant(services, "Other shop", None),
        )


@pytest.fixture
async def signed_in(dashboard: Dashboard) -> Dashboard:
    response = await dashboard.sign_in()
    assert response.status_code == 303, response.text
    return dashboard
