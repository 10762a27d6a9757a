"""The public event types of §2: every one is emitted, with its actor, store and data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import Aggregate

from domain.base import StoreAggregate, actor_of
from domain.catalog import Product, Sku, Variant
from domain.customer import Customer
from domain.event_types import EVENT_CLASSES, EVENT_TYPES, event_type
from domain.order import Order, OrderLine, OrderStatus
from domain.subscription import Subscription
from domain.values import Actor, Address, Money
from tests.support.contract import SPEC_EVENT_TYPES

STORE_ID = UUID("00000000-0000-4000-8000-000000000001")
# The actor of the command under test; setup commands use another one, so a test can
# tell the event carries the actor of *its* command.
ALICE = Actor.person("alice@example.com")
SETUP = Actor.system()
NOW = datetime(2025, 1, 31, 8, 0, tzinfo=UTC)
ADDRESS = Address("Unter den Linden 1", "Berlin", "10117", "DE", line2="3. OG")


def _eur(amount: str) -> Money:
    return Money(Decimal(amount), "EUR")


@dataclass
class Emitted:
    """What a command emitted: its aggregate, all the aggregate's events, the data expected."""

    aggregate: StoreAggregate
    history: list[Any]
    expected: dict[str, Any] = field(default_factory=dict)

    @property
    def event(self) -> Any:
        return self.history[-1]


def _run(aggregate: StoreAggregate, command: Callable[[], None], **expected: Any) -> Emitted:
    """Run a command on an aggregate set up beforehand; keep its whole history."""
    history = list(aggregate.collect_events())
    command()
    new = aggregate.collect_events()
    assert len(new) == 1, f"the command emitted {len(new)} events, not one"
    return Emitted(aggregate, [*history, *new], expected)


def _created(aggregate: StoreAggregate, **expected: Any) -> Emitted:
    history = list(aggregate.collect_events())
    assert len(history) == 1
    return Emitted(aggregate, history, {"store_id": STORE_ID, **expected})


# --- Builders of the aggregates a command needs (their own events are setup, by SETUP) ----


def _customer() -> Customer:
    return Customer.register(STORE_ID, "jane@example.com", "Jane Doe", "+4930123456", SETUP)


def _product() -> Product:
    return Product.create(STORE_ID, "T-shirt", "Organic cotton", SETUP)


def _variant() -> Variant:
    return Variant.create(_product(), {"color": "red"}, SETUP)


def _sku(stock: int = 10) -> Sku:
    return Sku.create(_variant(), "TS-RED-M", _eur("19.90"), stock, SETUP)


def _order() -> Order:
    return Order.place(_customer(), "EUR", [(_sku(), 2)], SETUP)


def _subscription() -> Subscription:
    return Subscription.start(_customer(), _sku(), "month", NOW, SETUP)


# --- One scenario per public event type -------------------------------------------------


def _order_created() -> Emitted:
    customer, sku = _customer(), _sku()
    order = Order.place(customer, "EUR", [(sku, 2)], ALICE)
    return _created(
        order,
        customer_id=customer.id,
        currency="EUR",
        lines=[OrderLine(sku.id, 2, _eur("19.90"))],
        total=_eur("39.80"),
    )


def _order_status_updated() -> Emitted:
    order = _order()
    return _run(
        order,
        lambda: order.update_status(OrderStatus.PROCESSING, ALICE),
        status="processing",
        previous_status="pending",
    )


def _order_paid() -> Emitted:
    order = _order()
    return _run(order, lambda: order.pay(_eur("15.00"), ALICE), amount=_eur("15.00"))


def _order_refunded() -> Emitted:
    order = _order()
    order.pay(_eur("39.80"), SETUP)
    return _run(
        order,
        lambda: order.refund(_eur("9.80"), "damaged", ALICE),
        amount=_eur("9.80"),
        reason="damaged",
    )


def _customer_registered() -> Emitted:
    customer = Customer.register(STORE_ID, "jane@example.com", "Jane Doe", "+4930123456", ALICE)
    return _created(customer, email="jane@example.com", name="Jane Doe", phone="+4930123456")


