"""Every error the API answers (SPEC §8), on SQLite and on PostgreSQL: RFC 9457 problems
with the right status, never a stack trace, and never a 500 for bad input."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import httpx
import pytest

from domain.values import Actor
from infrastructure.api.app import ENDPOINTS
from infrastructure.api.endpoint import MAX_BODY, Endpoint
from tests.integration.infrastructure.api.conftest import Api

pytestmark = pytest.mark.anyio

JSON = dict[str, Any]
PROBLEM = "application/problem+json"
# What must never leak into a response: a traceback, a source file, an exception's repr.
LEAKS = re.compile(r"Traceback|File \"|\.py\b|/work/|site-packages|Error\(")


def assert_problem(response: httpx.Response, status: int) -> JSON:
    """`response` is an RFC 9457 problem of this status, leaking nothing."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM
    body: JSON = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    assert isinstance(body["type"], str)
    assert body["type"]
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert not LEAKS.search(response.text), response.text
    return body


def fields(problem: JSON) -> list[str]:
    return [error["field"] for error in problem.get("errors", [])]


def notifications(api: Api) -> int:
    return len(api.services.commerce.recorder.select_notifications(start=None, limit=1000))


def key_id(api_key: str) -> str:
    """The public id of a key `wr_<id>_<secret>`."""
    return api_key.removeprefix("wr_").split("_", 1)[0]


def json_headers(api: Api) -> dict[str, str]:
    return {**api.shop.headers, "content-type": "application/json"}


# 400 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"email": "a@b.example",}', b"{'email': 1}", b"\xff\xfe{}", b'{"a": tru}'],
    ids=["unclosed", "trailing-comma", "single-quotes", "not-utf8", "bad-literal"],
)
async def test_malformed_json_is_a_400(api: Api, raw: bytes) -> None:
    # Given a body that is not JSON
    # When it is posted as JSON
    response = await api.client.post("/v1/customers", content=raw, headers=json_headers(api))

    # Then it is a 400 problem, and nothing is recorded
    problem = assert_problem(response, 400)
    assert "JSON" in problem["detail"]
    assert notifications(api) == 0


async def test_a_body_on_a_route_that_takes_none_is_a_400(api: Api) -> None:
    # Given a read route
    # When a body is sent with it
    response = await api.client.request(
        "GET", f"/v1/customers/{uuid4()}", content=b'{"a": 1}', headers=json_headers(api)
    )

    # Then it is refused as malformed
    assert_problem(response, 400)


# 401 --------------------------------------------------------------------------------------


async def test_no_key_is_a_401(api: Api) -> None:
    # Given no Authorization header
    # When a read and a command (even with an invalid body) are sent
    read = await api.client.get(f"/v1/customers/{uuid4()}")
    command = await api.client.post("/v1/customers", json={"nonsense": True})

    # Then both are 401 with a challenge, before anything else is judged
    for response in (read, command):
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].lower().startswith("bearer")
    assert notifications(api) == 0


@pytest.mark.parametrize(
    "header",
    [
        "Basic YW5uOnNlY3JldA==",
        "Token {key}",
        "{key}",
        "Bearer",
        "Bearer ",
        "Bearer wr_0123456789abcdef_doesnotexist",
        "Bearer wr__nothing",
        "Bearer not-a-webround-key",
        "Bearer {key}x",
    ],
    ids=[
        "basic",
        "other-scheme",
        "no-scheme",
        "no-token",
        "blank-token",
        "unknown-key",
        "empty-key-id",
        "malformed-key",
        "wrong-secret",
    ],
)
async def test_a_bad_authorization_header_is_a_401(api: Api, header: str) -> None:
    # Given an Authorization header that does not carry a valid key
    value = header.format(key=api.shop.api_key)

    # When a customer is registered with it
    response = await api.client.post(
        "/v1/customers",
        json={"email": "bob@example.com", "name": "Bob"},
        headers={"authorization": value},
    )

    # Then it is a 401 with a Bearer challenge that never repeats the key
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].lower().startswith("bearer")
    assert api.shop.api_key not in response.text
    assert notifications(api) == 0


