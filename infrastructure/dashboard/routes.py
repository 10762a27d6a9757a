"""The dashboard's pages and forms, all under ``/dashboard`` (SPEC §9).

Every page but sign-in needs a session (`session.py`); its API key is authenticated on
every request, so a revoked key ends the session at once. Every POST must come with the
session's CSRF token and, where the browser says where it comes from, from this origin;
otherwise it is refused with a 403 page and nothing is done.

Each state-changing form also carries a one-time token, recorded as an `Idempotency-Key`
is (with the command's events): a form sent twice — a double click, or a reload of the
page its post answered, which browsers send again — is done once, and the second post is
sent to the page the form belongs to (for a secret's page, the webhook's page saying the
secret is not shown again). That is what keeps a reload of the one-time secret page from
creating a second webhook, or rotating again, to show a new secret.

Pages call the applications and queries the JSON API calls (Recover and Replay: the
same `application.resend`) and never another store's data: anything of another store is
a 404 page. Page groups added since live in modules of their own that build on this
one's frame (`Visit`, `signed_in`): `webhook_actions.py` (test event, recover, replay),
`deliveries.py` (the deliveries list).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit
from uuid import UUID

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from application.errors import Conflict, InvalidRequest, NotFound, Unauthenticated
from application.idempotency import AlreadyAnswered, Answer, KeyedCommand, KeyRecord, keyed
from application.webhooks import Principal
from domain.errors import DomainError, InvalidValue, RuleViolation
from domain.event_types import EVENT_CLASSES
from domain.webhook import matches
from infrastructure.api import webhooks as webhooks_api
from infrastructure.bootstrap import Services
from infrastructure.dashboard import chart, render, sending
from infrastructure.dashboard.forms import EMPTY, Form, FormError, read_form
from infrastructure.dashboard.session import (
    PATH,
    SESSION_COOKIE,
    SESSION_SECONDS,
    SIGN_IN_COOKIE,
    SIGN_IN_SECONDS,
    Session,
    clear_cookie,
    new_session,
    new_sign_in_token,
    open_session,
    open_sign_in_token,
    same_token,
    set_cookie,
)
from infrastructure.idempotency import fingerprint, sealing_context
from infrastructure.queries import Queries

log = logging.getLogger("webround.dashboard")

JSON = dict[str, Any]
SIGN_IN = f"{PATH}/sign-in"
HOME = f"{PATH}/webhooks"
PAGE_SIZE = 50
ONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?$")
MAX_REASON = 500

EVENT_TYPES = list(EVENT_CLASSES)
ENTITIES = list(dict.fromkeys(name.split(".", 1)[0] for name in EVENT_TYPES))
AUDIT_KINDS = [
    "webhook.",
    "webhook.created",
    "webhook.updated",
    "webhook.enabled",
    "webhook.disabled",
    "webhook.secret_rotated",
    "webhook.secret_shown_again",
    "webhook.recovered",
    "webhook.replayed",
    "webhook.deleted",
    "delivery.",
    "delivery.created",
    "delivery.sent_again",
    "delivery.test",
    "delivery.succeeded",
    "delivery.attempt_failed",
    "delivery.failed",
    "api_key.",
    "store.created",
]

TITLES = {
    400: "This form is out of date",
    401: "Sign in again",
    403: "Request refused",
    404: "Not found",
    405: "Not allowed",
    409: "Not possible right now",
    413: "Too large",
    415: "Not a form of this dashboard",
    422: "Please check what you entered",
    500: "Something went wrong",
}

NOTICES = {
    "created": "Webhook created.",
    "saved": "Changes saved.",
    "enabled": "Webhook enabled: deliveries resume with the next matching event.",
    "disabled": "Webhook disabled: no deliveries are made to it until you enable it again.",
    "test-sent": (
        "A test event was sent: its delivery appears under Recent deliveries within seconds "
        "(reload the page); open it to see the endpoint's answer."
    ),
    "secret-once": (
        "This form was already sent: the signing secret was shown once and is never shown "
        "again. If you did not keep it, rotate the secret."
    ),
}
COUNTED = {
    "recovered": (
        "There were no failed deliveries in that range: nothing was sent again.",
        "1 failed delivery is being sent again.",
        "{count} failed deliveries are being sent again.",
    ),
    "replayed": (
        "No event of that range is one this webhook listens to: nothing was sent.",
        "1 event of that range is being sent again.",
        "{count} events of that range are being sent again.",
    ),
    "sent-again": (
        "No enabled webhook listens to this event: nothing was sent.",
        "1 new delivery of this event was created; it appears below within seconds "
        "(reload the page).",
        "{count} new deliveries of this event were created; they appear below within "
        "seconds (reload the page).",
    ),
}
ENDED = {
    "expired": "Your session ended. Sign in again to continue.",
    "revoked": "The API key of your session is no longer valid (it was revoked). "
    "Sign in with a valid key.",
    "signed-out": "You are signed out.",
}

Handler = Callable[["Visit"], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


# The frame of every signed-in page --------------------------------------------------------


@dataclass
class Visit:
    """One signed-in request: who, with which session, and what the form held."""

    request: Request
    services: Services
    principal: Principal
    session: Session
    form: Form = field(default_factory=lambda: EMPTY)

    @property
    def store_id(self) -> UUID:
        return self.principal.store_id

    @property
    def queries(self) -> Queries:
        return Queries(self.services.read_models)

    def page(self, template: str, status: int = 200, **context: Any) -> Response:
        return render.page(
            template,
            status,
            principal=self.principal,
            csrf=self.session.csrf,
            section=_section(self.request.url.path),
            **context,
        )

    def error(self, status: int, message: str, back: str | None = None) -> Response:
        return self.page("error.html", status, title=TITLES[status], message=message, back=back)


def signed_in(handler: Handler, *, post: bool = False, once: bool = False) -> Endpoint:
    """The endpoint of a signed-in page (``post``: a form post, CSRF-checked; ``once``:
    one that changes something, done at most once per form)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await _visit(request, handler, post=post, once=once)
        except Exception:
            log.exception("dashboard: unexpected error on %s", request.url.path)
            return _error(500, "Something went wrong on our side. Reload the page to try again.")

    return endpoint


