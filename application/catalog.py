"""The event catalog of §4: every public event type, its entity, a description, and the
JSON Schema (Draft 2020-12) of the envelope's ``data``.

``GET /v1/event-types`` answers ``catalog_json()``. The schemas are the documentation of the
payloads and are strict (every key required, no extra keys), so tests can validate real
envelopes against them.

The contract of ``data``
========================

``data`` is a snapshot of the entity *and its relations* as they were at the exact moment
of the event. Every entity appears in its JSON view (``application.views``, the same form
``GET /v1/...`` answers), and ``change`` holds what this particular event did:

- ``customer.*``: ``{"customer": <customer>, "change": {...}}``
- ``product.*``: ``{"product": <product>, "change": {...}}``
- ``variant.*``: ``{"variant": <variant>, "product": <product>, "change": {...}}``
- ``sku.*``: ``{"sku": <sku>, "variant": <variant>, "product": <product>, "change": {...}}``
- ``order.*``: ``{"order": <order>, "customer": <customer>, "change": {...}}`` where every
  line of the order additionally carries ``"sku"``, ``"variant"`` and ``"product"`` (their
  views as they were then) next to ``skuId``, ``quantity``, ``unitPrice`` and ``total``.
- ``subscription.*``: ``{"subscription": <subscription>, "customer": <customer>,
  "sku": <sku>, "variant": <variant>, "product": <product>, "change": {...}}``

``change`` is always an object, camelCase, amounts as ``{"amount": "19.90", "currency":
"EUR"}`` and timestamps as UTC ISO 8601 with ``Z``:

=============================== =====================================================
event type                      change
=============================== =====================================================
order.created                   ``{}``
order.status_updated            ``{"status", "previousStatus"}``
order.paid                      ``{"amount"}``
order.refunded                  ``{"amount", "reason"}`` (reason: string or null)
customer.registered             ``{}``
customer.updated                ``{"email"?, "name"?, "phone"?}`` (fields given; null: cleared)
customer.verified               ``{}``
customer.address_saved          ``{"address"}`` (the address view)
customer.deletion_requested     ``{}``
product.created                 ``{}``
product.updated                 ``{"name"?, "description"?}`` (only the fields given)
variant.created                 ``{}``
variant.updated                 ``{"attributes"}`` (the new attributes)
sku.created                     ``{}``
sku.price_changed               ``{"price", "previousPrice"}``
sku.stock_changed               ``{"quantity", "delta"}`` (new level, signed change)
subscription.created            ``{}``
subscription.renewed            ``{"currentPeriodEnd"}``
subscription.payment_failed     ``{"reason"}`` (string or null)
subscription.paused             ``{}``
subscription.resumed            ``{}``
subscription.cancelled          ``{}``
subscription.expired            ``{}``
=============================== =====================================================

The module does no I/O: schemas are plain dicts built once, from one schema per entity.
Where a pattern constrains a value, its schema gives an example: test events' sample data
is generated from these schemas (`application.samples`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from domain.event_types import EVENT_CLASSES
from domain.order import OrderStatus
from domain.subscription import INTERVALS, SubscriptionStatus

Schema = dict[str, Any]

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Scalars --------------------------------------------------------------------------------

# ``str(UUID)``: lowercase, canonical. The pattern holds where format checking is off.
ID: Schema = {
    "type": "string",
    "format": "uuid",
    "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
}
# ``views.timestamp``: UTC, always with microseconds and a ``Z``.
TIMESTAMP: Schema = {
    "type": "string",
    "format": "date-time",
    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$",
}
VERSION: Schema = {
    "type": "integer",
    "minimum": 1,
    "description": "The entity's version: 1 when created, one more with each of its events.",
}
NON_EMPTY: Schema = {"type": "string", "minLength": 1}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
CURRENCY: Schema = {
    "type": "string",
    "pattern": "^[A-Z]{3}$",
    "description": "ISO 4217 currency code, e.g. EUR.",
    "examples": ["EUR"],
}
MONEY: Schema = {
    "type": "object",
    "description": "A decimal amount as a string (never a number) in an ISO 4217 currency.",
    "properties": {
        "amount": {
            "type": "string",
            # Money is never negative; a sign of change is carried elsewhere (e.g. ``delta``).
            "pattern": r"^\d+(\.\d+)?$",
            "description": 'Decimal amount with the decimals of its currency, e.g. "19.90".',
            "examples": ["19.90"],
        },
        "currency": CURRENCY,
    },
    "required": ["amount", "currency"],
    "additionalProperties": False,
}
ORDER_STATUS: Schema = {"type": "string", "enum": [s.value for s in OrderStatus]}
SUBSCRIPTION_STATUS: Schema = {"type": "string", "enum": [s.value for s in SubscriptionStatus]}
ATTRIBUTES: Schema = {
    "type": "object",
    "description": 'Attributes of the variant by name, e.g. {"color": "red"}.',
    "minProperties": 1,
    "propertyNames": {"minLength": 1},
    "additionalProperties": NON_EMPTY,
    "examples": [{"color": "teal"}],
}
ADDRESS: Schema = {
    "type": "object",
    "title": "Address",
    "properties": {
        "line1": NON_EMPTY,
        "line2": NULLABLE_STRING,
        "city": NON_EMPTY,
        "postalCode": NON_EMPTY,
        "country": {
            "type": "string",
            "pattern": "^[A-Z]{2}$",
            "description": "ISO 3166-1 alpha-2 country code, e.g. DE.",
            "examples": ["DE"],
        },
    },
    "required": ["line1", "line2", "city", "postalCode", "country"],
    "additionalProperties": False,
}


def _object(title: str, description: str, properties: dict[str, Schema]) -> Schema:
    """A strict object: every property required, nothing else allowed."""
    return {
        "type": "object",
        "title": title,
        "description": description,
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _entity(title: str, description: str, properties: dict[str, Schema]) -> Schema:
    """An entity view: ``id``, ``storeId``, ``version``, its own fields, then its times."""
    return _object(
        title,
        description,
        {
            "id": ID,
            "storeId": ID,
            "version": VERSION,
            **properties,
            "createdAt": TIMESTAMP,
            "updatedAt": TIMESTAMP,
        },
    )


# An email address as stored: what its command accepted when it was recorded — an @ after
# a local part, by every version's rule (new input's, domain.values.EMAIL_PATTERN, is
# stricter and is the API's request schemas' to publish).
EMAIL: Schema = {
    "type": "string",
    "pattern": "^[^@]+@",
    "description": "An email address.",
    "examples": ["customer@example.com"],
}


# Entity views (exactly ``application.views``) -------------------------------------------

CUSTOMER: Schema = _entity(
    "Customer",
    "A customer of the store, with their saved addresses.",
    {
        "email": EMAIL,
        "name": NON_EMPTY,
        "phone": NULLABLE_STRING,
        "verified": {"type": "boolean"},
        "addresses": {"type": "array", "items": ADDRESS},
        "deletionRequested": {
            "type": "boolean",
            "description": "True once the customer asked to be deleted; no changes follow.",
        },
    },
)
PRODUCT: Schema = _entity(
    "Product",
    "A product of the store's catalog; it has variants.",
    {"name": NON_EMPTY, "description": NULLABLE_STRING},
)
VARIANT: Schema = _entity(
    "Variant",
    "One attribute combination of a product (e.g. colour and size); it has SKUs.",
    {"productId": ID, "attributes": ATTRIBUTES},
)
SKU: Schema = _entity(
    "SKU",
    "The sellable unit of a variant: a code, a price and a stock level.",
    {
        "productId": ID,
        "variantId": ID,
        "code": NON_EMPTY,
        "price": MONEY,
        "stock": {"type": "integer", "minimum": 0},
    },
)
_ORDER_LINE_FIELDS: dict[str, Schema] = {
    "skuId": ID,
    "quantity": {"type": "integer", "minimum": 1},
    "unitPrice": {**MONEY, "description": "The SKU's price when the order was placed."},
    "total": MONEY,
}
ORDER_LINE: Schema = _object("Order line", "One line of an order.", _ORDER_LINE_FIELDS)


def _order(line: Schema) -> Schema:
    return _entity(
        "Order",
        "A customer's order: lines with frozen unit prices, a status, payments and refunds.",
        {
            "customerId": ID,
            "currency": CURRENCY,
            "status": ORDER_STATUS,
            "lines": {"type": "array", "minItems": 1, "items": line},
            "total": MONEY,
            "amountPaid": MONEY,
            "amountRefunded": MONEY,
            "amountDue": MONEY,
        },
    )


ORDER: Schema = _order(ORDER_LINE)
SUBSCRIPTION: Schema = _entity(
    "Subscription",
    "A customer's recurring purchase of one SKU.",
    {
        "customerId": ID,
        "skuId": ID,
        "interval": {"type": "string", "enum": list(INTERVALS)},
        "price": MONEY,
        "status": SUBSCRIPTION_STATUS,
        "currentPeriodEnd": TIMESTAMP,
    },
)

ENTITY_SCHEMAS: dict[str, Schema] = {
    "customer": CUSTOMER,
    "product": PRODUCT,
    "variant": VARIANT,
    "sku": SKU,
    "order": ORDER,
    "subscription": SUBSCRIPTION,
}
"""The schema of each entity's JSON view, as ``GET /v1/...`` answers it."""