async def test_a_revoked_key_is_a_401(api: Api) -> None:
    # Given the shop's key works
    assert (await api.client.get("/v1/webhooks", headers=api.shop.headers)).status_code == 200

    # When it is revoked
    api.services.webhooks.revoke_api_key(key_id(api.shop.api_key), Actor.system())

    # Then reads and commands with it are 401, and the other store's key still works
    read = await api.client.get("/v1/webhooks", headers=api.shop.headers)
    command = await api.client.post("/v1/products", json={"name": "Mug"}, headers=api.shop.headers)
    for response in (read, command):
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].lower().startswith("bearer")
    assert notifications(api) == 0
    assert (await api.client.get("/v1/webhooks", headers=api.other.headers)).status_code == 200


# 404 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plural", ["customers", "products", "variants", "skus", "orders", "subscriptions", "webhooks"]
)
async def test_an_unknown_id_is_a_404(api: Api, plural: str) -> None:
    # Given an id that names nothing
    missing = uuid4()

    # When it is read
    response = await api.client.get(f"/v1/{plural}/{missing}", headers=api.shop.headers)

    # Then it is a 404 that names the id
    assert str(missing) in assert_problem(response, 404)["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/customers/42"),
        ("GET", "/v1/orders/not-a-uuid"),
        ("GET", "/v1/webhooks/..%2F..%2Fetc%2Fpasswd"),
        ("POST", "/v1/customers/42/verify"),
        ("POST", "/v1/subscriptions/xyz/cancel"),
        ("DELETE", "/v1/webhooks/0000"),
    ],
)
async def test_an_id_that_is_not_a_uuid_is_a_404(api: Api, method: str, path: str) -> None:
    # Given an id that could never have been given out
    # When a route is called with it
    response = await api.client.request(method, path, headers=api.shop.headers)

    # Then it is a 404, and nothing is recorded
    assert_problem(response, 404)
    assert notifications(api) == 0


@pytest.mark.parametrize("path", ["/v1/nothing", "/v2/customers", "/", "/v1/customers/a/b/c"])
async def test_an_unknown_route_is_a_404(api: Api, path: str) -> None:
    # Given a path no route answers
    # When it is called, with or without a key
    with_key = await api.client.get(path, headers=api.shop.headers)
    without = await api.client.get(path)

    # Then it is a 404 problem
    assert_problem(with_key, 404)
    assert_problem(without, 404)


# 405 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/customers"),
        ("PUT", "/v1/customers/{id}"),
        ("DELETE", "/v1/orders/{id}"),
        ("GET", "/v1/orders/{id}/payments"),
        ("PATCH", "/v1/webhooks"),
        ("POST", "/v1/event-types"),
    ],
)
async def test_a_wrong_method_is_a_405(api: Api, method: str, path: str) -> None:
    # Given a route that exists for other methods
    # When it is called with a method it does not take
    response = await api.client.request(method, path.format(id=uuid4()), headers=api.shop.headers)

    # Then it is a 405 problem that says which methods are allowed
    assert_problem(response, 405)
    assert method not in response.headers["allow"]


# 413 --------------------------------------------------------------------------------------


def _big_body() -> bytes:
    padding = "x" * (MAX_BODY + 10)
    return json.dumps({"email": "bob@example.com", "name": padding}).encode()


async def test_a_body_over_1_mib_is_a_413(api: Api) -> None:
    # Given a body just over 1 MiB, with its length declared
    body = _big_body()

    # When it is posted
    response = await api.client.post("/v1/customers", content=body, headers=json_headers(api))

    # Then it is a 413, and nothing is recorded
    assert_problem(response, 413)
    assert notifications(api) == 0


async def test_a_streamed_body_over_1_mib_is_a_413(api: Api) -> None:
    # Given a body over 1 MiB sent in chunks, without a declared length
    body = _big_body()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    # When it is posted
    response = await api.client.post("/v1/customers", content=chunks(), headers=json_headers(api))

    # Then it is a 413 too
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)
    assert notifications(api) == 0


