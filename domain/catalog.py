"""The catalog: Product, Variant and SKU, each its own aggregate (ADR 0003).

A product has variants (its attribute combinations, e.g. colour and size); a variant has
SKUs (the sellable unit with a code, a price and a stock level). Each is addressed on its
own by the API and changes at its own pace — stock moves far more often than a product's
description — so each is a separate aggregate holding its parents' ids.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.base import StoreAggregate
from domain.errors import ForeignReference, InsufficientStock, InvalidValue
from domain.values import Actor, Money, check_name, check_text


class Product(StoreAggregate):
    entity = "product"

    @event("Created")
    def __init__(self, store_id: UUID, name: str, description: str | None, actor: Actor) -> None:
        self.store_id = store_id
        self.name = name
        self.description = description

    @classmethod
    def create(cls, store_id: UUID, name: str, description: str | None, actor: Actor) -> Product:
        return cls(store_id, _check_name(name), _check_description(description), actor)

    def update(self, actor: Actor, name: str | None = None, description: str | None = None) -> None:
        name = None if name in (None, self.name) else _check_name(name)
        _check_description(description)
        # "" clears the description; None leaves it as it is.
        if description is not None and description == (self.description or ""):
            description = None
        if name is not None or description is not None:
            self._updated(name=name, description=description, actor=actor)

    @event("Updated")
    def _updated(self, name: str | None, description: str | None, actor: Actor) -> None:
        self.name = name or self.name
        if description is not None:
            self.description = description or None


class Variant(StoreAggregate):
    entity = "variant"

    @event("Created")
    def __init__(
        self, store_id: UUID, product_id: UUID, attributes: dict[str, str], actor: Actor
    ) -> None:
        self.store_id = store_id
        self.product_id = product_id
        self.attributes = attributes

    @classmethod
    def create(cls, product: Product, attributes: dict[str, str], actor: Actor) -> Variant:
        return cls(product.store_id, product.id, _check_attributes(attributes), actor)

    def update_attributes(self, attributes: dict[str, str], actor: Actor) -> None:
        self._updated(attributes=_check_attributes(attributes), actor=actor)

    @event("Updated")
    def _updated(self, attributes: dict[str, str], actor: Actor) -> None:
        self.attributes = attributes


class Sku(StoreAggregate):
    entity = "sku"

    @event("Created")
    def __init__(
        self,
        store_id: UUID,
        product_id: UUID,
        variant_id: UUID,
        code: str,
        price: Money,
        stock: int,
        actor: Actor,
    ) -> None:
        self.store_id = store_id
        self.product_id = product_id
        self.variant_id = variant_id
        self.code = code
        self.price = price
        self.stock = stock

    @classmethod
    def create(cls, variant: Variant, code: str, price: Money, stock: int, actor: Actor) -> Sku:
        check_name("code", code)
        if stock < 0:
            raise InvalidValue("stock", f"cannot be negative (got {stock})")
        return cls(variant.store_id, variant.product_id, variant.id, code, price, stock, actor)

    def change_price(self, price: Money, actor: Actor) -> None:
        self._price_changed(price=price, previous_price=self.price, actor=actor)

    @event("PriceChanged")
    def _price_changed(self, price: Money, previous_price: Money, actor: Actor) -> None:
        self.price = price

    def set_stock(self, quantity: int, actor: Actor) -> None:
        if quantity < 0:
            raise InvalidValue("quantity", f"a stock level cannot be negative (got {quantity})")
        self.adjust_stock(quantity - self.stock, actor)

    def adjust_stock(self, delta: int, actor: Actor) -> None:
        quantity = self.stock + delta
        if quantity < 0:
            raise InsufficientStock(
                f"SKU {self.code} has {self.stock} in stock; a change of {delta} would "
                "leave it negative"
            )
        self._stock_changed(quantity=quantity, delta=delta, actor=actor)

    def check_can_supply(self, quantity: int) -> None:
        """An order may take at most what is in stock."""
        if quantity > self.stock:
            raise InsufficientStock(
                f"SKU {self.code} has {self.stock} in stock; the order asks for {quantity}"
            )

    def reserve(self, quantity: int, actor: Actor) -> None:
        """Take ``quantity`` out of stock for an order (`sku.stock_changed`)."""
        self.check_can_supply(quantity)
        self._stock_changed(quantity=self.stock - quantity, delta=-quantity, actor=actor)

    def release(self, quantity: int, actor: Actor) -> None:
        """Put back what a cancelled order had reserved (`sku.stock_changed`)."""
        self._stock_changed(quantity=self.stock + quantity, delta=quantity, actor=actor)

    @event("StockChanged")
    def _stock_changed(self, quantity: int, delta: int, actor: Actor) -> None:
        self.stock = quantity

    def check_belongs_to(self, store_id: UUID) -> None:
        if self.store_id != store_id:
            raise ForeignReference(f"SKU {self.id} belongs to another store")


def _check_name(name: str) -> str:
    return check_name("name", name)


def _check_attributes(attributes: dict[str, str]) -> dict[str, str]:
    if not attributes:
        raise InvalidValue("attributes", "a variant needs at least one attribute")
    for key, value in attributes.items():
        if not key.strip() or not isinstance(value, str) or not value.strip():
            raise InvalidValue("attributes", f"attribute {key!r} needs a non-empty name and value")
        check_name("attributes", key)
        check_name(f"attributes.{key}", value)
    return dict(attributes)


def _check_description(description: str | None) -> str | None:
    return None if description is None else check_text("description", description, multiline=True)
