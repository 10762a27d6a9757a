"""Event routes: list events, read one with its deliveries (§7, §8), and send an event's
envelope again (§6 "Send again")."""

from __future__ import annotations

import asyncio
import re
import time
from uuid import UUID

from starlette.concurrency import run_in_threadpool

from application.catalog import ID, TIMESTAMP
from application.errors import InvalidRequest
from domain.webhook import EVENT_TYPE_PATTERNS, check_event_types
from infrastructure.api import schemas as s
from infrastructure.api.deliveries import (
    DELIVERY_WITH_ATTEMPTS,
    EVENT_ID,
    UUID_PARAM,
    ordering,
    paging,
    queries,
    time_range,
)
from infrastructure.api.endpoint import JSON, Call, Endpoint, QueryParam
from infrastructure.api.webhooks import cursor_param, page_limit
from infrastructure.queries import CURSORS, DELIVERY_STATUSES, EVENT_TYPE_FILTERS

# The `eventTypes` of the feed: names, `entity.*` or `*`, comma-separated.
_ONE_TYPE = "|".join(re.escape(pattern) for pattern in EVENT_TYPE_PATTERNS)
EVENT_TYPE_LIST_PATTERN = f"^({_ONE_TYPE})(,({_ONE_TYPE}))*$"
MAX_WAIT = 25  # seconds a feed request may wait: below common proxies' idle timeouts
FEED_POLL_SECONDS = 0.25  # how often a waiting feed request looks for new envelopes


def _list(call: Call) -> JSON:
    q = call.query
    return queries(call).list_events(
        call.store_id,
        event_type=q.get("eventType"),
        entity_id=q.get("entityId"),
        since=q.get("since"),
        until=q.get("until"),
        test=_flag(q.get("test"), "test"),
        **paging(call),
    )


async def _feed(call: Call) -> JSON:
    """The long poll `webround listen` follows (ADR 0028): answer as soon as there are
    envelopes after the cursor, or after ``wait`` seconds with none (and the cursor moved
    past any events the filter left out)."""
    wait = _whole(call.query.get("wait", "0"), "wait", MAX_WAIT)
    limit = page_limit(call, default=100)
    raw_types = call.query.get("eventTypes")
    types = check_event_types(raw_types.split(",")) if raw_types else None
    cursor = call.query.get("cursor") or None
    deadline = time.monotonic() + wait
    while True:
        page: JSON = await run_in_threadpool(
            queries(call).feed, call.store_id, cursor=cursor, event_types=types, limit=limit
        )
        if (
            page["data"]
            or cursor is None
            or time.monotonic() >= deadline
            or call.services.stopping.is_set()
        ):
            return page
        cursor = page["cursor"]
        await asyncio.sleep(FEED_POLL_SECONDS)


def _flag(value: str | None, field: str) -> bool:
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise InvalidRequest("must be true or false", field)


def _whole(value: str, field: str, maximum: int) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) > maximum:
        raise InvalidRequest(f"must be a whole number from 0 to {maximum}", field)
    return int(value)


def _send_again(call: Call) -> JSON:
    webhook_id = call.body.get("webhookId")
    deliveries = call.services.dispatch.send_again(
        call.store_id,
        call.path["eventId"],
        call.actor,
        UUID(webhook_id) if webhook_id else None,
    )
    return {"eventId": call.path["eventId"], "deliveries": deliveries}