async def test_a_body_of_exactly_1_mib_is_not_refused_for_its_size(api: Api) -> None:
    # Given a JSON body of exactly 1 MiB
    head = b'{"email": "bob@example.com", "name": "Bob", "phone": "'
    body = head + b"1" * (MAX_BODY - len(head) - 2) + b'"}'
    assert len(body) == MAX_BODY

    # When it is posted
    response = await api.client.post("/v1/customers", content=body, headers=json_headers(api))

    # Then it is judged on its fields (a phone of 1 MiB is too long), not on its size
    assert "phone" in fields(assert_problem(response, 422))


# 415 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None],
)
async def test_a_body_that_is_not_declared_json_is_a_415(
    api: Api, content_type: str | None
) -> None:
    # Given a valid JSON text sent under another content type (or none)
    headers = dict(api.shop.headers)
    if content_type:
        headers["content-type"] = content_type

    # When it is posted
    response = await api.client.post(
        "/v1/customers", content=b'{"email": "bob@example.com", "name": "Bob"}', headers=headers
    )

    # Then it is a 415, and nothing is recorded
    assert_problem(response, 415)
    assert notifications(api) == 0


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "APPLICATION/JSON", "application/x+json"]
)
async def test_json_media_types_are_accepted(api: Api, content_type: str) -> None:
    # Given a valid body under a JSON media type
    headers = {**api.shop.headers, "content-type": content_type}

    # When it is posted
    response = await api.client.post(
        "/v1/customers", content=b'{"email": "bob@example.com", "name": "Bob"}', headers=headers
    )

    # Then the customer is registered
    assert response.status_code == 201, response.text


# 422 --------------------------------------------------------------------------------------


async def test_invalid_fields_are_a_422_naming_each_field(api: Api) -> None:
    # Given an order whose line quantity is 0, with an extra field, and no currency
    body = {
        "customerId": str(uuid4()),
        "lines": [{"skuId": str(uuid4()), "quantity": 0}],
        "coupon": "FREE",
    }

    # When it is placed
    response = await api.client.post("/v1/orders", json=body, headers=api.shop.headers)

    # Then every culprit is named by its path
    problem = assert_problem(response, 422)
    assert set(fields(problem)) == {"currency", "lines[0].quantity", "coupon"}
    assert all(error["message"] for error in problem["errors"])


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/customers", {"name": "Bob"}, "email"),
        ("/v1/customers", {"email": "bob@example.com", "name": "Bob", "role": "admin"}, "role"),
        ("/v1/customers", {"email": "not an email", "name": "Bob"}, "email"),
        ("/v1/customers", {"email": "bob@example.com", "name": ""}, "name"),
        ("/v1/customers", {"email": "bob@example.com", "name": 7}, "name"),
        ("/v1/products", {}, "name"),
        ("/v1/orders", {"customerId": "nope", "currency": "EUR", "lines": []}, "customerId"),
        (
            "/v1/orders",
            {"customerId": str(uuid4()), "currency": "EUR", "lines": [{"quantity": 1}]},
            "lines[0].skuId",
        ),
        (
            "/v1/orders",
            {
                "customerId": str(uuid4()),
                "currency": "EUR",
                "lines": [{"skuId": str(uuid4()), "quantity": 1, "discount": 5}],
            },
            "lines[0].discount",
        ),
        (
            "/v1/subscriptions",
            {"customerId": str(uuid4()), "skuId": str(uuid4()), "interval": "week"},
            "interval",
        ),
        ("/v1/webhooks", {"eventTypes": ["*"]}, "url"),
        ("/v1/webhooks", {"url": "https://93.184.215.14/hook", "eventTypes": []}, "eventTypes"),
    ],
)
async def test_each_invalid_field_is_named(api: Api, path: str, body: JSON, field: str) -> None:
    # Given a body with one invalid (missing, unknown or malformed) field
    # When it is posted
    response = await api.client.post(path, json=body, headers=api.shop.headers)

    # Then it is a 422 naming that field
    problem = assert_problem(response, 422)
    assert field in fields(problem), problem
    assert notifications(api) == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/skus/{id}/stock", {}, "body"),
        ("/v1/skus/{id}/stock", {"quantity": 1, "delta": 1}, "body"),
        ("/v1/skus/{id}/stock", {"quantity": -1}, "quantity"),
        ("/v1/customers/{id}/addresses", {"line1": "x", "city": "y", "postalCode": "1"}, "country"),
        (
            "/v1/customers/{id}/addresses",
            {"line1": "x", "city": "y", "postalCode": "1", "country": "Germany"},
            "country",
        ),
        ("/v1/orders/{id}/payments", {"amount": 10}, "amount"),
        ("/v1/orders/{id}/payments", {"amount": "1e3"}, "amount"),
        ("/v1/orders/{id}/status", {}, "status"),
        ("/v1/subscriptions/{id}/pause", {"reason": "x"}, "reason"),
    ],
)
async def test_invalid_command_bodies_are_named_before_the_id_is_looked_up(
    api: Api, path: str, body: JSON, field: str
) -> None:
    # Given a command on an id that does not exist, with an invalid body
    # When it is sent
    response = await api.client.post(path.format(id=uuid4()), json=body, headers=api.shop.headers)

    # Then the invalid field is reported
    problem = assert_problem(response, 422)
    assert field in fields(problem), problem


