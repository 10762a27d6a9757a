"""From a store event to its webhook envelope (SPEC §5): the pure mapping of
`projections.envelopes`, on real domain events taken from the aggregates, with no storage.

The `lookup` is a fake that answers the current view of each related entity and records
what it was asked, so the tests see exactly which relations each entity's envelope reads.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate
from jsonschema import Draft202012Validator

from application import views
from application.catalog import data_schema
from domain.base import StoreAggregate
from domain.catalog import Product, Sku, Variant
from domain.customer import Customer
from domain.delivery import envelope_id_of, event_id_of
from domain.event_types import EVENT_CLASSES, event_type
from domain.order import Order, OrderStatus
from domain.subscription import Subscription
from domain.values import Actor, Address, Money
from projections.envelopes import build_envelope, change

JSON = dict[str, Any]

STORE = uuid4()
ANN = Actor.person("ann@shop.example")
SYSTEM = Actor.system()
NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
KEYS = ["envelopeId", "eventType", "initiatedBy", "storeId", "occurredAt", "eventId", "data"]


def eur(amount: str) -> Money:
    return Money.parse(amount, "EUR")


class World:
    """Aggregates of one store, each event recorded with its entity's view just after it."""

    def __init__(self) -> None:
        self.views: dict[UUID, JSON] = {}
        self.kinds: dict[UUID, str] = {}
        self.recorded: list[tuple[Any, JSON]] = []

    def record(self, aggregate: StoreAggregate) -> Any:
        domain_event: Any
        (domain_event,) = aggregate.collect_events()  # one event per command
        view = views.view(aggregate)
        self.views[aggregate.id] = view
        self.kinds[aggregate.id] = aggregate.entity
        self.recorded.append((domain_event, view))
        return domain_event

    def by_type(self) -> dict[str, tuple[Any, JSON]]:
        """The first event of each type, with its entity's view."""
        found: dict[str, tuple[Any, JSON]] = {}
        for domain_event, view in self.recorded:
            found.setdefault(event_type(domain_event), (domain_event, view))
        return found


class RecordingLookup:
    """Answers an entity's view; remembers every (kind, id) asked, and refuses a wrong kind."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.asked: list[tuple[str, UUID]] = []

    def __call__(self, kind: str, entity_id: UUID) -> JSON:
        self.asked.append((kind, entity_id))
        assert self.world.kinds[entity_id] == kind, f"asked {kind} for a {self.world.kinds}"
        return self.world.views[entity_id]


class Shop:
    """Every entity kind of one store, built through the aggregates' own commands."""

    def __init__(self) -> None:
        self.world = World()
        w = self.world
        self.customer = Customer.register(STORE, "bob@example.com", "Bob", "+49 30 1234", ANN)
        w.record(self.customer)
        self.customer.update(ANN, name="Robert", phone="")  # name changed, phone cleared
        w.record(self.customer)
        self.customer.verify(SYSTEM)
        w.record(self.customer)
        self.customer.save_address(Address("1 Main St", "Berlin", "10115", "DE"), ANN)
        w.record(self.customer)
        self.product = Product.create(STORE, "Mug", "A mug", ANN)
        w.record(self.product)
        self.product.update(ANN, description="")  # description cleared, name untouched
        w.record(self.product)
        self.variant = Variant.create(self.product, {"color": "red"}, ANN)
        w.record(self.variant)
        self.variant.update_attributes({"color": "blue"}, ANN)
        w.record(self.variant)
        self.sku = Sku.create(self.variant, "MUG-1", eur("19.90"), 10, ANN)
        w.record(self.sku)
        self.sku.change_price(eur("17.50"), ANN)
        w.record(self.sku)
        self.sku.adjust_stock(-2, ANN)
        w.record(self.sku)
        self.plate_product = Product.create(STORE, "Plate", None, ANN)
        w.record(self.plate_product)
        self.plate_variant = Variant.create(self.plate_product, {"size": "L"}, ANN)
        w.record(self.plate_variant)
        self.plate = Sku.create(self.plate_variant, "PLATE-L", eur("5.00"), 3, ANN)
        w.record(self.plate)
        self.order = Order.place(self.customer, "EUR", [(self.sku, 2), (self.plate, 1)], ANN)
        w.record(self.order)
        self.order.update_status(OrderStatus.PROCESSING, ANN)
        w.record(self.order)
        self.order.pay(eur("40.00"), SYSTEM)
        w.record(self.order)
        self.order.refund(eur("5.00"), "scratched", ANN)
        w.record(self.order)
        self.subscription = Subscription.start(self.customer, self.sku, "month", NOW, ANN)
        w.record(self.subscription)
        self.subscription.record_payment_failure("declined", SYSTEM)
        w.record(self.subscription)
        self.subscription.renew(SYSTEM)
        w.record(self.subscription)
        for command in (self.subscription.pause, self.subscription.resume):
            command(SYSTEM)
            w.record(self.subscription)
        self.subscription.cancel(ANN)
        w.record(self.subscription)
        other = Subscription.start(self.customer, self.sku, "year", NOW, ANN)
        w.record(other)
        other.expire(SYSTEM)
        w.record(other)
        self.customer.request_deletion(ANN)
        w.record(self.customer)


