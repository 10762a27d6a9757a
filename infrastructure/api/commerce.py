"""The commerce routes of §8 and §11: commands on store entities, `GET` of each entity,
and the lists of each kind (`GET /v1/customers`, …) with their filters."""

from __future__ import annotations

from uuid import UUID

from domain.catalog import Product, Sku, Variant
from domain.customer import Customer
from domain.order import Order
from domain.subscription import Subscription
from infrastructure.api import schemas as s
from infrastructure.api.deliveries import UUID_PARAM, ordering, paging, queries, time_range
from infrastructure.api.endpoint import JSON, Call, Endpoint, QueryParam
from infrastructure.queries import ENTITY_LISTS, STATUSES

READ_ERRORS = (401, 404)
COMMAND_ERRORS = (400, 401, 404, 409, 413, 415, 422)
# Creations answer 404 too when a referenced customer or SKU does not exist in the store.
CREATE_ERRORS = (400, 401, 404, 409, 413, 415, 422)


def _fields(call: Call, *names: str) -> dict[str, object]:
    """The optional fields the client actually sent, renamed to snake_case; a null clears
    the field (the application takes "" for "clear" and None for "leave as it is")."""
    renamed = {"postalCode": "postal_code"}
    return {
        renamed.get(n, n): "" if call.body[n] is None else call.body[n]
        for n in names
        if n in call.body
    }


def _register_customer(call: Call) -> JSON:
    b = call.body
    return call.services.commerce.register_customer(
        call.store_id, b["email"], b["name"], b.get("phone"), call.actor
    )


def _update_customer(call: Call) -> JSON:
    return call.services.commerce.update_customer(
        call.store_id,
        call.ids["id"],
        call.actor,
        **_fields(call, "email", "name", "phone"),  # type: ignore[arg-type]
    )


def _save_address(call: Call) -> JSON:
    b = call.body
    return call.services.commerce.save_customer_address(
        call.store_id,
        call.ids["id"],
        call.actor,
        line1=b["line1"],
        line2=b.get("line2"),
        city=b["city"],
        postal_code=b["postalCode"],
        country=b["country"],
    )


def _create_product(call: Call) -> JSON:
    b = call.body
    return call.services.commerce.create_product(
        call.store_id, b["name"], b.get("description"), call.actor
    )


def _update_product(call: Call) -> JSON:
    return call.services.commerce.update_product(
        call.store_id,
        call.ids["id"],
        call.actor,
        **_fields(call, "name", "description"),  # type: ignore[arg-type]
    )


def _create_sku(call: Call) -> JSON:
    b = call.body
    return call.services.commerce.create_sku(
        call.store_id,
        call.ids["id"],
        b["code"],
        b["price"]["amount"],
        b["price"]["currency"],
        b["stock"],
        call.actor,
    )


def _change_stock(call: Call) -> JSON:
    return call.services.commerce.change_sku_stock(
        call.store_id,
        call.ids["id"],
        call.actor,
        **_fields(call, "quantity", "delta"),  # type: ignore[arg-type]
    )


def _place_order(call: Call) -> JSON:
    b = call.body
    lines = [(UUID(line["skuId"]), line["quantity"]) for line in b["lines"]]
    return call.services.commerce.place_order(
        call.store_id, UUID(b["customerId"]), b["currency"], lines, call.actor
    )


def _start_subscription(call: Call) -> JSON:
    b = call.body
    return call.services.commerce.start_subscription(
        call.store_id, UUID(b["customerId"]), UUID(b["skuId"]), b["interval"], call.actor
    )


def _subscription_action(action: str) -> Endpoint:
    def handler(call: Call) -> JSON:
        return call.services.commerce.change_subscription(
            call.store_id, call.ids["id"], action, call.actor, reason=call.body.get("reason")
        )

    return Endpoint(
        "POST",
        f"/v1/subscriptions/{{id}}/{action}",
        handler,
        f"subscription_{action.replace('-', '_')}",
        f"Record a subscription's {action.replace('-', ' ')}",
        "Subscriptions",
        request=s.PAYMENT_FAILURE if action == "payment-failure" else s.EMPTY,
        response=s.entity("subscription"),
        command=True,
        errors=COMMAND_ERRORS,
    )