SEND_AGAIN = s.body({"webhookId": {"type": "string", "format": "uuid"}})
SENT_AGAIN = {
    "type": "object",
    "properties": {
        "eventId": {"type": "string"},
        "deliveries": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"id": ID, "webhookId": ID},
                "required": ["id", "webhookId"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["eventId", "deliveries"],
    "additionalProperties": False,
}

EVENT: s.Schema = {
    "type": "object",
    "properties": {
        "eventId": EVENT_ID,
        "eventType": {"type": "string", "examples": ["order.paid"]},
        "entityId": {**ID, "description": "The store entity the event happened to."},
        "occurredAt": TIMESTAMP,
        "initiatedBy": {
            "type": ["string", "null"],
            "description": "The person who caused it; null for the system or when unknown.",
        },
        "test": {
            "type": "boolean",
            "description": "true for a test event (POST /v1/webhooks/{id}/test): sample data.",
        },
        "deliveries": {
            "type": "object",
            "description": "How many of the event's deliveries are in each state.",
            "properties": dict.fromkeys(DELIVERY_STATUSES, s.COUNT),
            "required": list(DELIVERY_STATUSES),
            "additionalProperties": False,
        },
    },
    "required": [
        "eventId",
        "eventType",
        "entityId",
        "occurredAt",
        "initiatedBy",
        "test",
        "deliveries",
    ],
    "additionalProperties": False,
}
ENVELOPE: s.Schema = {
    "type": "object",
    "description": "The envelope exactly as receivers get it (§5).",
    "properties": {
        "envelopeId": ID,
        "eventType": {"type": "string"},
        "initiatedBy": {"type": ["string", "null"]},
        "storeId": ID,
        "occurredAt": TIMESTAMP,
        "eventId": EVENT_ID,
        "data": {"type": "object"},
        "test": {"const": True, "description": "Present only in a test event's envelope."},
    },
    "required": ["envelopeId", "eventType", "storeId", "occurredAt", "eventId", "data"],
}
EVENT_DETAIL: s.Schema = {
    **EVENT,
    "properties": {
        **EVENT["properties"],
        "envelope": ENVELOPE,
        "deliveriesByWebhook": {
            "type": "array",
            "description": "The event's deliveries (first and every “Send again”) grouped "
            "per webhook, each with every attempt.",
            "items": {
                "type": "object",
                "properties": {
                    "webhookId": ID,
                    "deliveries": {"type": "array", "items": DELIVERY_WITH_ATTEMPTS},
                },
                "required": ["webhookId", "deliveries"],
                "additionalProperties": False,
            },
        },
    },
    "required": [*EVENT["required"], "envelope", "deliveriesByWebhook"],
}

FEED: s.Schema = {
    "type": "object",
    "properties": {
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "eventId": EVENT_ID,
                    "eventType": {"type": "string"},
                    "envelope": ENVELOPE,
                },
                "required": ["eventId", "eventType", "envelope"],
                "additionalProperties": False,
            },
        },
        "cursor": {
            "type": "string",
            "description": "Where this answer ends: send it with the next request to read on "
            "without missing or repeating an event.",
        },
    },
    "required": ["data", "cursor"],
    "additionalProperties": False,
}

ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/events/feed",
        _feed,
        "follow_events",
        "Follow the store's events as they happen (long poll): the envelopes after a cursor, "
        "oldest first, waiting up to `wait` seconds for one. Without a cursor: none yet, and "
        "the cursor of now. Test events are not in the feed.",
        "Events",
        response=FEED,
        errors=(401, 422),
        query=(
            cursor_param(
                CURSORS["feed"],
                description="The `cursor` of the previous answer; none to start from now.",
            ),
            QueryParam(
                "eventTypes",
                {
                    "type": "string",
                    "pattern": EVENT_TYPE_LIST_PATTERN,
                    "examples": ["order.*,customer.registered"],
                },
                "Only these event types: names, `entity.*` or `*`, comma-separated.",
            ),
            QueryParam(
                "wait",
                {"type": "integer", "minimum": 0, "maximum": MAX_WAIT, "default": 0},
                "Seconds to wait for an event when there is none yet.",
            ),
            QueryParam(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 200, "default": 100},
                "At most this many events.",
            ),
        ),
    ),
    Endpoint(
        "GET",
        "/v1/events",
        _list,
        "list_events",
        "List the store's events, newest first (or oldest), by type, entity and time",
        "Events",
        response=s.page_of(EVENT),
        errors=(401, 422),
        query=(
            QueryParam(
                "eventType",
                {"type": "string", "enum": EVENT_TYPE_FILTERS, "examples": ["order.paid"]},
                "Only events of this type, or of this entity (`order.*`).",
            ),
            QueryParam("entityId", UUID_PARAM, "Only events of this store entity."),
            QueryParam(
                "test",
                {"type": "boolean", "default": False},
                "`true`: the test events (POST /v1/webhooks/{id}/test) instead of the store's.",
            ),
            *time_range("events that occurred"),
            *ordering("events", "test-events"),
        ),
    ),
    Endpoint(
        "GET",
        "/v1/events/{eventId}",
        lambda call: queries(call).get_event(call.store_id, call.path["eventId"]),
        "get_event",
        "Get an event: its envelope, and its deliveries per webhook with every attempt",
        "Events",
        response=EVENT_DETAIL,
        errors=(401, 404),
    ),
    Endpoint(
        "POST",
        "/v1/events/{eventId}/send-again",
        _send_again,
        "send_event_again",
        "Send an event's envelope again: to one webhook, or to every enabled webhook that "
        "listens to its type. Same envelope and body; a fresh timestamp and signature.",
        "Events",
        status=202,
        request=SEND_AGAIN,
        response=SENT_AGAIN,
        command=True,
        errors=(400, 401, 404, 409, 413, 415, 422),
    ),
]