@pytest.fixture
def shop() -> Shop:
    return Shop()


def envelope_of(domain_event: Aggregate.Event, view: JSON, lookup: Any) -> JSON:
    built = build_envelope(domain_event, view, lookup, STORE)
    parsed: JSON = json.loads(built.body)
    return parsed


# change() ------------------------------------------------------------------------------

EXPECTED_CHANGES: dict[str, JSON] = {
    "order.created": {},
    "order.status_updated": {"status": "processing", "previousStatus": "pending"},
    "order.paid": {"amount": {"amount": "40.00", "currency": "EUR"}},
    "order.refunded": {"amount": {"amount": "5.00", "currency": "EUR"}, "reason": "scratched"},
    "customer.registered": {},
    "customer.updated": {"name": "Robert", "phone": None},
    "customer.verified": {},
    "customer.address_saved": {
        "address": {
            "line1": "1 Main St",
            "line2": None,
            "city": "Berlin",
            "postalCode": "10115",
            "country": "DE",
        }
    },
    "customer.deletion_requested": {},
    "product.created": {},
    "product.updated": {"description": None},
    "variant.created": {},
    "variant.updated": {"attributes": {"color": "blue"}},
    "sku.created": {},
    "sku.price_changed": {
        "price": {"amount": "17.50", "currency": "EUR"},
        "previousPrice": {"amount": "19.90", "currency": "EUR"},
    },
    "sku.stock_changed": {"quantity": 8, "delta": -2},
    "subscription.created": {},
    # Started Jan 31: the first period ends Feb 28, the renewal keeps the anchor: Mar 31.
    "subscription.renewed": {"currentPeriodEnd": "2026-03-31T12:00:00.000000Z"},
    "subscription.payment_failed": {"reason": "declined"},
    "subscription.paused": {},
    "subscription.resumed": {},
    "subscription.cancelled": {},
    "subscription.expired": {},
}


def test_the_expected_changes_cover_every_public_event_type(shop: Shop) -> None:
    # Given the table of expected changes and the events the shop recorded
    # Then both name exactly the 23 public event types
    assert set(EXPECTED_CHANGES) == set(EVENT_CLASSES)
    assert set(shop.world.by_type()) == set(EVENT_CLASSES)


@pytest.mark.parametrize("name", sorted(EXPECTED_CHANGES))
def test_change_of_each_event_type(shop: Shop, name: str) -> None:
    # Given a real domain event of this type
    domain_event, _ = shop.world.by_type()[name]

    # When its change is computed
    # Then it is exactly what the catalog's table says
    assert change(domain_event) == EXPECTED_CHANGES[name]


def test_customer_updated_names_only_the_fields_given() -> None:
    # Given a customer whose email alone changes
    customer = Customer.register(STORE, "a@example.com", "A", "+1 555", ANN)
    customer.collect_events()
    customer.update(ANN, email="b@example.com")

    # When the change is computed
    updated: Any
    (updated,) = customer.collect_events()

    # Then only the email appears: name and phone were not given
    assert change(updated) == {"email": "b@example.com"}


def test_product_updated_names_only_the_fields_given() -> None:
    # Given a product renamed, its description left alone
    product = Product.create(STORE, "Mug", "A mug", ANN)
    product.collect_events()
    product.update(ANN, name="Big mug")

    # When the change is computed
    updated: Any
    (updated,) = product.collect_events()

    # Then only the name appears
    assert change(updated) == {"name": "Big mug"}


