"""Webhook configuration routes (§3, §8): create, list, read, update, delete, rotate."""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta
from uuid import UUID

from application.errors import InvalidRequest
from infrastructure.api import schemas as s
from infrastructure.api.endpoint import JSON, Call, Endpoint, QueryParam

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


def _list(call: Call) -> JSON:
    limit = page_limit(call)
    after = decode_cursor(call.query.get("cursor"))
    items, last = call.services.webhooks.list_webhooks(call.store_id, limit, after)
    return {"data": items, "nextCursor": encode_cursor(last) if last else None}


def _rotate(call: Call) -> JSON:
    grace = timedelta(seconds=call.body.get("gracePeriodSeconds", 86400))
    return call.services.webhooks.rotate_secret(call.store_id, call.ids["id"], call.actor, grace)


def _delete(call: Call) -> None:
    call.services.webhooks.delete_webhook(call.store_id, call.ids["id"], call.actor)


def page_limit(call: Call, default: int = 50) -> int:
    raw = call.query.get("limit", str(default))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 200:
        raise InvalidRequest("must be a whole number from 1 to 200", field="limit")
    return int(raw)


def encode_cursor(last: UUID) -> str:
    return base64.urlsafe_b64encode(last.bytes).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> UUID | None:
    if not cursor:
        return None
    try:
        return UUID(bytes=base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise InvalidRequest("is not a cursor this API gave out", field="cursor") from None


PAGING = (
    QueryParam(
        "limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Page size."
    ),
    QueryParam("cursor", {"type": "string"}, "The `nextCursor` of the previous page."),
)
ERRORS = (400, 401, 404, 409, 413, 415, 422)

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
        lambda c: c.services.webhooks.read_webhook(c.store_id, c.ids["id"]),
        "get_webhook",
        "Get a webhook (never its secret)",
        "Webhooks",
        response=s.WEBHOOK,
        errors=(401, 404),
    ),
    Endpoint(
        "PATCH",
        "/v1/webhooks/{id}",
        lambda c: c.services.webhooks.update_webhook(
            c.store_id, c.ids["id"], c.actor, **_fields(c)
        ),
        "update_webhook",
        "Change a webhook, or enable or disable it",
        "Webhooks",
        request=s.WEBHOOK_UPDATE,
        response=s.WEBHOOK,
        command=True,
        errors=ERRORS,
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
    ),
]
