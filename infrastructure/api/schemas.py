"""JSON Schemas of the API's request bodies (SPEC §8) and of its own responses.

Each schema validates the request before a handler runs and is published as-is in
`/openapi.json`. Entity responses reuse the event catalog's entity schemas, so the API and
the webhooks describe an order the same way.
"""

from __future__ import annotations

from typing import Any

from application.catalog import ENTITY_SCHEMAS, ID, TIMESTAMP
from domain.order import OrderStatus
from domain.values import (
    CURRENCIES,
    EMAIL_PATTERN,
    MULTILINE_TEXT_PATTERN,
    NAME_PATTERN,
    TEXT_PATTERN,
    amount_pattern,
    currencies_by_decimals,
)
from domain.webhook import (
    EVENT_TYPE_PATTERNS,
    HEADER_NAME_PATTERN,
    HEADER_VALUE_PATTERN,
    MAX_HEADER_VALUE,
    RATE_LIMIT_RANGE,
)
from infrastructure.ssrf import URL_PATTERN

Schema = dict[str, Any]

# Text for people holds no control characters (domain.values: the one rule); free text
# that may run over several lines (descriptions, reasons) also takes tab and line breaks.
SINGLE_LINE: Schema = {"type": "string", "pattern": TEXT_PATTERN}
MULTILINE: Schema = {"type": "string", "pattern": MULTILINE_TEXT_PATTERN}
NAME: Schema = {"type": "string", "pattern": NAME_PATTERN}  # one line, not blank

AMOUNT: Schema = {
    "type": "string",
    "pattern": r"^[0-9]{1,15}(\.[0-9]{1,4})?$",
    "description": "A decimal amount as a string, e.g. `19.90`, with at most the decimals "
    "of its currency (trailing zeros aside).",
    "examples": ["19.90"],
}
CURRENCY: Schema = {"type": "string", "enum": sorted(CURRENCIES), "examples": ["EUR"]}


def money(extra: Schema | None = None) -> Schema:
    """`{"amount", "currency"}`, the amount with the decimals its currency has."""
    by_currency = [
        {
            "if": {"properties": {"currency": {"enum": codes}}},
            "then": {"properties": {"amount": {"pattern": amount_pattern(decimals)}}},
        }
        for decimals, codes in sorted(currencies_by_decimals().items())
    ]
    return {
        "type": "object",
        "properties": {"amount": AMOUNT, "currency": CURRENCY, **(extra or {})},
        "required": ["amount", "currency"],
        "additionalProperties": False,
        "allOf": by_currency,
    }


TEXT: Schema = {**NAME, "minLength": 1, "maxLength": 1000}
OPTIONAL_TEXT: Schema = {**SINGLE_LINE, "type": ["string", "null"], "maxLength": 1000}
OPTIONAL_FREE_TEXT: Schema = {**MULTILINE, "type": ["string", "null"], "maxLength": 1000}
# An email address as the domain checks it (domain.values.EMAIL_PATTERN), not JSON
# Schema's `email` format, which validators read differently (RFC 5321 or just an @).
EMAIL: Schema = {
    **SINGLE_LINE,
    "maxLength": 254,
    "allOf": [{"pattern": EMAIL_PATTERN}],
    "description": "An email address: no white space, one @, a dot in the domain.",
    "examples": ["ann@example.com"],
}
INITIATED_BY: Schema = {
    **SINGLE_LINE,
    "type": ["string", "null"],
    "maxLength": 254,
    "allOf": [{"pattern": EMAIL_PATTERN}],
    "description": "Who caused this command, for system keys acting for a person: an "
    "email, or null for the system. Keys that act for a person always record that person.",
}
COUNT: Schema = {"type": "integer", "minimum": 0, "maximum": 1_000_000_000}


