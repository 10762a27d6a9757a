"""From a store event to its webhook envelope (§5): a pure mapping.

`build_envelope` takes the domain event, its position in the commerce log, and a
`lookup` that answers any entity's JSON view *as it was at that position*; it returns
the envelope and its body bytes (assembled by `application.envelope_format`). The shape
of ``data`` is the event catalog's contract (`application.catalog`): the entity, its
relations, and the event's ``change``.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from application import views
from application.envelope_format import assemble
from application.ports import BuiltEnvelope, Lookup
from domain.base import actor_of
from domain.delivery import event_id_of
from domain.event_types import event_type

JSON = dict[str, Any]


def build_envelope(
    domain_event: Aggregate.Event, entity: JSON, lookup: Lookup, store_id: UUID
) -> BuiltEnvelope:
    """The envelope of ``domain_event``; ``entity`` is its aggregate's view just after it."""
    name = event_type(domain_event)
    return assemble(
        event_id=event_id_of(domain_event.originator_id, domain_event.originator_version),
        event_type=name,
        actor=actor_of(domain_event),
        store_id=store_id,
        entity_id=domain_event.originator_id,
        occurred_at=domain_event.timestamp,
        data=data(name, entity, lookup, change(domain_event)),
    )


def data(event_type_name: str, entity: JSON, lookup: Lookup, change_: JSON) -> JSON:
    kind = event_type_name.split(".", 1)[0]
    related: JSON = {kind: entity}
    if kind == "variant":
        related["product"] = lookup("product", UUID(entity["productId"]))
    elif kind == "sku":
        related["variant"] = lookup("variant", UUID(entity["variantId"]))
        related["product"] = lookup("product", UUID(entity["productId"]))
    elif kind == "order":
        related["order"] = {
            **entity,
            "lines": [_line_snapshot(line, lookup) for line in entity["lines"]],
        }
        related["customer"] = lookup("customer", UUID(entity["customerId"]))
    elif kind == "subscription":
        sku = lookup("sku", UUID(entity["skuId"]))
        related["customer"] = lookup("customer", UUID(entity["customerId"]))
        related["sku"] = sku
        related["variant"] = lookup("variant", UUID(sku["variantId"]))
        related["product"] = lookup("product", UUID(sku["productId"]))
    return {**related, "change": change_}


def _line_snapshot(line: JSON, lookup: Lookup) -> JSON:
    sku = lookup("sku", UUID(line["skuId"]))
    return {
        **line,
        "sku": sku,
        "variant": lookup("variant", UUID(sku["variantId"])),
        "product": lookup("product", UUID(sku["productId"])),
    }


def change(domain_event: Aggregate.Event) -> JSON:
    """What this event did, per the catalog's table."""
    e: Any = domain_event
    match event_type(domain_event):
        case "order.status_updated":
            return {"status": e.status, "previousStatus": e.previous_status}
        case "order.paid":
            return {"amount": views.money(e.amount)}
        case "order.refunded":
            return {"amount": views.money(e.amount), "reason": e.reason}
        case "customer.updated":
            given = {"email": e.email, "name": e.name, "phone": e.phone}
            # An empty string in the event means "cleared": null in the envelope.
            return {k: v or None for k, v in given.items() if v is not None}
        case "customer.address_saved":
            return {"address": views.address(e.address)}
        case "product.updated":
            given = {"name": e.name, "description": e.description}
            return {k: v or None for k, v in given.items() if v is not None}
        case "variant.updated":
            return {"attributes": dict(e.attributes)}
        case "sku.price_changed":
            return {"price": views.money(e.price), "previousPrice": views.money(e.previous_price)}
        case "sku.stock_changed":
            return {"quantity": e.quantity, "delta": e.delta}
        case "subscription.renewed":
            return {"currentPeriodEnd": views.timestamp(e.current_period_end)}
        case "subscription.payment_failed":
            return {"reason": e.reason}
    return {}