def test_a_refund_and_a_payment_failure_without_a_reason_carry_null() -> None:
    # Given a refund and a failed subscription payment, both without a reason
    shop = Shop()
    customer = Customer.register(STORE, "c@example.com", "C", None, ANN)
    order = Order.place(customer, "EUR", [(shop.plate, 1)], ANN)
    order.pay(eur("5.00"), ANN)
    order.refund(eur("1.00"), None, ANN)
    subscription = Subscription.start(customer, shop.plate, "month", NOW, ANN)
    subscription.record_payment_failure(None, SYSTEM)

    # When their changes are computed
    refunded: Any = order.collect_events()[-1]
    failed: Any = subscription.collect_events()[-1]

    # Then the reason is there, as null
    assert change(refunded) == {"amount": {"amount": "1.00", "currency": "EUR"}, "reason": None}
    assert change(failed) == {"reason": None}


# initiatedBy and the envelope's form ----------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "expected_keys", "initiated_by"),
    [
        pytest.param(ANN, KEYS, "ann@shop.example", id="person"),
        pytest.param(SYSTEM, KEYS, None, id="system"),
        pytest.param(Actor.unknown(), [k for k in KEYS if k != "initiatedBy"], None, id="unknown"),
    ],
)
def test_initiated_by_is_the_email_null_or_absent(
    actor: Actor, expected_keys: list[str], initiated_by: str | None
) -> None:
    # Given a customer registered by a person, the system, or an unknown actor
    world = World()
    domain_event = world.record(Customer.register(STORE, "d@example.com", "D", None, actor))

    # When its envelope is built
    envelope = envelope_of(domain_event, world.views[domain_event.originator_id], None)

    # Then the keys are exactly these, in this order; initiatedBy is the email, null, or absent
    assert list(envelope) == expected_keys
    if actor.kind == "unknown":
        assert "initiatedBy" not in envelope
    else:
        assert envelope["initiatedBy"] == initiated_by


def test_the_body_is_compact_json_with_derived_ids() -> None:
    # Given a customer with a non-ASCII name, registered by Ann
    world = World()
    domain_event = world.record(Customer.register(STORE, "zoe@example.com", "Zoë", None, ANN))
    view = world.views[domain_event.originator_id]

    # When its envelope is built
    built = build_envelope(domain_event, view, RecordingLookup(world), STORE)
    envelope = json.loads(built.body)

    # Then the body is compact UTF-8 JSON (no spaces between tokens, no \u escapes)
    assert built.body == json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
    assert "Zoë" in built.body
    # And its ids derive from the event: the same on every rebuild
    event_id = event_id_of(domain_event.originator_id, domain_event.originator_version)
    assert envelope == {
        "envelopeId": str(envelope_id_of(event_id)),
        "eventType": "customer.registered",
        "initiatedBy": "ann@shop.example",
        "storeId": str(STORE),
        "occurredAt": views.timestamp(domain_event.timestamp),
        "eventId": event_id,
        "data": {"customer": view, "change": {}},
    }
    assert envelope["occurredAt"].endswith("Z")
    # And the built envelope's metadata agrees with its body
    assert built.event_id == event_id
    assert built.envelope_id == envelope_id_of(event_id)
    assert built.event_type == "customer.registered"
    assert built.store_id == STORE
    assert built.entity_id == domain_event.originator_id
    assert built.occurred_at == domain_event.timestamp
    # And building it again gives the same bytes
    assert build_envelope(domain_event, view, RecordingLookup(world), STORE).body == built.body


def test_events_of_one_aggregate_get_distinct_ids(shop: Shop) -> None:
    # Given every recorded event of the shop
    ids = [event_id_of(e.originator_id, e.originator_version) for e, _ in shop.world.recorded]

    # Then no two events share an event id or an envelope id
    assert len(set(ids)) == len(ids)
    assert len({envelope_id_of(i) for i in ids}) == len(ids)


# data: the entity and its relations ------------------------------------------------------


def test_customer_and_product_data_ask_for_no_relation(shop: Shop) -> None:
    for name, key in (("customer.verified", "customer"), ("product.updated", "product")):
        # Given an event of an entity without relations
        domain_event, view = shop.world.by_type()[name]
        lookup = RecordingLookup(shop.world)

        # When its envelope is built
        data = envelope_of(domain_event, view, lookup)["data"]

        # Then data is the entity and the change, and nothing was looked up
        assert data == {key: view, "change": EXPECTED_CHANGES[name]}
        assert lookup.asked == []


