"""The dashboard's webhook pages, completed: custom headers, timeout and rate limit on create
and edit; a test event; Replay and Recover with their counts; deliveries by status."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import pytest

from application.dispatch import AttemptResult
from domain.values import Actor
from tests.integration.infrastructure.dashboard.conftest import URL
from tests.integration.infrastructure.dashboard.test_webhook_pages import create

if TYPE_CHECKING:
    from tests.integration.infrastructure.dashboard.conftest import Dashboard

pytestmark = pytest.mark.anyio


def settle(dashboard: Dashboard) -> None:
    dashboard.services.dispatch.process_new_events()
    dashboard.services.read_models.catch_up_all()


def view(dashboard: Dashboard, webhook_id: str) -> dict[str, Any]:
    return dashboard.services.webhooks.read_webhook(dashboard.shop.store_id, UUID(webhook_id))


def sent_headers(dashboard: Dashboard, webhook_id: str) -> dict[str, str]:
    """The custom headers as the worker will send them (unsealed)."""
    target = dashboard.services.webhooks.get_webhook(dashboard.shop.store_id, UUID(webhook_id))
    if target.sealed_headers is None:
        return {}
    return dashboard.services.keeper.open_headers(target.id, target.sealed_headers)


async def test_creating_with_custom_headers_a_timeout_and_a_rate_limit(
    signed_in: Dashboard,
) -> None:
    # When a webhook is created with its sending settings
    webhook_id, _, _ = await create(
        signed_in,
        headers="Authorization: Bearer s3cr3t-token\nX-Env: staging\n",
        timeout="5",
        rate_limit="2.5",
    )

    # Then they are kept: header values sealed, sent as given
    webhook = view(signed_in, webhook_id)
    assert (webhook["timeoutSeconds"], webhook["rateLimit"]) == (5, 2.5)
    assert sent_headers(signed_in, webhook_id) == {
        "Authorization": "Bearer s3cr3t-token",
        "X-Env": "staging",
    }
    # And the page lists the header names, never their values
    page = await signed_in.client.get(f"/dashboard/webhooks/{webhook_id}")
    assert "<code>Authorization</code>, <code>X-Env</code>" in page.text
    assert "s3cr3t-token" not in page.text
    assert re.search(r'id="timeout" name="timeout" value="5"', page.text)
    assert re.search(r'id="rate_limit" name="rate_limit" value="2.5"', page.text)


async def test_editing_keeps_replaces_or_removes_the_headers(signed_in: Dashboard) -> None:
    webhook_id, _, _ = await create(signed_in, headers="X-Env: staging")
    page_path = f"/dashboard/webhooks/{webhook_id}"
    fields = {"url": URL, "event_types": ["order.*"], "headers": "", "timeout": "15"}

    # Saving with no header lines keeps them, and empties the rate limit
    response = await signed_in.submit(page_path, page_path, {**fields, "rate_limit": ""})
    assert response.status_code == 303
    assert sent_headers(signed_in, webhook_id) == {"X-Env": "staging"}
    # Typed lines replace them; a new timeout and rate limit are kept
    await signed_in.submit(
        page_path,
        page_path,
        {**fields, "headers": "X-Env: production", "timeout": "30", "rate_limit": "100"},
    )
    assert sent_headers(signed_in, webhook_id) == {"X-Env": "production"}
    assert (
        view(signed_in, webhook_id)["timeoutSeconds"],
        view(signed_in, webhook_id)["rateLimit"],
    ) == (30, 100)
    # "Remove every custom header" drops them; an emptied rate limit means none
    await signed_in.submit(
        page_path, page_path, {**fields, "remove_headers": "yes", "rate_limit": ""}
    )
    assert sent_headers(signed_in, webhook_id) == {}
    assert view(signed_in, webhook_id)["rateLimit"] is None


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"headers": "no colon here"}, "headers", "write each header as Name: value"),
        ({"headers": "Bad Name: x"}, "headers", "is not a header name"),
        ({"headers": "User-Agent: mine"}, "headers", "is set by us and cannot be overridden"),
        ({"headers": "X-A: 1\nX-A: 2"}, "headers", "given twice"),
        ({"timeout": "31"}, "timeout", "from 1 to 30"),
        ({"timeout": "ten"}, "timeout", "from 1 to 30"),
        ({"rate_limit": "0"}, "rate_limit", "above 0"),
        ({"rate_limit": "20000"}, "rate_limit", "above 0"),
    ],
)
async def test_sending_settings_the_api_refuses_are_refused_next_to_their_field(
    signed_in: Dashboard, data: dict[str, str], field: str, message: str
) -> None:
    form = (await signed_in.page("/dashboard/webhooks/new")).form("/dashboard/webhooks/new")
    base = {"url": URL, "event_types": "*", "timeout": "15", "rate_limit": "", "headers": ""}

    response = await signed_in.client.post(
        "/dashboard/webhooks/new", data={**form.fields, **base, **data}
    )

    assert response.status_code == 422
    assert f'id="{field}-error"' in response.text
    assert message in response.text
    assert signed_in.services.webhooks.list_webhooks(signed_in.shop.store_id)[0] == []


async def test_the_test_event_button_sends_a_test_and_shows_its_delivery(
    signed_in: Dashboard,
) -> None:
    webhook_id, _, _ = await create(signed_in)
    page_path = f"/dashboard/webhooks/{webhook_id}"
    page = await signed_in.client.get(page_path)
    # The choice offers the event types the webhook listens to
    assert '<option value="order.paid">' in page.text
    assert '<option value="customer.verified">' not in page.text

    response = await signed_in.submit(page_path, f"{page_path}/test", {"event_type": "order.paid"})

    # Then the webhook's page says it was sent
    assert response.status_code == 303
    assert response.headers["location"] == f"{page_path}?notice=test-sent"
    notice = await signed_in.client.get(response.headers["location"])
    assert "A test event was sent" in notice.text
    # And once recorded, it is among the webhook's deliveries, marked as a test
    settle(signed_in)
    page = await signed_in.client.get(page_path)
    assert '<span class="badge info">test</span>' in page.text
    [event_id] = re.findall(r'href="/dashboard/events/(evt_test_[0-9a-f]{32})"', page.text)
    # And its page shows it as a test event, sent by the merchant, not to be sent to all
    event = await signed_in.client.get(f"/dashboard/events/{event_id}")
    assert "Test event" in event.text
    assert "Send again to all webhooks" not in event.text
    assert "sent by ann@shop.example" in event.text


async def test_replay_and_recover_say_how_many_they_sent(signed_in: Dashboard) -> None:
    # Given a webhook for customer events, with two deliveries of which one failed
    webhook_id, _, _ = await create(signed_in, event_types=["customer.*"])
    for name in ("ann", "bob"):
        signed_in.services.commerce.register_customer(
            signed_in.shop.store_id, f"{name}@x.example", name, None, Actor.system()
        )
    settle(signed_in)
    deliveries = signed_in.services.read_models.query(
        "SELECT delivery_id FROM rm_deliveries WHERE webhook_id = ? ORDER BY position",
        [webhook_id],
    )
    now = datetime.now(UTC)
    signed_in.services.dispatch.record_attempts(
        [
            AttemptResult(
                signed_in.services.dispatch.ref(UUID(d["delivery_id"])),
                1,
                now,
                4.0,
                status,
                final=True,
            )
            for d, status in zip(deliveries, (500, 200), strict=True)
        ]
    )
    settle(signed_in)
    page_path = f"/dashboard/webhooks/{webhook_id}"

    # When the merchant replays the range, then recovers it
    replayed = await signed_in.submit(
        page_path, f"{page_path}/replay", {"replay_since": "2020-01-01T00:00"}
    )
    recovered = await signed_in.submit(
        page_path, f"{page_path}/recover", {"since": "2020-01-01T00:00"}
    )

    # Then each says how many it sent: every event, then the failed one
    assert replayed.headers["location"] == f"{page_path}?notice=replayed&count=2"
    assert (
        "2 events of that range are being sent again"
        in (await signed_in.client.get(replayed.headers["location"])).text
    )
    assert recovered.headers["location"] == f"{page_path}?notice=recovered&count=1"
    # And both are in the audit log, as the API's are
    settle(signed_in)
    audit = await signed_in.client.get(f"/dashboard/audit?webhook={webhook_id}")
    assert "webhook.replayed" in audit.text
    assert "webhook.recovered" in audit.text
    # A replay range that ends before it starts is explained next to its field
    bad = await signed_in.submit(
        page_path,
        f"{page_path}/replay",
        {"replay_since": "2030-01-02T00:00", "replay_until": "2030-01-01T00:00"},
    )
    assert bad.status_code == 422
    assert 'id="replay_until-error"' in bad.text


async def test_deliveries_are_filtered_by_status_and_webhook(signed_in: Dashboard) -> None:
    # Given two webhooks; one delivery failed, the others succeeded or are pending
    first, _, _ = await create(signed_in, event_types=["customer.*"])
    second, _, _ = await create(signed_in, event_types=["customer.*"], description="Second")
    signed_in.services.commerce.register_customer(
        signed_in.shop.store_id, "ann@x.example", "Ann", None, Actor.system()
    )
    settle(signed_in)
    rows = signed_in.services.read_models.query(
        "SELECT delivery_id, webhook_id FROM rm_deliveries WHERE store_id = ?",
        [str(signed_in.shop.store_id)],
    )
    failed = next(r["delivery_id"] for r in rows if r["webhook_id"] == first)
    signed_in.services.dispatch.record_attempts(
        [
            AttemptResult(
                signed_in.services.dispatch.ref(UUID(failed)),
                1,
                datetime.now(UTC),
                4.0,
                500,
                final=True,
            )
        ]
    )
    settle(signed_in)

    # When the merchant filters by status
    failed_page = await signed_in.client.get("/dashboard/deliveries?status=failed")
    pending_page = await signed_in.client.get(
        f"/dashboard/deliveries?status=pending&webhook={second}"
    )

    # Then each page lists only what matches
    assert failed_page.status_code == 200
    assert failed_page.text.count('<a href="/dashboard/events/') == 1
    assert "HTTP 500" in failed_page.text
    assert pending_page.text.count('<a href="/dashboard/events/') == 1
    assert "HTTP 500" not in pending_page.text
    # And the webhook page links to its deliveries by status
    page = await signed_in.client.get(f"/dashboard/webhooks/{first}")
    assert f"/dashboard/deliveries?webhook={first}&amp;status=failed" in page.text
    # A filter that is no status is explained, not a 500
    bad = await signed_in.client.get("/dashboard/deliveries?status=lost")
    assert bad.status_code == 422
    assert 'id="status-error"' in bad.text
