"""The composition root: builds every application and adapter from `Settings`, once.

Nothing else in the code reads configuration or opens connections on its own; tests build
the same graph with their own `Settings` (a temporary data dir, a private PostgreSQL
schema) and so exercise exactly what production runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from application.commerce import Commerce
from application.webhooks import Webhooks
from infrastructure.idempotency import IdempotencyStore, open_idempotency_store
from infrastructure.persistence import application_env, ensure_schema
from infrastructure.secrets import MasterKey, SealingKeeper, SecretBox
from infrastructure.settings import Settings
from infrastructure.ssrf import TargetGuard

VERSION = "0.1.0"


@dataclass
class Services:
    settings: Settings
    commerce: Commerce
    webhooks: Webhooks
    keeper: SealingKeeper
    guard: TargetGuard
    idempotency: IdempotencyStore

    def close(self) -> None:
        self.idempotency.close()
        self.webhooks.close()
        self.commerce.close()


def build(settings: Settings, clock: Callable[[], datetime] | None = None) -> Services:
    if settings.database_url is not None:
        ensure_schema(settings.database_url)
    master_key = MasterKey.load(
        key=settings.master_key, key_file=settings.master_key_file, data_dir=settings.data_dir
    )
    keeper = SealingKeeper(SecretBox(master_key))
    guard = TargetGuard(allowed_networks=settings.allowed_targets)
    return Services(
        settings=settings,
        commerce=Commerce(env=application_env(settings, Commerce.name), clock=clock),
        webhooks=Webhooks(
            env=application_env(settings, Webhooks.name),
            targets=guard,
            keeper=keeper,
            clock=clock,
        ),
        keeper=keeper,
        guard=guard,
        idempotency=open_idempotency_store(settings),
    )
