"""Sample data for test events, generated from the event catalog's JSON Schemas.

The catalog (`application.catalog`) is the one source of truth for what ``data`` holds, so
a sample is derived from it rather than written out by hand: every property of every
object, one item per array, and for each scalar the schema's first ``examples`` entry,
its first ``enum`` value, or what its type and format say. Ids are consistent within a
sample — ``order.customerId`` is ``customer.id``, each line's ``skuId`` its ``sku.id`` —
and fresh for every test event, so a test never looks like a real entity of the store.

A schema the generator cannot satisfy (a ``pattern`` without an example) raises, and the
tests check that every event type's sample validates against its schema.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from application import views
from application.catalog import CATALOG, Schema
from application.errors import InvalidRequest
from domain.event_types import EVENT_CLASSES
from domain.webhook import matches

JSON = dict[str, Any]


class _Sample:
    def __init__(self, seed: UUID, store_id: UUID, at: datetime) -> None:
        self.seed = seed
        self.store_id = store_id
        self.at = at

    def id_of(self, kind: str) -> str:
        if kind == "store":
            return str(self.store_id)
        return str(uuid5(self.seed, kind))

    def value(self, schema: Schema, name: str, owner: str) -> Any:
        """A value for ``schema``, found at property ``name`` of an object at ``owner``."""
        if "examples" in schema:
            return copy.deepcopy(schema["examples"][0])
        if "enum" in schema:
            return schema["enum"][0]
        if "anyOf" in schema:
            return self.value(schema["anyOf"][0], name, owner)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next(k for k in kind if k != "null")
        if kind == "object":
            properties = schema.get("properties", {})
            return {key: self.value(sub, key, name) for key, sub in properties.items()}
        if kind == "array":
            count = max(schema.get("minItems", 1), 1)
            return [self.value(schema["items"], name, owner) for _ in range(count)]
        if kind == "string":
            return self._string(schema, name, owner)
        if kind in ("integer", "number"):
            return max(schema.get("minimum", 0), 1 if kind == "integer" else 0)
        if kind == "boolean":
            return False
        raise ValueError(f"no sample for the schema of {owner}.{name}: {schema}")

    def _string(self, schema: Schema, name: str, owner: str) -> str:
        match schema.get("format"):
            case "uuid":
                # `id` is its object's own; `customerId` names the customer's.
                return self.id_of(owner if name == "id" else name.removesuffix("Id"))
            case "date-time":
                return views.timestamp(self.at)
            case "email":
                return "customer@example.com"
        if "pattern" in schema:
            raise ValueError(f"{owner}.{name} has a pattern: give its schema an example")
        return f"sample {name}"


def sample_data(event_type: str, seed: UUID, store_id: UUID, at: datetime) -> JSON:
    """The ``data`` of a sample ``event_type`` event; ``seed`` makes its ids."""
    schema = CATALOG[event_type].schema
    data: JSON = _Sample(seed, store_id, at).value(schema, "data", "")
    return data


def sample_entity_id(event_type: str, seed: UUID) -> UUID:
    """The id of the entity the sample event happened to."""
    return uuid5(seed, CATALOG[event_type].entity)


def choose_test_event_type(listens_to: list[str], wanted: str | None) -> str:
    """The event type of a test: ``wanted`` if the webhook listens to it, else the first
    type it listens to (in the catalog's order: order events first)."""
    if wanted is None:
        return next(name for name in EVENT_CLASSES if matches(listens_to, name))
    if wanted not in EVENT_CLASSES:
        raise InvalidRequest("is not an event type of GET /v1/event-types", field="eventType")
    if not matches(listens_to, wanted):
        raise InvalidRequest(
            f"this webhook does not listen to {wanted} (it listens to {', '.join(listens_to)})",
            field="eventType",
        )
    return wanted
