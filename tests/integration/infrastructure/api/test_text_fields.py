"""Text for people holds no control characters (issue #12, item 1), on SQLite and PostgreSQL.

Every field of every request body that people read — names, emails, `initiatedBy`,
addresses, attributes, SKU codes, descriptions, reasons — refuses C0 controls, DEL, C1
controls and lone surrogates with a 422 naming the field, and records nothing; free text
(descriptions and reasons) alone takes tab and line breaks. One NUL accepted here used to
stop every store's read models on PostgreSQL, whose `text` cannot hold U+0000.

`test_every_string_field_of_a_request_is_classified` keeps the table complete: a new
string field in a request schema must be declared text for people or say what else
it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest

from infrastructure.api.app import ENDPOINTS
from infrastructure.api.schemas import MULTILINE, NAME, SINGLE_LINE
from tests.integration.infrastructure.api.conftest import Api, Tenant
from tests.integration.infrastructure.api.test_commerce_routes import (
    ADDRESS,
    HOOK_URL,
    expect,
    place_order,
    send,
    start_subscription,
)

pytestmark = pytest.mark.anyio

JSON = dict[str, Any]
# NUL (what PostgreSQL cannot store), an escape (what terminals obey), DEL, a C1 control.
CONTROLS = ["\x00", "\x1b", "\x7f", "\x85"]


@dataclass(frozen=True)
class Field:
    """A text field of a command: where it is sent, a valid body around it, its name in
    a problem's `errors`, and whether it is free text (may hold tab and line breaks)."""

    method: str
    path: str  # with {customer}, {product}, … placeholders
    body: JSON
    name: str  # the field's path in the body, as the problem names it
    multiline: bool = False

    def with_value(self, value: str) -> JSON:
        body = {**self.body}
        head, _, rest = self.name.partition(".")
        if rest:
            body[head] = {**body[head], rest: value}
        else:
            body[head] = value
        return body


def _valid(field: Field, text: str) -> str:
    """A valid value of the field around ``text``."""
    return f"a{text}b@example.com" if field.name in EMAIL_FIELDS else f"x{text}y"


EMAIL_FIELDS = {"email", "initiatedBy"}
WEBHOOK = {"url": HOOK_URL, "eventTypes": ["*"]}
FIELDS = [
    Field("POST", "/v1/customers", {"email": "bob@example.com", "name": "Bob"}, "email"),
    Field("POST", "/v1/customers", {"email": "bob@example.com", "name": "Bob"}, "name"),
    Field("POST", "/v1/customers", {"email": "bob@example.com", "name": "Bob"}, "phone"),
    Field("POST", "/v1/customers", {"email": "bob@example.com", "name": "Bob"}, "initiatedBy"),
    Field("PATCH", "/v1/customers/{customer}", {}, "email"),
    Field("PATCH", "/v1/customers/{customer}", {}, "name"),
    Field("PATCH", "/v1/customers/{customer}", {}, "phone"),
    Field("POST", "/v1/customers/{customer}/addresses", ADDRESS, "line1"),
    Field("POST", "/v1/customers/{customer}/addresses", ADDRESS, "line2"),
    Field("POST", "/v1/customers/{customer}/addresses", ADDRESS, "city"),
    Field("POST", "/v1/customers/{customer}/addresses", ADDRESS, "postalCode"),
    Field("POST", "/v1/products", {"name": "Mug"}, "name"),
    Field("POST", "/v1/products", {"name": "Mug"}, "description", multiline=True),
    Field("PATCH", "/v1/products/{product}", {}, "name"),
    Field("PATCH", "/v1/products/{product}", {}, "description", multiline=True),
    Field(
        "POST",
        "/v1/products/{product}/variants",
        {"attributes": {"color": "red"}},
        "attributes.color",
    ),
    Field("PATCH", "/v1/variants/{variant}", {"attributes": {"color": "red"}}, "attributes.size"),
    Field(
        "POST",
        "/v1/variants/{variant}/skus",
        {"code": "MUG", "price": {"amount": "1.00", "currency": "EUR"}, "stock": 1},
        "code",
    ),
    Field("POST", "/v1/orders/{order}/refunds", {"amount": "1.00"}, "reason", multiline=True),
    Field(
        "POST",
        "/v1/subscriptions/{subscription}/payment-failure",
        {},
        "reason",
        multiline=True,
    ),
    Field("POST", "/v1/webhooks", WEBHOOK, "description", multiline=True),
    Field("PATCH", "/v1/webhooks/{webhook}", {}, "description", multiline=True),
    Field(
        "PATCH",
        "/v1/webhooks/{webhook}",
        {"enabled": False},
        "disabledReason",
        multiline=True,
    ),
]


@pytest.fixture
async def entities(api: Api) -> dict[str, str]:
    """One entity of each kind in the system key's store (`api.other`, which may name any
    `initiatedBy`); the order is paid, so it can be refunded."""
    tenant = api.other
    order, customer, sku = await place_order(api, tenant)
    await expect(api, tenant, "POST", f"/v1/orders/{order['id']}/payments", {"amount": "39.80"})
    subscription = await start_subscription(api, tenant)
    webhook = await expect(api, tenant, "POST", "/v1/webhooks", WEBHOOK, 201)
    return {
        "customer": customer["id"],
        "product": sku["productId"],
        "variant": sku["variantId"],
        "order": order["id"],
        "subscription": subscription["id"],
        "webhook": webhook["id"],
    }


def recorded(api: Api) -> int:
    return sum(
        len(app.recorder.select_notifications(start=None, limit=10_000))
        for app in (api.services.commerce, api.services.webhooks)
    )


