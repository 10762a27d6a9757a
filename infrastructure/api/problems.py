"""Errors as `application/problem+json` (RFC 9457): every error a client can cause, mapped.

The one table of which error answers which status lives here (`status_of`); handlers
never build error responses themselves. No response ever carries a stack trace.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from application.errors import (
    ApplicationError,
    Conflict,
    InvalidRequest,
    NotFound,
    Unauthenticated,
)
from domain.errors import DomainError, InvalidValue, RuleViolation

log = logging.getLogger("webround.api")

PROBLEM = "application/problem+json"
TYPE_BASE = "https://webround.dev/problems/"

TITLES = {
    400: "Malformed request",
    401: "Unauthenticated",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid request",
    500: "Internal error",
    503: "Service unavailable",
}
SLUGS = {
    400: "malformed-request",
    401: "unauthenticated",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "body-too-large",
    415: "unsupported-media-type",
    422: "invalid-request",
    500: "internal-error",
    503: "unavailable",
}
# While the database is away (a restart, a failover, a full connection pool) a command
# is not done and may be sent again: clients are told when to try (RFC 9110 §10.2.3).
RETRY_AFTER_SECONDS = 1
_UNREACHABLE = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    sqlite3.OperationalError,
)


class ApiProblem(Exception):
    """An error decided at the HTTP edge (malformed JSON, wrong content type, size…)."""

    def __init__(
        self, status: int, detail: str, errors: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors


def problem(
    status: int,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": TYPE_BASE + SLUGS.get(status, "error"),
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def status_of(error: Exception) -> int:
    match error:
        case ApiProblem():
            return error.status
        case Unauthenticated():
            return 401
        case NotFound():
            return 404
        case InvalidRequest() | InvalidValue():
            return 422
        case Conflict() | RuleViolation():
            return 409
        case ApplicationError() | DomainError():
            return 422
    return 503 if isinstance(error, _UNREACHABLE) else 500


def problem_for(error: Exception) -> Response:
    """The problem response for any error raised while handling a request."""
    status = status_of(error)
    if status == 500:
        log.exception("unexpected error", exc_info=error)
        return problem(500, "something went wrong on our side; the request was not completed")
    if status == 503:
        log.warning("the database is unavailable: %s", type(error).__name__)
        return problem(
            503,
            "the database is unavailable for a moment: send the request again (with an "
            "Idempotency-Key, a command is done once however often it is sent)",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    errors = None
    if isinstance(error, ApiProblem):
        errors = error.errors
    elif isinstance(error, InvalidValue):
        errors = [{"field": error.field, "message": error.message}]
    elif isinstance(error, InvalidRequest) and error.field:
        errors = [{"field": error.field, "message": str(error)}]
    headers = {"WWW-Authenticate": 'Bearer realm="webround"'} if status == 401 else None
    return problem(status, str(error), errors, headers)


async def http_exception(request: Request, error: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method) as problems too."""
    assert isinstance(error, HTTPException)
    detail = {404: "no such route", 405: f"{request.method} is not allowed here"}.get(
        error.status_code, str(error.detail)
    )
    return problem(error.status_code, detail, headers=error.headers)


async def unexpected(request: Request, error: Exception) -> Response:
    return problem_for(error)