# In an envelope, each order line also carries its SKU, variant and product as they were.
ORDER_LINE_SNAPSHOT: Schema = _object(
    "Order line",
    "One line of the order, with its SKU, variant and product as they were at the event.",
    {**_ORDER_LINE_FIELDS, "sku": SKU, "variant": VARIANT, "product": PRODUCT},
)
ORDER_SNAPSHOT: Schema = _order(ORDER_LINE_SNAPSHOT)

# The relations carried next to ``change``, by entity, in envelope order.
RELATIONS: dict[str, dict[str, Schema]] = {
    "customer": {"customer": CUSTOMER},
    "product": {"product": PRODUCT},
    "variant": {"variant": VARIANT, "product": PRODUCT},
    "sku": {"sku": SKU, "variant": VARIANT, "product": PRODUCT},
    "order": {"order": ORDER_SNAPSHOT, "customer": CUSTOMER},
    "subscription": {
        "subscription": SUBSCRIPTION,
        "customer": CUSTOMER,
        "sku": SKU,
        "variant": VARIANT,
        "product": PRODUCT,
    },
}

# What each event did ---------------------------------------------------------------------


def _change(properties: dict[str, Schema] | None = None, *, optional: bool = False) -> Schema:
    """The ``change`` object: its fields all required, or (``optional``) each one if given."""
    properties = properties or {}
    return {
        "type": "object",
        "description": "What this event changed.",
        "properties": properties,
        "required": [] if optional else list(properties),
        "additionalProperties": False,
    }


