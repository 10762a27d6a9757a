"""The API's endpoints as data: one `Endpoint` per route, turned into Starlette routes here
and into the OpenAPI document by `openapi.py` — so the description cannot drift from the
code that answers.

Every endpoint goes through the same steps: authenticate the key, read and validate the
JSON body against the endpoint's schema, honour `Idempotency-Key` on commands, run the
handler in a worker thread (our applications are synchronous), answer JSON or a problem.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

from jsonschema.exceptions import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from application.errors import ConcurrentChange, InvalidRequest, NotFound, Unauthenticated
from application.idempotency import AlreadyAnswered, Answer, KeyedCommand, KeyRecord, keyed
from application.webhooks import Principal
from domain.values import TEXT_PATTERN, Actor
from infrastructure.api.problems import ApiProblem, problem_for
from infrastructure.api.validation import (
    FORMATS,
    IDEMPOTENCY_KEY_PATTERN,
    Validator,
    check_query,
    matches,
    parse_json,
)
from infrastructure.bootstrap import Services
from infrastructure.idempotency import fingerprint, sealing_context

JSON = dict[str, Any]
MAX_BODY = 1024 * 1024
IDEMPOTENCY_KEY = "Idempotency-Key"
# Answers that show a signing secret must not be kept by any cache (ADR 0024).
NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class Call:
    """Everything a handler may use: who asks, what they sent, and the services."""

    principal: Principal
    actor: Actor
    services: Services
    body: JSON
    ids: Mapping[str, UUID]  # path parameters that are entity ids ({id})
    query: Mapping[str, str]
    path: Mapping[str, str] = field(default_factory=dict)  # the raw path parameters

    @property
    def store_id(self) -> UUID:
        return self.principal.store_id


@dataclass(frozen=True)
class QueryParam:
    name: str
    schema: JSON
    description: str

    def __post_init__(self) -> None:
        # No query parameter holds a control character (`check_query`): a string one that
        # says nothing stricter is published with the text rule, so the document says so.
        plain = not ({"pattern", "enum", "format", "const"} & self.schema.keys())
        if self.schema.get("type") == "string" and plain:
            object.__setattr__(self, "schema", {**self.schema, "pattern": TEXT_PATTERN})


# Handlers are synchronous (run in a worker thread), or coroutines for the few that wait
# without holding a thread (the events feed's long poll).
Handler = Callable[[Call], JSON | None] | Callable[[Call], Awaitable[JSON | None]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    status: int = 200
    request: JSON | None = None
    response: JSON | None = None
    command: bool = False  # records something: takes Idempotency-Key and initiatedBy
    errors: tuple[int, ...] = ()
    query: tuple[QueryParam, ...] = ()
    # Adds what is not the command's own result to its answer (a webhook's circuit).
    present: Callable[[Call, JSON], JSON] | None = None
    reveals_secret: bool = False  # the answer shows a signing secret (ADR 0024)
    _validator: Any = field(default=None, init=False, compare=False)
    _query_validators: Any = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        if self.request is not None:
            validator = Validator(self.request, format_checker=FORMATS)
            object.__setattr__(self, "_validator", validator)
        # Query parameters are checked against the very schemas the document publishes.
        checks = {q.name: Validator(q.schema, format_checker=FORMATS) for q in self.query}
        object.__setattr__(self, "_query_validators", checks)

    @property
    def accepts_no_body(self) -> bool:
        """Whether a request without a body (read as ``{}``) is valid here."""
        return self._validator is None or bool(self._validator.is_valid({}))

    @property
    def path_ids(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]

    async def answer(self, request: Request) -> Response:
        try:
            return await self._answer(request)
        except Exception as error:  # every failure becomes a problem response
            return problem_for(error)

    async def _answer(self, request: Request) -> Response:
        services: Services = request.app.state.services
        principal = await run_in_threadpool(authenticate, services, request)
        path = {name: str(request.path_params[name]) for name in self.path_ids}
        check_query(request, self._query_validators)
        ids = {name: _uuid(value) for name, value in path.items() if name == "id"}
        raw = await read_body(request)
        body = self._validate(raw)
        actor = _actor(principal, body) if self.command else principal.actor
        call = Call(principal, actor, services, body, ids, request.query_params, path)
        key = request.headers.get("idempotency-key")
        if not self.command or key is None:
            return await self._run(call)
        if not matches(IDEMPOTENCY_KEY_PATTERN, key):
            raise InvalidRequest(
                "must be 1 to 255 visible ASCII characters (spaces only between them)",
                field=IDEMPOTENCY_KEY,
            )
        print_ = fingerprint(self.method, request.url.path, raw)
        return await run_in_threadpool(self._run_once, call, key, print_)

    async def _run(self, call: Call) -> Response:
        result: JSON | None
        if inspect.iscoroutinefunction(self.handler):
            result = await self.handler(call)  # waits without holding a thread (a long poll)
        else:
            result = await run_in_threadpool(
                cast(Callable[[Call], JSON | None], self.handler), call
            )
        return self._respond(call, result)

    def _respond(self, call: Call, result: JSON | None) -> Response:
        headers = NO_STORE if self.reveals_secret else None
        if result is None:
            return Response(status_code=204, headers=headers)
        if self.present is not None:
            result = self.present(call, result)
        return JSONResponse(result, status_code=self.status, headers=headers)

    def _run_once(self, call: Call, key: str, print_: str) -> Response:
        """Run a keyed command at most once (ADR 0023): answer a recorded key's answer;
        else run it, its answer recorded by the save that records its events, or on its
        own when it saved none (a refusal; a command of the dispatch store)."""
        ledger = call.services.idempotency
        now = datetime.now(UTC)
        found = ledger.find(call.store_id, key, now)
        if found is not None:
            return self._replay(call, key, print_, found)
        sent: list[Response] = []

        def answer(result: JSON | None) -> Answer:
            sent.append(self._respond(call, result))
            return _stored(call, key, sent[-1])

        command = KeyedCommand(call.store_id, key, print_, call.principal.key_id, now, answer)
        try:
            with keyed(command):
                # Commands are plain functions: only reads wait as coroutines.
                result = cast(Callable[[Call], JSON | None], self.handler)(call)
        except AlreadyAnswered:
            return self._replay_first(call, key, print_)
        except Exception as error:
            response = problem_for(error)
            if response.status_code >= 500 or isinstance(error, ConcurrentChange):
                return response  # nothing was done, for a passing reason: a retry may run it
        else:
            if command.recorded is not None:
                return sent[-1]  # the very bytes recorded with the events
            response = self._respond(call, result)
        try:
            ledger.remember(command.record_with(_stored(call, key, response)))
        except AlreadyAnswered:
            return self._replay_first(call, key, print_)
        return response

    def _replay_first(self, call: Call, key: str, print_: str) -> Response:
        """Answer as the request that recorded the key first (this one recorded nothing)."""
        found = call.services.idempotency.find(call.store_id, key, datetime.now(UTC))
        if found is None:  # recorded and then purged at once: no answer to give
            raise ApiProblem(409, "a request with this Idempotency-Key was just answered")
        return self._replay(call, key, print_, found)

    def _replay(self, call: Call, key: str, print_: str, record: KeyRecord) -> Response:
        if record.fingerprint != print_:
            raise InvalidRequest(
                "this Idempotency-Key was used with a different request", field=IDEMPOTENCY_KEY
            )
        if record.key_id != call.principal.key_id:
            # An answer is given back only to the API key that asked (ADR 0024).
            raise InvalidRequest(
                "this Idempotency-Key was used by another API key of this store",
                field=IDEMPOTENCY_KEY,
            )
        stored = record.answer
        context = sealing_context(call.store_id, key)
        body = call.services.keeper.open_bytes(stored.body.decode(), context)
        headers = {"Idempotent-Replayed": "true"}
        if self.reveals_secret and stored.status < 300:
            # Shown again only once the showing is in the webhook's audit trail.
            webhook_id = UUID(json.loads(body)["id"])
            call.services.webhooks.record_secret_shown_again(
                call.store_id, webhook_id, call.principal.key_id, key, call.actor
            )
            headers |= NO_STORE
        return Response(
            body,
            status_code=stored.status,
            media_type=stored.content_type or None,
            headers=headers,
        )

    def _validate(self, raw: bytes) -> JSON:
        if self._validator is None:
            if raw.strip():
                raise ApiProblem(400, "this endpoint takes no request body")
            return {}
        body: Any = {} if not raw.strip() else parse_json(raw)
        errors = sorted(self._validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        if errors:
            raise ApiProblem(
                422,
                "the request body has invalid fields",
                [{"field": _field(e), "message": e.message} for e in errors],
            )
        validated: JSON = body
        return validated


def _stored(call: Call, key: str, response: Response) -> Answer:
    context = sealing_context(call.store_id, key)
    sealed = call.services.keeper.seal_bytes(bytes(response.body), context)
    return Answer(response.status_code, sealed.encode(), response.media_type or "")


def routes(endpoints: list[Endpoint]) -> list[Route]:
    """One route per path serving all of its methods, so a 405 lists every allowed one."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for endpoint in endpoints:
        by_path.setdefault(endpoint.path, {})[endpoint.method] = endpoint

    def route(path: str, methods: dict[str, Endpoint]) -> Route:
        async def asgi(request: Request) -> Response:
            return await methods[request.method].answer(request)

        return Route(path, asgi, methods=list(methods))

    return [route(path, methods) for path, methods in by_path.items()]