async def test_an_idempotency_key_over_255_characters_is_a_422(api: Api) -> None:
    # Given an Idempotency-Key of 256 characters
    headers = {**api.shop.headers, "idempotency-key": "k" * 256}

    # When a command is sent with it
    response = await api.client.post("/v1/products", json={"name": "Mug"}, headers=headers)

    # Then it is refused, naming the header, and nothing is recorded
    assert fields(assert_problem(response, 422)) == ["Idempotency-Key"]
    assert notifications(api) == 0


async def test_an_idempotency_key_with_a_control_character_is_a_422(
    api: Api,
) -> None:
    # Given an Idempotency-Key with a tab in it (legal in an HTTP header value)
    headers = {**api.shop.headers, "idempotency-key": "a\tb"}

    # When a command is sent with it
    response = await api.client.post("/v1/products", json={"name": "Mug"}, headers=headers)

    # Then it is refused as invalid, naming the header, and nothing is recorded
    assert fields(assert_problem(response, 422)) == ["Idempotency-Key"]
    assert notifications(api) == 0


# Never a 500 for bad input ----------------------------------------------------------------

BODY_ENDPOINTS = [e for e in ENDPOINTS if e.request is not None]
DEEP = 10_000


def _path(endpoint: Endpoint) -> str:
    return endpoint.path.format(**{name: uuid4() for name in endpoint.path_ids})


def _every_field(value: Any) -> Any:
    """A body with each of the endpoint's own fields set to `value`."""

    def build(endpoint: Endpoint) -> bytes:
        assert endpoint.request is not None
        names = [n for n in endpoint.request.get("properties", {}) if n != "initiatedBy"]
        return json.dumps(dict.fromkeys(names or ["x"], value)).encode()

    return build


def _literal(raw: bytes) -> Any:
    return lambda endpoint: raw


