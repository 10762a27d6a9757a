"""The public contract of SPEC §2, written out literally — not derived from the code under
test, so renaming or dropping an event type fails the tests that use it."""

SPEC_EVENT_TYPES: tuple[str, ...] = (
    "order.created",
    "order.status_updated",
    "order.paid",
    "order.refunded",
    "customer.registered",
    "customer.updated",
    "customer.verified",
    "customer.address_saved",
    "customer.deletion_requested",
    "product.created",
    "product.updated",
    "variant.created",
    "variant.updated",
    "sku.created",
    "sku.price_changed",
    "sku.stock_changed",
    "subscription.created",
    "subscription.renewed",
    "subscription.payment_failed",
    "subscription.paused",
    "subscription.resumed",
    "subscription.cancelled",
    "subscription.expired",
)
