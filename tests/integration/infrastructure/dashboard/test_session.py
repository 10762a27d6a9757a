"""Signing in and out of the dashboard, the session cookie, and CSRF protection (SPEC §9):
on SQLite and PostgreSQL, over the real app."""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

import httpx
import pytest

from domain.values import Actor
from infrastructure.dashboard.session import SESSION_COOKIE, new_session, new_sign_in_token
from infrastructure.settings import Settings
from tests.integration.infrastructure.dashboard.conftest import dashboard_with

if TYPE_CHECKING:
    from tests.integration.infrastructure.dashboard.conftest import Dashboard

pytestmark = pytest.mark.anyio


def session_cookie(response: httpx.Response) -> SimpleCookie:
    [header] = [h for h in response.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE)]
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(header)
    return cookie


async def test_pages_send_a_visitor_without_a_session_to_sign_in(dashboard: Dashboard) -> None:
    response = await dashboard.client.get("/dashboard/events?type=order.paid")

    assert response.status_code == 303
    assert response.headers["location"] == (
        "/dashboard/sign-in?next=%2Fdashboard%2Fevents%3Ftype%3Dorder.paid"
    )


async def test_signing_in_sets_a_sealed_strict_secure_session_cookie(dashboard: Dashboard) -> None:
    response = await dashboard.sign_in()

    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/webhooks"
    header = next(
        h for h in response.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE)
    )
    flags = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert {"httponly", "secure", "samesite", "path", "max-age"} <= flags
    morsel = session_cookie(response)[SESSION_COOKIE]
    assert morsel["samesite"].lower() == "strict"
    assert morsel["path"] == "/dashboard"
    assert morsel["max-age"] == "28800"  # 8 hours
    # The key is in the cookie only sealed: neither it nor any recognisable part shows.
    value = morsel.value
    decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    for text in (value.encode(), decoded):
        assert dashboard.shop.api_key.encode() not in text
        assert dashboard.shop.key_id.encode() not in text
    # And it opens the pages
    page = await dashboard.client.get("/dashboard/webhooks")
    assert page.status_code == 200
    assert "ann@shop.example" in page.text


async def test_a_wrong_key_is_refused_and_not_repeated(dashboard: Dashboard) -> None:
    page = await dashboard.page("/dashboard/sign-in")
    wrong = dashboard.shop.api_key[:-4] + "AAAA"

    response = await dashboard.client.post(
        "/dashboard/sign-in", data={**page.form("/dashboard/sign-in").fields, "api_key": wrong}
    )

    assert response.status_code == 401
    assert "not valid" in response.text
    assert wrong not in response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


async def test_signing_in_without_the_forms_token_is_refused(dashboard: Dashboard) -> None:
    # A page of another site posting a key of its own store (login CSRF) has no token
    response = await dashboard.client.post(
        "/dashboard/sign-in", data={"api_key": dashboard.other.api_key}
    )

    assert response.status_code == 403
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert (await dashboard.client.get("/dashboard/webhooks")).status_code == 303


async def test_signing_in_returns_to_the_page_asked_for_but_never_elsewhere(
    dashboard: Dashboard,
) -> None:
    for wanted, landing in [
        ("/dashboard/audit?kind=webhook.", "/dashboard/audit?kind=webhook."),
        ("https://evil.example/dashboard/x", "/dashboard/webhooks"),
        ("//evil.example/dashboard/", "/dashboard/webhooks"),
        ("/v1/webhooks", "/dashboard/webhooks"),
    ]:
        dashboard.client.cookies.clear()
        page = await dashboard.page(f"/dashboard/sign-in?{httpx.QueryParams(next=wanted)}")
        form = page.form("/dashboard/sign-in")
        response = await dashboard.client.post(
            "/dashboard/sign-in", data={**form.fields, "api_key": dashboard.shop.api_key}
        )
        assert response.headers["location"] == landing, wanted


async def test_signing_out_ends_the_session(signed_in: Dashboard) -> None:
    response = await signed_in.submit("/dashboard/webhooks", "/dashboard/sign-out")

    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/sign-in?ended=signed-out"
    assert session_cookie(response)[SESSION_COOKIE]["max-age"] == "0"
    assert (await signed_in.client.get("/dashboard/webhooks")).status_code == 303
    assert "You are signed out" in (await signed_in.client.get(response.headers["location"])).text


