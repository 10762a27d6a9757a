"""Event routes: list events, read one with its deliveries (§7, §8), and send an event's
envelope again (§6 "Send again")."""

from __future__ import annotations

from uuid import UUID

from application.catalog import ID, TIMESTAMP
from infrastructure.api import schemas as s
from infrastructure.api.deliveries import (
    DELIVERY_WITH_ATTEMPTS,
    EVENT_ID,
    ORDERING,
    UUID_PARAM,
    paging,
    queries,
    time_range,
)
from infrastructure.api.endpoint import JSON, Call, Endpoint, QueryParam
from infrastructure.queries import DELIVERY_STATUSES


def _list(call: Call) -> JSON:
    q = call.query
    return queries(call).list_events(
        call.store_id,
        event_type=q.get("eventType"),
        entity_id=q.get("entityId"),
        since=q.get("since"),
        until=q.get("until"),
        **paging(call),
    )


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
        "deliveries": {
            "type": "object",
            "description": "How many of the event's deliveries are in each state.",
            "properties": dict.fromkeys(DELIVERY_STATUSES, s.COUNT),
            "required": list(DELIVERY_STATUSES),
            "additionalProperties": False,
        },
    },
    "required": ["eventId", "eventType", "entityId", "occurredAt", "initiatedBy", "deliveries"],
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

ENDPOINTS = [
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
                {"type": "string", "examples": ["order.paid", "order.*"]},
                "Only events of this type, or of this entity (`order.*`).",
            ),
            QueryParam("entityId", UUID_PARAM, "Only events of this store entity."),
            *time_range("events that occurred"),
            *ORDERING,
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
