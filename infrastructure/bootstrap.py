"""The composition root: builds every application and adapter from `Settings`, once.

Nothing else in the code reads configuration or opens connections on its own; tests build
the same graph with their own `Settings` (a temporary data dir, a private PostgreSQL
schema) and so exercise exactly what production runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from application.commerce import Commerce
from infrastructure.persistence import application_env, ensure_schema
from infrastructure.settings import Settings

VERSION = "0.1.0"


@dataclass
class Services:
    settings: Settings
    commerce: Commerce

    def close(self) -> None:
        self.commerce.close()


def build(settings: Settings) -> Services:
    if settings.database_url is not None:
        ensure_schema(settings.database_url)
    return Services(
        settings=settings,
        commerce=Commerce(env=application_env(settings, Commerce.name)),
    )
