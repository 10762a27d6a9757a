"""`GET /metrics`: Prometheus text exposition, no authentication (like `/healthz`).

The installation's gauges (queue lag, pending and in-flight deliveries, open circuits,
projection lag) are read from the database at scrape time, with the schedule tables
opened for reading on the first scrape and closed with the services; the counters and
the latency histogram are this process's (see infrastructure/metrics.py).
"""

from __future__ import annotations

import threading
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from infrastructure.bootstrap import Services, open_gauges
from infrastructure.metrics import CONTENT_TYPE, ServiceGauges, exposition

_lock = threading.Lock()

# Its entry in the OpenAPI document, beside /healthz.
PATHS: dict[str, Any] = {
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics: deliveries by outcome, attempt latency, "
            "queue lag, projection lag",
            "tags": ["Operations"],
            "security": [],
            "responses": {
                "200": {
                    "description": "The Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    }
}


def _gauges(request: Request) -> ServiceGauges:
    services: Services = request.app.state.services
    with _lock:
        current: ServiceGauges | None = getattr(request.app.state, "metrics_gauges", None)
        if current is None or current.services is not services:
            current = open_gauges(services)
            request.app.state.metrics_gauges = current
        return current


def _render(request: Request) -> bytes:
    return exposition(_gauges(request))


async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(_render, request)
    return Response(body, media_type=CONTENT_TYPE)
