"""A webhook read shows its circuit breaker, so held deliveries are visible as such (§6)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest

from application.dispatch import AttemptResult
from domain.values import Actor
from tests.integration.infrastructure.api.conftest import Api

pytestmark = pytest.mark.anyio


async def test_a_webhook_that_keeps_failing_reads_as_open_circuit(api: Api) -> None:
    # Given a webhook with five deliveries
    created = await api.client.post(
        "/v1/webhooks",
        json={"url": "https://93.184.215.14/hook", "eventTypes": ["customer.registered"]},
        headers=api.shop.headers,
    )
    webhook_id = created.json()["id"]
    for n in range(5):
        api.services.commerce.register_customer(
            api.shop.store_id, f"f{n}@x.example", "F", None, Actor.system()
        )
    api.services.dispatch.process_new_events()
    before = (await api.client.get(f"/v1/webhooks/{webhook_id}", headers=api.shop.headers)).json()

    # When the first attempt of each fails (five in a row: the breaker's threshold)
    rows = api.services.read_models
    rows.catch_up_all()
    ids = [r["delivery_id"] for r in rows.query("SELECT delivery_id FROM rm_deliveries")]
    now = datetime.now(UTC)
    dispatch = api.services.dispatch
    dispatch.record_attempts([AttemptResult(dispatch.ref(UUID(i)), 1, now, 5.0, 500) for i in ids])

    # Then the webhook reads as closed before and open after, in GET and in the list
    after = (await api.client.get(f"/v1/webhooks/{webhook_id}", headers=api.shop.headers)).json()
    listed = (await api.client.get("/v1/webhooks", headers=api.shop.headers)).json()["data"]
    assert before["circuit"]["state"] == "closed"
    assert after["circuit"]["state"] == "open"
    assert after["circuit"]["consecutiveFailures"] == 5
    assert after["circuit"]["openUntil"] is not None
    assert listed[0]["circuit"]["state"] == "open"
