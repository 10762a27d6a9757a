"""`GET /v1/event-types` (SPEC §4): the event catalog over the real API — every event type of
§2 with its entity, a description and a Draft 2020-12 JSON Schema of its `data`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from jsonschema import Draft202012Validator

from tests.support.contract import SPEC_EVENT_TYPES

if TYPE_CHECKING:
    from tests.integration.infrastructure.api.conftest import Api

pytestmark = pytest.mark.anyio

EVENT_TYPES = list(SPEC_EVENT_TYPES)
DIALECT = "https://json-schema.org/draft/2020-12/schema"


async def catalog(api: Api) -> list[dict[str, Any]]:
    response = await api.client.get("/v1/event-types", headers=api.shop.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"data", "nextCursor"}
    assert body["nextCursor"] is None
    data: list[dict[str, Any]] = body["data"]
    return data


async def test_the_catalog_lists_the_23_event_types_of_the_spec(api: Api) -> None:
    # Given a store's key
    # When the catalog is read
    data = await catalog(api)

    # Then it lists exactly the event types of §2, each once
    names = [item["name"] for item in data]
    assert len(EVENT_TYPES) == 23
    assert sorted(names) == sorted(EVENT_TYPES)
    assert len(set(names)) == len(names)


async def test_each_event_type_has_an_entity_a_description_and_a_schema(api: Api) -> None:
    # When the catalog is read
    data = await catalog(api)

    # Then each entry names its entity, describes itself and has nothing else
    for item in data:
        assert set(item) == {"name", "entity", "description", "schema"}, item["name"]
        entity = item["name"].split(".")[0]
        assert item["entity"] == entity
        assert isinstance(item["description"], str)
        assert len(item["description"].strip()) >= 10, item["name"]


@pytest.mark.parametrize("name", EVENT_TYPES)
async def test_each_schema_is_a_valid_draft_2020_12_schema_of_the_data(api: Api, name: str) -> None:
    # When the catalog is read
    entry = next(item for item in await catalog(api) if item["name"] == name)
    schema = entry["schema"]

    # Then its schema is a valid Draft 2020-12 JSON Schema, and says so
    Draft202012Validator.check_schema(schema)
    assert schema.get("$schema", DIALECT) == DIALECT
    # And it describes an object holding the entity and the change
    assert schema["type"] == "object"
    entity = name.split(".")[0]
    assert {entity, "change"} <= set(schema["properties"])
    assert {entity, "change"} <= set(schema["required"])
    # And every $ref resolves: validation runs, and an empty object is not valid data
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    assert list(validator.iter_errors({}))
    assert not validator.is_valid({entity: None, "change": {}})


async def test_every_listed_event_type_can_be_subscribed_to(api: Api) -> None:
    # Given the catalog
    names = [item["name"] for item in await catalog(api)]

    # When a webhook subscribes to every listed event type by its exact name
    response = await api.client.post(
        "/v1/webhooks",
        json={"url": "https://93.184.215.14/hooks", "eventTypes": names},
        headers=api.shop.headers,
    )

    # Then the API accepts each of them
    assert response.status_code == 201, response.text
    assert sorted(response.json()["eventTypes"]) == sorted(EVENT_TYPES)


async def test_every_store_sees_the_same_catalog(api: Api) -> None:
    # When two stores read the catalog
    mine = await catalog(api)
    theirs = (await api.client.get("/v1/event-types", headers=api.other.headers)).json()["data"]

    # Then they read the same
    assert mine == theirs


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Basic YW5uOnB3"},
        {"authorization": "Bearer "},
        {"authorization": "Bearer wr_0123456789abcdef_not-a-real-key"},
        {"authorization": "Bearer not-our-format"},
    ],
    ids=["no-header", "basic", "empty-bearer", "unknown-key", "malformed-key"],
)
async def test_the_catalog_requires_an_api_key(api: Api, headers: dict[str, str]) -> None:
    # When the catalog is asked for without a valid key
    response = await api.client.get("/v1/event-types", headers=headers)

    # Then it is a 401 problem that asks for a bearer key, and lists nothing
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].lower().startswith("bearer")
    problem = response.json()
    assert problem["status"] == 401
    assert "data" not in problem
