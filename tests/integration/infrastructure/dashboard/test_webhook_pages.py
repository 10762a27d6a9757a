"""The dashboard's webhook pages (SPEC §9, §3): create with the secret shown once, edit,
enable and disable, rotate, recover — and another store's webhook is a 404 page."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from uuid import UUID

import pytest

from tests.integration.infrastructure.dashboard.conftest import URL
from tests.integration.infrastructure.dashboard.pages import Page

if TYPE_CHECKING:
    from tests.integration.infrastructure.dashboard.conftest import Dashboard

pytestmark = pytest.mark.anyio

SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]{20,}")


async def create(signed_in: Dashboard, **fields: object) -> tuple[str, str, dict[str, str]]:
    """Create a webhook with the form: (its id, the secret shown, the form posted)."""
    form = (await signed_in.page("/dashboard/webhooks/new")).form("/dashboard/webhooks/new")
    data = {**form.fields, "url": URL, "event_types": ["order.*", "customer.registered"]}
    data.update(fields)  # type: ignore[arg-type]
    response = await signed_in.client.post("/dashboard/webhooks/new", data=data)
    assert response.status_code == 200, response.text
    [secret] = set(SECRET.findall(response.text))
    [webhook_id] = set(re.findall(r"/dashboard/webhooks/([0-9a-f-]{36})", response.text))
    return webhook_id, secret, data


async def test_creating_a_webhook_shows_its_secret_once(signed_in: Dashboard) -> None:
    form = (await signed_in.page("/dashboard/webhooks/new")).form("/dashboard/webhooks/new")
    data = {**form.fields, "url": URL, "event_types": ["order.*", "customer.registered"]}

    response = await signed_in.client.post("/dashboard/webhooks/new", data=data)

    # The answer to the post is the one page with the secret, never cached
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert "never be shown again" in response.text
    [secret] = set(SECRET.findall(response.text))
    page = Page(response.text)
    assert ("input", "secret") in page.controls
    assert "secret" in page.labels
    [script] = page.scripts
    assert "clipboard" in script
    [webhook] = signed_in.services.webhooks.list_webhooks(signed_in.shop.store_id)[0]
    assert webhook["url"] == URL
    assert webhook["eventTypes"] == ["customer.registered", "order.*"]

    # A reload sends the same form again: nothing new is made and no secret is shown
    again = await signed_in.client.post("/dashboard/webhooks/new", data=data)
    assert again.status_code == 303
    assert again.headers["location"] == f"/dashboard/webhooks/{webhook['id']}?notice=secret-once"
    assert len(signed_in.services.webhooks.list_webhooks(signed_in.shop.store_id)[0]) == 1
    landing = await signed_in.client.get(again.headers["location"])
    assert "never shown again" in landing.text

    # No page shows the secret any more
    signed_in.services.read_models.catch_up_all()
    for path in (
        "/dashboard/webhooks",
        f"/dashboard/webhooks/{webhook['id']}",
        "/dashboard/events",
        "/dashboard/audit",
        again.headers["location"],
    ):
        text = (await signed_in.client.get(path)).text
        assert secret not in text, path
        assert "whsec_" not in text, path


async def test_rotating_shows_the_new_secret_once(signed_in: Dashboard) -> None:
    webhook_id, first, _ = await create(signed_in)
    action = f"/dashboard/webhooks/{webhook_id}/rotate-secret"
    form = (await signed_in.page(f"/dashboard/webhooks/{webhook_id}")).form(action)

    response = await signed_in.client.post(action, data=form.fields)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    [second] = set(SECRET.findall(response.text))
    assert second != first
    assert "keeps signing" in response.text
    # Sent again (a reload): not rotated twice, no secret
    again = await signed_in.client.post(action, data=form.fields)
    assert again.status_code == 303
    assert "whsec_" not in (await signed_in.client.get(again.headers["location"])).text
    webhook = signed_in.services.webhooks.get_webhook(signed_in.shop.store_id, UUID(webhook_id))
    assert webhook.version == 2  # registered, rotated once


async def test_output_is_escaped(signed_in: Dashboard) -> None:
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    webhook_id, _, _ = await create(signed_in, description=hostile)
    signed_in.services.read_models.catch_up_all()

    for path in ("/dashboard/webhooks", f"/dashboard/webhooks/{webhook_id}", "/dashboard/audit"):
        text = (await signed_in.client.get(path)).text
        assert "&lt;script&gt;alert(" in text, path
        assert "<script>alert" not in text, path
        assert "<img src=x" not in text, path
        assert all("alert" not in s for s in Page(text).scripts), path


async def test_a_webhook_of_another_store_is_a_404_page(signed_in: Dashboard) -> None:
    foreign = signed_in.webhook(signed_in.other, description="theirs")
    own_id, _, _ = await create(signed_in)
    own_page = await signed_in.page(f"/dashboard/webhooks/{own_id}")

    response = await signed_in.client.get(f"/dashboard/webhooks/{foreign['id']}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "theirs" not in response.text

    # Its forms, with this session's valid tokens, change nothing either
    tokens = own_page.form(f"/dashboard/webhooks/{own_id}/disable").fields
    for action in ("disable", "enable", "rotate-secret", "recover", ""):
        path = f"/dashboard/webhooks/{foreign['id']}" + (f"/{action}" if action else "")
        data = {**tokens, "since": "2020-01-01T00:00", "url": URL, "event_types": "*"}
        posted = await signed_in.client.post(path, data=data)
        assert posted.status_code == 404, action
        assert "whsec_" not in posted.text
    theirs = signed_in.services.webhooks.read_webhook(signed_in.other.store_id, UUID(foreign["id"]))
    assert theirs["version"] == foreign["version"]

    # Not a UUID, or no such page: 404 pages too
    assert (await signed_in.client.get("/dashboard/webhooks/not-an-id")).status_code == 404
    assert (await signed_in.client.get("/dashboard/nothing/here")).status_code == 404


async def test_the_list_shows_each_webhooks_health(signed_in: Dashboard) -> None:
    signed_in.webhook(description="Orders to the ERP", event_types=["order.*"])
    page = await signed_in.client.get("/dashboard/webhooks")

    assert "Orders to the ERP" in page.text
    assert "Enabled" in page.text
    assert "Closed" in page.text  # the circuit breaker, read from the schedule
    assert "Success, 24 h" in page.text


async def test_editing_the_filters(signed_in: Dashboard) -> None:
    webhook_id, _, _ = await create(signed_in)
    action = f"/dashboard/webhooks/{webhook_id}"

    response = await signed_in.submit(
        action,
        action,
        {"url": URL, "description": "Paid orders", "event_types": ["order.paid", "order.refunded"]},
    )

    assert response.status_code == 303
    assert response.headers["location"] == f"{action}?notice=saved"
    page = await signed_in.client.get(response.headers["location"])
    assert "Changes saved" in page.text
    assert re.search(r'value="order.paid" checked', page.text)
    assert not re.search(r'value="order.created" checked', page.text)
    view = signed_in.services.webhooks.read_webhook(signed_in.shop.store_id, UUID(webhook_id))
    assert view["eventTypes"] == ["order.paid", "order.refunded"]
    assert view["description"] == "Paid orders"


async def test_invalid_fields_are_shown_next_to_them(signed_in: Dashboard) -> None:
    form = (await signed_in.page("/dashboard/webhooks/new")).form("/dashboard/webhooks/new")

    for data, field, message in [
        ({"url": URL}, "event_types", "Choose at least one event type"),
        ({"url": "http://127.0.0.1/x", "event_types": "*"}, "url", ""),
        ({"url": "not a url", "event_types": "*"}, "url", ""),
    ]:
        response = await signed_in.client.post(
            "/dashboard/webhooks/new", data={**form.fields, **data}
        )
        assert response.status_code == 422, data
        assert f'id="{field}-error"' in response.text
        assert message in response.text
        assert "whsec_" not in response.text
    assert signed_in.services.webhooks.list_webhooks(signed_in.shop.store_id)[0] == []


async def test_disabling_with_a_reason_and_enabling_again(signed_in: Dashboard) -> None:
    webhook_id, _, _ = await create(signed_in)
    page_path = f"/dashboard/webhooks/{webhook_id}"

    response = await signed_in.submit(
        page_path, f"{page_path}/disable", {"reason": "endpoint moving to a new host"}
    )
    assert response.headers["location"] == f"{page_path}?notice=disabled"
    view = signed_in.services.webhooks.read_webhook(signed_in.shop.store_id, UUID(webhook_id))
    assert view["enabled"] is False
    assert view["disabledReason"] == "endpoint moving to a new host"
    page = await signed_in.client.get(page_path)
    assert "endpoint moving to a new host" in page.text
    assert "Enable webhook" in page.text

    response = await signed_in.submit(page_path, f"{page_path}/enable")
    assert response.headers["location"] == f"{page_path}?notice=enabled"
    assert signed_in.services.webhooks.read_webhook(signed_in.shop.store_id, UUID(webhook_id))[
        "enabled"
    ]
    signed_in.services.read_models.catch_up_all()
    audit = await signed_in.client.get(f"/dashboard/audit?webhook={webhook_id}")
    assert "webhook.disabled" in audit.text
    assert "webhook.enabled" in audit.text
    assert "ann@shop.example" in audit.text  # the actor: the key's person


async def test_recover_sends_again_the_failed_deliveries_of_a_range(signed_in: Dashboard) -> None:
    webhook_id, _, _ = await create(signed_in)
    page_path = f"/dashboard/webhooks/{webhook_id}"

    response = await signed_in.submit(
        page_path, f"{page_path}/recover", {"since": "2020-01-01T00:00", "until": ""}
    )

    assert response.status_code == 303
    assert response.headers["location"] == f"{page_path}?notice=recovered&count=0"
    assert (
        "no failed deliveries in that range"
        in (await signed_in.client.get(response.headers["location"])).text
    )
    signed_in.services.read_models.catch_up_all()
    audit = await signed_in.client.get("/dashboard/audit?kind=webhook.recovered")
    assert "webhook.recovered" in audit.text

    # A range that ends before it starts is explained next to the field
    bad = await signed_in.submit(
        page_path,
        f"{page_path}/recover",
        {"since": "2030-01-02T00:00", "until": "2030-01-01T00:00"},
    )
    assert bad.status_code == 422
    assert 'id="until-error"' in bad.text


async def test_every_input_has_a_label_and_every_button_a_name(signed_in: Dashboard) -> None:
    webhook_id, _, _ = await create(signed_in)
    signed_in.services.read_models.catch_up_all()

    for path in (
        "/dashboard/webhooks",
        "/dashboard/webhooks/new",
        f"/dashboard/webhooks/{webhook_id}",
        "/dashboard/events",
        "/dashboard/deliveries",
        "/dashboard/audit",
    ):
        page = await signed_in.page(path)
        assert page.unlabelled() == [], path
        for form in page.forms:
            assert form.buttons, (path, form.action)
            assert all(form.buttons), (path, form.action)
    signed_in.client.cookies.clear()
    page = await signed_in.page("/dashboard/sign-in")
    assert page.unlabelled() == []


async def test_a_count_of_thousands_of_digits_shows_the_page_without_a_notice(
    signed_in: Dashboard,
) -> None:
    # Given a webhook page asked for with a notice count of 5,000 digits (a crafted link)
    webhook_id = signed_in.webhook()["id"]
    path = f"/dashboard/webhooks/{webhook_id}?notice=recovered&count={'9' * 5000}"

    # When it is opened
    response = await signed_in.client.get(path)

    # Then it is the page, never a 500, and it shows no count
    assert response.status_code == 200, response.text[:300]
    assert "9999" not in response.text