async def _visit(request: Request, handler: Handler, *, post: bool, once: bool) -> Response:
    services = _services(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    session = open_session(services.keeper, cookie, time.time())
    if session is None:
        return _to_sign_in(request, "expired" if cookie else None)
    principal = await run_in_threadpool(_principal, services, session)
    if not isinstance(principal, Principal):
        return _to_sign_in(request, principal)
    visit = Visit(request, services, principal, session)
    if post:
        form = await _posted_form(request, session.csrf)
        if isinstance(form, Response):
            return form
        visit.form = form
    if once:
        return await run_in_threadpool(_run_once, visit, handler)
    return await run_in_threadpool(_run, visit, handler)


async def _posted_form(request: Request, csrf: str) -> Form | Response:
    """The form of a post that passes the origin and CSRF checks, or the 403 page."""
    if not _same_origin(request):
        return _error(403, "This form was sent from another site, so it was refused.")
    try:
        form = await read_form(request)
    except FormError as error:
        return _error(error.status, error.message)
    if not same_token(csrf, form.get("csrf")):
        return _error(
            403,
            "This form did not carry this session's security token (CSRF), so it was "
            "refused and nothing was changed. Reload the page and try again.",
        )
    return form


def _run(visit: Visit, handler: Handler) -> Response:
    try:
        return handler(visit)
    except NotFound:
        return visit.error(404, "There is nothing here, or it belongs to another store.")
    except (Conflict, RuleViolation) as error:
        return visit.error(409, str(error), back=_page_of(visit.request.url.path))
    except (InvalidRequest, DomainError) as error:
        return visit.error(422, str(error), back=_page_of(visit.request.url.path))


def _run_once(visit: Visit, handler: Handler) -> Response:
    """Do a form at most once, its token recorded like an Idempotency-Key (ADR 0023):
    with the command's events where the command records it, else after it."""
    token = visit.form.get("once", "")
    if not ONCE.match(token):
        return visit.error(400, "This form is out of date. Reload the page and try again.")
    key = f"dashboard:{token}"
    sent = urlencode([(k, v) for k, v in visit.form.multi_items() if k != "csrf"]).encode()
    print_ = fingerprint("POST", visit.request.url.path, sent)
    ledger = visit.services.idempotency
    now = datetime.now(UTC)
    found = ledger.find(visit.store_id, key, now)
    if found is not None:
        return _sent_before(visit, key, print_, found)
    command = KeyedCommand(
        visit.store_id,
        key,
        print_,
        visit.principal.key_id,
        now,
        lambda result: _landing(visit, key, _after(visit, result)),
    )
    try:
        with keyed(command):
            response = _run(visit, handler)
    except AlreadyAnswered:
        found = ledger.find(visit.store_id, key, now)
        if found is None:
            raise
        return _sent_before(visit, key, print_, found)
    location = response.headers.get("location")
    if command.recorded is None and response.status_code < 400 and location:
        # Done without a keyed save (a command of the dispatch store): recorded after.
        # (AlreadyAnswered: the same form, sent twice at once, recorded by the other post.)
        with contextlib.suppress(AlreadyAnswered):
            ledger.remember(command.record_with(_landing(visit, key, location)))
    return response


def _sent_before(visit: Visit, key: str, print_: str, found: KeyRecord) -> Response:
    if found.fingerprint != print_ or found.key_id != visit.principal.key_id:
        return visit.error(409, "This form was already sent. Reload the page and try again.")
    context = sealing_context(visit.store_id, key)
    location = visit.services.keeper.open_bytes(found.answer.body.decode(), context)
    return render.redirect(location.decode())


def _after(visit: Visit, result: Any) -> str:
    """Where a second post of a form leads: the page the form belongs to — for the forms
    that show a signing secret, the webhook's page saying it is not shown again."""
    if isinstance(result, dict) and "secret" in result:
        return f"{PATH}/webhooks/{result['id']}?notice=secret-once"
    return _page_of(visit.request.url.path)


def _landing(visit: Visit, key: str, location: str) -> Answer:
    # Sealed like the API's stored answers, under the same context: one store, one format.
    context = sealing_context(visit.store_id, key)
    sealed = visit.services.keeper.seal_bytes(location.encode(), context)
    return Answer(303, sealed.encode(), "text/uri-list")


ACTIONS = ("disable", "enable", "rotate-secret", "recover", "replay", "test", "send-again")


def _page_of(path: str) -> str:
    """The page a form's action belongs to (what "Go back" opens with GET)."""
    page, _, last = path.rpartition("/")
    return page if last in ACTIONS else path


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _section(path: str) -> str:
    parts = path.split("/")
    return parts[2] if len(parts) > 2 else ""


def _error(status: int, message: str) -> Response:
    """An error page outside a session (no navigation)."""
    return render.page(
        "error.html",
        status,
        principal=None,
        csrf="",
        section="",
        title=TITLES[status],
        message=message,
        back=None,
    )


def _same_origin(request: Request) -> bool:
    """False when the browser says the post comes from another origin (or hides it)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not sent by every client; the CSRF token still decides
    host = request.headers.get("host", "").lower()
    return origin != "null" and urlsplit(origin).netloc.lower() == host


def _principal(services: Services, session: Session) -> Principal | str:
    """Who the session acts for; or why it ended: "revoked" (its key) or "expired"
    (signed out, or past its time)."""
    try:
        principal = services.webhooks.authenticate(session.api_key)
    except Unauthenticated:
        return "revoked"
    if not services.webhooks.session_is_open(session.session_id, principal):
        return "expired"
    return principal


def _secure(request: Request) -> bool:
    """Whether cookies are `Secure`: when the request came over https, or always with
    WEBROUND_COOKIE_SECURE=always (behind a proxy that does not say it was https)."""
    return request.url.scheme == "https" or _services(request).settings.cookie_secure == "always"


def _to_sign_in(request: Request, ended: str | None) -> Response:
    query: dict[str, str] = {}
    if request.method == "GET":
        query["next"] = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if ended:
        query["ended"] = ended
    response = render.redirect(SIGN_IN + (f"?{urlencode(query)}" if query else ""))
    if ended:
        clear_cookie(response, SESSION_COOKIE, PATH, secure=_secure(request))
    return response


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a dashboard path of ours, never another site."""
    if not value or "\\" in value or value.startswith("//"):
        return HOME
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith(PATH + "/"):
        return HOME
    return value


# Signing in and out -----------------------------------------------------------------------


async def sign_in_form(request: Request) -> Response:
    services = _services(request)
    ended = request.query_params.get("ended")
    session = open_session(services.keeper, request.cookies.get(SESSION_COOKIE), time.time())
    if session is not None:
        principal = await run_in_threadpool(_principal, services, session)
        if isinstance(principal, Principal):
            # Signed in: on to the page, whatever `ended` says. Only signing out (a post
            # with the session's CSRF token) ends a session, never a link from elsewhere.
            return render.redirect(_safe_next(request.query_params.get("next")))
    return _sign_in_page(
        request,
        notice=ENDED.get(ended or ""),
        next_path=_safe_next(request.query_params.get("next")),
        end_session=SESSION_COOKIE in request.cookies,  # a session that is over
    )


def _cookie_would_be_dropped(request: Request) -> bool:
    """Secure cookies forced (WEBROUND_COOKIE_SECURE=always) on plain http to a host that
    is not this machine: browsers drop them there, so signing in would lead back to this
    page. Say so rather than loop silently."""
    host = (request.url.hostname or "").lower()
    local = host in ("localhost", "127.0.0.1", "::1") or host.endswith(".localhost")
    return _secure(request) and request.url.scheme == "http" and not local


async def sign_in(request: Request) -> Response:
    services = _services(request)
    now = time.time()
    expected = open_sign_in_token(services.keeper, request.cookies.get(SIGN_IN_COOKIE), now)
    if not _same_origin(request):
        return _error(403, "This form was sent from another site, so it was refused.")
    try:
        form = await read_form(request)
    except FormError as error:
        return _error(error.status, error.message)
    if expected is None or not same_token(expected, form.get("csrf")):
        return _error(
            403,
            "This sign-in form expired or did not come from this dashboard. "
            "Open the sign-in page again.",
        )
    next_path = _safe_next(form.get("next"))
    api_key = form.get("api_key", "").strip()
    if not api_key:
        return _sign_in_page(request, error="Enter your API key.", next_path=next_path, status=422)
    try:
        principal = await run_in_threadpool(services.webhooks.authenticate, api_key)
    except Unauthenticated:
        return _sign_in_page(
            request,
            error="This API key is not valid, or it was revoked.",
            next_path=next_path,
            status=401,
        )
    expires_at = now + SESSION_SECONDS
    session_id = await run_in_threadpool(
        services.webhooks.start_session, principal, datetime.fromtimestamp(expires_at, UTC)
    )
    cookie, _ = new_session(services.keeper, api_key, session_id, expires_at)
    response = render.redirect(next_path)
    secure = _secure(request)
    set_cookie(response, SESSION_COOKIE, cookie, SESSION_SECONDS, PATH, secure=secure)
    clear_cookie(response, SIGN_IN_COOKIE, SIGN_IN, secure=secure)
    return response


def _sign_in_page(
    request: Request,
    *,
    notice: str | None = None,
    error: str | None = None,
    next_path: str = HOME,
    status: int = 200,
    end_session: bool = False,
) -> Response:
    services = _services(request)
    insecure = _cookie_would_be_dropped(request)
    cookie, token = new_sign_in_token(services.keeper, time.time())
    response = render.page(
        "sign_in.html",
        status,
        principal=None,
        csrf=token,
        section="",
        notice=notice,
        error=error,
        next_path=next_path,
        insecure=insecure,
    )
    secure = _secure(request)
    set_cookie(response, SIGN_IN_COOKIE, cookie, SIGN_IN_SECONDS, SIGN_IN, secure=secure)
    if end_session:
        clear_cookie(response, SESSION_COOKIE, PATH, secure=secure)
    return response


def _sign_out(visit: Visit) -> Response:
    # Ended where it is recorded: a saved copy of the cookie opens nothing from now on.
    visit.services.webhooks.end_session(visit.session.session_id, visit.principal.actor)
    response = render.redirect(f"{SIGN_IN}?ended=signed-out")
    clear_cookie(response, SESSION_COOKIE, PATH, secure=_secure(visit.request))
    return response


async def home(request: Request) -> Response:
    return render.redirect(HOME)


# Webhooks ---------------------------------------------------------------------------------


def _webhooks(visit: Visit) -> Response:
    try:
        start = webhooks_api.decode_cursor(visit.request.query_params.get("cursor"))
        items, next_start = visit.services.webhooks.list_webhooks(visit.store_id, 100, start)
    except InvalidRequest:
        return render.redirect(HOME)
    rows = _with_health(visit, items)
    more = (
        f"{HOME}?cursor={webhooks_api.encode_cursor(next_start)}"
        if next_start is not None
        else None
    )
    return visit.page("webhooks.html", webhooks=rows, more=more)


def _with_health(visit: Visit, items: list[JSON]) -> list[JSON]:
    ids = [w["id"] for w in items]
    health = visit.queries.webhook_health(visit.store_id, ids)
    circuits = _circuits(visit, ids)
    since = _iso(datetime.now(UTC) - timedelta(hours=24))
    rows = []
    for webhook in items:
        stats = health[webhook["id"]]
        hourly = visit.queries.webhook_hourly(visit.store_id, webhook["id"], since)
        ok = sum(int(r["succeeded"]) for r in hourly)
        bad = sum(int(r["failed"]) for r in hourly)
        seen = [t for t in (stats["lastSuccessAt"], stats["lastFailureAt"]) if t]
        rows.append(
            {
                **webhook,
                "health": stats,
                "recent": {
                    "succeeded": ok,
                    "failed": bad,
                    "rate": ok / (ok + bad) if ok + bad else None,
                },
                "last": max(seen) if seen else None,
                "circuit": circuits.get(webhook["id"]),
            }
        )
    return rows


def _circuits(visit: Visit, ids: Iterable[str]) -> dict[str, JSON]:
    """Each webhook's circuit breaker (closed, open, half-open), or nothing if unreadable."""
    try:
        schedule = visit.services.schedule()
        now = datetime.now(UTC)
        return {i: schedule.health(UUID(i)).to_json(now) for i in ids}
    except Exception:
        log.warning("dashboard: cannot read the circuit breakers", exc_info=True)
        return {}


def _new_webhook(visit: Visit) -> Response:
    values = {"url": "", "description": "", "event_types": [], **sending.blank()}
    return _new_webhook_page(visit, values, {})


def _new_webhook_page(visit: Visit, values: JSON, errors: dict[str, str]) -> Response:
    return visit.page(
        "webhook_new.html",
        422 if errors else 200,
        values=values,
        errors=errors,
        groups=_type_groups(),
    )


def _create(visit: Visit) -> Response:
    values = _webhook_fields(visit.form)
    errors = _check_webhook_fields(values)
    how, sending_errors = sending.check(values, creating=True)
    errors = sending_errors | errors
    if errors:
        return _new_webhook_page(visit, values, errors)
    try:
        created = visit.services.webhooks.create_webhook(
            visit.store_id,
            visit.principal.actor,
            url=values["url"],
            event_types=values["event_types"],
            description=values["description"],
            **how,
        )
    except (InvalidRequest, InvalidValue) as error:
        return _new_webhook_page(visit, values, _field_error(error))
    secret = created.pop("secret")
    return _secret_page(visit, created, secret, rotated=False)


def _secret_page(visit: Visit, webhook: JSON, secret: str, *, rotated: bool) -> Response:
    """The one page that ever shows a secret: the answer to the post, never cached."""
    return visit.page("secret.html", webhook=webhook, secret=secret, rotated=rotated)


def _webhook(visit: Visit) -> Response:
    notice = _notice(visit)
    return webhook_page(visit, webhook_id_of(visit), notice=notice)


def _notice(visit: Visit) -> str | None:
    """The message of a ``?notice=`` after a form: from our table only, never the URL's text."""
    name = visit.request.query_params.get("notice", "")
    if name not in COUNTED:
        return NOTICES.get(name)
    count = visit.request.query_params.get("count", "")
    # At most 9 digits: a count is what one form did, and int() of thousands raises.
    if not (count.isascii() and count.isdigit() and len(count) <= 9):
        return None
    none, one, many = COUNTED[name]
    return none if int(count) == 0 else one if int(count) == 1 else many.format(count=int(count))


def webhook_page(
    visit: Visit,
    webhook_id: UUID,
    *,
    notice: str | None = None,
    values: JSON | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    webhook = visit.services.webhooks.read_webhook(visit.store_id, webhook_id)
    [row] = _with_health(visit, [webhook])
    now = datetime.now(UTC)
    rows = visit.queries.webhook_hourly(visit.store_id, webhook_id, _iso(now - timedelta(hours=48)))
    series = chart.hours(rows, now, 48)
    deliveries = visit.queries.list_deliveries(visit.store_id, webhook_id=webhook_id, limit=20)
    day_ago = _local(now - timedelta(hours=24))
    form_values = {
        "url": webhook["url"],
        "description": webhook["description"],
        "event_types": webhook["eventTypes"],
        **sending.values_of(webhook),
        "reason": "",
        "since": day_ago,
        "until": "",
        "replay_since": day_ago,
        "replay_until": "",
    } | (values or {})
    return visit.page(
        "webhook.html",
        422 if errors else 200,
        webhook=row,
        notice=notice,
        values=form_values,
        errors=errors or {},
        groups=_type_groups(),
        chart=chart.svg(series, "Delivery attempts per hour, last 48 hours (UTC)"),
        series=[h for h in series if h.succeeded or h.failed],
        totals={
            "succeeded": sum(h.succeeded for h in series),
            "failed": sum(h.failed for h in series),
        },
        deliveries=deliveries["data"],
        test_types=[t for t in EVENT_TYPES if matches(webhook["eventTypes"], t)],
        current_headers=list(webhook["headers"]),
    )


def _update(visit: Visit) -> Response:
    webhook_id = webhook_id_of(visit)
    values = _webhook_fields(visit.form)
    errors = _check_webhook_fields(values)
    how, sending_errors = sending.check(values, creating=False)
    errors = sending_errors | errors
    if not errors:
        try:
            visit.services.webhooks.update_webhook(
                visit.store_id,
                webhook_id,
                visit.principal.actor,
                url=values["url"],
                event_types=values["event_types"],
                description=values["description"],
                **how,
            )
        except (InvalidRequest, InvalidValue) as error:
            errors = _field_error(error)
    if errors:
        return webhook_page(visit, webhook_id, values=values, errors=errors)
    return render.redirect(f"{PATH}/webhooks/{webhook_id}?notice=saved")


def _disable(visit: Visit) -> Response:
    webhook_id = webhook_id_of(visit)
    reason = visit.form.get("reason", "").strip()
    if len(reason) > MAX_REASON:
        errors = {"reason": f"Keep the reason under {MAX_REASON} characters."}
        return webhook_page(visit, webhook_id, values={"reason": reason}, errors=errors)
    visit.services.webhooks.update_webhook(
        visit.store_id,
        webhook_id,
        visit.principal.actor,
        enabled=False,
        disabled_reason=reason or None,
    )
    return render.redirect(f"{PATH}/webhooks/{webhook_id}?notice=disabled")


def _enable(visit: Visit) -> Response:
    webhook_id = webhook_id_of(visit)
    visit.services.webhooks.update_webhook(
        visit.store_id, webhook_id, visit.principal.actor, enabled=True
    )
    return render.redirect(f"{PATH}/webhooks/{webhook_id}?notice=enabled")


def _rotate(visit: Visit) -> Response:
    webhook_id = webhook_id_of(visit)
    rotated = visit.services.webhooks.rotate_secret(
        visit.store_id, webhook_id, visit.principal.actor
    )
    secret = rotated.pop("secret")
    return _secret_page(visit, rotated, secret, rotated=True)


def _webhook_fields(form: Form) -> JSON:
    return {
        "url": form.get("url", "").strip(),
        "description": form.get("description", "").strip(),
        "event_types": [t for t in form.getlist("event_types") if t],
        **sending.read(form),
    }


def _check_webhook_fields(values: JSON) -> dict[str, str]:
    errors = {}
    if not values["url"]:
        errors["url"] = "Enter the URL to send events to."
    if not values["event_types"]:
        errors["event_types"] = "Choose at least one event type."
    return errors


def _field_error(error: InvalidRequest | InvalidValue) -> dict[str, str]:
    fields = {"eventTypes": "event_types", "url": "url", "description": "description"}
    field = (fields | sending.FORM_FIELD).get(error.field or "", "url")
    message = error.message if isinstance(error, InvalidValue) else str(error)
    return {field: message[:1].upper() + message[1:]}


def _type_groups() -> list[JSON]:
    return [
        {"entity": entity, "types": [t for t in EVENT_TYPES if t.split(".", 1)[0] == entity]}
        for entity in ENTITIES
    ]


def webhook_id_of(visit: Visit) -> UUID:
    raw = str(visit.request.path_params["webhook_id"])
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound("webhook", raw) from None


def webhook_names(visit: Visit) -> dict[str, JSON]:
    """The store's webhooks by id (for labels and filters), up to a thousand."""
    found: dict[str, JSON] = {}
    start: int | None = 0
    for _ in range(10):
        if start is None:
            break
        items, start = visit.services.webhooks.list_webhooks(visit.store_id, 100, start)
        found.update({w["id"]: w for w in items})
    return found


# Events -----------------------------------------------------------------------------------


def _events(visit: Visit) -> Response:
    query = visit.request.query_params
    filters = {name: query.get(name, "").strip() for name in ("type", "entity", "show")}
    type_options = ["", *(f"{e}.*" for e in ENTITIES), *EVENT_TYPES]
    if filters["type"] not in type_options:
        type_options.append(filters["type"])
    return list_page(
        visit,
        "events",
        filters,
        lambda cursor: visit.queries.list_events(
            visit.store_id,
            event_type=filters["type"] or None,
            entity_id=filters["entity"] or None,
            test=filters["show"] == "test",
            limit=PAGE_SIZE,
            cursor=cursor,
        ),
        lambda field: {"eventType": "type", "entityId": "entity"}.get(field or "", "cursor"),
        type_options=type_options,
    )


def _event(visit: Visit) -> Response:
    event_id = str(visit.request.path_params["event_id"])
    detail = visit.queries.get_event(visit.store_id, event_id)
    names = webhook_names(visit)
    groups = [
        {
            "webhookId": group["webhookId"],
            "webhook": names.get(group["webhookId"]),
            "deliveries": list(reversed(group["deliveries"])),  # newest first
        }
        for group in detail["deliveriesByWebhook"]
    ]
    notice = _notice(visit)
    return visit.page(
        "event.html",
        event=detail,
        envelope=json.dumps(detail["envelope"], indent=2, ensure_ascii=False),
        groups=groups,
        notice=notice,
    )


def _send_again(visit: Visit) -> Response:
    event_id = str(visit.request.path_params["event_id"])
    raw = visit.form.get("webhook_id", "").strip()
    try:
        webhook_id = UUID(raw) if raw else None
    except ValueError:
        raise NotFound("webhook", raw) from None
    created = visit.services.dispatch.send_again(
        visit.store_id, event_id, visit.principal.actor, webhook_id
    )
    query = urlencode({"notice": "sent-again", "count": len(created)})
    return render.redirect(f"{PATH}/events/{event_id}?{query}")


# Audit log --------------------------------------------------------------------------------


def _audit(visit: Visit) -> Response:
    query = visit.request.query_params
    names = ("kind", "webhook", "event", "actor", "since", "until")
    filters = {name: query.get(name, "").strip() for name in names}
    kinds = list(AUDIT_KINDS)
    if filters["kind"] and filters["kind"] not in kinds:
        kinds.append(filters["kind"])

    def field_of(field: str | None) -> str:
        named = {"webhookId": "webhook", "eventId": "event"}.get(field or "", field or "")
        return named if named in names else "kind"

    return list_page(
        visit,
        "audit",
        filters,
        lambda cursor: visit.queries.list_audit(
            visit.store_id,
            kind=filters["kind"] or None,
            webhook_id=filters["webhook"] or None,
            event_id=filters["event"] or None,
            actor=filters["actor"] or None,
            since=moment_input(filters["since"]),
            until=moment_input(filters["until"]),
            limit=PAGE_SIZE,
            cursor=cursor,
        ),
        field_of,
        kinds=kinds,
        webhooks=webhook_names(visit),
    )


def list_page(
    visit: Visit,
    section: str,
    filters: dict[str, str],
    fetch: Callable[[str | None], JSON],
    field_of: Callable[[str | None], str],
    **context: Any,
) -> Response:
    """A filtered list a page at a time (template ``{section}.html``, its rows as
    ``items``): ``fetch(cursor)`` asks the query, and a filter it refuses is shown next to
    the form field ``field_of`` names."""
    cursor = visit.request.query_params.get("cursor") or None
    errors: dict[str, str] = {}
    found: JSON = {"data": [], "nextCursor": None}
    try:
        found = fetch(cursor)
    except InvalidRequest as error:
        errors[field_of(error.field)] = str(error)
    more = None
    if found["nextCursor"]:
        more = list_url(section, {**filters, "cursor": found["nextCursor"]})
    return visit.page(
        f"{section}.html",
        422 if errors else 200,
        items=found["data"],
        filters=filters,
        errors=errors,
        more=more,
        first=list_url(section, filters) if cursor else None,
        **context,
    )


# Helpers ----------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _local(moment: datetime) -> str:
    """A UTC time as a ``datetime-local`` input shows it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def moment_input(value: str) -> str | None:
    """A time typed in a form: ``datetime-local`` inputs are read as UTC; anything else goes
    to the query as written, which says what is wrong with it."""
    value = value.strip()
    if not value:
        return None
    local = LOCAL_TIME.match(value)
    if local is None:
        return value
    # Browsers leave the seconds out of a datetime-local value; RFC 3339 needs them.
    return value + ("Z" if local.group(1) else ":00Z")


def list_url(section: str, params: dict[str, str]) -> str:
    kept = {k: v for k, v in params.items() if v}
    return f"{PATH}/{section}" + (f"?{urlencode(kept)}" if kept else "")


async def _not_found(request: Request) -> Response:
    return _error(404, "There is no such page in the dashboard.")


async def _stylesheet(request: Request) -> Response:
    return render.stylesheet()


def routes() -> Mount:
    """The dashboard, mounted at ``/dashboard`` (a mount, not routes of the JSON API: the
    OpenAPI document describes the API's routes only)."""
    # Page groups of their own modules, which build on this one's frame (`Visit`).
    from infrastructure.dashboard import deliveries, webhook_actions

    webhook = "/webhooks/{webhook_id}"
    return Mount(
        PATH,
        routes=[
            Route("/", home, methods=["GET"]),
            Route("/static/dashboard.css", _stylesheet, methods=["GET"]),
            Route("/sign-in", sign_in_form, methods=["GET"]),
            Route("/sign-in", sign_in, methods=["POST"]),
            Route("/sign-out", signed_in(_sign_out, post=True), methods=["POST"]),
            Route("/webhooks", signed_in(_webhooks), methods=["GET"]),
            Route("/webhooks/new", signed_in(_new_webhook), methods=["GET"]),
            Route("/webhooks/new", signed_in(_create, post=True, once=True), methods=["POST"]),
            Route(webhook, signed_in(_webhook), methods=["GET"]),
            Route(webhook, signed_in(_update, post=True, once=True), methods=["POST"]),
            Route(
                f"{webhook}/disable", signed_in(_disable, post=True, once=True), methods=["POST"]
            ),
            Route(f"{webhook}/enable", signed_in(_enable, post=True, once=True), methods=["POST"]),
            Route(
                f"{webhook}/rotate-secret",
                signed_in(_rotate, post=True, once=True),
                methods=["POST"],
            ),
            *webhook_actions.routes(webhook),
            *deliveries.routes(),
            Route("/events", signed_in(_events), methods=["GET"]),
            Route("/events/{event_id}", signed_in(_event), methods=["GET"]),
            Route(
                "/events/{event_id}/send-again",
                signed_in(_send_again, post=True, once=True),
                methods=["POST"],
            ),
            Route("/audit", signed_in(_audit), methods=["GET"]),
            Route("/{rest:path}", _not_found, methods=["GET", "POST"]),
        ],
    )
