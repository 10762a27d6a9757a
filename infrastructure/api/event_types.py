"""`GET /v1/event-types`: the event catalog (§4), straight from `application.catalog`."""

from __future__ import annotations

from functools import cache

from application.catalog import catalog_json
from infrastructure.api import schemas as s
from infrastructure.api.endpoint import JSON, Call, Endpoint


@cache
def _catalog() -> JSON:
    return {"data": catalog_json(), "nextCursor": None}


def _list(call: Call) -> JSON:
    return _catalog()


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/event-types",
        _list,
        "list_event_types",
        "List every event type with its entity, description and the JSON Schema of its data",
        "Event types",
        response=s.page_of(s.EVENT_TYPE),
        errors=(401,),
    )
]
