"""The event catalog of §4: every event type, documented by a strict JSON Schema of its data.

The schemas are checked against what the application really produces: entity views come
from a `Commerce` application driven in memory, and example `data` objects are assembled
from those views exactly as the envelope contract (the module docstring) describes.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest
from jsonschema import Draft202012Validator

from application.catalog import (
    CATALOG,
    ENTITY_SCHEMAS,
    EventTypeInfo,
    catalog_json,
    data_schema,
)
from application.commerce import Commerce
from domain.event_types import EVENT_CLASSES
from domain.values import Actor

JSON = dict[str, Any]

STORE = UUID("00000000-0000-4000-8000-0000000000aa")
ACTOR = Actor.person("a@b.example")
EVENT_TYPE_NAMES = sorted(EVENT_CLASSES)


def errors(schema: JSON, instance: object) -> list[str]:
    """Every validation error, with format checking on (uuid, email, ...)."""
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]


@dataclass(frozen=True)
class Views:
    """The JSON views the real application answered, one per entity."""

    customer: JSON
    product: JSON
    variant: JSON
    sku: JSON
    order: JSON
    subscription: JSON

    def of(self, entity: str) -> JSON:
        view: JSON = getattr(self, entity)
        return view

    @property
    def order_snapshot(self) -> JSON:
        """The order as an envelope carries it: each line with its SKU, variant, product."""
        lines = [
            {**line, "sku": self.sku, "variant": self.variant, "product": self.product}
            for line in self.order["lines"]
        ]
        return {**self.order, "lines": lines}


@pytest.fixture(scope="module")
def views() -> Views:
    app = Commerce(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    customer = app.register_customer(STORE, "ada@shop.example", "Ada", "+49 30 123456", ACTOR)
    customer_id = UUID(customer["id"])
    app.verify_customer(STORE, customer_id, ACTOR)
    customer = app.save_customer_address(
        STORE,
        customer_id,
        ACTOR,
        line1="Unter den Linden 1",
        city="Berlin",
        postal_code="10117",
        country="DE",
    )
    product = app.create_product(STORE, "Mug", None, ACTOR)
    variant = app.create_variant(STORE, UUID(product["id"]), {"color": "red"}, ACTOR)
    sku = app.create_sku(STORE, UUID(variant["id"]), "MUG-RED", "19.90", "EUR", 10, ACTOR)
    order = app.place_order(STORE, customer_id, "EUR", [(UUID(sku["id"]), 2)], ACTOR)
    app.update_order_status(STORE, UUID(order["id"]), "processing", ACTOR)
    order = app.pay_order(STORE, UUID(order["id"]), "19.90", ACTOR)
    subscription = app.start_subscription(STORE, customer_id, UUID(sku["id"]), "month", ACTOR)
    subscription = app.change_subscription(
        STORE, UUID(subscription["id"]), "payment-failure", ACTOR, reason="card declined"
    )
    return Views(customer, product, variant, sku, order, subscription)


def money(amount: str) -> JSON:
    return {"amount": amount, "currency": "EUR"}


# What each event did, as the envelope's `change` carries it.
CHANGES: dict[str, Callable[[Views], JSON]] = {
    "order.created": lambda v: {},
    "order.status_updated": lambda v: {"status": "processing", "previousStatus": "pending"},
    "order.paid": lambda v: {"amount": money("19.90")},
    "order.refunded": lambda v: {"amount": money("5.00"), "reason": None},
    "customer.registered": lambda v: {},
    "customer.updated": lambda v: {"name": "Ada L.", "phone": "+49 30 654321"},
    "customer.verified": lambda v: {},
    "customer.address_saved": lambda v: {"address": v.customer["addresses"][0]},
    "customer.deletion_requested": lambda v: {},
    "product.created": lambda v: {},
    "product.updated": lambda v: {"description": "A red mug"},
    "variant.created": lambda v: {},
    "variant.updated": lambda v: {"attributes": v.variant["attributes"]},
    "sku.created": lambda v: {},
    "sku.price_changed": lambda v: {"price": v.sku["price"], "previousPrice": money("21.00")},
    "sku.stock_changed": lambda v: {"quantity": 8, "delta": -2},
    "subscription.created": lambda v: {},
    "subscription.renewed": lambda v: {"currentPeriodEnd": v.subscription["currentPeriodEnd"]},
    "subscription.payment_failed": lambda v: {"reason": "card declined"},
    "subscription.paused": lambda v: {},
    "subscription.resumed": lambda v: {},
    "subscription.cancelled": lambda v: {},
    "subscription.expired": lambda v: {},
}

# A `change` of the wrong shape for each event type, and what is wrong with it.
WRONG_CHANGES: dict[str, JSON] = {
    "order.created": {"status": "pending"},  # a creation changes no field
    "order.status_updated": {"status": "paid", "previousStatus": "pending"},  # not a status
    "order.paid": {"amount": "19.90"},  # a bare string, not money
    "order.refunded": {"amount": money("5.00")},  # reason missing (null when none)
    "customer.registered": {"email": "ada@shop.example"},
    "customer.updated": {"verified": True},  # not a profile field
    "customer.verified": {"verified": True},
    "customer.address_saved": {"address": {"line1": "Unter den Linden 1", "city": "Berlin"}},
    "customer.deletion_requested": {"reason": "privacy"},
    "product.created": {"name": "Mug"},
    "product.updated": {"name": ""},  # a product's name is never empty
    "variant.created": {"attributes": {"color": "red"}},
    "variant.updated": {},  # the new attributes are missing
    "sku.created": {"stock": 10},
    "sku.price_changed": {"price": {"amount": 17.5, "currency": "EUR"}, "previousPrice": None},
    "sku.stock_changed": {"quantity": -1, "delta": -11},  # stock never goes negative
    "subscription.created": {"status": "active"},
    "subscription.renewed": {"currentPeriodEnd": "2025-02-28"},  # a date, not a timestamp
    "subscription.payment_failed": {},  # reason missing (null when none)
    "subscription.paused": {"status": "paused"},
    "subscription.resumed": {"status": "active"},
    "subscription.cancelled": {"status": "cancelled"},
    "subscription.expired": {"status": "expired"},
}


def example_data(event_type: str, views: Views, change: JSON) -> JSON:
    """A `data` object assembled as the envelope contract says, from the real views."""
    entity = event_type.split(".")[0]
    relations: dict[str, JSON] = {
        "customer": {"customer": views.customer},
        "product": {"product": views.product},
        "variant": {"variant": views.variant, "product": views.product},
        "sku": {"sku": views.sku, "variant": views.variant, "product": views.product},
        "order": {"order": views.order_snapshot, "customer": views.customer},
        "subscription": {
            "subscription": views.subscription,
            "customer": views.customer,
            "sku": views.sku,
            "variant": views.variant,
            "product": views.product,
        },
    }
    return copy.deepcopy({**relations[entity], "change": change})


# The catalog itself -----------------------------------------------------------------------


def test_the_catalog_covers_exactly_the_event_types_of_the_domain() -> None:
    # Given the event types derived from the aggregates
    expected = set(EVENT_CLASSES)

    # When the catalog is read
    names = set(CATALOG)

    # Then it documents each of them, no fewer and no more
    assert names == expected
    assert len(names) == 23
    assert all(isinstance(info, EventTypeInfo) for info in CATALOG.values())
    assert {name for name, info in CATALOG.items() if info.name != name} == set()


@pytest.mark.parametrize("event_type", EVENT_TYPE_NAMES)
def test_each_event_type_names_its_entity_and_describes_itself(event_type: str) -> None:
    # Given an event type such as `order.paid`
    info = CATALOG[event_type]

    # Then its entity is the part before the dot, one of the store entities
    assert info.entity == event_type.split(".")[0]
    assert info.entity in ENTITY_SCHEMAS
    # And its description is one sentence written for a receiving developer
    assert info.description[0].isupper()
    assert info.description.endswith(".")
    assert info.description.count(". ") == 0
    assert info.schema["description"] == info.description


def test_descriptions_are_distinct() -> None:
    # Given every description in the catalog
    descriptions = [info.description for info in CATALOG.values()]

    # Then no two event types share one (each says what is particular to it)
    assert len(set(descriptions)) == len(descriptions)


def test_catalog_json_lists_every_event_type_sorted_by_name() -> None:
    # When the API's answer is built
    listed = catalog_json()

    # Then it lists each event type once, sorted, with exactly the documented keys
    assert [item["name"] for item in listed] == EVENT_TYPE_NAMES
    assert {frozenset(item) for item in listed} == {
        frozenset({"name", "entity", "description", "schema"})
    }
    paid = next(item for item in listed if item["name"] == "order.paid")
    assert paid["entity"] == "order"
    assert paid["description"] == CATALOG["order.paid"].description
    assert paid["schema"] == data_schema("order.paid")
    # And it is plain JSON that survives a round trip unchanged
    assert json.loads(json.dumps(listed)) == listed


def test_schemas_handed_out_are_copies_the_caller_may_change() -> None:
    # Given the schema of order.paid and the API listing
    schema = data_schema("order.paid")
    listed = catalog_json()

    # When a caller changes what it received
    schema["properties"]["order"]["properties"]["total"]["type"] = "number"
    listed[0]["schema"]["required"].clear()

    # Then the catalog itself is unchanged
    money_schema = CATALOG["order.paid"].schema["properties"]["order"]["properties"]["total"]
    assert money_schema["type"] == "object"
    assert data_schema(listed[0]["name"])["required"] != []


def test_an_unknown_event_type_has_no_schema() -> None:
    # When the schema of an event type that does not exist is asked for
    # Then the answer is a lookup error naming it
    with pytest.raises(LookupError, match=r"order\.shipped"):
        data_schema("order.shipped")


# Schemas are valid Draft 2020-12 ------------------------------------------------------------


@pytest.mark.parametrize("event_type", EVENT_TYPE_NAMES)
def test_every_data_schema_is_a_valid_draft_2020_12_schema(event_type: str) -> None:
    # Given the data schema of an event type
    schema = data_schema(event_type)

    # Then it declares its dialect and passes the metaschema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    # And it is strict at the top: every relation and the change, nothing else
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"])
    assert "change" in schema["required"]
    assert event_type.split(".")[0] in schema["required"]


@pytest.mark.parametrize("entity", sorted(ENTITY_SCHEMAS))
def test_every_entity_schema_is_a_valid_draft_2020_12_schema(entity: str) -> None:
    # Given the schema of an entity's JSON view
    schema = ENTITY_SCHEMAS[entity]

    # Then it passes the metaschema and requires every key it knows, allowing no other
    Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"])


# The real views validate, and the schemas are strict ------------------------------------------


@pytest.mark.parametrize("entity", sorted(ENTITY_SCHEMAS))
def test_the_views_of_the_real_application_validate(views: Views, entity: str) -> None:
    # Given the view the commerce application answered for this entity
    view = views.of(entity)

    # When it is validated against the entity's schema, formats checked
    found = errors(ENTITY_SCHEMAS[entity], view)

    # Then it is valid, and the schema names exactly the view's keys
    assert found == []
    assert set(ENTITY_SCHEMAS[entity]["properties"]) == set(view)


def _extra_key(view: JSON) -> None:
    view["internalNote"] = "not part of the view"


def _missing_key(view: JSON) -> None:
    del view["updatedAt"]


def _number_amount(view: JSON) -> None:
    view["price"]["amount"] = 19.9


def _number_amount_in_order_line(view: JSON) -> None:
    view["lines"][0]["unitPrice"]["amount"] = 19.9


def _extra_key_in_address(view: JSON) -> None:
    view["addresses"][0]["state"] = "Berlin"


def _unknown_status(view: JSON) -> None:
    view["status"] = "paid"


def _null_required_string(view: JSON) -> None:
    view["name"] = None


def _id_not_a_uuid(view: JSON) -> None:
    view["id"] = "ord_123"


def _timestamp_without_z(view: JSON) -> None:
    view["createdAt"] = "2025-01-31T08:00:00+01:00"


def _email_without_at(view: JSON) -> None:
    view["email"] = "ada.shop.example"  # caught by the format checker, not by a pattern


def _lowercase_currency(view: JSON) -> None:
    view["currency"] = "eur"


@pytest.mark.parametrize(
    ("entity", "spoil"),
    [
        ("product", _extra_key),
        ("customer", _extra_key),
        ("order", _missing_key),
        ("subscription", _missing_key),
        ("sku", _number_amount),
        ("subscription", _number_amount),
        ("order", _number_amount_in_order_line),
        ("customer", _extra_key_in_address),
        ("order", _unknown_status),
        ("subscription", _unknown_status),
        ("product", _null_required_string),
        ("order", _id_not_a_uuid),
        ("variant", _timestamp_without_z),
        ("customer", _email_without_at),
        ("order", _lowercase_currency),
    ],
)
def test_a_view_that_differs_from_the_contract_fails(
    views: Views, entity: str, spoil: Callable[[JSON], None]
) -> None:
    # Given a real view, spoiled in one way
    view = copy.deepcopy(views.of(entity))
    spoil(view)

    # When it is validated against the entity's schema
    found = errors(ENTITY_SCHEMAS[entity], view)

    # Then validation fails
    assert found != []


# Example data of each event type -----------------------------------------------------------


def test_the_examples_cover_every_event_type() -> None:
    # Then the hand-built changes below cover the catalog exactly
    assert set(CHANGES) == set(CATALOG)
    assert set(WRONG_CHANGES) == set(CATALOG)


@pytest.mark.parametrize("event_type", EVENT_TYPE_NAMES)
def test_data_built_from_real_views_validates(views: Views, event_type: str) -> None:
    # Given data assembled from the real views and the change this event made
    data = example_data(event_type, views, CHANGES[event_type](views))

    # When it is validated against the event type's data schema
    found = errors(data_schema(event_type), data)

    # Then it is valid
    assert found == []


@pytest.mark.parametrize("event_type", EVENT_TYPE_NAMES)
def test_data_with_the_wrong_change_fails(views: Views, event_type: str) -> None:
    # Given data whose relations are right but whose change has the wrong shape
    data = example_data(event_type, views, WRONG_CHANGES[event_type])

    # When it is validated against the event type's data schema
    found = errors(data_schema(event_type), data)

    # Then validation fails, and only because of the change
    assert found != []
    assert all(message.startswith("['change'") for message in found)


@pytest.mark.parametrize("event_type", EVENT_TYPE_NAMES)
def test_data_without_a_change_object_fails(views: Views, event_type: str) -> None:
    # Given otherwise valid data whose change is missing, or not an object
    missing = example_data(event_type, views, {})
    del missing["change"]
    null = example_data(event_type, views, {})
    null["change"] = None

    # Then neither validates
    assert errors(data_schema(event_type), missing) != []
    assert errors(data_schema(event_type), null) != []


def test_an_order_event_carries_each_line_with_its_sku_variant_and_product(
    views: Views,
) -> None:
    # Given order.paid data whose order is the plain view, lines without their relations
    data = example_data("order.paid", views, CHANGES["order.paid"](views))
    data["order"] = copy.deepcopy(views.order)

    # When it is validated
    found = errors(data_schema("order.paid"), data)

    # Then it fails: the snapshot must carry each line's SKU, variant and product
    assert found != []
    assert any("'sku' is a required property" in message for message in found)


def test_a_relation_of_the_wrong_kind_fails(views: Views) -> None:
    # Given sku.created data whose variant slot holds the product instead
    data = example_data("sku.created", views, {})
    data["variant"] = copy.deepcopy(views.product)

    # Then it does not validate
    assert errors(data_schema("sku.created"), data) != []


def test_data_with_an_unexpected_relation_fails(views: Views) -> None:
    # Given product.updated data that also carries a customer
    data = example_data("product.updated", views, {"name": "Cup"})
    data["customer"] = copy.deepcopy(views.customer)

    # Then it does not validate: data holds exactly the documented relations
    assert errors(data_schema("product.updated"), data) != []