def authenticate(services: Services, request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send your API key as `Authorization: Bearer <key>`")
    return services.webhooks.authenticate(token.strip())


async def read_body(request: Request) -> bytes:
    """The raw body, refusing more than 1 MiB (before reading it where the size is declared)
    and anything that is not JSON."""
    declared = request.headers.get("content-length", "")
    # A length of more digits than any body we take is too large, unread (and int() of
    # thousands of digits raises).
    if declared.isdigit() and (len(declared) > 9 or int(declared) > MAX_BODY):
        raise ApiProblem(413, "request bodies are limited to 1 MiB")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiProblem(413, "request bodies are limited to 1 MiB")
        chunks.append(chunk)
    raw = b"".join(chunks)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if raw.strip() and media_type != "application/json" and not media_type.endswith("+json"):
        raise ApiProblem(415, "send the request body as application/json")
    return raw


def _field(error: ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    if error.validator == "required" and isinstance(error.validator_value, list):
        missing = error.message.split("'")[1] if "'" in error.message else ""
        path = f"{path}.{missing}"
    elif error.validator == "additionalProperties" and "'" in error.message:
        path = f"{path}.{error.message.split(chr(39))[1]}"
    return path.lstrip(".") or "body"


def _uuid(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        # An id that is not a UUID names nothing we could ever have stored.
        raise NotFound("resource", value) from None


def _actor(principal: Principal, body: JSON) -> Actor:
    """The actor of a command: the key's person or the system, or — for system keys only —
    the person or system named by an explicit `initiatedBy` in the body."""
    if "initiatedBy" not in body:
        return principal.actor
    claimed = body["initiatedBy"]
    if principal.actor.kind == "person" and claimed != principal.actor.email:
        raise InvalidRequest(
            "a key that acts for a person cannot record another actor", field="initiatedBy"
        )
    return Actor.person(claimed) if claimed else Actor.system()
