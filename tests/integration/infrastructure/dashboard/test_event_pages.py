"""The dashboard's events and audit pages (SPEC §9, §6, §7): the filterable list, an event's
envelope with its deliveries and every attempt, Send again, and the audit log."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlencode
from uuid import UUID

import pytest

from application.dispatch import AttemptResult
from domain.values import Actor
from tests.integration.infrastructure.dashboard.pages import Page

if TYPE_CHECKING:
    from tests.integration.infrastructure.dashboard.conftest import Dashboard, Tenant

pytestmark = pytest.mark.anyio

ANN = Actor.person("ann@shop.example")


def customer_registered(dashboard: Dashboard, tenant: Tenant | None = None) -> str:
    """A store event, turned into its envelope and deliveries, projected: its event id."""
    tenant = tenant or dashboard.shop
    customer = dashboard.services.commerce.register_customer(
        tenant.store_id, "bob@example.com", "Bob <b>", None, ANN
    )
    dashboard.services.dispatch.process_new_events()
    dashboard.services.read_models.catch_up_all()
    events = dashboard.services.read_models.query(
        "SELECT event_id FROM rm_events WHERE entity_id = ?", (customer["id"],)
    )
    event_id: str = events[0]["event_id"]
    return event_id


def deliveries(dashboard: Dashboard, event_id: str) -> list[dict[str, object]]:
    dashboard.services.read_models.catch_up_all()
    found: list[dict[str, object]] = dashboard.services.read_models.query(
        "SELECT * FROM rm_deliveries WHERE event_id = ? ORDER BY position", (event_id,)
    )
    return found


async def test_the_events_list_filters_by_type_and_entity(signed_in: Dashboard) -> None:
    signed_in.webhook(description="all")
    event_id = customer_registered(signed_in)
    product = signed_in.services.commerce.create_product(signed_in.shop.store_id, "Mug", None, ANN)
    signed_in.services.dispatch.process_new_events()
    signed_in.services.read_models.catch_up_all()

    everything = await signed_in.client.get("/dashboard/events")
    assert event_id in everything.text
    assert "product.created" in everything.text

    only = await signed_in.client.get("/dashboard/events?type=customer.registered")
    assert event_id in only.text
    assert "product.created</code></a>" not in only.text

    by_entity = await signed_in.client.get(f"/dashboard/events?entity={product['id']}")
    assert "product.created" in by_entity.text
    assert event_id not in by_entity.text

    wrong = await signed_in.client.get("/dashboard/events?entity=not-a-uuid&type=order.paid")
    assert wrong.status_code == 422
    assert 'id="entity-error"' in wrong.text


async def test_an_event_shows_its_envelope_deliveries_and_attempts(signed_in: Dashboard) -> None:
    webhook = signed_in.webhook(description="CRM")
    event_id = customer_registered(signed_in)
    [delivery] = deliveries(signed_in, event_id)
    signed_in.services.dispatch.record_attempts(
        [
            AttemptResult(
                signed_in.services.dispatch.ref(UUID(str(delivery["delivery_id"]))),
                1,
                datetime.now(UTC),
                123.4,
                500,
                response_body="<b>boom</b>",
            )
        ]
    )
    signed_in.services.read_models.catch_up_all()

    response = await signed_in.client.get(f"/dashboard/events/{event_id}")

    assert response.status_code == 200
    text = response.text
    assert "CRM" in text
    assert "HTTP 500" in text
    assert "123 ms" in text
    assert "&lt;b&gt;boom&lt;/b&gt;" in text
    assert "<b>boom" not in text
    assert "Next retry" in text
    # The envelope, pretty-printed, escaped
    envelope = signed_in.services.read_models.query(
        "SELECT envelope FROM rm_events WHERE event_id = ?", (event_id,)
    )[0]["envelope"]
    pretty = json.dumps(json.loads(envelope), indent=2, ensure_ascii=False)
    assert html.escape(pretty, quote=False) in text.replace("&#34;", '"').replace("&#39;", "'")
    assert "Bob &lt;b&gt;" in text
    page = Page(text)
    assert page.form(f"/dashboard/events/{event_id}/send-again").buttons == [
        "Send again to all webhooks"
    ]
    per_webhook = [f for f in page.forms if f.fields.get("webhook_id") == webhook["id"]]
    assert per_webhook
    assert per_webhook[0].buttons == ["Send again"]


async def test_send_again_makes_a_new_delivery_and_an_audit_entry(signed_in: Dashboard) -> None:
    webhook = signed_in.webhook()
    event_id = customer_registered(signed_in)
    page = Page((await signed_in.client.get(f"/dashboard/events/{event_id}")).text)
    [form] = [f for f in page.forms if f.fields.get("webhook_id") == webhook["id"]]

    response = await signed_in.client.post(
        f"/dashboard/events/{event_id}/send-again", data=form.fields
    )

    assert response.status_code == 303
    assert response.headers["location"] == (
        f"/dashboard/events/{event_id}?notice=sent-again&count=1"
    )
    found = deliveries(signed_in, event_id)
    assert [bool(d["replay"]) for d in found] == [False, True]
    assert found[1]["requested_by"] == "ann@shop.example"
    # The same form sent twice (a double click) is done once
    again = await signed_in.client.post(
        f"/dashboard/events/{event_id}/send-again", data=form.fields
    )
    assert again.status_code == 303
    assert len(deliveries(signed_in, event_id)) == 2

    shown = await signed_in.client.get(response.headers["location"])
    assert "1 new delivery" in shown.text
    assert "Sent again" in shown.text
    query = urlencode({"event": event_id, "kind": "delivery.sent_again"})
    audit = await signed_in.client.get(f"/dashboard/audit?{query}")
    assert "delivery.sent_again" in audit.text
    assert "ann@shop.example" in audit.text


async def test_send_again_to_all_webhooks(signed_in: Dashboard) -> None:
    signed_in.webhook(description="one")
    signed_in.webhook(description="two", event_types=["customer.*"])
    signed_in.webhook(description="orders only", event_types=["order.*"])
    event_id = customer_registered(signed_in)

    response = await signed_in.submit(
        f"/dashboard/events/{event_id}", f"/dashboard/events/{event_id}/send-again"
    )

    assert response.headers["location"].endswith("count=2")
    assert sum(bool(d["replay"]) for d in deliveries(signed_in, event_id)) == 2


async def test_another_stores_event_is_a_404_page(signed_in: Dashboard) -> None:
    signed_in.webhook(signed_in.other)
    theirs = customer_registered(signed_in, signed_in.other)
    own = customer_registered(signed_in)
    form = Page((await signed_in.client.get(f"/dashboard/events/{own}")).text).form(
        f"/dashboard/events/{own}/send-again"
    )

    assert (await signed_in.client.get(f"/dashboard/events/{theirs}")).status_code == 404
    posted = await signed_in.client.post(f"/dashboard/events/{theirs}/send-again", data=form.fields)
    assert posted.status_code == 404
    assert len(deliveries(signed_in, theirs)) == 1
    assert theirs not in (await signed_in.client.get("/dashboard/events")).text
    assert (await signed_in.client.get("/dashboard/events/evt_nope")).status_code == 404


async def test_the_audit_log_filters(signed_in: Dashboard) -> None:
    first = signed_in.webhook(description="first")
    second = signed_in.webhook(description="second")
    signed_in.services.webhooks.update_webhook(
        signed_in.shop.store_id, UUID(second["id"]), ANN, enabled=False, disabled_reason="test"
    )
    signed_in.services.read_models.catch_up_all()

    everything = await signed_in.client.get("/dashboard/audit")
    assert everything.text.count("webhook.created</code>") == 2
    assert "webhook.disabled</code>" in everything.text

    by_webhook = await signed_in.client.get(f"/dashboard/audit?webhook={first['id']}")
    assert by_webhook.text.count("webhook.created</code>") == 1
    assert "webhook.disabled</code>" not in by_webhook.text

    by_kind = await signed_in.client.get("/dashboard/audit?kind=webhook.disabled")
    assert "webhook.created</code>" not in by_kind.text

    by_actor = await signed_in.client.get("/dashboard/audit?actor=ann@shop.example")
    assert "webhook.disabled</code>" in by_actor.text
    assert "webhook.created</code>" not in by_actor.text

    in_range = await signed_in.client.get(
        "/dashboard/audit?since=2000-01-01T00:00&until=2000-01-02T00:00"
    )
    assert "No entries" in in_range.text

    wrong = await signed_in.client.get("/dashboard/audit?since=yesterday")
    assert wrong.status_code == 422
    assert 'id="since-error"' in wrong.text


async def test_an_attempt_that_was_never_sent_shows_why(signed_in: Dashboard) -> None:
    # Given an attempt a worker could not send — its master key does not open the secret
    # (issue #12: recorded on the delivery, never a silent dead letter) — and a binary
    # answer to another attempt
    signed_in.webhook()
    event_id = customer_registered(signed_in)
    [delivery] = deliveries(signed_in, event_id)
    ref = signed_in.services.dispatch.ref(UUID(str(delivery["delivery_id"])))
    signed_in.services.dispatch.record_attempts(
        [
            AttemptResult(
                ref,
                1,
                datetime.now(UTC),
                0.0,
                None,
                error="secret_unavailable",
                detail="cannot be opened with this worker's master key",
            ),
        ]
    )
    signed_in.services.dispatch.record_attempts(
        [
            AttemptResult(
                ref,
                2,
                datetime.now(UTC),
                5.0,
                500,
                response_body="AAEC",
                response_body_encoding="base64",
            )
        ]
    )
    signed_in.services.read_models.catch_up_all()

    # When the event's page is opened
    text = (await signed_in.client.get(f"/dashboard/events/{event_id}")).text

    # Then the first attempt shows its error class and why; the second its binary answer
    assert "secret_unavailable" in text
    assert "master key" in text
    assert "binary answer (base64)" in text
    assert "AAEC" in text
