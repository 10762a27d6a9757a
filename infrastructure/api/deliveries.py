"""Delivery routes (§6, §8): list deliveries and read one with every attempt.

Also the pieces every read-side list shares (its `since`/`until`/`order`/paging query
parameters), used by the event and audit routes too. Answers come from the read models
(`infrastructure.queries`), which follow the event stores closely but not instantly.
"""

from __future__ import annotations

from typing import Any

from application.catalog import ID, TIMESTAMP
from domain.delivery import EVENT_ID_PATTERN
from infrastructure.api import schemas as s
from infrastructure.api.endpoint import JSON, Call, Endpoint, QueryParam
from infrastructure.api.webhooks import page_limit, paging_of
from infrastructure.queries import (
    CURSORS,
    DELIVERY_STATUSES,
    MOMENT_PATTERN,
    Queries,
    newest_first,
)

# Shared by the read-side lists -------------------------------------------------------------

EVENT_ID: s.Schema = {
    "type": "string",
    "pattern": EVENT_ID_PATTERN,
    "description": "A store event's id (a test event's starts `evt_test_`): the `webhook-id` "
    "header and `eventId` of its envelope.",
    "examples": ["evt_" + "0" * 32],
}
NULLABLE_TIMESTAMP: s.Schema = {"anyOf": [TIMESTAMP, {"type": "null"}]}
NULLABLE_ID: s.Schema = {"anyOf": [ID, {"type": "null"}]}
UUID_PARAM: s.Schema = {"type": "string", "format": "uuid"}
TIME_PARAM: s.Schema = {
    "type": "string",
    "format": "date-time",
    "pattern": MOMENT_PATTERN,
    "examples": ["2030-01-01T12:00:00Z"],
}


def time_range(what: str) -> tuple[QueryParam, ...]:
    return (
        QueryParam("since", TIME_PARAM, f"Only {what} at or after this time (ISO 8601)."),
        QueryParam("until", TIME_PARAM, f"Only {what} before this time (ISO 8601)."),
    )


def ordering(*list_names: str) -> tuple[QueryParam, ...]:
    """`order`, `limit` and `cursor` of a read-side list (of these lists' cursors)."""
    return (
        QueryParam(
            "order",
            {"type": "string", "enum": ["newest", "oldest"], "default": "newest"},
            "Newest or oldest first.",
        ),
        *paging_of(*(CURSORS[name] for name in list_names)),
    )


def queries(call: Call) -> Queries:
    return Queries(call.services.read_models)


def paging(call: Call) -> dict[str, Any]:
    """`limit`, `cursor` and `order` of a list request, checked."""
    return {
        "limit": page_limit(call),
        "cursor": call.query.get("cursor") or None,
        "newest_first": newest_first(call.query.get("order")),
    }


# Schemas ----------------------------------------------------------------------------------

ATTEMPT: s.Schema = {
    "type": "object",
    "properties": {
        "number": {"type": "integer", "minimum": 1},
        "startedAt": TIMESTAMP,
        "durationMs": {"type": "number", "minimum": 0},
        "statusCode": {"type": ["integer", "null"], "description": "null: no HTTP answer"},
        "error": {
            "type": ["string", "null"],
            "description": "The error class when there was no usable HTTP answer: "
            "`unsafe_target`, `dns_error`, `invalid_request`, `connect_error`, `tls_error`, "
            "`timeout`, `protocol_error`, `redirect`, `webhook_deleted`, "
            "`secret_unavailable` (the worker's master key cannot open the webhook's "
            "secret: nothing was sent).",
        },
        "detail": {"type": ["string", "null"]},
        "responseHeaders": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "The response headers of interest.",
        },
        "responseBody": {
            "type": "string",
            "description": "The first 16 KiB of the response body: its text, or base64 "
            "of its bytes when `responseBodyEncoding` is `base64`.",
        },
        "responseBodyEncoding": {
            "type": "string",
            "enum": ["text", "base64"],
            "description": "`text` when the excerpt is UTF-8 without NUL; `base64` when "
            "it is not (a gzip or binary answer, a NUL byte): base64 of the exact bytes.",
        },
        "nextAttemptAt": {
            **NULLABLE_TIMESTAMP,
            "description": "When the next attempt is due; null when none follows.",
        },
        "outcome": {"type": "string", "enum": ["succeeded", "retrying", "failed"]},
    },
    "required": [
        "number",
        "startedAt",
        "durationMs",
        "statusCode",
        "error",
        "detail",
        "responseHeaders",
        "responseBody",
        "responseBodyEncoding",
        "nextAttemptAt",
        "outcome",
    ],
    "additionalProperties": False,
}
DELIVERY: s.Schema = {
    "type": "object",
    "properties": {
        "id": ID,
        "eventId": EVENT_ID,
        "eventType": {"type": "string"},
        "webhookId": ID,
        "status": {"type": "string", "enum": list(DELIVERY_STATUSES)},
        "attemptCount": {"type": "integer", "minimum": 0},
        "replay": {"type": "boolean", "description": "true for a “Send again”."},
        "test": {
            "type": "boolean",
            "description": "true for a test event's delivery (POST /v1/webhooks/{id}/test).",
        },
        "requestedBy": {
            "type": ["string", "null"],
            "description": "Who asked to send again or sent the test event: an email, "
            "`system`, or null.",
        },
        "createdAt": TIMESTAMP,
        "lastAttemptAt": NULLABLE_TIMESTAMP,
        "lastStatusCode": {"type": ["integer", "null"]},
        "lastError": {"type": ["string", "null"]},
        "nextAttemptAt": NULLABLE_TIMESTAMP,
    },
    "required": [
        "id",
        "eventId",
        "eventType",
        "webhookId",
        "status",
        "attemptCount",
        "replay",
        "test",
        "requestedBy",
        "createdAt",
        "lastAttemptAt",
        "lastStatusCode",
        "lastError",
        "nextAttemptAt",
    ],
    "additionalProperties": False,
}
DELIVERY_WITH_ATTEMPTS: s.Schema = {
    **DELIVERY,
    "properties": {**DELIVERY["properties"], "attempts": {"type": "array", "items": ATTEMPT}},
    "required": [*DELIVERY["required"], "attempts"],
}


# Routes -----------------------------------------------------------------------------------


def _list(call: Call) -> JSON:
    q = call.query
    return queries(call).list_deliveries(
        call.store_id,
        webhook_id=q.get("webhookId"),
        event_id=q.get("eventId"),
        status=q.get("status"),
        since=q.get("since"),
        until=q.get("until"),
        **paging(call),
    )


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/deliveries",
        _list,
        "list_deliveries",
        "List deliveries, newest first (or oldest), by webhook, event, status and time",
        "Deliveries",
        response=s.page_of(DELIVERY),
        errors=(401, 422),
        query=(
            QueryParam("webhookId", UUID_PARAM, "Only deliveries to this webhook."),
            QueryParam("eventId", EVENT_ID, "Only deliveries of this event."),
            QueryParam(
                "status",
                {"type": "string", "enum": list(DELIVERY_STATUSES)},
                "Only deliveries in this state (`pending` includes those awaiting a retry).",
            ),
            *time_range("deliveries created"),
            *ordering("deliveries"),
        ),
    ),
    Endpoint(
        "GET",
        "/v1/deliveries/{id}",
        lambda call: queries(call).get_delivery(call.store_id, call.ids["id"]),
        "get_delivery",
        "Get a delivery with every attempt",
        "Deliveries",
        response=DELIVERY_WITH_ATTEMPTS,
        errors=(401, 404),
    ),
]