def _read(kind: type, entity: str, plural: str, tag: str) -> Endpoint:
    def handler(call: Call) -> JSON:
        return call.services.commerce.read(kind, call.store_id, call.ids["id"])

    return Endpoint(
        "GET",
        f"/v1/{plural}/{{id}}",
        handler,
        f"get_{entity}",
        f"Get a {entity}",
        tag,
        response=s.entity(entity),
        errors=READ_ERRORS,
    )


_FILTER_PARAMS: dict[str, tuple[JSON, str]] = {
    "email": (
        {**s.SINGLE_LINE, "minLength": 1, "maxLength": 254},
        "Only the customer with this email.",
    ),
    "code": ({**s.SINGLE_LINE, "minLength": 1, "maxLength": 254}, "Only SKUs with this code."),
    "customerId": (UUID_PARAM, "Only those of this customer."),
    "productId": (UUID_PARAM, "Only those of this product."),
    "variantId": (UUID_PARAM, "Only those of this variant."),
    "skuId": (UUID_PARAM, "Only those of this SKU."),
}


def _filters(entity: str) -> tuple[QueryParam, ...]:
    params = []
    for name in ENTITY_LISTS[entity]:
        if name == "status":
            schema: JSON = {"type": "string", "enum": list(STATUSES[entity])}
            params.append(QueryParam(name, schema, "Only those in this status."))
        else:
            schema, description = _FILTER_PARAMS[name]
            params.append(QueryParam(name, schema, description))
    return tuple(params)


def _list(entity: str, plural: str, tag: str) -> Endpoint:
    """`GET /v1/{plural}`: the store's entities of a kind, newest created first, paged
    like every list (the entities read model: a few milliseconds behind the commands)."""

    def handler(call: Call) -> JSON:
        return queries(call).list_entities(
            call.store_id,
            entity,
            filters={n: call.query[n] for n in ENTITY_LISTS[entity] if n in call.query},
            since=call.query.get("since"),
            until=call.query.get("until"),
            **paging(call),
        )

    return Endpoint(
        "GET",
        f"/v1/{plural}",
        handler,
        f"list_{plural}",
        f"List the store's {plural}",
        tag,
        response=s.page_of(s.entity(entity)),
        errors=(401, 422),
        query=(*_filters(entity), *time_range(f"{plural} created"), *ordering(entity)),
    )


def _command(
    method: str,
    path: str,
    handler: object,
    operation_id: str,
    summary: str,
    tag: str,
    request: JSON,
    entity: str,
    status: int = 200,
) -> Endpoint:
    return Endpoint(
        method,
        path,
        handler,  # type: ignore[arg-type]
        operation_id,
        summary,
        tag,
        status=status,
        request=request,
        response=s.entity(entity),
        command=True,
        errors=CREATE_ERRORS if status == 201 and "{id}" not in path else COMMAND_ERRORS,
    )