async def refused(api: Api, tenant: Tenant, method: str, path: str, body: JSON) -> JSON:
    response = await send(api, tenant, method, path, body)
    assert response.status_code == 422, response.text
    problem: JSON = response.json()
    return problem


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f"{f.method} {f.path} {f.name}")
async def test_every_text_field_refuses_control_characters(
    api: Api, entities: dict[str, str], field: Field
) -> None:
    path = field.path.format(**entities)
    before = recorded(api)
    for control in CONTROLS:
        # Given a valid command whose one text field holds a control character
        body = field.with_value(_valid(field, control))

        # When it is sent
        problem = await refused(api, api.other, field.method, path, body)

        # Then it is a 422 naming that field and the character, and nothing is recorded
        errors = {e["field"]: e["message"] for e in problem["errors"]}
        assert field.name in errors, problem
        assert f"U+{ord(control):04X}" in errors[field.name], problem
    assert recorded(api) == before


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f"{f.method} {f.path} {f.name}")
async def test_only_free_text_takes_tabs_and_line_breaks(
    api: Api, entities: dict[str, str], field: Field
) -> None:
    # Given a text field holding a tab and line breaks
    path = field.path.format(**entities)
    body = field.with_value(_valid(field, "\tone\r\ntwo\n"))

    # When the command is sent
    response = await send(api, api.other, field.method, path, body)

    # Then free text (descriptions, reasons) takes it; a one-line field refuses it by name
    if field.multiline:
        assert response.status_code < 300, response.text
    else:
        assert response.status_code == 422, response.text
        assert field.name in [e["field"] for e in response.json()["errors"]]


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f"{f.method} {f.path} {f.name}")
async def test_a_lone_surrogate_is_refused_naming_the_field(
    api: Api, entities: dict[str, str], field: Field
) -> None:
    # Given a command whose text field holds a lone surrogate (valid JSON, no Unicode text)
    path = field.path.format(**entities)
    body = field.with_value(_valid(field, "\ud800"))
    raw = _dumps_with_surrogates(body)

    # When it is sent
    response = await api.client.request(
        field.method,
        path,
        content=raw,
        headers={**api.other.headers, "content-type": "application/json"},
    )

    # Then it is a 422 naming the field
    assert response.status_code == 422, response.text
    assert field.name in [e["field"] for e in response.json()["errors"]]


def _dumps_with_surrogates(body: JSON) -> bytes:
    import json

    return json.dumps(body).encode("ascii")  # ensure_ascii writes "\ud800" as an escape


async def test_free_text_keeps_its_line_breaks(api: Api, entities: dict[str, str]) -> None:
    # Given a webhook disabled with a reason over two lines
    reason = "maintenance:\n\tback on Monday"
    path = f"/v1/webhooks/{entities['webhook']}"

    # When it is read back
    await expect(api, api.other, "PATCH", path, {"enabled": False, "disabledReason": reason})

    # Then the reason is kept as written
    webhook = await expect(api, api.other, "GET", path)
    assert webhook["disabledReason"] == reason


@pytest.mark.parametrize("control", CONTROLS)
async def test_a_query_parameter_with_a_control_character_is_a_422(api: Api, control: str) -> None:
    # Given a filter holding a control character (a NUL never reaches PostgreSQL)
    for path, name in [("/v1/audit", "actor"), ("/v1/events", "eventType")]:
        # When a list is asked for with it
        response = await send(api, api.shop, "GET", f"{path}?{urlencode({name: f'a{control}b'})}")

        # Then it is a 422 naming the parameter, never a 500
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == [name]


# The table above is complete ---------------------------------------------------------------

# String fields of request bodies that are not text for people, and what they are instead.
NOT_PROSE = {
    "url",  # a URL: the SSRF guard refuses control characters in it, by name (`url`)
    "eventTypes",  # names from the event catalog, checked against it
    "eventType",  # a name from the event catalog (an enum)
    "headers",  # HTTP header names and values: checked as HTTP allows them
    "status",  # an enum
    "interval",  # an enum
    "currency",  # three capital letters
    "country",  # two capital letters
    "amount",  # digits
    "customerId",
    "skuId",
    "webhookId",
    "since",
    "until",
}


def _string_fields(schema: JSON, path: str = "") -> Iterator[tuple[str, JSON]]:
    for name, sub in schema.get("properties", {}).items():
        where = f"{path}.{name}" if path else name
        types = sub.get("type")
        types = types if isinstance(types, list) else [types]
        if "string" in types:
            yield where, sub
        if "object" in types:
            yield from _string_fields(sub, where)
            extra = sub.get("additionalProperties")
            if isinstance(extra, dict) and extra.get("type") == "string":
                yield f"{where}.*", extra
        if "array" in types and isinstance(sub.get("items"), dict):
            item = sub["items"]
            if item.get("type") == "object":
                yield from _string_fields(item, f"{where}[]")


def test_every_string_field_of_a_request_is_classified() -> None:
    # Given every string field of every request body the API takes
    unclassified = []
    for endpoint in ENDPOINTS:
        for where, sub in _string_fields(endpoint.request or {}):
            leaf = where.split(".")[-1].removesuffix("[]")
            top = where.split(".")[0].removesuffix("[]")
            if leaf in NOT_PROSE or top in NOT_PROSE:
                continue
            # Then each one that people read carries the text rule of domain.values
            rules = (SINGLE_LINE["pattern"], MULTILINE["pattern"], NAME["pattern"])
            if sub.get("pattern") not in rules:
                unclassified.append(f"{endpoint.method} {endpoint.path} {where}")
    assert unclassified == []
