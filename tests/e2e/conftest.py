"""A running pipeline — applications, dispatcher, worker — and a real receiver on loopback.

`pipeline` runs each test in embedded mode (SQLite, in-process broker and worker) and in
production mode (PostgreSQL and Redis, the worker consuming from Redis); `rabbitmq_pipeline`
runs on PostgreSQL and RabbitMQ. Retries are fast (`0.2, 0.2, 0.4` s) and jitter fixed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from domain.delivery import Delivery
from domain.values import Actor
from infrastructure.bootstrap import (
    Services,
    build,
    open_queue,
    start_dispatcher,
    start_projector,
    start_worker,
)
from infrastructure.settings import Settings
from infrastructure.startup import check_master_key
from tests.support.receiver import Receiver

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
FAST_RETRIES = (0.2, 0.2, 0.4)


@dataclass
class Pipeline:
    services: Services
    receiver: Receiver
    store_id: UUID

    def webhook(self, event_types: list[str] | None = None, **fields: Any) -> dict[str, Any]:
        created = self.services.webhooks.create_webhook(
            self.store_id,
            Actor.system(),
            url=self.receiver.url + "/hooks",
            event_types=event_types or ["*"],
            **fields,
        )
        time.sleep(0.002)  # events must happen after the webhook exists (timestamps)
        return created

    def deliveries_of(self, webhook_id: str) -> list[Delivery]:
        """Every delivery to a webhook, read from the dispatch event store."""
        found = []
        for notification in self.services.dispatch.recorder.select_notifications(
            start=None, limit=100_000, topics=[_SCHEDULED_TOPIC]
        ):
            event: Any = self.services.dispatch.mapper.to_domain_event(notification)
            if str(event.webhook_id) == webhook_id:
                found.append(self.services.dispatch.delivery(event.originator_id))
        return found


def wait_until(condition: Callable[[], object], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"not true within {timeout} s: {condition}")


_SCHEDULED_TOPIC = "domain.delivery:Delivery.Scheduled"


def _run(settings: Settings) -> Iterator[Pipeline]:
    with Receiver() as receiver:
        services = build(settings, jitter=lambda: 0.5)
        queue = open_queue(services)
        start_worker(services, queue)
        start_dispatcher(services, queue)
        store = services.webhooks.create_store("Shop", Actor.system())
        try:
            yield Pipeline(services, receiver, UUID(store["storeId"]))
        finally:
            services.close()


def fast_settings(tmp_path: Path) -> Settings:
    """Embedded settings for a test: loopback receivers allowed, fast retries."""
    return Settings(
        data_dir=tmp_path / "data",
        allowed_targets=LOOPBACK,
        retry_schedule=FAST_RETRIES,
        worker_threads=4,
        lease_seconds=5,
    )


@pytest.fixture(
    params=[
        pytest.param("embedded", id="embedded"),
        pytest.param(
            "postgres-redis", id="postgres-redis", marks=[pytest.mark.postgres, pytest.mark.redis]
        ),
    ]
)
def pipeline_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    base = fast_settings(tmp_path)
    if request.param == "embedded":
        return base
    return Settings(
        **{
            **base.__dict__,
            "database_url": request.getfixturevalue("postgres_url"),
            "broker_url": request.getfixturevalue("redis_url"),
        }
    )


@pytest.fixture
def pipeline(pipeline_settings: Settings) -> Iterator[Pipeline]:
    yield from _run(pipeline_settings)


@pytest.fixture
def rabbitmq_pipeline(tmp_path: Path, postgres_url: str, rabbitmq_url: str) -> Iterator[Pipeline]:
    yield from _run(
        dataclasses.replace(
            fast_settings(tmp_path), database_url=postgres_url, broker_url=rabbitmq_url
        )
    )


# The installation the projections CLI tests and the hostile-input fault test share -------


@pytest.fixture(
    params=[
        pytest.param("embedded", id="embedded"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def cli_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    base = fast_settings(tmp_path)
    if request.param == "embedded":
        return base
    return dataclasses.replace(base, database_url=request.getfixturevalue("postgres_url"))


@pytest.fixture
def running(cli_settings: Settings) -> Iterator[tuple[Services, Receiver]]:
    """The dispatcher, a worker and the read-model projector, delivering to a receiver."""
    with Receiver() as receiver:
        services = build(cli_settings, jitter=lambda: 0.5)
        try:
            check_master_key(services)  # as the installation's first `webround` role does
            queue = open_queue(services)
            start_worker(services, queue)
            start_dispatcher(services, queue)
            start_projector(services)
            yield services, receiver
        finally:
            services.close()