def _customer_updated() -> Emitted:
    customer = _customer()
    return _run(
        customer,
        lambda: customer.update(ALICE, email="roe@example.com", name="Jane Roe", phone="+331"),
        email="roe@example.com",
        name="Jane Roe",
        phone="+331",
    )


def _customer_verified() -> Emitted:
    customer = _customer()
    return _run(customer, lambda: customer.verify(ALICE))


def _customer_address_saved() -> Emitted:
    customer = _customer()
    return _run(customer, lambda: customer.save_address(ADDRESS, ALICE), address=ADDRESS)


def _customer_deletion_requested() -> Emitted:
    customer = _customer()
    return _run(customer, lambda: customer.request_deletion(ALICE))


def _product_created() -> Emitted:
    product = Product.create(STORE_ID, "T-shirt", "Organic cotton", ALICE)
    return _created(product, name="T-shirt", description="Organic cotton")


def _product_updated() -> Emitted:
    product = _product()
    return _run(
        product,
        lambda: product.update(ALICE, name="Tee", description="Recycled cotton"),
        name="Tee",
        description="Recycled cotton",
    )


def _variant_created() -> Emitted:
    product = _product()
    variant = Variant.create(product, {"color": "red", "size": "M"}, ALICE)
    return _created(variant, product_id=product.id, attributes={"color": "red", "size": "M"})


def _variant_updated() -> Emitted:
    variant = _variant()
    return _run(
        variant,
        lambda: variant.update_attributes({"color": "blue"}, ALICE),
        attributes={"color": "blue"},
    )


def _sku_created() -> Emitted:
    variant = _variant()
    sku = Sku.create(variant, "TS-RED-M", _eur("19.90"), 10, ALICE)
    return _created(
        sku,
        product_id=variant.product_id,
        variant_id=variant.id,
        code="TS-RED-M",
        price=_eur("19.90"),
        stock=10,
    )


def _sku_price_changed() -> Emitted:
    sku = _sku()
    return _run(
        sku,
        lambda: sku.change_price(_eur("17.50"), ALICE),
        price=_eur("17.50"),
        previous_price=_eur("19.90"),
    )


def _sku_stock_changed() -> Emitted:
    sku = _sku(stock=10)
    return _run(sku, lambda: sku.set_stock(7, ALICE), quantity=7, delta=-3)


def _subscription_created() -> Emitted:
    customer, sku = _customer(), _sku()
    subscription = Subscription.start(customer, sku, "month", NOW, ALICE)
    return _created(
        subscription,
        customer_id=customer.id,
        sku_id=sku.id,
        interval="month",
        price=_eur("19.90"),
        current_period_end=datetime(2025, 2, 28, 8, 0, tzinfo=UTC),
    )


def _subscription_renewed() -> Emitted:
    subscription = _subscription()
    return _run(
        subscription,
        lambda: subscription.renew(ALICE),
        # Started on Jan 31: the period after the short February ends on Mar 31 again.
        current_period_end=datetime(2025, 3, 31, 8, 0, tzinfo=UTC),
    )


def _subscription_payment_failed() -> Emitted:
    subscription = _subscription()
    return _run(
        subscription,
        lambda: subscription.record_payment_failure("card declined", ALICE),
        reason="card declined",
    )


def _subscription_paused() -> Emitted:
    subscription = _subscription()
    return _run(subscription, lambda: subscription.pause(ALICE))


def _subscription_resumed() -> Emitted:
    subscription = _subscription()
    subscription.pause(SETUP)
    return _run(subscription, lambda: subscription.resume(ALICE))


def _subscription_cancelled() -> Emitted:
    subscription = _subscription()
    return _run(subscription, lambda: subscription.cancel(ALICE))


def _subscription_expired() -> Emitted:
    subscription = _subscription()
    return _run(subscription, lambda: subscription.expire(ALICE))


