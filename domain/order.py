"""The Order aggregate: lines with frozen unit prices, a status machine, payments, refunds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from domain.base import StoreAggregate
from domain.catalog import Sku
from domain.customer import Customer
from domain.errors import (
    InvalidTransition,
    InvalidValue,
    PaymentExceedsDue,
    RefundExceedsPaid,
)
from domain.values import Actor, Money, check_currency, check_text


class OrderStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


# The one definition of the order status machine.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PROCESSING, OrderStatus.CANCELLED}),
    OrderStatus.PROCESSING: frozenset({OrderStatus.SHIPPED, OrderStatus.CANCELLED}),
    OrderStatus.SHIPPED: frozenset({OrderStatus.DELIVERED}),
    OrderStatus.DELIVERED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}


@dataclass(frozen=True)
class OrderLine:
    """One line of an order; its unit price is the SKU's price when the order was placed."""

    sku_id: UUID
    quantity: int
    unit_price: Money

    @property
    def total(self) -> Money:
        return self.unit_price * self.quantity


class Order(StoreAggregate):
    entity = "order"

    @event("Created")
    def __init__(
        self,
        store_id: UUID,
        customer_id: UUID,
        currency: str,
        lines: list[OrderLine],
        total: Money,
        actor: Actor,
    ) -> None:
        self.store_id = store_id
        self.customer_id = customer_id
        self.currency = currency
        self.lines = lines
        self.total = total
        self.status = OrderStatus.PENDING
        self.amount_paid = Money.zero(currency)
        self.amount_refunded = Money.zero(currency)

    @classmethod
    def place(
        cls,
        customer: Customer,
        currency: str,
        lines: Sequence[tuple[Sku, int]],
        actor: Actor,
    ) -> Order:
        """Place an order for a customer; each line is a SKU of the same store and a
        quantity. Placing it reserves the stock: each SKU records its new stock level, to
        be saved with the order (ADR 0025)."""
        customer.check_can_buy()
        check_currency(currency)
        if not lines:
            raise InvalidValue("lines", "an order needs at least one line")
        order_lines = []
        for index, (sku, quantity) in enumerate(lines):
            sku.check_belongs_to(customer.store_id)
            if quantity < 1:
                raise InvalidValue(f"lines[{index}].quantity", "must be at least 1")
            if sku.price.currency != currency:
                raise InvalidValue(
                    f"lines[{index}].skuId",
                    f"SKU {sku.code} is priced in {sku.price.currency}, the order is in {currency}",
                )
            order_lines.append(OrderLine(sku.id, quantity, sku.price))
        total = sum((line.total for line in order_lines), Money.zero(currency))
        wanted = _quantities(lines)
        for sku, quantity in wanted.values():
            sku.check_can_supply(quantity)
        order = cls(customer.store_id, customer.id, currency, order_lines, total, actor)
        for sku, quantity in wanted.values():
            sku.reserve(quantity, actor)
        return order

    @property
    def amount_due(self) -> Money:
        return self.total - self.amount_paid

    def update_status(
        self, status: OrderStatus, actor: Actor, skus: Mapping[UUID, Sku] | None = None
    ) -> None:
        """Move the order on. Cancelling puts its reserved stock back on its SKUs: give
        them all (``skus``, by id), to be saved with the order."""
        if status not in TRANSITIONS[self.status]:
            allowed = ", ".join(sorted(s.value for s in TRANSITIONS[self.status])) or "none"
            raise InvalidTransition(
                f"an order cannot go from {self.status.value} to {status.value} "
                f"(allowed next: {allowed})"
            )
        releasing = []
        if status is OrderStatus.CANCELLED:
            if skus is None or any(line.sku_id not in skus for line in self.lines):
                raise ValueError("cancelling an order needs the SKUs of all its lines")
            releasing = [(skus[line.sku_id], line.quantity) for line in self.lines]
        # Events hold the status as its plain string, so stored events stay simple JSON.
        self._status_updated(status=status.value, previous_status=self.status.value, actor=actor)
        for sku, quantity in releasing:
            sku.release(quantity, actor)

    @event("StatusUpdated")
    def _status_updated(self, status: str, previous_status: str, actor: Actor) -> None:
        self.status = OrderStatus(status)

    def pay(self, amount: Money, actor: Actor) -> None:
        self._check_positive(amount)
        if self.status is OrderStatus.CANCELLED:
            raise InvalidTransition(f"order {self.id} is cancelled and takes no payment")
        if self.amount_due < amount:
            raise PaymentExceedsDue(
                f"a payment of {amount} exceeds the {self.amount_due} still due on order {self.id}"
            )
        self._paid(amount=amount, actor=actor)

    @event("Paid")
    def _paid(self, amount: Money, actor: Actor) -> None:
        self.amount_paid = self.amount_paid + amount

    def refund(self, amount: Money, reason: str | None, actor: Actor) -> None:
        if reason is not None:
            check_text("reason", reason, multiline=True)
        self._check_positive(amount)
        refundable = self.amount_paid - self.amount_refunded
        if refundable < amount:
            raise RefundExceedsPaid(
                f"a refund of {amount} exceeds the {refundable} paid and not yet refunded"
            )
        self._refunded(amount=amount, reason=reason, actor=actor)

    @event("Refunded")
    def _refunded(self, amount: Money, reason: str | None, actor: Actor) -> None:
        self.amount_refunded = self.amount_refunded + amount

    def _check_positive(self, amount: Money) -> None:
        if amount.currency != self.currency:
            raise InvalidValue(
                "currency", f"order {self.id} is in {self.currency}, not {amount.currency}"
            )
        if amount.amount <= 0:
            raise InvalidValue("amount", "must be greater than zero")


def _quantities(lines: Sequence[tuple[Sku, int]]) -> dict[UUID, tuple[Sku, int]]:
    """Each SKU with the quantity all the lines ask of it (a SKU may be on two lines)."""
    wanted: dict[UUID, tuple[Sku, int]] = {}
    for sku, quantity in lines:
        _, before = wanted.get(sku.id, (sku, 0))
        wanted[sku.id] = (sku, before + quantity)
    return wanted
