"""Webhook configuration routes (§3, §8): create, list, read, update, delete, rotate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from application.catalog import ID, TIMESTAMP
from application.errors import InvalidRequest
from application.resend import Resend, Resent
from application.views import timestamp
from domain.delivery import EVENT_ID_PATTERN
from domain.webhook import EVENT_TYPE_PATTERNS
from infrastructure.api import schemas as s
from infrastructure.api.endpoint import JSON, Call, Endpoint, QueryParam
from infrastructure.queries import MOMENT_PATTERN, Cursor, Queries, parse_moment

_RENAMED = {
    "eventTypes": "event_types",
    "timeoutSeconds": "timeout_seconds",
    "rateLimit": "rate_limit",
    "disabledReason": "disabled_reason",
}


def _fields(call: Call) -> dict[str, object]:
    return {_RENAMED.get(k, k): v for k, v in call.body.items() if k != "initiatedBy"}


def _create(call: Call) -> JSON:
    return call.services.webhooks.create_webhook(call.store_id, call.actor, **_fields(call))  # type: ignore[arg-type]


def _update(call: Call) -> JSON:
    return call.services.webhooks.update_webhook(
        call.store_id, call.ids["id"], call.actor, **_fields(call)
    )


def _list(call: Call) -> JSON:
    limit = page_limit(call)
    start = decode_cursor(call.query.get("cursor"))
    items, next_start = call.services.webhooks.list_webhooks(call.store_id, limit, start)
    return {
        "data": [_with_circuit(call, item) for item in items],
        "nextCursor": encode_cursor(next_start) if next_start is not None else None,
    }


def _read(call: Call) -> JSON:
    return _with_circuit(call, call.services.webhooks.read_webhook(call.store_id, call.ids["id"]))


def _with_circuit(call: Call, webhook: JSON) -> JSON:
    """A webhook as read, with its circuit breaker: held deliveries are visible as such.
    (Commands' answers get it as their `present` step: it is no part of the command.)"""
    health = call.services.schedule().health(UUID(webhook["id"]))
    return {**webhook, "circuit": health.to_json(datetime.now(UTC))}


def _rotate(call: Call) -> JSON:
    grace = timedelta(seconds=call.body.get("gracePeriodSeconds", 86400))
    return call.services.webhooks.rotate_secret(call.store_id, call.ids["id"], call.actor, grace)


def _delete(call: Call) -> None:
    call.services.webhooks.delete_webhook(call.store_id, call.ids["id"], call.actor)


def _recover(call: Call) -> JSON:
    """Send again every failed delivery of the webhook created in the range."""
    since, until = _range(call)
    return _resent(resend(call).recover(call.store_id, call.ids["id"], call.actor, since, until))


def _replay(call: Call) -> JSON:
    """Send every event of the range that the webhook (and ``eventTypes``) selects."""
    since, until = _range(call)
    return _resent(
        resend(call).replay(
            call.store_id, call.ids["id"], call.actor, since, until, call.body.get("eventTypes")
        )
    )


def _resent(resent: Resent) -> JSON:
    return {"count": resent.count, "requestedAt": timestamp(resent.requested_at)}


def _test(call: Call) -> JSON:
    return call.services.dispatch.send_test(
        call.store_id, call.ids["id"], call.actor, call.body.get("eventType")
    )


def resend(call: Call) -> Resend:
    services = call.services
    return Resend(services.webhooks, services.dispatch, Queries(services.read_models))


def _range(call: Call) -> tuple[datetime, datetime | None]:
    until = call.body.get("until")
    return (
        parse_moment(call.body["since"], "since"),
        parse_moment(until, "until") if until else None,
    )


def page_limit(call: Call, default: int = 50) -> int:
    raw = call.query.get("limit", str(default))
    # Length first: int() of thousands of digits raises (Python's conversion limit).
    digits = raw.lstrip("0") if raw.isascii() and raw.isdigit() else None
    if digits is None or len(digits) > 3 or not 1 <= int(digits or "0") <= 200:
        raise InvalidRequest("must be a whole number from 1 to 200", field="limit")
    return int(digits)


# A place in the store's webhook index (which only grows): every such string is one.
WEBHOOK_CURSOR = Cursor("wh_", "([0-9]{1,9})")


def encode_cursor(start: int) -> str:
    return f"{WEBHOOK_CURSOR.prefix}{start}"


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    found = WEBHOOK_CURSOR.pattern.match(cursor)
    if found is None:
        raise InvalidRequest("is not a cursor this API gave out for this list", field="cursor")
    return int(found.group(1))


LIMIT = QueryParam(
    "limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Page size."
)


def paging_of(*cursors: Cursor) -> tuple[QueryParam, ...]:
    """`limit`, and `cursor` as the list's cursors look (opaque: pass `nextCursor` on)."""
    return (LIMIT, cursor_param(*cursors, description="The `nextCursor` of the previous page."))


def cursor_param(*cursors: Cursor, description: str) -> QueryParam:
    """`cursor`, published as the shapes of the list's cursors (any of them)."""
    shapes = "|".join(f"{cursor.prefix}{cursor.key}" for cursor in cursors)
    return QueryParam("cursor", {"type": "string", "pattern": f"^({shapes})$"}, description)


PAGING = paging_of(WEBHOOK_CURSOR)
ERRORS = (400, 401, 404, 409, 413, 415, 422)

RANGE: JSON = {
    "since": {
        "type": "string",
        "format": "date-time",
        "pattern": MOMENT_PATTERN,
        "examples": ["2030-01-01T00:00:00Z"],
    },
    "until": {"type": "string", "format": "date-time", "pattern": MOMENT_PATTERN},
}
RECOVER = s.body(RANGE, ("since",))
REPLAY = s.body({**RANGE, "eventTypes": s.EVENT_TYPES}, ("since",))
TEST = s.body(
    {
        "eventType": {
            "type": "string",
            "enum": [name for name in EVENT_TYPE_PATTERNS if not name.endswith("*")],
            "examples": ["order.paid"],
            "description": "One of the webhook's event types; by default the first it listens to.",
        }
    }
)
TEST_SENT = {
    "type": "object",
    "properties": {
        "eventId": {"type": "string", "pattern": EVENT_ID_PATTERN},
        "eventType": {"type": "string"},
        "webhookId": ID,
        "deliveryId": ID,
        "envelope": {
            "type": "object",
            "description": 'The envelope as the webhook receives it (§5), with "test": true.',
        },
    },
    "required": ["eventId", "eventType", "webhookId", "deliveryId", "envelope"],
    "additionalProperties": False,
}
COUNT = {
    "type": "object",
    "properties": {
        "count": {"type": "integer", "description": "Deliveries created."},
        "requestedAt": {
            **TIMESTAMP,
            "description": "When they were requested: each was created at or after this "
            "time, so `GET /v1/deliveries?webhookId=…&since=` it lists them as they go.",
        },
    },
    "required": ["count", "requestedAt"],
    "additionalProperties": False,
}

ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST",
        "/v1/webhooks",
        _create,
        "create_webhook",
        "Register a webhook; the answer holds its signing secret, shown this once",
        "Webhooks",
        status=201,
        request=s.WEBHOOK_CREATE,
        response=s.WEBHOOK_WITH_SECRET,
        command=True,
        errors=(400, 401, 409, 413, 415, 422),
        present=_with_circuit,
        reveals_secret=True,
    ),
    Endpoint(
        "GET",
        "/v1/webhooks",
        _list,
        "list_webhooks",
        "List the store's webhooks",
        "Webhooks",
        response=s.page_of(s.WEBHOOK),
        errors=(401, 422),
        query=PAGING,
    ),
    Endpoint(
        "GET",
        "/v1/webhooks/{id}",
        _read,
        "get_webhook",
        "Get a webhook (never its secret)",
        "Webhooks",
        response=s.WEBHOOK,
        errors=(401, 404),
    ),
    Endpoint(
        "PATCH",
        "/v1/webhooks/{id}",
        _update,
        "update_webhook",
        "Change a webhook, or enable or disable it",
        "Webhooks",
        request=s.WEBHOOK_UPDATE,
        response=s.WEBHOOK,
        command=True,
        errors=ERRORS,
        present=_with_circuit,
    ),
    Endpoint(
        "DELETE",
        "/v1/webhooks/{id}",
        _delete,
        "delete_webhook",
        "Delete a webhook",
        "Webhooks",
        status=204,
        request=s.EMPTY,
        command=True,
        errors=ERRORS,
    ),
    Endpoint(
        "POST",
        "/v1/webhooks/{id}/rotate-secret",
        _rotate,
        "rotate_webhook_secret",
        "Rotate the signing secret; the old one keeps signing for the grace period",
        "Webhooks",
        request=s.ROTATE,
        response=s.WEBHOOK_WITH_SECRET,
        command=True,
        errors=ERRORS,
        present=_with_circuit,
        reveals_secret=True,
    ),
    Endpoint(
        "POST",
        "/v1/webhooks/{id}/test",
        _test,
        "send_test_event",
        "Send the webhook a test event: a signed sample envelope of one of its event types, "
        'marked `"test": true` (its id starts `evt_test_`), delivered, retried and recorded '
        "like any other. It is not a store event: event lists leave it out unless asked "
        "(`test=true`), and recover and replay never send it.",
        "Webhooks",
        status=202,
        request=TEST,
        response=TEST_SENT,
        command=True,
        errors=ERRORS,
    ),
    Endpoint(
        "POST",
        "/v1/webhooks/{id}/recover",
        _recover,
        "recover_webhook",
        "Send again every failed delivery of this webhook created since a time",
        "Webhooks",
        status=202,
        request=RECOVER,
        response=COUNT,
        command=True,
        errors=ERRORS,
    ),
    Endpoint(
        "POST",
        "/v1/webhooks/{id}/replay",
        _replay,
        "replay_webhook",
        "Send this webhook every matching event recorded in a time range (backfill)",
        "Webhooks",
        status=202,
        request=REPLAY,
        response=COUNT,
        command=True,
        errors=ERRORS,
    ),
]
