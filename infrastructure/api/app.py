"""Assembles the Starlette application from the services of the composition root."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from infrastructure.api import health
from infrastructure.bootstrap import Services


def create_app(services: Services) -> Starlette:
    app = Starlette(routes=[Route("/healthz", health.healthz, methods=["GET"])])
    app.state.services = services
    return app