HOSTILE = [
    pytest.param(_literal(b"[]"), id="empty-array"),
    pytest.param(_literal(b'"x"'), id="string"),
    pytest.param(_literal(b"null"), id="null"),
    pytest.param(_literal(b"0"), id="zero"),
    pytest.param(_literal(b'{"a": 1}'), id="unknown-field"),
    pytest.param(_literal(b"[" * DEEP + b"]" * DEEP), id="deep-array"),
    pytest.param(_literal(b'{"a":' * DEEP + b"1" + b"}" * DEEP), id="deep-object"),
    pytest.param(_literal(b"9" * 5000), id="huge-integer-body"),
    pytest.param(_every_field(10**100), id="huge-integer-fields"),
    pytest.param(_every_field(-(10**30)), id="huge-negative-fields"),
    pytest.param(_literal(b"NaN"), id="nan-body"),
    pytest.param(_literal(b'{"amount": NaN, "quantity": Infinity, "delta": -Infinity}'), id="nan"),
    pytest.param(_every_field("NaN"), id="nan-strings"),
    pytest.param(_every_field("Infinity"), id="infinity-strings"),
    pytest.param(_every_field("-1e999"), id="overflow-strings"),
    pytest.param(_every_field(1e308), id="huge-float-fields"),
    pytest.param(_every_field(True), id="booleans"),
    pytest.param(_every_field([]), id="arrays"),
    pytest.param(_every_field({}), id="objects"),
    pytest.param(_every_field(None), id="nulls"),
    pytest.param(_every_field("Zoë ✓ \u202e 😀 \u0000 日本"), id="unicode"),
    pytest.param(_every_field("x" * 100_000), id="long-strings"),
    pytest.param(_every_field("\ud800"), id="lone-surrogate-fields"),
]


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_no_bad_body_is_ever_a_server_error(api: Api, hostile: Any) -> None:
    # Given a hostile body built for each endpoint that takes one
    answers: dict[str, int] = {}
    for endpoint in BODY_ENDPOINTS:
        path = _path(endpoint)
        raw: bytes = hostile(endpoint)

        # When it is sent with a valid key, to random ids
        response = await api.client.request(
            endpoint.method, path, content=raw, headers=json_headers(api)
        )

        # Then the answer is a client error (or a success), never a server error
        answers[f"{endpoint.method} {endpoint.path}"] = response.status_code
        if response.status_code >= 400:
            assert_problem(response, response.status_code)
    server_errors = {route: status for route, status in answers.items() if status >= 500}
    assert server_errors == {}


async def test_a_deeply_nested_body_is_a_400(api: Api) -> None:
    # Given a body of 10,000 nested arrays
    raw = b"[" * DEEP + b"]" * DEEP

    # When it is posted
    response = await api.client.post("/v1/customers", content=raw, headers=json_headers(api))

    # Then it is refused as malformed (or invalid), never a 500
    assert response.status_code in (400, 422)


async def test_a_lone_surrogate_in_a_valid_body_is_refused(api: Api) -> None:
    # Given valid bodies whose text holds a lone surrogate (valid JSON, not valid Unicode)
    cases = [
        ("/v1/customers", b'{"email": "bob@example.com", "name": "Bob\\ud800"}'),
        ("/v1/products", b'{"name": "Mug \\udfff"}'),
    ]

    for path, raw in cases:
        # When each is posted
        response = await api.client.post(path, content=raw, headers=json_headers(api))

        # Then it is refused as invalid (or malformed), and nothing is recorded
        assert response.status_code in (400, 422), f"{path}: {response.status_code}"
    assert notifications(api) == 0


# Numbers of any length (issue #12, item 9) -------------------------------------------------

LISTS = ["/v1/webhooks", "/v1/events", "/v1/deliveries", "/v1/audit"]


@pytest.mark.parametrize("path", LISTS)
async def test_a_limit_of_thousands_of_digits_is_a_422(api: Api, path: str) -> None:
    # Given a page size of 5,000 digits (past Python's int conversion limit)
    # When a list is asked for with it
    response = await api.client.get(f"{path}?limit={'9' * 5000}", headers=api.shop.headers)

    # Then it is a 422 naming limit, never a 500
    assert fields(assert_problem(response, 422)) == ["limit"]


@pytest.mark.parametrize("path", LISTS)
async def test_a_limit_with_leading_zeros_is_that_number(api: Api, path: str) -> None:
    # When a list is asked for with a page size written with thousands of leading zeros
    response = await api.client.get(f"{path}?limit={'0' * 5000}50", headers=api.shop.headers)

    # Then it is the page size it says
    assert response.status_code == 200, response.text


async def test_a_content_length_of_thousands_of_digits_is_a_413(api: Api) -> None:
    # Given a request declaring a body of 5,000 digits' length
    headers = {**json_headers(api), "content-length": "9" * 5000}

    # When it is sent
    request = api.client.build_request("POST", "/v1/customers", content=b"{}", headers=headers)
    response = await api.client.send(request)

    # Then it is refused as too large, unread, never a 500
    assert_problem(response, 413)
