"""A webhook page's actions that send something (§6, ADR 0027): a test event, Recover
(failed deliveries of a time range, again) and Replay (every event of a time range).

Recover and Replay are the application's use cases (`application.resend`), as in the
JSON API; each answers with how many deliveries it created. The forms' times are
``datetime-local`` inputs, read as UTC.
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.responses import Response
from starlette.routing import Route

from application.errors import Conflict, InvalidRequest
from application.resend import Resend
from infrastructure.dashboard import render
from infrastructure.dashboard.routes import (
    EVENT_TYPES,
    Visit,
    moment_input,
    signed_in,
    webhook_id_of,
    webhook_page,
)
from infrastructure.dashboard.session import PATH
from infrastructure.queries import Queries, parse_moment


def _test(visit: Visit) -> Response:
    webhook_id = webhook_id_of(visit)
    event_type = visit.form.get("event_type", "").strip()
    if event_type not in EVENT_TYPES:
        errors = {"event_type": "Choose an event type this webhook listens to."}
        return webhook_page(visit, webhook_id, values={"event_type": event_type}, errors=errors)
    try:
        visit.services.dispatch.send_test(
            visit.store_id, webhook_id, visit.principal.actor, event_type
        )
    except (InvalidRequest, Conflict) as error:
        return webhook_page(visit, webhook_id, errors={"event_type": str(error)})
    # To the webhook's page, not the event's: the read side shows the event a moment later.
    return render.redirect(f"{PATH}/webhooks/{webhook_id}?notice=test-sent")


def _recover(visit: Visit) -> Response:
    return _resend(visit, "recover", "since", "until")


def _replay(visit: Visit) -> Response:
    return _resend(visit, "replay", "replay_since", "replay_until")


def _resend(visit: Visit, mode: str, since_field: str, until_field: str) -> Response:
    """Recover or Replay the range of the form's two fields; the count as a notice."""
    webhook_id = webhook_id_of(visit)
    since = moment_input(visit.form.get(since_field, ""))
    until = moment_input(visit.form.get(until_field, ""))
    errors: dict[str, str] = {}
    if since is None:
        errors[since_field] = "Enter the start of the range."
    elif until is not None and _before_or_same(until, since):
        errors[until_field] = "Must be later than the start of the range."
    else:
        services = visit.services
        resend = Resend(services.webhooks, services.dispatch, Queries(services.read_models))
        try:
            start = parse_moment(since, "since")
            end = parse_moment(until, "until") if until else None
            run = resend.recover if mode == "recover" else resend.replay
            resent = run(visit.store_id, webhook_id, visit.principal.actor, start, end)
        except InvalidRequest as error:
            field = until_field if error.field == "until" else since_field
            errors[field] = str(error)[:1].upper() + str(error)[1:]
        except Conflict as error:
            errors[since_field] = str(error)
        else:
            notice = "recovered" if mode == "recover" else "replayed"
            query = urlencode({"notice": notice, "count": resent.count})
            return render.redirect(f"{PATH}/webhooks/{webhook_id}?{query}")
    values = {
        since_field: visit.form.get(since_field, ""),
        until_field: visit.form.get(until_field, ""),
    }
    return webhook_page(visit, webhook_id, values=values, errors=errors)


def _before_or_same(first: str, second: str) -> bool:
    """Whether time ``first`` is not after ``second`` (False if either is unreadable: the
    query reports those)."""
    try:
        return parse_moment(first, "until") <= parse_moment(second, "since")
    except InvalidRequest:
        return False


def routes(webhook: str) -> list[Route]:
    """The actions' routes under the webhook page's path ``webhook``."""
    return [
        Route(f"{webhook}/{name}", signed_in(handler, post=True, once=True), methods=["POST"])
        for name, handler in (("test", _test), ("recover", _recover), ("replay", _replay))
    ]