def body(properties: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    """A command's request body: exactly these fields, plus the optional `initiatedBy`."""
    return {
        "type": "object",
        "properties": {**properties, "initiatedBy": INITIATED_BY},
        "required": list(required),
        "additionalProperties": False,
        **extra,
    }


EMPTY = body({})

CUSTOMER_CREATE = body({"email": EMAIL, "name": TEXT, "phone": OPTIONAL_TEXT}, ("email", "name"))
CUSTOMER_UPDATE = body(
    {"email": EMAIL, "name": TEXT, "phone": OPTIONAL_TEXT},
    minProperties=1,
)
ADDRESS = body(
    {
        "line1": TEXT,
        "line2": OPTIONAL_TEXT,
        "city": TEXT,
        "postalCode": {**NAME, "minLength": 1, "maxLength": 20},
        "country": {"type": "string", "pattern": "^[A-Z]{2}$", "examples": ["DE"]},
    },
    ("line1", "city", "postalCode", "country"),
)
PRODUCT_CREATE = body({"name": TEXT, "description": OPTIONAL_FREE_TEXT}, ("name",))
PRODUCT_UPDATE = body({"name": TEXT, "description": OPTIONAL_FREE_TEXT}, minProperties=1)
ATTRIBUTES: Schema = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": 50,
    "additionalProperties": {**NAME, "minLength": 1, "maxLength": 200},
    "propertyNames": {**NAME, "minLength": 1, "maxLength": 100},
    "examples": [{"color": "red", "size": "M"}],
}
VARIANT = body({"attributes": ATTRIBUTES}, ("attributes",))
PRICE = {**money({"initiatedBy": INITIATED_BY})}
SKU_CREATE = body(
    {
        "code": {**NAME, "minLength": 1, "maxLength": 100},
        "price": money(),
        "stock": COUNT,
    },
    ("code", "price", "stock"),
)
STOCK = body(
    {
        "quantity": {**COUNT, "description": "The new absolute stock level."},
        "delta": {"type": "integer", "minimum": -1_000_000_000, "maximum": 1_000_000_000},
    },
    oneOf=[{"required": ["quantity"]}, {"required": ["delta"]}],
)
ORDER_CREATE = body(
    {
        "customerId": {"type": "string", "format": "uuid"},
        "currency": CURRENCY,
        "lines": {
            "type": "array",
            "minItems": 1,
            "maxItems": 500,
            "items": {
                "type": "object",
                "properties": {
                    "skuId": {"type": "string", "format": "uuid"},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                },
                "required": ["skuId", "quantity"],
                "additionalProperties": False,
            },
        },
    },
    ("customerId", "currency", "lines"),
)
ORDER_STATUS = body(
    {"status": {"type": "string", "enum": [status.value for status in OrderStatus]}}, ("status",)
)
PAYMENT = body({"amount": AMOUNT}, ("amount",))
REFUND = body({"amount": AMOUNT, "reason": OPTIONAL_FREE_TEXT}, ("amount",))
SUBSCRIPTION_CREATE = body(
    {
        "customerId": {"type": "string", "format": "uuid"},
        "skuId": {"type": "string", "format": "uuid"},
        "interval": {"type": "string", "enum": ["month", "year"]},
    },
    ("customerId", "skuId", "interval"),
)
PAYMENT_FAILURE = body({"reason": OPTIONAL_FREE_TEXT})

URL: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 2048,
    "pattern": URL_PATTERN,
    "description": "An https URL (http only to targets the operator allow-lists). The "
    "SSRF policy refuses a URL whose host is or resolves to a loopback, private, "
    "link-local, multicast or reserved address: a 422 naming `url`.",
    "examples": ["https://shop.example/hooks"],
}
EVENT_TYPES: Schema = {
    "type": "array",
    "minItems": 1,
    "maxItems": 100,
    "items": {"type": "string", "enum": list(EVENT_TYPE_PATTERNS)},
    "description": "Exact event type names, `entity.*`, or `*`.",
    "examples": [["order.*", "customer.registered"]],
}
HEADERS: Schema = {
    "type": "object",
    "maxProperties": 20,
    "propertyNames": {"pattern": HEADER_NAME_PATTERN},
    "additionalProperties": {
        "type": "string",
        "maxLength": MAX_HEADER_VALUE,
        "pattern": HEADER_VALUE_PATTERN,
    },
    "description": "Custom headers sent with every delivery: names are HTTP tokens, values "
    "visible ASCII with spaces or tabs only between characters. Framing, hop-by-hop and "
    "our own headers (`host`, `content-*`, `accept-encoding`, `webhook-*`, `webround-*`, "
    "…) cannot be set. Values are stored encrypted and never shown again.",
}
TIMEOUT: Schema = {"type": "integer", "minimum": 1, "maximum": 30, "default": 15}
RATE_LIMIT: Schema = {
    "type": ["number", "null"],
    "minimum": RATE_LIMIT_RANGE[0],
    "maximum": RATE_LIMIT_RANGE[1],
    "description": "At most this many deliveries per second to this webhook (0.01: one "
    "every 100 s); null: no limit.",
}
_WEBHOOK_FIELDS: dict[str, Schema] = {
    "url": URL,
    "eventTypes": EVENT_TYPES,
    "description": {**MULTILINE, "maxLength": 1000},
    "headers": HEADERS,
    "timeoutSeconds": TIMEOUT,
    "rateLimit": RATE_LIMIT,
    "enabled": {"type": "boolean"},
}
WEBHOOK_CREATE = body(_WEBHOOK_FIELDS, ("url", "eventTypes"))
WEBHOOK_UPDATE = body(
    {**_WEBHOOK_FIELDS, "disabledReason": {**MULTILINE, "minLength": 1, "maxLength": 500}},
    minProperties=1,
)
ROTATE = body(
    {
        "gracePeriodSeconds": {
            "type": "integer",
            "minimum": 0,
            "maximum": 7 * 86400,
            "default": 86400,
        }
    }
)

