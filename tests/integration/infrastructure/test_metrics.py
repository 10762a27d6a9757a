"""`GET /metrics` (SPEC §10): deliveries by outcome, attempt latency, queue lag, projection
lag — read by Prometheus's own parser from the real app over a running pipeline."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import anyio
import httpx
import pytest
from eventsourcing.persistence import IntegrityError
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from application.errors import ConcurrentChange
from domain.values import Actor
from infrastructure.api.app import create_app
from infrastructure.bootstrap import Services, build, open_queue, start_dispatcher, start_worker
from infrastructure.settings import Settings
from tests.support.receiver import Receiver, RecordedRequest, Reply

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
GAUGES = {
    "webround_queue_lag_seconds",
    "webround_deliveries_pending",
    "webround_deliveries_in_flight",
    "webround_circuit_open_webhooks",
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Client:
    """Calls the real app in this thread (httpx over ASGI, one event loop per call)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def get(self, path: str) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.get(path)

        return anyio.run(call)


def scrape(client: Client) -> Samples:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_until(condition: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout} s")


def answer(request: RecordedRequest) -> Reply:
    return Reply(status=500, body=b"down") if request.path.startswith("/fail") else Reply()


@pytest.fixture(
    params=[
        pytest.param("embedded", id="embedded"),
        pytest.param(
            "postgres-redis", id="postgres-redis", marks=[pytest.mark.postgres, pytest.mark.redis]
        ),
    ]
)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    base = Settings(
        data_dir=tmp_path / "data",
        allowed_targets=LOOPBACK,
        retry_schedule=(0.1, 0.1, 0.1),
        worker_threads=4,
        lease_seconds=5,
    )
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
def running(settings: Settings) -> Iterator[tuple[Services, Receiver]]:
    """Applications, a dispatcher and a worker in this process (no projector: the read
    models fall behind until the test catches them up)."""
    with Receiver(answer) as receiver:
        services = build(settings, jitter=lambda: 0.5)
        try:
            queue = open_queue(services)
            start_worker(services, queue)
            start_dispatcher(services, queue)
            yield services, receiver
        finally:
            services.close()


def test_metrics_show_deliveries_latency_queue_and_projection_lag(
    running: tuple[Services, Receiver],
) -> None:
    services, receiver = running
    client = Client(create_app(services))
    before = scrape(client)

    # Given a store with a healthy webhook and one whose endpoint always answers 500
    store = UUID(services.webhooks.create_store("Shop", Actor.system())["storeId"])
    system = Actor.system()
    ok = services.webhooks.create_webhook(store, system, url=receiver.url + "ok", event_types=["*"])
    failing = services.webhooks.create_webhook(
        store, system, url=receiver.url + "fail", event_types=["customer.registered"]
    )
    time.sleep(0.01)

    # When a customer registers and is verified: two successes, and a delivery to the
    # failing endpoint that is retried three times, then fails for good
    customer = services.commerce.register_customer(store, "a@shop.example", "A", None, system)
    services.commerce.verify_customer(store, UUID(customer["id"]), system)
    wait_until(
        lambda: (
            value(scrape(client), "webround_delivery_attempts_total", outcome="failed")
            - value(before, "webround_delivery_attempts_total", outcome="failed")
            >= 1
        )
    )
    # And another registers: the fifth failure in a row opens the endpoint's circuit
    services.commerce.register_customer(store, "b@shop.example", "B", None, system)

    def settled() -> Samples | None:
        now = scrape(client)
        attempts = value(now, "webround_delivery_attempt_seconds_count") - value(
            before, "webround_delivery_attempt_seconds_count"
        )
        held = value(now, "webround_deliveries_pending") == 1
        # The worker counts an attempt when it is recorded; the dispatcher's schedule
        # sees it a pass later (lease cleared, circuit opened): wait for both.
        seen = value(now, "webround_deliveries_in_flight") == 0
        opened = value(now, "webround_circuit_open_webhooks") == 1
        return now if attempts == 8 and held and seen and opened else None

    after = wait_until(settled)

    # Then attempts are counted by outcome (this process's worker recorded them)
    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("webround_delivery_attempts_total", outcome="succeeded") == 3
    assert delta("webround_delivery_attempts_total", outcome="retrying") == 4
    assert delta("webround_delivery_attempts_total", outcome="failed") == 1
    # And each attempt's latency was observed, all of them well under the last bucket
    assert delta("webround_delivery_attempt_seconds_count") == 8
    assert 0 < delta("webround_delivery_attempt_seconds_sum") < 8 * 5
    assert delta("webround_delivery_attempt_seconds_bucket", le="+Inf") == 8
    # And the gauges read the schedule: the held delivery is pending, nothing else
    assert value(after, "webround_deliveries_pending") == 1
    assert value(after, "webround_deliveries_in_flight") == 0
    assert value(after, "webround_circuit_open_webhooks") == 1
    assert 0 <= value(after, "webround_queue_lag_seconds") < 5
    assert {name for name, _ in after} >= GAUGES | {"webround_dispatcher_active"}
    # And the read models, with no projector running, lag behind their sources
    projection = {
        dict(labels)["model"] + "/" + dict(labels)["source"]: v
        for (name, labels), v in after.items()
        if name == "webround_projection_lag_events"
    }
    assert projection
    assert all(lag >= 0 for lag in projection.values())
    assert sum(projection.values()) > 0

    # When the read models catch up
    while services.read_models.catch_up_all():
        pass
    caught_up = scrape(client)

    # Then no read model lags any more
    lag_after = [
        v for (name, _), v in caught_up.items() if name == "webround_projection_lag_events"
    ]
    assert lag_after
    assert all(lag == 0 for lag in lag_after)
    # And the counts match what the receiver saw: 3 answered 200, 5 answered 500
    paths = sorted(request.path for request in receiver.requests)
    assert paths == ["/fail"] * 5 + ["/ok"] * 3, (ok["id"], failing["id"])


def test_metrics_need_no_key_and_are_described_in_the_openapi_document(
    running: tuple[Services, Receiver],
) -> None:
    services, _ = running
    client = Client(create_app(services))

    # When /metrics is asked without any credentials
    answer = client.get("/metrics")

    # Then it answers the text exposition, and the OpenAPI document lists it
    assert answer.status_code == 200
    assert "# TYPE webround_delivery_attempts_total counter" in answer.text
    assert "# TYPE webround_delivery_attempt_seconds histogram" in answer.text
    assert "/metrics" in client.get("/openapi.json").json()["paths"]


def test_commands_run_again_and_conflicts_are_counted(
    running: tuple[Services, Receiver],
) -> None:
    # Given the API, and a command that loses every race to save, with 3 attempts
    services, _ = running
    client = Client(create_app(services))
    before = scrape(client)
    contention = services.commerce.contention
    contention.attempts = 3

    def lost() -> None:
        raise IntegrityError("another process saved first")

    # When it runs
    with pytest.raises(ConcurrentChange):
        contention.run([uuid4()], lost, "customer 1")

    # Then /metrics counts the two runs again and the conflict, for commerce
    after = scrape(client)
    for name, grown in (
        ("webround_command_retries_total", 2),
        ("webround_command_conflicts_total", 1),
    ):
        was = value(before, name, application="commerce")
        assert value(after, name, application="commerce") == was + grown
        assert ((name, (("application", "webhooks"),))) in after
