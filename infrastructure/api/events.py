"""Event routes: send an event's envelope again (§6 "Send again")."""

from __future__ import annotations

from uuid import UUID

from application.catalog import ID
from infrastructure.api import schemas as s
from infrastructure.api.endpoint import JSON, Call, Endpoint


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

ENDPOINTS = [
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
    )
]
