"""The commerce application on real storage: SQLite (embedded) and PostgreSQL (production).

Every test runs once per backend through the parametrised `settings` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID, uuid4

import pytest

from application.commerce import Commerce
from application.errors import NotFound
from domain.catalog import Sku
from domain.customer import Customer
from domain.errors import InsufficientStock, PaymentExceedsDue
from domain.event_types import event_type
from domain.order import Order
from domain.subscription import Subscription
from domain.values import Actor
from infrastructure.bootstrap import build
from infrastructure.settings import Settings

ALICE = Actor.person("alice@shop.example")
SYSTEM = Actor.system()


@pytest.fixture
def commerce(settings: Settings) -> Iterator[Commerce]:
    services = build(settings)
    yield services.commerce
    services.close()


@pytest.fixture
def reopened(settings: Settings) -> Iterator[Commerce]:
    """A second application on the same storage, as another process would see it."""
    services = build(settings)
    yield services.commerce
    services.close()


def make_sku(app: Commerce, store: UUID, price: str = "19.90", stock: int = 10) -> UUID:
    product = app.create_product(store, "Mug", "A mug", ALICE)
    variant = app.create_variant(store, UUID(product["id"]), {"color": "red"}, ALICE)
    sku = app.create_sku(store, UUID(variant["id"]), "MUG-RED", price, "EUR", stock, ALICE)
    return UUID(sku["id"])


def test_an_order_placed_paid_and_refunded_reads_back_from_storage(
    commerce: Commerce, reopened: Commerce
) -> None:
    # Given a store with a customer and a SKU at 19.90 EUR
    store = uuid4()
    customer = commerce.register_customer(store, "bob@example.com", "Bob", None, ALICE)
    sku = make_sku(commerce, store)

    # When an order for two is placed, paid in full and partly refunded
    order = commerce.place_order(store, UUID(customer["id"]), "EUR", [(sku, 2)], ALICE)
    order_id = UUID(order["id"])
    commerce.pay_order(store, order_id, "39.80", SYSTEM)
    commerce.refund_order(store, order_id, "10.00", "damaged", ALICE)

    # Then another application on the same storage reads the same order back
    read = reopened.read(Order, store, order_id)
    assert read["total"] == {"amount": "39.80", "currency": "EUR"}
    assert read["amountPaid"]["amount"] == "39.80"
    assert read["amountRefunded"]["amount"] == "10.00"
    assert read["lines"][0]["unitPrice"] == {"amount": "19.90", "currency": "EUR"}
    assert read["customerId"] == customer["id"]
    assert read["version"] == 3


def test_an_entity_reads_as_it_was_at_an_earlier_version(commerce: Commerce) -> None:
    # Given a SKU whose price changed twice
    store = uuid4()
    sku = make_sku(commerce, store, price="10.00")
    commerce.change_sku_price(store, sku, "12.00", "EUR", ALICE)
    commerce.change_sku_price(store, sku, "15.00", "EUR", ALICE)

    # When it is read at each version
    prices = [commerce.read(Sku, store, sku, version=v)["price"]["amount"] for v in (1, 2, 3)]

    # Then each version shows the price of that moment, and now shows the last one
    assert prices == ["10.00", "12.00", "15.00"]
    assert commerce.read(Sku, store, sku)["price"]["amount"] == "15.00"


def test_another_stores_entity_is_not_found(commerce: Commerce) -> None:
    # Given a customer of store A
    store_a, store_b = uuid4(), uuid4()
    customer = UUID(commerce.register_customer(store_a, "c@example.com", "C", None, ALICE)["id"])

    # When store B reads it or commands it
    # Then it does not exist for store B, and nothing was recorded on it
    with pytest.raises(NotFound):
        commerce.read(Customer, store_b, customer)
    with pytest.raises(NotFound):
        commerce.verify_customer(store_b, customer, ALICE)
    assert commerce.read(Customer, store_a, customer)["verified"] is False


def test_an_unknown_id_or_an_id_of_another_kind_is_not_found(commerce: Commerce) -> None:
    # Given a store with a SKU
    store = uuid4()
    sku = make_sku(commerce, store)

    # When reading an id that does not exist, or the SKU's id as a customer
    # Then both are "not found", not a library error
    with pytest.raises(NotFound):
        commerce.read(Order, store, uuid4())
    with pytest.raises(NotFound):
        commerce.read(Customer, store, sku)


def test_a_rule_violation_records_nothing(commerce: Commerce, reopened: Commerce) -> None:
    # Given an order of 19.90 and a SKU with 1 left in stock (of 2: the order took one)
    store = uuid4()
    customer = UUID(commerce.register_customer(store, "d@example.com", "D", None, ALICE)["id"])
    sku = make_sku(commerce, store, stock=2)
    order = UUID(commerce.place_order(store, customer, "EUR", [(sku, 1)], ALICE)["id"])
    position = commerce.recorder.max_notification_id()

    # When a payment exceeds what is due and a stock change would go negative
    with pytest.raises(PaymentExceedsDue):
        commerce.pay_order(store, order, "19.91", ALICE)
    with pytest.raises(InsufficientStock):
        commerce.change_sku_stock(store, sku, ALICE, delta=-2)

    # Then no event was stored
    assert reopened.recorder.max_notification_id() == position
    assert reopened.read(Sku, store, sku)["stock"] == 1


def test_concurrent_stock_changes_from_two_processes_both_count(
    commerce: Commerce, reopened: Commerce
) -> None:
    # Given a SKU with 10 in stock, loaded by two applications
    store = uuid4()
    sku = make_sku(commerce, store, stock=10)
    stale = commerce.get(Sku, store, sku)

    # When one application takes 3 while the other still holds the old version
    reopened.change_sku_stock(store, sku, ALICE, delta=-3)
    stale.adjust_stock(-1, ALICE)
    commerce.change_sku_stock(store, sku, ALICE, delta=-2)

    # Then the stale copy cannot be saved, and both real changes count
    with pytest.raises(Exception, match=r"(?i)integrity|unique|constraint"):
        commerce.save(stale)
    assert commerce.read(Sku, store, sku)["stock"] == 5


def test_the_notification_log_holds_every_event_in_order_with_its_actor(
    commerce: Commerce,
) -> None:
    # Given a customer registered by Alice and verified by the system
    store = uuid4()
    customer = UUID(commerce.register_customer(store, "e@example.com", "E", None, ALICE)["id"])
    commerce.verify_customer(store, customer, SYSTEM)

    # When the notification log is read from the start
    notifications = commerce.recorder.select_notifications(start=None, limit=10)
    events = [commerce.mapper.to_domain_event(n) for n in notifications]

    # Then it lists both events, in order, with their types, store and actors
    assert [event_type(e) for e in events] == ["customer.registered", "customer.verified"]
    assert [e.actor for e in events] == [ALICE, SYSTEM]  # type: ignore[attr-defined]
    assert all(e.originator_id == customer for e in events)
    assert events[0].store_id == store  # type: ignore[attr-defined]


def test_subscriptions_run_their_lifecycle_on_storage(
    commerce: Commerce, reopened: Commerce
) -> None:
    # Given a customer subscribed monthly to a SKU
    store = uuid4()
    customer = UUID(commerce.register_customer(store, "f@example.com", "F", None, ALICE)["id"])
    sku = make_sku(commerce, store, price="9.00")
    sub = commerce.start_subscription(store, customer, sku, "month", ALICE)
    sub_id = UUID(sub["id"])

    # When it fails a payment, renews, pauses and resumes
    commerce.change_subscription(store, sub_id, "payment-failure", SYSTEM, reason="card declined")
    commerce.change_subscription(store, sub_id, "renew", SYSTEM)
    commerce.change_subscription(store, sub_id, "pause", ALICE)
    after = commerce.change_subscription(store, sub_id, "resume", ALICE)

    # Then it is active again, renewed one period later, as another process reads it
    assert after["status"] == "active"
    assert reopened.read(Subscription, store, sub_id) == after
    assert after["currentPeriodEnd"] > sub["currentPeriodEnd"]
    assert after["price"] == {"amount": "9.00", "currency": "EUR"}
