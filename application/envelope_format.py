"""The envelope as receivers get it (§5): its fields, their order and its bytes.

One place for every envelope we make — a store event's (`projections.envelopes`) and a
test event's (`application.samples`) — and for anything that must send the same bytes
again from the envelope's JSON (`webround listen`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from application import views
from application.ports import BuiltEnvelope
from domain.delivery import envelope_id_of
from domain.values import Actor

JSON = dict[str, Any]


def assemble(
    *,
    event_id: str,
    event_type: str,
    actor: Actor,
    store_id: UUID,
    entity_id: UUID,
    occurred_at: datetime,
    data: JSON,
    test: bool = False,
) -> BuiltEnvelope:
    """The envelope of one event, serialised once. ``initiatedBy`` is absent only when
    the event carries no actor information; ``test`` marks a test event (ADR 0027)."""
    envelope: JSON = {"envelopeId": str(envelope_id_of(event_id)), "eventType": event_type}
    if actor.kind != "unknown":
        envelope["initiatedBy"] = actor.email  # None for the system: JSON null
    envelope.update(
        {
            "storeId": str(store_id),
            "occurredAt": views.timestamp(occurred_at),
            "eventId": event_id,
            "data": data,
        }
    )
    if test:
        envelope["test"] = True
    return BuiltEnvelope(
        event_id=event_id,
        envelope_id=envelope_id_of(event_id),
        event_type=event_type,
        store_id=store_id,
        entity_id=entity_id,
        occurred_at=occurred_at,
        body=serialise(envelope),
    )


def serialise(envelope: JSON) -> str:
    """An envelope's bytes (as text): compact, UTF-8, keys in the order given. The JSON
    parsed from a body serialises back to the same body."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
