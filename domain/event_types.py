"""The public event types of §2, derived from the store aggregates (the one source of truth)."""

from __future__ import annotations

from eventsourcing.domain import Aggregate

from domain.base import StoreAggregate
from domain.catalog import Product, Sku, Variant
from domain.customer import Customer
from domain.order import Order
from domain.subscription import Subscription

STORE_AGGREGATES: tuple[type[StoreAggregate], ...] = (
    Order,
    Customer,
    Product,
    Variant,
    Sku,
    Subscription,
)

EVENT_CLASSES: dict[str, type[Aggregate.Event]] = {
    name: cls for aggregate in STORE_AGGREGATES for name, cls in aggregate.event_classes().items()
}
EVENT_TYPES: dict[type[Aggregate.Event], str] = {cls: name for name, cls in EVENT_CLASSES.items()}


def event_type(domain_event: Aggregate.Event) -> str:
    """The public event type name of a store event, e.g. ``order.paid``."""
    try:
        return EVENT_TYPES[type(domain_event)]
    except KeyError:
        raise LookupError(f"{type(domain_event).__qualname__} is not a store event") from None
