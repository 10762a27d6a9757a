"""`GET /v1/audit` (§7): what happened, when, and who did it, over webhooks and deliveries."""

from __future__ import annotations

from application.catalog import TIMESTAMP
from infrastructure.api import schemas as s
from infrastructure.api.deliveries import (
    EVENT_ID,
    NULLABLE_ID,
    UUID_PARAM,
    ordering,
    paging,
    queries,
    time_range,
)
from infrastructure.api.endpoint import JSON, Call, Endpoint, QueryParam
from infrastructure.queries import KINDS_PATTERN

AUDIT_ENTRY: s.Schema = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "The entry's id, stable across rebuilds."},
        "occurredAt": TIMESTAMP,
        "kind": {
            "type": "string",
            "examples": ["webhook.updated", "delivery.sent_again", "delivery.failed"],
            "description": "What happened: `store.created`, `api_key.created|revoked`, "
            "`webhook.created|updated|enabled|disabled|secret_rotated|secret_shown_again|"
            "recovered|replayed|deleted`, "
            "`delivery.created|sent_again|succeeded|attempt_failed|failed`.",
        },
        "actor": {
            "type": ["string", "null"],
            "description": "Who did it: a person's email, `system`, or null when unknown.",
        },
        "webhookId": NULLABLE_ID,
        "eventId": {"anyOf": [EVENT_ID, {"type": "null"}]},
        "deliveryId": NULLABLE_ID,
        "summary": {"type": "string", "description": "One readable line."},
        "details": {"type": "object", "description": "The facts behind the summary."},
    },
    "required": [
        "id",
        "occurredAt",
        "kind",
        "actor",
        "webhookId",
        "eventId",
        "deliveryId",
        "summary",
        "details",
    ],
    "additionalProperties": False,
}


def _list(call: Call) -> JSON:
    q = call.query
    return queries(call).list_audit(
        call.store_id,
        since=q.get("since"),
        until=q.get("until"),
        webhook_id=q.get("webhookId"),
        event_id=q.get("eventId"),
        delivery_id=q.get("deliveryId"),
        actor=q.get("actor"),
        kind=q.get("kind"),
        **paging(call),
    )


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/audit",
        _list,
        "list_audit_entries",
        "The audit log: what happened, when and who did it, newest first (or oldest)",
        "Audit",
        response=s.page_of(AUDIT_ENTRY),
        errors=(401, 422),
        query=(
            *time_range("entries"),
            QueryParam("webhookId", UUID_PARAM, "Only entries about this webhook."),
            QueryParam("eventId", EVENT_ID, "Only entries about this event."),
            QueryParam("deliveryId", UUID_PARAM, "Only entries about this delivery."),
            QueryParam(
                "actor",
                {**s.SINGLE_LINE, "minLength": 1, "maxLength": 254},
                "Only entries by this actor: a person's email, or `system`.",
            ),
            QueryParam(
                "kind",
                {
                    "type": "string",
                    "pattern": KINDS_PATTERN,
                    "examples": ["webhook.", "delivery.attempt_failed,delivery.failed"],
                },
                "Only entries of this kind (`delivery.sent_again`), of kinds starting with "
                "a prefix (`webhook.` or `webhook.*`), or of any of several, comma-separated.",
            ),
            *ordering("audit"),
        ),
    )
]
