"""The Order aggregate: frozen lines, the status machine, payments and refunds."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from domain.catalog import Product, Sku, Variant
from domain.customer import Customer
from domain.errors import (
    CustomerDeletionRequested,
    ForeignReference,
    InsufficientStock,
    InvalidTransition,
    InvalidValue,
    PaymentExceedsDue,
    RefundExceedsPaid,
)
from domain.event_types import event_type
from domain.order import TRANSITIONS, Order, OrderLine, OrderStatus
from domain.values import Actor, Money

STORE_ID = UUID("00000000-0000-4000-8000-000000000001")
OTHER_STORE_ID = UUID("00000000-0000-4000-8000-000000000002")
CLERK = Actor.person("clerk@example.com")
SHOP = Actor.system()


def _eur(amount: str) -> Money:
    return Money(Decimal(amount), "EUR")


def _customer(store_id: UUID = STORE_ID) -> Customer:
    return Customer.register(store_id, "jane@example.com", "Jane Doe", None, SHOP)


def _sku(price: Money | None = None, store_id: UUID = STORE_ID, code: str = "TS-RED-M") -> Sku:
    product = Product.create(store_id, "T-shirt", None, SHOP)
    variant = Variant.create(product, {"color": "red"}, SHOP)
    return Sku.create(variant, code, price or _eur("19.90"), 10, SHOP)


_SKUS: dict[UUID, dict[UUID, Sku]] = {}  # the SKUs of each order `_order` placed


def _order(quantity: int = 2, price: str = "19.90") -> Order:
    """A pending order of one line (2 x 19.90 EUR = 39.80 EUR), events already collected."""
    sku = _sku(_eur(price))
    order = Order.place(_customer(), "EUR", [(sku, quantity)], SHOP)
    order.collect_events()
    sku.collect_events()
    _SKUS[order.id] = {sku.id: sku}
    return order


def _skus(order: Order) -> dict[UUID, Sku]:
    return _SKUS[order.id]


def _assert_nothing_recorded(order: Order, version: int) -> None:
    assert order.version == version
    assert order.collect_events() == []


# --- Placing an order --------------------------------------------------------------------


def test_place_freezes_each_line_and_totals_them() -> None:
    # Given a customer and two SKUs of the same store
    customer = _customer()
    shirt = _sku(_eur("19.90"), code="TS")
    socks = _sku(_eur("5.00"), code="SO")

    # When the customer orders 2 shirts and 3 pairs of socks
    order = Order.place(customer, "EUR", [(shirt, 2), (socks, 3)], CLERK)

    # Then the order is pending, in the customer's store, with priced lines and their total
    assert order.store_id == STORE_ID
    assert order.customer_id == customer.id
    assert order.status is OrderStatus.PENDING
    assert order.lines == [
        OrderLine(shirt.id, 2, _eur("19.90")),
        OrderLine(socks.id, 3, _eur("5.00")),
    ]
    assert order.total == _eur("54.80")
    assert order.amount_paid == _eur("0.00")
    assert order.amount_due == _eur("54.80")


def test_place_refuses_a_sku_of_another_store() -> None:
    # Given a customer of one store and a SKU of another
    customer = _customer(STORE_ID)
    foreign = _sku(store_id=OTHER_STORE_ID)

    # When the customer orders that SKU
    # Then it is a foreign reference
    with pytest.raises(ForeignReference):
        Order.place(customer, "EUR", [(foreign, 1)], CLERK)


def test_place_refuses_a_foreign_sku_even_after_a_valid_line() -> None:
    # Given a customer, a SKU of their store and one of another store
    customer = _customer(STORE_ID)
    own, foreign = _sku(store_id=STORE_ID), _sku(store_id=OTHER_STORE_ID)

    # When both are ordered
    # Then the whole order is refused
    with pytest.raises(ForeignReference):
        Order.place(customer, "EUR", [(own, 1), (foreign, 1)], CLERK)


def test_place_refuses_a_sku_priced_in_another_currency() -> None:
    # Given a SKU priced in USD
    customer = _customer()
    sku = _sku(Money(Decimal("19.90"), "USD"))

    # When it is ordered in EUR
    # Then the order is refused, naming the line
    with pytest.raises(InvalidValue, match=r"lines\[0\]\.skuId.*USD"):
        Order.place(customer, "EUR", [(sku, 1)], CLERK)


@pytest.mark.parametrize("quantity", [0, -1])
def test_place_refuses_a_quantity_below_one(quantity: int) -> None:
    # Given a customer and two SKUs
    customer = _customer()
    first, second = _sku(code="A"), _sku(code="B")

    # When the second line has a quantity below 1
    with pytest.raises(InvalidValue) as refused:
        Order.place(customer, "EUR", [(first, 1), (second, quantity)], CLERK)

    # Then the order is refused, naming that line's quantity
    assert refused.value.field == "lines[1].quantity"


def test_place_refuses_an_order_without_lines() -> None:
    # Given a customer
    customer = _customer()

    # When an order without lines is placed
    with pytest.raises(InvalidValue) as refused:
        Order.place(customer, "EUR", [], CLERK)

    # Then it is refused on the lines field
    assert refused.value.field == "lines"


def test_place_refuses_an_unknown_currency() -> None:
    # Given a customer and a SKU
    customer, sku = _customer(), _sku()

    # When the order's currency is not ISO 4217
    with pytest.raises(InvalidValue) as refused:
        Order.place(customer, "EURO", [(sku, 1)], CLERK)

    # Then it is refused on the currency field
    assert refused.value.field == "currency"


def test_unit_price_is_frozen_when_the_sku_price_changes_later() -> None:
    # Given an order of 2 SKUs at 19.90
    customer, sku = _customer(), _sku(_eur("19.90"))
    order = Order.place(customer, "EUR", [(sku, 2)], CLERK)

    # When the SKU's price changes afterwards
    sku.change_price(_eur("25.00"), CLERK)

    # Then the order line keeps the old price and the total is unchanged
    assert sku.price == _eur("25.00")
    assert order.lines[0].unit_price == _eur("19.90")
    assert order.total == _eur("39.80")
    created: Any = order.collect_events()[0]
    assert created.lines[0].unit_price == _eur("19.90")


# --- Stock ---------------------------------------------------------------------------------


def test_placing_an_order_reserves_the_stock_of_its_skus() -> None:
    # Given two SKUs with 10 in stock each
    customer, shirt, socks = _customer(), _sku(code="TS"), _sku(_eur("5.00"), code="SO")

    # When an order takes 2 shirts, 3 pairs of socks, and 4 more shirts on another line
    Order.place(customer, "EUR", [(shirt, 2), (socks, 3), (shirt, 4)], CLERK)

    # Then each SKU recorded one stock change for all it supplies, by the order's actor
    assert (shirt.stock, socks.stock) == (4, 7)
    changes: list[Any] = [shirt.collect_events()[-1], socks.collect_events()[-1]]
    assert [event_type(c) for c in changes] == ["sku.stock_changed", "sku.stock_changed"]
    assert [(c.quantity, c.delta, c.actor) for c in changes] == [(4, -6, CLERK), (7, -3, CLERK)]


def test_an_order_cannot_take_more_than_is_in_stock() -> None:
    # Given a SKU with 10 in stock and another with 10
    customer, shirt, socks = _customer(), _sku(code="TS"), _sku(code="SO")
    shirt.collect_events()
    socks.collect_events()

    # When an order asks for 2 socks and 11 shirts (over two lines)
    with pytest.raises(InsufficientStock, match="TS has 10 in stock; the order asks for 11"):
        Order.place(customer, "EUR", [(socks, 2), (shirt, 6), (shirt, 5)], CLERK)

    # Then nothing is reserved on either SKU
    assert (shirt.stock, socks.stock) == (10, 10)
    assert shirt.collect_events() == socks.collect_events() == []


def test_an_order_may_take_the_last_item() -> None:
    customer, sku = _customer(), _sku()
    Order.place(customer, "EUR", [(sku, 10)], CLERK)
    assert sku.stock == 0


def test_cancelling_an_order_puts_its_stock_back() -> None:
    # Given an order that reserved 2 of a SKU's 10
    order = _order(quantity=2)
    [sku] = _skus(order).values()
    assert sku.stock == 8

    # When it is cancelled
    order.update_status(OrderStatus.CANCELLED, CLERK, _skus(order))

    # Then the SKU has its 10 again, recorded as a stock change
    assert sku.stock == 10
    [change] = sku.collect_events()
    assert (event_type(change), change.delta) == ("sku.stock_changed", 2)


def test_cancelling_needs_the_skus_of_every_line() -> None:
    order = _order()
    with pytest.raises(ValueError, match="SKUs"):
        order.update_status(OrderStatus.CANCELLED, CLERK, {})
    _assert_nothing_recorded(order, 1)


def test_a_customer_who_asked_to_be_deleted_places_no_order() -> None:
    # Given a customer who asked to be deleted
    customer, sku = _customer(), _sku()
    customer.request_deletion(CLERK)
    sku.collect_events()

    # When an order is placed for them
    # Then it is refused, and no stock is reserved
    with pytest.raises(CustomerDeletionRequested, match="asked to be deleted"):
        Order.place(customer, "EUR", [(sku, 1)], CLERK)
    assert sku.stock == 10
    assert sku.collect_events() == []


# --- Status machine ----------------------------------------------------------------------

# §2: pending -> processing -> shipped -> delivered; cancelled from pending or processing.
SPEC_TRANSITIONS = {
    ("pending", "processing"),
    ("pending", "cancelled"),
    ("processing", "shipped"),
    ("processing", "cancelled"),
    ("shipped", "delivered"),
}
# How to reach each status from a new (pending) order.
PATH_TO = {
    OrderStatus.PENDING: [],
    OrderStatus.PROCESSING: [OrderStatus.PROCESSING],
    OrderStatus.SHIPPED: [OrderStatus.PROCESSING, OrderStatus.SHIPPED],
    OrderStatus.DELIVERED: [OrderStatus.PROCESSING, OrderStatus.SHIPPED, OrderStatus.DELIVERED],
    OrderStatus.CANCELLED: [OrderStatus.CANCELLED],
}


def _order_in(status: OrderStatus) -> Order:
    order = _order()
    for step in PATH_TO[status]:
        order.update_status(step, SHOP, _skus(order))
    order.collect_events()
    assert order.status is status
    return order


def test_the_transition_table_is_the_spec_state_machine() -> None:
    # Given the domain's transition table
    # When it is read as (from, to) pairs
    pairs = {(a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets}

    # Then it is exactly the §2 state machine, and covers every status
    assert pairs == SPEC_TRANSITIONS
    assert set(TRANSITIONS) == set(OrderStatus)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        pytest.param(a, b, id=f"{a.value}->{b.value}")
        for a, b in itertools.product(OrderStatus, OrderStatus)
        if (a.value, b.value) in SPEC_TRANSITIONS
    ],
)
def test_allowed_status_transition(current: OrderStatus, target: OrderStatus) -> None:
    # Given an order in the current status
    order = _order_in(current)
    version = order.version

    # When it moves to an allowed next status
    order.update_status(target, CLERK, _skus(order))

    # Then it has the new status and recorded exactly one event saying so
    assert order.status is target
    assert order.version == version + 1
    updated: Any
    (updated,) = order.collect_events()
    assert event_type(updated) == "order.status_updated"
    assert (updated.status, updated.previous_status) == (target.value, current.value)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        pytest.param(a, b, id=f"{a.value}->{b.value}")
        for a, b in itertools.product(OrderStatus, OrderStatus)
        if (a.value, b.value) not in SPEC_TRANSITIONS
    ],
)
def test_forbidden_status_transition(current: OrderStatus, target: OrderStatus) -> None:
    # Given an order in the current status
    order = _order_in(current)
    version = order.version

    # When it is asked to move to a status the machine does not allow
    with pytest.raises(InvalidTransition):
        order.update_status(target, CLERK, _skus(order))

    # Then its status is unchanged and nothing was recorded
    assert order.status is current
    _assert_nothing_recorded(order, version)


# --- Payments ----------------------------------------------------------------------------


def test_payment_of_the_whole_amount_due_is_accepted() -> None:
    # Given a pending order of 39.80
    order = _order()

    # When 39.80 is paid
    order.pay(_eur("39.80"), CLERK)

    # Then it is fully paid
    assert order.amount_paid == _eur("39.80")
    assert order.amount_due == _eur("0.00")
    assert len(order.collect_events()) == 1


def test_partial_payments_accumulate_up_to_the_amount_due() -> None:
    # Given an order of 39.80 with 20.00 already paid
    order = _order()
    order.pay(_eur("20.00"), CLERK)

    # When the remaining 19.80 is paid
    order.pay(_eur("19.80"), CLERK)

    # Then it is fully paid
    assert order.amount_paid == _eur("39.80")
    assert order.amount_due == _eur("0.00")


def test_payment_one_cent_over_the_amount_due_is_refused() -> None:
    # Given an order of 39.80
    order = _order()
    version = order.version

    # When 39.81 is paid
    with pytest.raises(PaymentExceedsDue):
        order.pay(_eur("39.81"), CLERK)

    # Then nothing was paid and nothing recorded
    assert order.amount_paid == _eur("0.00")
    _assert_nothing_recorded(order, version)


def test_payment_over_the_remaining_due_is_refused() -> None:
    # Given an order of 39.80 with 20.00 already paid
    order = _order()
    order.pay(_eur("20.00"), CLERK)
    order.collect_events()
    version = order.version

    # When 19.81 more is paid
    with pytest.raises(PaymentExceedsDue):
        order.pay(_eur("19.81"), CLERK)

    # Then the paid amount is still 20.00 and nothing was recorded
    assert order.amount_paid == _eur("20.00")
    _assert_nothing_recorded(order, version)


def test_paying_a_fully_paid_order_is_refused() -> None:
    # Given a fully paid order
    order = _order()
    order.pay(_eur("39.80"), CLERK)
    order.collect_events()
    version = order.version

    # When one more cent is paid
    with pytest.raises(PaymentExceedsDue):
        order.pay(_eur("0.01"), CLERK)

    # Then nothing was recorded
    _assert_nothing_recorded(order, version)


def test_paying_a_cancelled_order_is_refused() -> None:
    # Given a cancelled order
    order = _order_in(OrderStatus.CANCELLED)
    version = order.version

    # When it is paid
    with pytest.raises(InvalidTransition):
        order.pay(_eur("1.00"), CLERK)

    # Then nothing was paid and nothing recorded
    assert order.amount_paid == _eur("0.00")
    _assert_nothing_recorded(order, version)


def test_zero_payment_is_refused() -> None:
    # Given an order
    order = _order()
    version = order.version

    # When zero is paid
    with pytest.raises(InvalidValue) as refused:
        order.pay(_eur("0.00"), CLERK)

    # Then it is refused on the amount field and nothing recorded
    assert refused.value.field == "amount"
    _assert_nothing_recorded(order, version)


def test_negative_payment_cannot_even_be_expressed() -> None:
    # Given an order
    order = _order()
    version = order.version

    # When a negative amount is paid (as the API would parse it)
    with pytest.raises(InvalidValue) as refused:
        order.pay(Money.parse("-5.00", "EUR"), CLERK)

    # Then it is refused on the amount field and nothing recorded
    assert refused.value.field == "amount"
    _assert_nothing_recorded(order, version)


def test_payment_in_another_currency_is_refused() -> None:
    # Given an order in EUR
    order = _order()
    version = order.version

    # When it is paid in USD
    with pytest.raises(InvalidValue) as refused:
        order.pay(Money(Decimal("1.00"), "USD"), CLERK)

    # Then it is refused on the currency field and nothing recorded
    assert refused.value.field == "currency"
    _assert_nothing_recorded(order, version)


# --- Refunds -----------------------------------------------------------------------------


def _paid_order(paid: str = "39.80") -> Order:
    order = _order()
    order.pay(_eur(paid), SHOP)
    order.collect_events()
    return order


def test_refund_of_everything_paid_is_accepted() -> None:
    # Given an order paid 39.80
    order = _paid_order("39.80")

    # When 39.80 is refunded
    order.refund(_eur("39.80"), "damaged", CLERK)

    # Then all of it is refunded
    assert order.amount_refunded == _eur("39.80")
    assert len(order.collect_events()) == 1


def test_partial_refunds_accumulate() -> None:
    # Given an order paid 39.80
    order = _paid_order("39.80")

    # When 10.00 and then 29.80 are refunded
    order.refund(_eur("10.00"), None, CLERK)
    order.refund(_eur("29.80"), None, CLERK)

    # Then 39.80 is refunded in total, after two events
    assert order.amount_refunded == _eur("39.80")
    assert len(order.collect_events()) == 2


def test_refund_over_what_is_left_after_earlier_refunds_is_refused() -> None:
    # Given an order paid 39.80 with 30.00 already refunded
    order = _paid_order("39.80")
    order.refund(_eur("30.00"), None, CLERK)
    order.collect_events()
    version = order.version

    # When 9.81 more is refunded
    with pytest.raises(RefundExceedsPaid):
        order.refund(_eur("9.81"), None, CLERK)

    # Then the refunded amount is still 30.00 and nothing was recorded
    assert order.amount_refunded == _eur("30.00")
    _assert_nothing_recorded(order, version)


def test_refund_over_a_partial_payment_is_refused() -> None:
    # Given an order of 39.80 of which 20.00 was paid
    order = _paid_order("20.00")
    version = order.version

    # When 20.01 is refunded
    with pytest.raises(RefundExceedsPaid):
        order.refund(_eur("20.01"), None, CLERK)

    # Then nothing was refunded or recorded
    assert order.amount_refunded == _eur("0.00")
    _assert_nothing_recorded(order, version)


def test_refund_of_an_unpaid_order_is_refused() -> None:
    # Given an order nobody paid
    order = _order()
    version = order.version

    # When one cent is refunded
    with pytest.raises(RefundExceedsPaid):
        order.refund(_eur("0.01"), None, CLERK)

    # Then nothing was recorded
    _assert_nothing_recorded(order, version)


def test_zero_refund_is_refused() -> None:
    # Given a paid order
    order = _paid_order()
    version = order.version

    # When zero is refunded
    with pytest.raises(InvalidValue) as refused:
        order.refund(_eur("0.00"), None, CLERK)

    # Then it is refused on the amount field and nothing recorded
    assert refused.value.field == "amount"
    _assert_nothing_recorded(order, version)


def test_refund_in_another_currency_is_refused() -> None:
    # Given an order paid in EUR
    order = _paid_order()
    version = order.version

    # When it is refunded in USD
    with pytest.raises(InvalidValue) as refused:
        order.refund(Money(Decimal("1.00"), "USD"), None, CLERK)

    # Then it is refused on the currency field and nothing recorded
    assert refused.value.field == "currency"
    _assert_nothing_recorded(order, version)


def test_refunds_do_not_reopen_the_amount_due() -> None:
    # Given an order paid in full and then refunded in full
    order = _paid_order("39.80")
    order.refund(_eur("39.80"), None, CLERK)
    order.collect_events()

    # When it is paid again
    with pytest.raises(PaymentExceedsDue):
        order.pay(_eur("0.01"), CLERK)

    # Then it still counts as fully paid
    assert order.amount_due == _eur("0.00")


# --- Replay ------------------------------------------------------------------------------


def test_an_order_rebuilt_from_its_events_equals_the_original() -> None:
    # Given an order that was placed, processed, paid and partly refunded
    customer = _customer()
    order = Order.place(customer, "EUR", [(_sku(_eur("19.90")), 2)], CLERK)
    order.update_status(OrderStatus.PROCESSING, CLERK)
    order.pay(_eur("39.80"), SHOP)
    order.refund(_eur("9.80"), "one shirt damaged", CLERK)
    events = order.collect_events()

    # When a copy is rebuilt by replaying those events, as the event store does
    copy = None
    for e in events:
        copy = e.mutate(copy)

    # Then the copy has exactly the state of the original
    assert len(events) == 4
    assert copy == order
    assert isinstance(copy, Order)
    assert copy.version == order.version == 4
    assert copy.status is OrderStatus.PROCESSING
    assert copy.total == _eur("39.80")
    assert copy.amount_paid == _eur("39.80")
    assert copy.amount_refunded == _eur("9.80")
    assert copy.amount_due == _eur("0.00")
    assert copy.store_id == STORE_ID
    assert copy.customer_id == customer.id
