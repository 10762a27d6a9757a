"""The dashboard in a real headless Chromium (SPEC §9): the stories a merchant lives,
against the whole service running — deliveries really reach a receiver.

Each story takes screenshots of the pages it visits into docs/screenshots/.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from uuid import UUID

import pytest

from domain.values import Actor
from tests.browser.conftest import EMAIL, Site, reload_until, screenshot, wait_for
from tests.support.receiver import RecordedRequest, Reply

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

ANN = Actor.person(EMAIL)


def expect(locator: object) -> object:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)  # type: ignore[call-overload]


def create_webhook(
    page: Page, site: Site, description: str, path: str = "hooks"
) -> tuple[str, str]:
    """Create a webhook with the form, keyboard only; (its id, the secret shown)."""
    page.goto("/dashboard/webhooks")
    page.get_by_role("link", name="Add a webhook").click()
    page.get_by_label("Description").fill(description)
    page.get_by_label("All event types").check()
    page.get_by_label("Endpoint URL").fill(site.pipeline.receiver.url + path)
    page.get_by_label("Endpoint URL").press("Enter")  # forms work with Enter
    secret = page.get_by_label(re.compile("^Signing secret"))
    value = secret.input_value()
    assert value.startswith("whsec_")
    link = page.get_by_role("link", name="I have stored it: go to the webhook")
    webhook_id = (link.get_attribute("href") or "").rsplit("/", 1)[1]
    return webhook_id, value


def test_signing_in_and_out(page: Page, site: Site) -> None:
    page.goto("/dashboard/events")
    # Sent to sign in first, with the key field focused
    page.wait_for_url(re.compile(r"/dashboard/sign-in\?next="))
    expect(page.get_by_label("API key")).to_be_focused()  # type: ignore[attr-defined]
    screenshot(page, "login.png")

    page.get_by_label("API key").fill("wr_0123456789abcdef_not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")  # type: ignore[attr-defined]

    page.get_by_label("API key").fill(site.api_key)
    page.get_by_label("API key").press("Enter")
    page.wait_for_url(re.compile(r"/dashboard/events$"))  # back where we wanted to go
    assert site.api_key not in page.content()
    cookie = next(c for c in page.context.cookies() if c["name"] == "webround_session")
    assert cookie["httpOnly"] is True
    # Secure follows the scheme (WEBROUND_COOKIE_SECURE=auto): this site is plain http
    assert cookie["secure"] is False
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/dashboard"
    assert site.api_key not in cookie["value"]
    # The first Tab reaches the skip link, which a keyboard user sees
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()  # type: ignore[attr-defined]

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_contain_text("signed out")  # type: ignore[attr-defined]
    page.goto("/dashboard/webhooks")
    page.wait_for_url(re.compile(r"/dashboard/sign-in"))


def test_a_new_webhooks_secret_is_shown_once(page: Page, site: Site) -> None:
    site.sign_in(page)

    webhook_id, secret = create_webhook(page, site, "Secret once")

    expect(page.get_by_text("It will never be shown again")).to_be_visible()  # type: ignore[attr-defined]
    assert page.evaluate("() => window.isSecureContext")
    page.get_by_role("button", name="Copy secret").click()
    expect(page.get_by_text("Copied to the clipboard")).to_be_visible()  # type: ignore[attr-defined]
    assert page.evaluate("() => navigator.clipboard.readText()") == secret
    screenshot(page, "secret-once.png")

    # A reload (the browser posts the form again) does not show it, nor make another webhook
    page.reload()
    page.wait_for_url(re.compile(rf"/dashboard/webhooks/{webhook_id}\?notice=secret-once"))
    assert secret not in page.content()
    assert "whsec_" not in page.content()
    expect(page.get_by_role("status")).to_contain_text("never shown again")  # type: ignore[attr-defined]
    webhooks, _ = site.services.webhooks.list_webhooks(site.store_id)
    assert [w["description"] for w in webhooks].count("Secret once") == 1


def test_events_attempts_send_again_and_the_audit_log(page: Page, site: Site) -> None:
    site.sign_in(page)
    webhook_id, _ = create_webhook(page, site, "Order system", "orders")
    receiver = site.pipeline.receiver
    seen = len(receiver.requests)
    failed: list[RecordedRequest] = []

    def busy_once(request: RecordedRequest) -> Reply:
        """The order system's first customer attempt fails (503); the rest succeeds."""
        customer = request.headers.get("webround-event-type") == "customer.registered"
        if request.path == "/orders" and customer and not failed:
            failed.append(request)
            return Reply(status=503, body=b"busy, try later")
        return Reply()

    receiver.behaviour = busy_once

    customer = site.services.commerce.register_customer(
        site.store_id, "bob@example.com", "Bob", None, ANN
    )
    product = site.services.commerce.create_product(site.store_id, "Mug", "A big mug", ANN)

    # The events appear, with the attempts made to the receiver
    page.get_by_role("link", name="Events", exact=True).click()
    reload_until(page, "tbody tr:has-text('customer.registered')")
    reload_until(page, "tbody tr:has-text('product.created')")
    orders = lambda: [r for r in receiver.requests[seen:] if r.path == "/orders"]  # noqa: E731
    wait_for(lambda: len(orders()) >= 3)  # customer: failed once, then OK; product: OK
    reload_until(page, "tbody tr:has-text('customer.registered') .badge.ok")
    screenshot(page, "events.png")

    page.get_by_label("Event type").select_option("customer.registered")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr", has_text="product.created")).to_have_count(0)  # type: ignore[attr-defined]
    page.get_by_role("link", name="customer.registered").first.click()
    expect(page.get_by_role("heading", name="customer.registered")).to_be_visible()  # type: ignore[attr-defined]
    expect(page.locator("pre.json")).to_contain_text(customer["id"])  # type: ignore[attr-defined]
    section = page.locator("article", has=page.get_by_role("link", name="Order system"))
    expect(section.get_by_text("HTTP 503")).to_be_visible()  # type: ignore[attr-defined]
    expect(section.get_by_text("busy, try later")).to_be_visible()  # type: ignore[attr-defined]
    expect(section.get_by_text("HTTP 200")).to_be_visible()  # type: ignore[attr-defined]
    assert product["id"] not in page.locator("pre.json").inner_text()

    # Send again to this webhook: a new delivery of the same envelope
    before = len(receiver.requests)
    section.get_by_role("button", name="Send again").click()
    expect(page.get_by_role("status")).to_contain_text("1 new delivery")  # type: ignore[attr-defined]
    wait_for(lambda: len(receiver.requests) > before)
    receiver.behaviour = Reply()
    reload_until(page, "article:has-text('Order system') .badge.info")
    reload_until(page, "article:has-text('Order system') .delivery:has(.badge.info) .badge.ok")
    event_id = page.url.split("/")[-1].split("?")[0]
    resent = orders()[-1]
    assert resent.headers["webhook-id"] == event_id
    assert resent.body == failed[0].body  # the same envelope, byte for byte
    screenshot(page, "event.png")

    # The audit log says who sent it again
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Kind").select_option("delivery.sent_again")
    page.get_by_label("Event id").fill(event_id)
    page.get_by_label("Event id").press("Enter")
    reload_until(page, "td:has-text('delivery.sent_again')")
    expect(page.locator("tbody tr").first).to_contain_text(EMAIL)  # type: ignore[attr-defined]
    page.goto("/dashboard/audit")
    screenshot(page, "audit.png")

    # The webhook's page charts the attempts; the list shows its health
    page.goto("/dashboard/webhooks")
    reload_until(page, "tr:has-text('Order system') .badge.ok")
    screenshot(page, "webhooks.png")
    page.get_by_role("link", name="Order system").click()
    expect(page.locator("svg.chart rect.ok").first).to_be_visible()  # type: ignore[attr-defined]
    expect(page.locator("svg.chart rect.bad").first).to_be_visible()  # type: ignore[attr-defined]
    screenshot(page, "webhook.png")
    assert UUID(webhook_id)