NOTHING = _change()

# One entry per event type: (description, change schema).
_EVENTS: dict[str, tuple[str, Schema]] = {
    "order.created": (
        "An order was placed; its lines hold the unit prices frozen at this moment.",
        NOTHING,
    ),
    "order.status_updated": (
        "An order moved along its status machine (pending, processing, shipped, delivered, "
        "or cancelled).",
        _change({"status": ORDER_STATUS, "previousStatus": ORDER_STATUS}),
    ),
    "order.paid": (
        "A payment was recorded on an order; change.amount is this payment, the order shows "
        "the totals paid and due.",
        _change({"amount": MONEY}),
    ),
    "order.refunded": (
        "Part or all of an order's payments was refunded; change.amount is this refund.",
        _change({"amount": MONEY, "reason": NULLABLE_STRING}),
    ),
    "customer.registered": ("A new customer was registered with the store.", NOTHING),
    "customer.updated": (
        "A customer's profile changed; change holds only the fields that were given.",
        _change(
            {
                "email": EMAIL,
                "name": NON_EMPTY,
                "phone": NULLABLE_STRING,
            },
            optional=True,
        ),
    ),
    "customer.verified": ("A customer was marked as verified.", NOTHING),
    "customer.address_saved": (
        "A customer saved a new address; change.address is that address.",
        _change({"address": ADDRESS}),
    ),
    "customer.deletion_requested": (
        "A customer asked to be deleted; their profile accepts no further changes, so delete "
        "their personal data on your side too.",
        NOTHING,
    ),
    "product.created": ("A product was added to the store's catalog.", NOTHING),
    "product.updated": (
        "A product's name or description changed; change holds only the fields that were given.",
        _change({"name": NON_EMPTY, "description": NULLABLE_STRING}, optional=True),
    ),
    "variant.created": ("A variant (an attribute combination) was added to a product.", NOTHING),
    "variant.updated": (
        "A variant's attributes were replaced; change.attributes is the new set.",
        _change({"attributes": ATTRIBUTES}),
    ),
    "sku.created": (
        "A SKU (a sellable unit with a code, a price and a stock level) was added to a variant.",
        NOTHING,
    ),
    "sku.price_changed": (
        "A SKU's price changed; orders already placed keep the price they were placed at.",
        _change({"price": MONEY, "previousPrice": MONEY}),
    ),
    "sku.stock_changed": (
        "A SKU's stock level changed — set by the merchant, taken by an order placed (it "
        "follows the order.created), or put back by an order cancelled; change.quantity "
        "is the new level and change.delta the signed difference.",
        _change({"quantity": {"type": "integer", "minimum": 0}, "delta": {"type": "integer"}}),
    ),
    "subscription.created": (
        "A customer subscribed to a SKU at its current price; the first period has begun.",
        NOTHING,
    ),
    "subscription.renewed": (
        "A subscription was renewed for another period and is active; change.currentPeriodEnd "
        "is the new end of the period.",
        _change({"currentPeriodEnd": TIMESTAMP}),
    ),
    "subscription.payment_failed": (
        "A subscription's payment failed and it is now past due.",
        _change({"reason": NULLABLE_STRING}),
    ),
    "subscription.paused": ("A subscription was paused until it is resumed.", NOTHING),
    "subscription.resumed": ("A paused subscription was resumed and is active again.", NOTHING),
    "subscription.cancelled": (
        "A subscription was cancelled; nothing more will happen to it.",
        NOTHING,
    ),
    "subscription.expired": (
        "A subscription reached its end and expired; nothing more will happen to it.",
        NOTHING,
    ),
}


