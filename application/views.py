"""The JSON form of each store entity: what `GET /v1/...` answers and what envelopes carry.

One function per entity, so an entity looks the same in an API read and in a webhook's
``data``. Keys are camelCase, amounts are strings, timestamps are UTC ISO 8601 with ``Z``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from domain.base import StoreAggregate
from domain.catalog import Product, Sku, Variant
from domain.customer import Customer
from domain.order import Order
from domain.subscription import Subscription
from domain.values import Address, Money

JSON = dict[str, Any]


def timestamp(moment: datetime) -> str:
    """UTC ISO 8601 with a ``Z`` and microseconds, so the width never varies."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def money(value: Money) -> JSON:
    return {"amount": str(value.amount), "currency": value.currency}


def address(value: Address) -> JSON:
    return {
        "line1": value.line1,
        "line2": value.line2,
        "city": value.city,
        "postalCode": value.postal_code,
        "country": value.country,
    }


def _common(entity: StoreAggregate) -> JSON:
    return {"id": str(entity.id), "storeId": str(entity.store_id), "version": entity.version}


def _times(entity: StoreAggregate) -> JSON:
    return {"createdAt": timestamp(entity.created_on), "updatedAt": timestamp(entity.modified_on)}


def customer(value: Customer) -> JSON:
    return {
        **_common(value),
        "email": value.email,
        "name": value.name,
        "phone": value.phone,
        "verified": value.verified,
        "addresses": [address(a) for a in value.addresses],
        "deletionRequested": value.deletion_requested,
        **_times(value),
    }


def product(value: Product) -> JSON:
    return {**_common(value), "name": value.name, "description": value.description, **_times(value)}


def variant(value: Variant) -> JSON:
    return {
        **_common(value),
        "productId": str(value.product_id),
        "attributes": dict(value.attributes),
        **_times(value),
    }


def sku(value: Sku) -> JSON:
    return {
        **_common(value),
        "productId": str(value.product_id),
        "variantId": str(value.variant_id),
        "code": value.code,
        "price": money(value.price),
        "stock": value.stock,
        **_times(value),
    }


def order(value: Order) -> JSON:
    return {
        **_common(value),
        "customerId": str(value.customer_id),
        "currency": value.currency,
        "status": value.status.value,
        "lines": [
            {
                "skuId": str(line.sku_id),
                "quantity": line.quantity,
                "unitPrice": money(line.unit_price),
                "total": money(line.total),
            }
            for line in value.lines
        ],
        "total": money(value.total),
        "amountPaid": money(value.amount_paid),
        "amountRefunded": money(value.amount_refunded),
        "amountDue": money(value.amount_due),
        **_times(value),
    }


def subscription(value: Subscription) -> JSON:
    return {
        **_common(value),
        "customerId": str(value.customer_id),
        "skuId": str(value.sku_id),
        "interval": value.interval,
        "price": money(value.price),
        "status": value.status.value,
        "currentPeriodEnd": timestamp(value.current_period_end),
        **_times(value),
    }


VIEWS = {
    Customer: customer,
    Product: product,
    Variant: variant,
    Sku: sku,
    Order: order,
    Subscription: subscription,
}


def view(entity: StoreAggregate) -> JSON:
    """The JSON form of any store entity."""
    render: Any = VIEWS[type(entity)]
    result: JSON = render(entity)
    return result
