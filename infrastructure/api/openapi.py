"""`GET /openapi.json`: an OpenAPI 3.1 description generated from the endpoint table.

Paths, bodies, responses and errors come from the same `Endpoint` objects that route and
validate requests, so the description is true by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from domain.delivery import EVENT_ID_PATTERN
from infrastructure.api import schemas as s
from infrastructure.api.endpoint import Endpoint
from infrastructure.api.problems import PROBLEM, TITLES
from infrastructure.api.validation import IDEMPOTENCY_KEY_PATTERN

JSON = dict[str, Any]
PATH_SCHEMAS: dict[str, JSON] = {
    "id": {"type": "string", "format": "uuid"},
    "eventId": {"type": "string", "pattern": EVENT_ID_PATTERN, "examples": ["evt_" + "0" * 32]},
}


def document(endpoints: Sequence[Endpoint], version: str) -> JSON:
    paths: dict[str, JSON] = {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Is the service up and can it reach its event store?",
                "tags": ["Operations"],
                "security": [],
                "responses": {
                    "200": _json("Healthy", {"type": "object"}),
                    "503": _json("The event store cannot be reached", {"type": "object"}),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["Operations"],
                "security": [],
                "responses": {"200": _json("OpenAPI 3.1", {"type": "object"})},
            }
        },
    }
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Webround Webhooks API",
            "version": version,
            "description": "Store commands, webhook configuration and the event catalog. "
            "Every error is `application/problem+json` (RFC 9457).",
        },
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "A store's API key."}
            },
            "schemas": {"Problem": s.PROBLEM},
        },
        "security": [{"apiKey": []}],
        "paths": paths,
    }


def _operation(endpoint: Endpoint) -> JSON:
    parameters: list[JSON] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": PATH_SCHEMAS[name],
        }
        for name in endpoint.path_ids
    ]
    parameters += [
        {
            "name": q.name,
            "in": "query",
            "required": False,
            "schema": q.schema,
            "description": q.description,
        }
        for q in endpoint.query
    ]
    if endpoint.command:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 255,
                    "pattern": IDEMPOTENCY_KEY_PATTERN,
                },
                "description": "Repeat a command safely: its effect and the key are "
                "recorded together, once; the same key, method, path and body from the same "
                "API key within 24 h return the first answer and record nothing new.",
            }
        )
    responses: JSON = {}
    if endpoint.status == 204:
        responses["204"] = {"description": "Done"}
    else:
        responses[str(endpoint.status)] = _json("Success", endpoint.response or {})
    if endpoint.reveals_secret:
        responses[str(endpoint.status)]["headers"] = {
            "Cache-Control": {
                "description": "`no-store`: the answer shows a signing secret.",
                "schema": {"type": "string", "const": "no-store"},
            }
        }
    for status in endpoint.errors:
        responses[str(status)] = {
            "description": TITLES[status],
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    # Any request may meet the database away for a moment.
    responses["503"] = {
        "description": TITLES[503],
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before sending the request again.",
                "schema": {"type": "integer"},
            }
        },
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    operation: JSON = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "parameters": parameters,
        "responses": responses,
    }
    if endpoint.request is not None:
        operation["requestBody"] = {
            # Required when no body would do: no body is read as {} (STOCK needs a field).
            "required": not endpoint.accepts_no_body,
            "content": {"application/json": {"schema": endpoint.request}},
        }
    return operation


def _json(description: str, schema: JSON) -> JSON:
    return {"description": description, "content": {"application/json": {"schema": schema}}}