def test_disabling_and_enabling_a_webhook(page: Page, site: Site) -> None:
    site.sign_in(page)
    webhook_id, _ = create_webhook(page, site, "Holiday pause")
    page.get_by_role("link", name="I have stored it: go to the webhook").click()

    page.get_by_label("Reason").fill("receiver down for maintenance")
    page.get_by_role("button", name="Disable webhook").click()

    expect(page.get_by_role("status")).to_contain_text("Webhook disabled")  # type: ignore[attr-defined]
    expect(page.locator(".facts")).to_contain_text("receiver down for maintenance")  # type: ignore[attr-defined]
    view = site.services.webhooks.read_webhook(site.store_id, UUID(webhook_id))
    assert view["enabled"] is False

    page.get_by_role("button", name="Enable webhook").click()
    expect(page.get_by_role("status")).to_contain_text("Webhook enabled")  # type: ignore[attr-defined]
    assert site.services.webhooks.read_webhook(site.store_id, UUID(webhook_id))["enabled"]


def test_a_form_without_its_csrf_token_is_refused(page: Page, site: Site) -> None:
    site.sign_in(page)
    webhook_id, _ = create_webhook(page, site, "Guarded")
    page.goto(f"/dashboard/webhooks/{webhook_id}")

    # Strip the token from the disable form, as a forged form would lack it
    form = page.locator(f"form[action='/dashboard/webhooks/{webhook_id}/disable']")
    form.locator("input[name=csrf]").evaluate("input => input.remove()")
    form.get_by_role("button", name="Disable webhook").click()

    expect(page.get_by_role("heading", name="Request refused")).to_be_visible()  # type: ignore[attr-defined]
    expect(page.get_by_role("alert")).to_contain_text("security token")  # type: ignore[attr-defined]
    assert site.services.webhooks.read_webhook(site.store_id, UUID(webhook_id))["enabled"]

    # And a post from outside the page (no token at all) is refused the same way
    response = page.request.post(
        f"/dashboard/webhooks/{webhook_id}/disable", form={"reason": "forged"}
    )
    assert response.status == 403
    assert site.services.webhooks.read_webhook(site.store_id, UUID(webhook_id))["enabled"]
