"""The commerce application: commands on the store entities of §2, and reads of them.

Methods take primitives and ids and return the entity's JSON view (``application.views``),
so callers never hold an aggregate. Another store's entity is reported as not found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import JSONTranscoder

from application import views
from application.contention import Contention
from application.errors import NotFound
from application.idempotency import KeyedSaves
from application.recorded import NotifiesOnRecord
from application.transcodings import register_store_transcodings
from domain.base import StoreAggregate
from domain.catalog import Product, Sku, Variant
from domain.customer import Customer
from domain.errors import InvalidValue
from domain.order import Order, OrderStatus
from domain.subscription import Subscription
from domain.values import Actor, Address, Money

A = TypeVar("A", bound=StoreAggregate)
JSON = dict[str, Any]


class Commerce(NotifiesOnRecord, KeyedSaves):
    name = "commerce"
    snapshotting_intervals = {Order: 50, Customer: 50, Product: 50, Variant: 50, Sku: 100}

    def __init__(
        self,
        env: dict[str, str] | None = None,
        clock: Callable[[], datetime] | None = None,
        contention: Contention | None = None,
    ) -> None:
        super().__init__(env)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.contention = contention or Contention()

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_store_transcodings(transcoder)

    # Reads ---------------------------------------------------------------------------

    def get(self, kind: type[A], store_id: UUID, entity_id: UUID, version: int | None = None) -> A:
        """An entity of this store, as it is now or as it was at ``version``."""
        try:
            entity: object = self.repository.get(entity_id, version=version)
        except AggregateNotFoundError:
            raise NotFound(kind.entity, entity_id) from None
        if not isinstance(entity, kind) or entity.store_id != store_id:
            raise NotFound(kind.entity, entity_id)
        return entity

    def read(
        self,
        kind: type[StoreAggregate],
        store_id: UUID,
        entity_id: UUID,
        version: int | None = None,
    ) -> JSON:
        """The JSON view of an entity, now or at an earlier ``version``."""
        return views.view(self.get(kind, store_id, entity_id, version))

    # Customers -----------------------------------------------------------------------

    def register_customer(
        self, store_id: UUID, email: str, name: str, phone: str | None, actor: Actor
    ) -> JSON:
        return self._create(Customer.register(store_id, email, name, phone, actor))

    def update_customer(
        self,
        store_id: UUID,
        customer_id: UUID,
        actor: Actor,
        *,
        email: str | None = None,
        name: str | None = None,
        phone: str | None = None,
    ) -> JSON:
        return self._change(
            Customer, store_id, customer_id, lambda c: c.update(actor, email, name, phone)
        )

    def verify_customer(self, store_id: UUID, customer_id: UUID, actor: Actor) -> JSON:
        return self._change(Customer, store_id, customer_id, lambda c: c.verify(actor))

    def save_customer_address(
        self,
        store_id: UUID,
        customer_id: UUID,
        actor: Actor,
        *,
        line1: str,
        city: str,
        postal_code: str,
        country: str,
        line2: str | None = None,
    ) -> JSON:
        address = Address(line1, city, postal_code, country, line2)
        return self._change(
            Customer, store_id, customer_id, lambda c: c.save_address(address, actor)
        )

    def request_customer_deletion(self, store_id: UUID, customer_id: UUID, actor: Actor) -> JSON:
        return self._change(Customer, store_id, customer_id, lambda c: c.request_deletion(actor))

    # Catalog -------------------------------------------------------------------------

    def create_product(
        self, store_id: UUID, name: str, description: str | None, actor: Actor
    ) -> JSON:
        return self._create(Product.create(store_id, name, description, actor))

    def update_product(
        self,
        store_id: UUID,
        product_id: UUID,
        actor: Actor,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> JSON:
        return self._change(
            Product, store_id, product_id, lambda p: p.update(actor, name, description)
        )

    def create_variant(
        self, store_id: UUID, product_id: UUID, attributes: dict[str, str], actor: Actor
    ) -> JSON:
        product = self.get(Product, store_id, product_id)
        return self._create(Variant.create(product, attributes, actor))

    def update_variant(
        self, store_id: UUID, variant_id: UUID, attributes: dict[str, str], actor: Actor
    ) -> JSON:
        return self._change(
            Variant, store_id, variant_id, lambda v: v.update_attributes(attributes, actor)
        )

    def create_sku(
        self,
        store_id: UUID,
        variant_id: UUID,
        code: str,
        amount: str,
        currency: str,
        stock: int,
        actor: Actor,
    ) -> JSON:
        variant = self.get(Variant, store_id, variant_id)
        return self._create(Sku.create(variant, code, Money.parse(amount, currency), stock, actor))

    def change_sku_price(
        self, store_id: UUID, sku_id: UUID, amount: str, currency: str, actor: Actor
    ) -> JSON:
        price = Money.parse(amount, currency)
        return self._change(Sku, store_id, sku_id, lambda s: s.change_price(price, actor))

    def change_sku_stock(
        self,
        store_id: UUID,
        sku_id: UUID,
        actor: Actor,
        *,
        quantity: int | None = None,
        delta: int | None = None,
    ) -> JSON:
        """Set the stock to ``quantity``, or move it by ``delta`` (exactly one of them)."""
        if (quantity is None) == (delta is None):
            raise InvalidValue("quantity", "give either an absolute quantity or a delta")
        if quantity is not None:
            return self._change(Sku, store_id, sku_id, lambda s: s.set_stock(quantity, actor))
        assert delta is not None
        return self._change(Sku, store_id, sku_id, lambda s: s.adjust_stock(delta, actor))

    # Orders --------------------------------------------------------------------------

    def place_order(
        self,
        store_id: UUID,
        customer_id: UUID,
        currency: str,
        lines: Sequence[tuple[UUID, int]],
        actor: Actor,
    ) -> JSON:
        """Place an order, reserving its lines' stock: the order and the SKUs' new stock
        levels are saved together, in one transaction (ADR 0025)."""

        def place() -> tuple[list[StoreAggregate], JSON]:
            customer = self.get(Customer, store_id, customer_id)
            skus = self._skus(store_id, [sku_id for sku_id, _ in lines])
            order = Order.place(
                customer, currency, [(skus[sku_id], q) for sku_id, q in lines], actor
            )
            # The order first: its envelope shows the SKUs as they were when it was placed.
            return [order, *skus.values()], views.view(order)

        skus = [sku_id for sku_id, _ in lines]
        return self._saved(skus, place, f"the stock of SKU {', '.join(map(str, skus))}")

    def update_order_status(
        self, store_id: UUID, order_id: UUID, status: str, actor: Actor
    ) -> JSON:
        try:
            new_status = OrderStatus(status)
        except ValueError:
            allowed = ", ".join(s.value for s in OrderStatus)
            raise InvalidValue("status", f"must be one of {allowed}") from None
        if new_status is not OrderStatus.CANCELLED:
            return self._change(
                Order, store_id, order_id, lambda o: o.update_status(new_status, actor)
            )

        def cancel() -> tuple[list[StoreAggregate], JSON]:
            order = self.get(Order, store_id, order_id)
            skus = self._skus(store_id, [line.sku_id for line in order.lines])
            order.update_status(new_status, actor, skus)  # puts the stock back
            return [order, *skus.values()], views.view(order)

        # An order's lines never change: read once to know which SKUs it writes.
        lines = self.get(Order, store_id, order_id).lines
        return self._saved([order_id, *(line.sku_id for line in lines)], cancel, "the order")

    def pay_order(self, store_id: UUID, order_id: UUID, amount: str, actor: Actor) -> JSON:
        return self._change(
            Order, store_id, order_id, lambda o: o.pay(Money.parse(amount, o.currency), actor)
        )

    def refund_order(
        self, store_id: UUID, order_id: UUID, amount: str, reason: str | None, actor: Actor
    ) -> JSON:
        return self._change(
            Order,
            store_id,
            order_id,
            lambda o: o.refund(Money.parse(amount, o.currency), reason, actor),
        )

    # Subscriptions -------------------------------------------------------------------

    def start_subscription(
        self, store_id: UUID, customer_id: UUID, sku_id: UUID, interval: str, actor: Actor
    ) -> JSON:
        customer = self.get(Customer, store_id, customer_id)
        sku = self.get(Sku, store_id, sku_id)
        return self._create(Subscription.start(customer, sku, interval, self.clock(), actor))

    def change_subscription(
        self, store_id: UUID, subscription_id: UUID, action: str, actor: Actor, **details: Any
    ) -> JSON:
        """Apply one lifecycle action: renew, pause, resume, cancel, expire, payment-failure."""
        commands: dict[str, Callable[[Subscription], None]] = {
            "renew": lambda s: s.renew(actor),
            "pause": lambda s: s.pause(actor),
            "resume": lambda s: s.resume(actor),
            "cancel": lambda s: s.cancel(actor),
            "expire": lambda s: s.expire(actor),
            "payment-failure": lambda s: s.record_payment_failure(details.get("reason"), actor),
        }
        if action not in commands:
            raise InvalidValue("action", f"must be one of {', '.join(commands)}")
        return self._change(Subscription, store_id, subscription_id, commands[action])

    # Helpers -------------------------------------------------------------------------

    def _skus(self, store_id: UUID, sku_ids: Sequence[UUID]) -> dict[UUID, Sku]:
        return {sku_id: self.get(Sku, store_id, sku_id) for sku_id in dict.fromkeys(sku_ids)}

    def _create(self, entity: StoreAggregate) -> JSON:
        result = views.view(entity)
        self.save_answering(entity, result=result)
        return result

    def _change(
        self, kind: type[A], store_id: UUID, entity_id: UUID, command: Callable[[A], None]
    ) -> JSON:
        def change() -> tuple[list[StoreAggregate], JSON]:
            entity = self.get(kind, store_id, entity_id)
            command(entity)
            return [entity], views.view(entity)

        return self._saved([entity_id], change, f"{kind.entity} {entity_id}")

    def _saved(
        self,
        writes: Iterable[UUID],
        attempt: Callable[[], tuple[list[StoreAggregate], JSON]],
        what: str,
    ) -> JSON:
        """Run ``attempt`` — read fresh state, check the rules, change it — and save every
        aggregate it changed in one transaction, in turn with this process's other
        writers of ``writes``; again on fresh state when another process saved one of
        them first (`Contention`), so the rules always judge the state that is saved on."""

        def save() -> JSON:
            aggregates, result = attempt()
            self.save_answering(*aggregates, result=result)
            return result

        return self.contention.run(writes, save, what)