SCENARIOS: dict[str, Callable[[], Emitted]] = {
    "order.created": _order_created,
    "order.status_updated": _order_status_updated,
    "order.paid": _order_paid,
    "order.refunded": _order_refunded,
    "customer.registered": _customer_registered,
    "customer.updated": _customer_updated,
    "customer.verified": _customer_verified,
    "customer.address_saved": _customer_address_saved,
    "customer.deletion_requested": _customer_deletion_requested,
    "product.created": _product_created,
    "product.updated": _product_updated,
    "variant.created": _variant_created,
    "variant.updated": _variant_updated,
    "sku.created": _sku_created,
    "sku.price_changed": _sku_price_changed,
    "sku.stock_changed": _sku_stock_changed,
    "subscription.created": _subscription_created,
    "subscription.renewed": _subscription_renewed,
    "subscription.payment_failed": _subscription_payment_failed,
    "subscription.paused": _subscription_paused,
    "subscription.resumed": _subscription_resumed,
    "subscription.cancelled": _subscription_cancelled,
    "subscription.expired": _subscription_expired,
}


class _NotAStoreAggregate(Aggregate):
    """An aggregate outside the store domain, whose events record no actor."""


def _foreign_event() -> Any:
    (created,) = _NotAStoreAggregate().collect_events()
    return created


# --- The contract ------------------------------------------------------------------------


def test_the_event_types_are_exactly_those_of_the_spec() -> None:
    # Given the event types derived from the store aggregates
    # When their names are compared with the §2 table
    names = set(EVENT_CLASSES)

    # Then there are the 23 of the table, no more and no fewer
    assert names == set(SPEC_EVENT_TYPES)
    assert len(EVENT_CLASSES) == 23


def test_every_event_type_has_one_class_and_back() -> None:
    # Given the name -> class table
    # When it is inverted
    names_back = {EVENT_TYPES[cls] for cls in EVENT_CLASSES.values()}

    # Then every class is distinct and maps back to its own name
    assert len(set(EVENT_CLASSES.values())) == len(EVENT_CLASSES)
    assert names_back == set(EVENT_CLASSES)
    assert all(EVENT_TYPES[cls] == name for name, cls in EVENT_CLASSES.items())


def test_every_spec_event_type_has_a_scenario_below() -> None:
    # Given the scenarios of this module
    # When they are compared with the §2 table
    covered = set(SCENARIOS)

    # Then each public event type is driven by one of them
    assert covered == set(SPEC_EVENT_TYPES)


def test_an_event_that_is_not_a_store_event_has_no_type() -> None:
    # Given an event of an aggregate that is not a store aggregate
    created = _foreign_event()

    # When its public type is asked for
    # Then it is not a store event
    with pytest.raises(LookupError, match="not a store event"):
        event_type(created)


def test_the_actor_of_an_event_without_one_is_unknown() -> None:
    # Given an event recorded without an actor
    created = _foreign_event()

    # When its actor is asked for
    actor = actor_of(created)

    # Then it is the unknown actor
    assert actor == Actor.unknown()


# --- Each event type, emitted with what a snapshot needs ---------------------------------


@pytest.mark.parametrize("name", sorted(SPEC_EVENT_TYPES))
def test_event_is_emitted_with_its_type_actor_store_and_data(name: str) -> None:
    # Given an aggregate ready for the command that emits this event type
    # When Alice runs the command
    emitted = SCENARIOS[name]()
    e = emitted.event

    # Then the event has that public type
    assert event_type(e) == name

    # And it records Alice as its actor (not the actor of the setup commands)
    assert e.actor == ALICE
    assert actor_of(e) == ALICE

    # And it belongs to the aggregate, whose state at that event is in the store
    assert e.originator_id == emitted.aggregate.id
    assert e.originator_version == emitted.aggregate.version
    replayed: Any = None
    for past in emitted.history:
        replayed = past.mutate(replayed)
    assert replayed == emitted.aggregate
    assert replayed.store_id == STORE_ID

    # And it carries the data the snapshot of this event needs
    for attribute, value in emitted.expected.items():
        assert getattr(e, attribute) == value, attribute