def test_variant_data_carries_its_product(shop: Shop) -> None:
    # Given a variant event
    domain_event, view = shop.world.by_type()["variant.updated"]
    lookup = RecordingLookup(shop.world)

    # When its envelope is built
    data = envelope_of(domain_event, view, lookup)["data"]

    # Then it carries the variant and its product, as the lookup answered
    assert lookup.asked == [("product", shop.product.id)]
    assert data == {
        "variant": view,
        "product": shop.world.views[shop.product.id],
        "change": {"attributes": {"color": "blue"}},
    }


def test_sku_data_carries_its_variant_and_product(shop: Shop) -> None:
    # Given a SKU event
    domain_event, view = shop.world.by_type()["sku.stock_changed"]
    lookup = RecordingLookup(shop.world)

    # When its envelope is built
    data = envelope_of(domain_event, view, lookup)["data"]

    # Then it carries the SKU, its variant and its product
    assert sorted(lookup.asked) == sorted(
        [("variant", shop.variant.id), ("product", shop.product.id)]
    )
    assert data["sku"] == view
    assert data["variant"] == shop.world.views[shop.variant.id]
    assert data["product"] == shop.world.views[shop.product.id]
    assert set(data) == {"sku", "variant", "product", "change"}


def test_order_lines_carry_their_sku_variant_and_product(shop: Shop) -> None:
    # Given an order of two lines, of SKUs of two different products
    domain_event, view = shop.world.by_type()["order.paid"]
    lookup = RecordingLookup(shop.world)

    # When its envelope is built
    data = envelope_of(domain_event, view, lookup)["data"]

    # Then the order and its customer are there, with the change
    assert set(data) == {"order", "customer", "change"}
    assert data["customer"] == shop.world.views[shop.customer.id]
    assert data["change"] == {"amount": {"amount": "40.00", "currency": "EUR"}}
    # And every order field but the lines is the entity's own
    assert {k: v for k, v in data["order"].items() if k != "lines"} == {
        k: v for k, v in view.items() if k != "lines"
    }
    # And each line keeps its own fields and adds its SKU, variant and product
    related = [
        (shop.sku, shop.variant, shop.product),
        (shop.plate, shop.plate_variant, shop.plate_product),
    ]
    assert len(data["order"]["lines"]) == 2
    for line, own, (sku, variant, product) in zip(
        data["order"]["lines"], view["lines"], related, strict=True
    ):
        assert line == {
            **own,
            "sku": shop.world.views[sku.id],
            "variant": shop.world.views[variant.id],
            "product": shop.world.views[product.id],
        }
    # And the lookup was asked for exactly those entities
    assert sorted(lookup.asked) == sorted(
        [
            ("sku", shop.sku.id),
            ("variant", shop.variant.id),
            ("product", shop.product.id),
            ("sku", shop.plate.id),
            ("variant", shop.plate_variant.id),
            ("product", shop.plate_product.id),
            ("customer", shop.customer.id),
        ]
    )


def test_subscription_data_carries_customer_sku_variant_and_product(shop: Shop) -> None:
    # Given a subscription event
    domain_event, view = shop.world.by_type()["subscription.renewed"]
    lookup = RecordingLookup(shop.world)

    # When its envelope is built
    data = envelope_of(domain_event, view, lookup)["data"]

    # Then it carries the subscription, its customer, and its SKU with variant and product
    assert data == {
        "subscription": view,
        "customer": shop.world.views[shop.customer.id],
        "sku": shop.world.views[shop.sku.id],
        "variant": shop.world.views[shop.variant.id],
        "product": shop.world.views[shop.product.id],
        "change": {"currentPeriodEnd": "2026-03-31T12:00:00.000000Z"},
    }
    assert sorted(lookup.asked) == sorted(
        [
            ("customer", shop.customer.id),
            ("sku", shop.sku.id),
            ("variant", shop.variant.id),
            ("product", shop.product.id),
        ]
    )


def test_every_envelope_validates_against_the_catalog_schema(shop: Shop) -> None:
    # Given every event the shop recorded (each of the 23 types at least once)
    checked = set()
    for domain_event, view in shop.world.recorded:
        name = event_type(domain_event)

        # When its envelope is built
        envelope = envelope_of(domain_event, view, RecordingLookup(shop.world))

        # Then its data validates against the catalog's schema for its type
        validator = Draft202012Validator(
            data_schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        errors = [e.message for e in validator.iter_errors(envelope["data"])]
        assert not errors, (name, errors)
        assert envelope["eventType"] == name
        checked.add(name)
    assert checked == set(EVENT_CLASSES)
