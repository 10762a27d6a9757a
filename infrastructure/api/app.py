"""Assembles the Starlette application from the services of the composition root."""

from __future__ import annotations

import threading
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from infrastructure.api import (
    audit,
    commerce,
    deliveries,
    event_types,
    events,
    health,
    metrics,
    openapi,
    problems,
    webhooks,
)
from infrastructure.api.endpoint import Endpoint
from infrastructure.api.endpoint import routes as endpoint_routes
from infrastructure.bootstrap import VERSION, Services
from infrastructure.dashboard import routes as dashboard

ENDPOINTS: list[Endpoint] = [
    *commerce.ENDPOINTS,
    *webhooks.ENDPOINTS,
    *event_types.ENDPOINTS,
    *events.ENDPOINTS,
    *deliveries.ENDPOINTS,
    *audit.ENDPOINTS,
]


def create_app(services: Services) -> Starlette:
    spec = openapi.document(ENDPOINTS, VERSION)
    spec["paths"].update(metrics.PATHS)

    async def openapi_json(request: Request) -> JSONResponse:
        return JSONResponse(spec)

    app_routes = [
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/metrics", metrics.metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        *endpoint_routes(ENDPOINTS),
        dashboard.routes(),  # the merchant dashboard under /dashboard (§9)
    ]
    app = Starlette(
        routes=app_routes,
        exception_handlers={HTTPException: problems.http_exception, Exception: problems.unexpected},
    )
    app.state.services = services
    return app


class Server(uvicorn.Server):
    """uvicorn, telling the services as soon as a signal asks it to stop: requests that
    wait (the events feed's long poll) then answer at once, so a graceful shutdown does
    not wait for them."""

    def __init__(self, config: uvicorn.Config, stopping: threading.Event) -> None:
        super().__init__(config)
        self._stopping = stopping

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._stopping.set()
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        # Asked to stop before uvicorn listened for signals (during start-up): stop now.
        return self._stopping.is_set() or await super().on_tick(counter)