# Responses ----------------------------------------------------------------------------

WEBHOOK: Schema = {
    "type": "object",
    "properties": {
        "id": ID,
        "storeId": ID,
        "url": {"type": "string"},
        "eventTypes": {"type": "array", "items": {"type": "string"}},
        "description": {"type": "string"},
        "headers": {
            "type": "object",
            "additionalProperties": {"const": "[redacted]"},
            "description": "Custom header names; values are never shown.",
        },
        "timeoutSeconds": {"type": "integer"},
        "rateLimit": {"type": ["number", "null"]},
        "enabled": {"type": "boolean"},
        "disabledReason": {"type": ["string", "null"]},
        "previousSecretExpiresAt": {"anyOf": [TIMESTAMP, {"type": "null"}]},
        "circuit": {
            "type": "object",
            "description": "The circuit breaker: `open` while deliveries are "
            "held after repeated failures, `half-open` while one probes the endpoint.",
            "properties": {
                "state": {"enum": ["closed", "open", "half-open"]},
                "openUntil": {"anyOf": [TIMESTAMP, {"type": "null"}]},
                "consecutiveFailures": {"type": "integer"},
                "failingSince": {"anyOf": [TIMESTAMP, {"type": "null"}]},
                "lastSuccessAt": {"anyOf": [TIMESTAMP, {"type": "null"}]},
            },
            "required": [
                "state",
                "openUntil",
                "consecutiveFailures",
                "failingSince",
                "lastSuccessAt",
            ],
            "additionalProperties": False,
        },
        "createdAt": TIMESTAMP,
        "updatedAt": TIMESTAMP,
        "version": {"type": "integer"},
    },
    "required": [
        "id",
        "storeId",
        "url",
        "eventTypes",
        "description",
        "headers",
        "timeoutSeconds",
        "rateLimit",
        "enabled",
        "disabledReason",
        "previousSecretExpiresAt",
        "circuit",
        "createdAt",
        "updatedAt",
        "version",
    ],
    "additionalProperties": False,
}
SECRET: Schema = {
    "type": "string",
    "pattern": "^whsec_[A-Za-z0-9+/=]+$",
    "description": "The signing secret, shown this once and never again.",
}
WEBHOOK_WITH_SECRET: Schema = {
    **WEBHOOK,
    "properties": {**WEBHOOK["properties"], "secret": SECRET},
    "required": [*WEBHOOK["required"], "secret"],
}


def page_of(item: Schema) -> Schema:
    return {
        "type": "object",
        "properties": {
            "data": {"type": "array", "items": item},
            "nextCursor": {"type": ["string", "null"]},
        },
        "required": ["data", "nextCursor"],
        "additionalProperties": False,
    }


EVENT_TYPE: Schema = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "entity": {"type": "string"},
        "description": {"type": "string"},
        "schema": {"type": "object", "description": "JSON Schema of the envelope's `data`."},
    },
    "required": ["name", "entity", "description", "schema"],
    "additionalProperties": False,
}
PROBLEM: Schema = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                "required": ["field", "message"],
            },
        },
    },
    "required": ["type", "title", "status", "detail"],
}


def entity(name: str) -> Schema:
    return ENTITY_SCHEMAS[name]