async def test_a_revoked_key_ends_the_session(signed_in: Dashboard) -> None:
    assert (await signed_in.client.get("/dashboard/webhooks")).status_code == 200

    signed_in.services.webhooks.revoke_api_key(signed_in.shop.key_id, Actor.system())

    response = await signed_in.client.get("/dashboard/webhooks")
    assert response.status_code == 303
    assert "ended=revoked" in response.headers["location"]
    assert session_cookie(response)[SESSION_COOKIE]["max-age"] == "0"
    page = await signed_in.client.get(response.headers["location"])
    assert "revoked" in page.text


async def test_an_expired_or_forged_session_is_not_accepted(dashboard: Dashboard) -> None:
    keeper, webhooks = dashboard.services.keeper, dashboard.services.webhooks
    principal = webhooks.authenticate(dashboard.shop.api_key)
    later = time.time() + 3600
    session_id = webhooks.start_session(principal, datetime.fromtimestamp(later, UTC))
    expired, _ = new_session(keeper, dashboard.shop.api_key, session_id, time.time() - 1)
    fresh, _ = new_session(keeper, dashboard.shop.api_key, session_id, later)
    unknown, _ = new_session(keeper, dashboard.shop.api_key, uuid4(), later)  # never started
    forged = fresh[:-8] + ("A" * 8 if not fresh.endswith("A" * 8) else "B" * 8)

    sign_in_token, _ = new_sign_in_token(keeper, time.time())  # sealed for another purpose

    async def visit(value: str) -> httpx.Response:
        dashboard.client.cookies.clear()
        header = {"cookie": f"{SESSION_COOKIE}={value}"}
        return await dashboard.client.get("/dashboard/webhooks", headers=header)

    assert (await visit(fresh)).status_code == 200  # the control: a good session opens
    for value in (expired, forged, sign_in_token, unknown, "not-a-session", ""):
        response = await visit(value)
        assert response.status_code == 303, value
        assert response.headers["location"].startswith("/dashboard/sign-in")


async def test_a_post_without_the_csrf_token_is_refused_and_records_nothing(
    signed_in: Dashboard,
) -> None:
    services = signed_in.services
    webhook = signed_in.webhook(description="kept")
    services.read_models.catch_up_all()
    audit_before = services.read_models.query("SELECT COUNT(*) AS n FROM rm_audit", ())[0]["n"]
    page = await signed_in.page(f"/dashboard/webhooks/{webhook['id']}")
    disable = page.form(f"/dashboard/webhooks/{webhook['id']}/disable")
    create = (await signed_in.page("/dashboard/webhooks/new")).form("/dashboard/webhooks/new")
    new_fields = {"url": "https://93.184.215.14/new", "event_types": "*"}

    attempts = [
        (f"/dashboard/webhooks/{webhook['id']}/disable", {"once": disable.fields["once"]}),
        (
            f"/dashboard/webhooks/{webhook['id']}/disable",
            {**disable.fields, "csrf": "x" * 43},
        ),
        ("/dashboard/webhooks/new", {"once": create.fields["once"], **new_fields}),
        ("/dashboard/webhooks/new", {**create.fields, "csrf": "", **new_fields}),
        (f"/dashboard/webhooks/{webhook['id']}/rotate-secret", {}),
    ]
    for action, data in attempts:
        response = await signed_in.client.post(action, data=data)
        assert response.status_code == 403, (action, data)
        assert "security token" in response.text
        assert "whsec_" not in response.text

    # Nothing was recorded: the webhook is as it was, no other one exists, no audit entry
    assert services.webhooks.read_webhook(signed_in.shop.store_id, UUID(webhook["id"]))["enabled"]
    assert (
        services.webhooks.read_webhook(signed_in.shop.store_id, UUID(webhook["id"]))["version"]
        == (webhook["version"])
    )
    items, _ = services.webhooks.list_webhooks(signed_in.shop.store_id)
    assert [w["id"] for w in items] == [webhook["id"]]
    services.read_models.catch_up_all()
    audit_after = services.read_models.query("SELECT COUNT(*) AS n FROM rm_audit", ())[0]["n"]
    assert audit_after == audit_before


async def test_a_post_from_another_origin_is_refused(signed_in: Dashboard) -> None:
    webhook = signed_in.webhook()
    action = f"/dashboard/webhooks/{webhook['id']}/disable"
    form = (await signed_in.page(f"/dashboard/webhooks/{webhook['id']}")).form(action)

    for origin in ("https://evil.example", "null"):
        response = await signed_in.client.post(action, data=form.fields, headers={"origin": origin})
        assert response.status_code == 403
    assert signed_in.services.webhooks.read_webhook(signed_in.shop.store_id, UUID(webhook["id"]))[
        "enabled"
    ]
    # The same form from this origin is done
    response = await signed_in.client.post(
        action, data=form.fields, headers={"origin": "https://testserver"}
    )
    assert response.status_code == 303