ENDPOINTS: list[Endpoint] = [
    _command(
        "POST",
        "/v1/customers",
        _register_customer,
        "register_customer",
        "Register a customer",
        "Customers",
        s.CUSTOMER_CREATE,
        "customer",
        201,
    ),
    _read(Customer, "customer", "customers", "Customers"),
    _list("customer", "customers", "Customers"),
    _command(
        "PATCH",
        "/v1/customers/{id}",
        _update_customer,
        "update_customer",
        "Update a customer's profile",
        "Customers",
        s.CUSTOMER_UPDATE,
        "customer",
    ),
    _command(
        "POST",
        "/v1/customers/{id}/verify",
        lambda c: c.services.commerce.verify_customer(c.store_id, c.ids["id"], c.actor),
        "verify_customer",
        "Mark a customer verified",
        "Customers",
        s.EMPTY,
        "customer",
    ),
    _command(
        "POST",
        "/v1/customers/{id}/addresses",
        _save_address,
        "save_customer_address",
        "Save an address for a customer",
        "Customers",
        s.ADDRESS,
        "customer",
        201,
    ),
    _command(
        "POST",
        "/v1/customers/{id}/deletion-request",
        lambda c: c.services.commerce.request_customer_deletion(c.store_id, c.ids["id"], c.actor),
        "request_customer_deletion",
        "Record a customer's request to be deleted",
        "Customers",
        s.EMPTY,
        "customer",
    ),
    _command(
        "POST",
        "/v1/products",
        _create_product,
        "create_product",
        "Create a product",
        "Catalog",
        s.PRODUCT_CREATE,
        "product",
        201,
    ),
    _read(Product, "product", "products", "Catalog"),
    _list("product", "products", "Catalog"),
    _command(
        "PATCH",
        "/v1/products/{id}",
        _update_product,
        "update_product",
        "Update a product",
        "Catalog",
        s.PRODUCT_UPDATE,
        "product",
    ),
    _command(
        "POST",
        "/v1/products/{id}/variants",
        lambda c: c.services.commerce.create_variant(
            c.store_id, c.ids["id"], c.body["attributes"], c.actor
        ),
        "create_variant",
        "Create a variant of a product",
        "Catalog",
        s.VARIANT,
        "variant",
        201,
    ),
    _read(Variant, "variant", "variants", "Catalog"),
    _command(
        "PATCH",
        "/v1/variants/{id}",
        lambda c: c.services.commerce.update_variant(
            c.store_id, c.ids["id"], c.body["attributes"], c.actor
        ),
        "update_variant",
        "Change a variant's attributes",
        "Catalog",
        s.VARIANT,
        "variant",
    ),
    _command(
        "POST",
        "/v1/variants/{id}/skus",
        _create_sku,
        "create_sku",
        "Create a SKU of a variant",
        "Catalog",
        s.SKU_CREATE,
        "sku",
        201,
    ),
    _read(Sku, "sku", "skus", "Catalog"),
    _list("sku", "skus", "Catalog"),
    _command(
        "POST",
        "/v1/skus/{id}/price",
        lambda c: c.services.commerce.change_sku_price(
            c.store_id, c.ids["id"], c.body["amount"], c.body["currency"], c.actor
        ),
        "change_sku_price",
        "Change a SKU's price",
        "Catalog",
        s.PRICE,
        "sku",
    ),
    _command(
        "POST",
        "/v1/skus/{id}/stock",
        _change_stock,
        "change_sku_stock",
        "Set a SKU's stock (`quantity`) or move it (`delta`)",
        "Catalog",
        s.STOCK,
        "sku",
    ),
    _command(
        "POST",
        "/v1/orders",
        _place_order,
        "place_order",
        "Place an order",
        "Orders",
        s.ORDER_CREATE,
        "order",
        201,
    ),
    _read(Order, "order", "orders", "Orders"),
    _list("order", "orders", "Orders"),
    _command(
        "POST",
        "/v1/orders/{id}/status",
        lambda c: c.services.commerce.update_order_status(
            c.store_id, c.ids["id"], c.body["status"], c.actor
        ),
        "update_order_status",
        "Move an order to its next status",
        "Orders",
        s.ORDER_STATUS,
        "order",
    ),
    _command(
        "POST",
        "/v1/orders/{id}/payments",
        lambda c: c.services.commerce.pay_order(c.store_id, c.ids["id"], c.body["amount"], c.actor),
        "pay_order",
        "Record a payment on an order",
        "Orders",
        s.PAYMENT,
        "order",
    ),
    _command(
        "POST",
        "/v1/orders/{id}/refunds",
        lambda c: c.services.commerce.refund_order(
            c.store_id, c.ids["id"], c.body["amount"], c.body.get("reason"), c.actor
        ),
        "refund_order",
        "Record a refund on an order",
        "Orders",
        s.REFUND,
        "order",
    ),
    _command(
        "POST",
        "/v1/subscriptions",
        _start_subscription,
        "start_subscription",
        "Subscribe a customer to a SKU",
        "Subscriptions",
        s.SUBSCRIPTION_CREATE,
        "subscription",
        201,
    ),
    _read(Subscription, "subscription", "subscriptions", "Subscriptions"),
    _list("subscription", "subscriptions", "Subscriptions"),
    *[
        _subscription_action(action)
        for action in ("renew", "pause", "resume", "cancel", "expire", "payment-failure")
    ],
]
