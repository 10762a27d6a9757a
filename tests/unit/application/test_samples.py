"""Test events' sample data: generated from the event catalog's schemas, valid against them."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest
from jsonschema import Draft202012Validator

from application.catalog import CATALOG
from application.errors import InvalidRequest
from application.samples import choose_test_event_type, sample_data, sample_entity_id
from tests.support.contract import SPEC_EVENT_TYPES

AT = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
STORE = UUID("00000000-0000-4000-8000-000000000001")


@pytest.mark.parametrize("event_type", SPEC_EVENT_TYPES)
def test_every_event_types_sample_is_valid_against_its_schema(event_type: str) -> None:
    # When a sample of the event type is generated
    data = sample_data(event_type, uuid4(), STORE, AT)

    # Then it is valid against the catalog's schema, formats included
    validator = Draft202012Validator(
        CATALOG[event_type].schema, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    assert [error.message for error in validator.iter_errors(data)] == []


def test_a_samples_ids_belong_together_and_to_the_store() -> None:
    seed = uuid4()

    data = sample_data("order.paid", seed, STORE, AT)

    order = data["order"]
    assert order["customerId"] == data["customer"]["id"]
    [line] = order["lines"]
    assert line["skuId"] == line["sku"]["id"]
    assert line["sku"]["variantId"] == line["variant"]["id"]
    assert line["variant"]["productId"] == line["product"]["id"]
    assert {order["storeId"], data["customer"]["storeId"]} == {str(STORE)}
    assert str(sample_entity_id("order.paid", seed)) == order["id"]
    assert order["createdAt"] == "2030-01-02T03:04:05.678901Z"


def test_each_sample_has_ids_of_its_own() -> None:
    first = sample_data("customer.registered", uuid4(), STORE, AT)
    second = sample_data("customer.registered", uuid4(), STORE, AT)

    assert first["customer"]["id"] != second["customer"]["id"]


def test_the_event_type_of_a_test_is_one_the_webhook_listens_to() -> None:
    # By default, the first of the catalog the webhook listens to: order events first
    assert choose_test_event_type(["*"], None) == "order.created"
    assert choose_test_event_type(["customer.*", "sku.created"], None) == "customer.registered"
    # A type asked for is kept when the webhook listens to it
    assert choose_test_event_type(["customer.*"], "customer.verified") == "customer.verified"
    # And refused, naming the field, when it does not, or is no event type at all
    with pytest.raises(InvalidRequest, match=r"does not listen to order\.paid") as refused:
        choose_test_event_type(["customer.*"], "order.paid")
    assert refused.value.field == "eventType"
    with pytest.raises(InvalidRequest, match="not an event type"):
        choose_test_event_type(["*"], "order.shipped")