async def test_pages_are_never_cached_framed_or_scripted_from_elsewhere(
    signed_in: Dashboard,
) -> None:
    for path in ("/dashboard/webhooks", "/dashboard/events", "/dashboard/audit"):
        response = await signed_in.client.get(path)
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-frame-options"] == "DENY"
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy
        assert "script-src 'nonce-" in policy
        assert "unsafe-inline" not in policy


async def test_sign_in_warns_when_a_forced_secure_cookie_could_not_be_kept(
    always_secure: Dashboard,
) -> None:
    # With WEBROUND_COOKIE_SECURE=always, plain http to another machine: the browser
    # would drop the Secure session cookie
    plain = await always_secure.client.get("http://shop.example/dashboard/sign-in")
    assert "served over plain http" in plain.text
    # Over https, or on this machine, all is well
    for url in ("https://shop.example/dashboard/sign-in", "http://127.0.0.1/dashboard/sign-in"):
        assert "served over plain http" not in (await always_secure.client.get(url)).text


# Sessions end when they are ended (issue #12, item 8) --------------------------------------


async def test_a_saved_cookie_opens_nothing_after_signing_out(signed_in: Dashboard) -> None:
    # Given a signed-in session, its cookie saved (a copied cookie, a shared machine),
    # and a form with its CSRF token
    saved = signed_in.client.cookies[SESSION_COOKIE]
    webhook = signed_in.webhook()
    action = f"/dashboard/webhooks/{webhook['id']}/disable"
    form = (await signed_in.page(f"/dashboard/webhooks/{webhook['id']}")).form(action)

    # When its person signs out
    await signed_in.submit("/dashboard/webhooks", "/dashboard/sign-out")

    # Then the saved cookie opens no page, and its CSRF-valid form does nothing
    header = {"cookie": f"{SESSION_COOKIE}={saved}"}
    signed_in.client.cookies.clear()
    page = await signed_in.client.get("/dashboard/webhooks", headers=header)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/dashboard/sign-in")
    posted = await signed_in.client.post(action, data=form.fields, headers=header)
    assert posted.status_code == 303
    assert posted.headers["location"].startswith("/dashboard/sign-in")
    enabled = signed_in.services.webhooks.read_webhook(
        signed_in.shop.store_id, UUID(webhook["id"])
    )["enabled"]
    assert enabled


@pytest.mark.parametrize("ended", ["x", "signed-out", "expired", "revoked"])
async def test_a_link_from_another_site_never_ends_a_session(
    signed_in: Dashboard, ended: str
) -> None:
    # When a signed-in person follows a link to the sign-in page saying the session ended
    response = await signed_in.client.get(f"/dashboard/sign-in?ended={ended}")

    # Then they are taken into the dashboard, their cookie untouched, still signed in
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/webhooks"
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert (await signed_in.client.get("/dashboard/webhooks")).status_code == 200


async def test_a_dashboard_on_plain_http_keeps_its_session(dashboard: Dashboard) -> None:
    # Given the dashboard reached over plain http on a LAN name
    base = "http://shop.lan"
    page = await dashboard.page(f"{base}/dashboard/sign-in")

    # When someone signs in
    response = await dashboard.client.post(
        f"{base}/dashboard/sign-in",
        data={**page.form("/dashboard/sign-in").fields, "api_key": dashboard.shop.api_key},
    )

    # Then the cookie follows the scheme (not Secure, which browsers would drop on http)
    header = next(
        h for h in response.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE)
    )
    assert "secure" not in header.lower()
    assert "httponly" in header.lower()
    # And the session holds: the next page opens
    assert (await dashboard.client.get(f"{base}/dashboard/webhooks")).status_code == 200


async def test_cookies_can_be_made_secure_always(always_secure: Dashboard) -> None:
    # Given WEBROUND_COOKIE_SECURE=always (a TLS proxy that does not forward the scheme)
    # When the sign-in page is asked for over what the app sees as http
    response = await always_secure.client.get("http://shop.lan/dashboard/sign-in")

    # Then its cookie is Secure all the same (the browser, on https, sends it back)
    [header] = response.headers.get_list("set-cookie")
    assert "; secure" in header.lower()


@pytest.fixture
async def always_secure(settings: Settings) -> AsyncIterator[Dashboard]:
    async for dashboard in dashboard_with(dataclasses.replace(settings, cookie_secure="always")):
        yield dashboard