@dataclass(frozen=True)
class EventTypeInfo:
    """One entry of the catalog: an event type, its entity, what it means, its data's schema."""

    name: str
    entity: str
    description: str
    schema: Schema = field(hash=False, repr=False)


def _data_schema(name: str, entity: str, description: str, change: Schema) -> Schema:
    relations = RELATIONS[entity]
    return {
        "$schema": DIALECT,
        "title": f"{name} data",
        "description": description,
        "type": "object",
        "properties": {**relations, "change": change},
        "required": [*relations, "change"],
        "additionalProperties": False,
    }


def _build() -> dict[str, EventTypeInfo]:
    # The aggregates are the one source of truth for the names; the table above must
    # describe exactly those, or the catalog would document an event never sent.
    missing = set(EVENT_CLASSES) - set(_EVENTS)
    extra = set(_EVENTS) - set(EVENT_CLASSES)
    if missing or extra:
        raise RuntimeError(
            f"event catalog out of step with the domain: missing {sorted(missing)}, "
            f"unknown {sorted(extra)}"
        )
    catalog = {}
    for name in sorted(EVENT_CLASSES):
        entity = name.split(".", 1)[0]
        description, change = _EVENTS[name]
        schema = _data_schema(name, entity, description, change)
        catalog[name] = EventTypeInfo(name, entity, description, schema)
    return catalog


CATALOG: dict[str, EventTypeInfo] = _build()


def data_schema(event_type: str) -> Schema:
    """The JSON Schema of ``data`` for an event type (a copy: callers may change it)."""
    try:
        info = CATALOG[event_type]
    except KeyError:
        raise LookupError(f"{event_type!r} is not an event type") from None
    return copy.deepcopy(info.schema)


def catalog_json() -> list[dict[str, Any]]:
    """What ``GET /v1/event-types`` lists: every event type, sorted by name."""
    return [
        {
            "name": info.name,
            "entity": info.entity,
            "description": info.description,
            "schema": copy.deepcopy(info.schema),
        }
        for _, info in sorted(CATALOG.items())
    ]
