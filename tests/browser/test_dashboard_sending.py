"""The dashboard's later pages in a real headless Chromium: a webhook's sending settings, a
test event from its page, Replay and Recover with their counts, deliveries by status."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from uuid import UUID

import pytest

from domain.values import Actor
from tests.browser.conftest import EMAIL, Site, reload_until, screenshot, wait_for
from tests.browser.test_dashboard import expect
from tests.support.receiver import RecordedRequest, Reply

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser


def test_sending_settings_and_a_test_event(page: Page, site: Site) -> None:
    site.sign_in(page)
    receiver = site.pipeline.receiver

    # A webhook with a custom header, a timeout and a rate limit, typed into the form
    page.get_by_role("link", name="Add a webhook").click()
    page.get_by_label("Description").fill("Warehouse")
    page.get_by_label("Every order event").check()
    page.get_by_label("Custom headers").fill("X-Env: staging\nAuthorization: Bearer t0ken")
    page.get_by_label("Timeout").fill("5")
    page.get_by_label("Rate limit").fill("50")
    page.get_by_label("Endpoint URL").fill(receiver.url + "warehouse")
    page.get_by_label("Endpoint URL").press("Enter")
    page.get_by_role("link", name="I have stored it: go to the webhook").click()
    webhook_id = page.url.rsplit("/", 1)[1].split("?")[0]
    expect(page.get_by_label("Timeout")).to_have_value("5")  # type: ignore[attr-defined]
    expect(page.get_by_label("Rate limit")).to_have_value("50")  # type: ignore[attr-defined]
    expect(page.locator("#headers-current")).to_contain_text("Authorization, X-Env")  # type: ignore[attr-defined]
    assert "t0ken" not in page.content()

    # A test order.paid from the webhook's page
    seen = len(receiver.requests)
    page.get_by_label("Event type", exact=True).select_option("order.paid")
    page.get_by_role("button", name="Send test event").click()
    expect(page.get_by_role("status")).to_contain_text("A test event was sent")  # type: ignore[attr-defined]
    reload_until(page, "tr:has(.badge.info:text('test')) .badge.ok")
    page.get_by_role("link", name="order.paid").click()
    expect(page.get_by_role("heading", name="order.paid")).to_contain_text("Test event")  # type: ignore[attr-defined]
    expect(page.locator(".delivery .badge.ok", has_text="HTTP 200")).to_be_visible()  # type: ignore[attr-defined]
    expect(page.get_by_role("button", name="Send again to all webhooks")).to_have_count(0)  # type: ignore[attr-defined]
    screenshot(page, "test-event.png")

    # The endpoint got it, marked as a test, with the custom headers
    [request] = [r for r in receiver.requests[seen:] if r.path == "/warehouse"]
    assert json.loads(request.body)["test"] is True
    assert request.headers["x-env"] == "staging"
    assert request.headers["authorization"] == "Bearer t0ken"
    assert request.headers["webhook-id"] == page.url.split("/")[-1].split("?")[0]

    # Editing: a new timeout, no rate limit, the headers kept
    page.goto(f"/dashboard/webhooks/{webhook_id}")
    page.get_by_label("Timeout").fill("20")
    page.get_by_label("Rate limit").fill("")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_contain_text("Changes saved")  # type: ignore[attr-defined]
    webhook = site.services.webhooks.read_webhook(site.store_id, UUID(webhook_id))
    assert (webhook["timeoutSeconds"], webhook["rateLimit"]) == (20, None)
    assert list(webhook["headers"]) == ["Authorization", "X-Env"]

    # A header name the API would refuse is explained next to the field
    page.get_by_label("Custom headers").fill("Not A Name: x")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#headers-error")).to_contain_text("is not a header name")  # type: ignore[attr-defined]


def test_recover_replay_and_deliveries_by_status(page: Page, site: Site) -> None:
    site.sign_in(page)
    receiver = site.pipeline.receiver
    down = True

    def crm(request: RecordedRequest) -> Reply:
        return Reply(status=503) if request.path == "/crm" and down else Reply()

    receiver.behaviour = crm
    page.get_by_role("link", name="Add a webhook").click()
    page.get_by_label("Description").fill("CRM")
    page.get_by_label("Every customer event").check()
    page.get_by_label("Endpoint URL").fill(receiver.url + "crm")
    page.get_by_label("Endpoint URL").press("Enter")
    page.get_by_role("link", name="I have stored it: go to the webhook").click()
    webhook_page = page.url.split("?")[0]

    # A customer whose delivery fails for good (the retries are fast here; four failed
    # attempts stay below the circuit breaker's threshold)
    site.services.commerce.register_customer(
        site.store_id, "ann@crm.example", "Ann", None, Actor.person(EMAIL)
    )

    # The failed delivery, found with the status filter
    page.get_by_role("link", name="Deliveries", exact=True).click()
    page.get_by_label("Status").select_option("failed")
    page.get_by_label("Webhook").select_option(label="CRM")
    page.get_by_role("button", name="Filter").click()
    reload_until(page, "tbody tr .badge.bad", timeout=30)
    expect(page.locator("tbody tr")).to_have_count(1)  # type: ignore[attr-defined]
    screenshot(page, "deliveries.png")

    # Recover it once the endpoint is back: the count is said
    down = False
    page.goto(webhook_page)
    page.get_by_role("button", name="Recover failed deliveries").click()
    expect(page.get_by_role("status")).to_contain_text(  # type: ignore[attr-defined]
        "1 failed delivery is being sent again"
    )
    # And Replay sends every event of the range again
    page.get_by_role("button", name="Replay events").click()
    expect(page.get_by_role("status")).to_contain_text(  # type: ignore[attr-defined]
        "1 event of that range is being sent again"
    )

    # The two new deliveries succeed, each marked as sent again
    webhook_id = webhook_page.rsplit("/", 1)[1]
    page.goto(f"/dashboard/deliveries?status=succeeded&webhook={webhook_id}")
    reload_until(page, "tbody tr:nth-child(2) .badge.ok", timeout=30)
    expect(page.locator("tbody tr .badge.info", has_text="sent again")).to_have_count(2)  # type: ignore[attr-defined]
    wait_for(lambda: len([r for r in receiver.requests if r.path == "/crm"]) >= 4 + 2)
