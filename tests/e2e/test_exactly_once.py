"""Exactly-once commands across failures (issue 19, ADR 0023): an Idempotency-Key's effect
and its record commit together.

Several clients send keyed commands to a real `webround` process — registrations (new
aggregates), stock changes of an existing SKU, webhook creations (the webhooks store) —
each with a key of its own, sending a command again (same key, same body) whenever the
connection fails or the answer is a 5xx. Mid-run the database goes away: a private
PostgreSQL server is stopped at once and started again, or the embedded process is
killed with SIGKILL and started again on the same files.

Afterwards: every command was answered 2xx in the end, none ever 500 (503 with
`Retry-After` while the database was away); every key had exactly one effect, counted in
the event stores; and every key has a stored answer — sent once more, each is answered
from storage with the bytes its client got.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from domain.catalog import Sku
from infrastructure.bootstrap import Services, build
from infrastructure.settings import Settings
from tests.e2e.test_crash_recovery import base_env, eventually
from tests.e2e.test_faults import (
    Processes,
    private_postgres,  # noqa: F401 (the fixture)
    reported,
)
from tests.support.receiver import free_port
from tests.support.services import PrivatePostgres

CLIENTS = 4
ROUNDS = 50  # per client: a registration and a sale each round, a webhook every 5th
HOOK_EVERY = 5
STOCK = 1000
FINISH_SECONDS = 90.0  # the clients' whole run, the fault included
URL = "https://93.184.215.14/hooks"  # public, never called: nothing listens to its types


@dataclass(frozen=True)
class Command:
    key: str
    path: str
    body: dict[str, Any]


@dataclass(eq=False)
class Client:
    """Sends its commands in order (in a thread), each until it gets an answer below 500."""

    base_url: str
    api_key: str
    commands: list[Command]
    statuses: Counter[int] = field(default_factory=Counter)  # every answer, 5xx included
    without_retry_after: int = 0  # 503s that did not say when to try again
    cut_off: int = 0  # requests that got no answer at all
    answers: dict[str, httpx.Response] = field(default_factory=dict)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def join(self, timeout: float) -> None:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "a client was not answered in time"

    def run(self) -> None:
        try:
            with httpx.Client(
                base_url=self.base_url,
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=10,
            ) as api:
                for command in self.commands:
                    self.answers[command.key] = self._send(api, command)
        except BaseException as error:
            self.error = error

    def _send(self, api: httpx.Client, command: Command) -> httpx.Response:
        while True:
            try:
                answer = api.post(
                    command.path, json=command.body, headers={"Idempotency-Key": command.key}
                )
            except httpx.TransportError:
                self.cut_off += 1
                time.sleep(0.1)
                continue
            self.statuses[answer.status_code] += 1
            if answer.status_code < 500:
                return answer
            if answer.status_code == 503 and "retry-after" not in answer.headers:
                self.without_retry_after += 1
            time.sleep(0.1)

    @property
    def done(self) -> int:
        return len(self.answers)


@dataclass
class Workload:
    base_url: str
    api_key: str
    store_id: UUID
    skus: list[str]
    clients: list[Client] = field(default_factory=list)

    def start(self) -> None:
        for number, sku in enumerate(self.skus):
            commands = []
            for round_number in range(ROUNDS):
                name = f"c{number}-{round_number:03d}"
                commands.append(
                    Command(
                        f"register-{name}",
                        "/v1/customers",
                        {"email": f"{name}@shop.example", "name": name},
                    )
                )
                commands.append(Command(f"sale-{name}", f"/v1/skus/{sku}/stock", {"delta": -1}))
                if round_number % HOOK_EVERY == 0:
                    body = {"url": URL, "eventTypes": ["subscription.*"], "description": name}
                    commands.append(Command(f"hook-{name}", "/v1/webhooks", body))
            self.clients.append(Client(self.base_url, self.api_key, commands))
        for client in self.clients:
            client.start()

    def progress(self) -> float:
        sent = sum(client.done for client in self.clients)
        return sent / sum(len(client.commands) for client in self.clients)

    def finish(self) -> None:
        for client in self.clients:
            client.join(FINISH_SECONDS)
            if client.error is not None:
                raise client.error

    def summary(self) -> str:
        statuses = sum((client.statuses for client in self.clients), Counter[int]())
        cut = sum(client.cut_off for client in self.clients)
        return f"answers by status {dict(sorted(statuses.items()))}, requests cut off {cut}"


def prepare(base_url: str, api_key: str, store_id: UUID) -> Workload:
    """A SKU with plenty of stock for each client (sent without keys, before any fault)."""
    skus = []
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10
    ) as api:
        product = api.post("/v1/products", json={"name": "Mug"}).json()
        for number in range(CLIENTS):
            variant = api.post(
                f"/v1/products/{product['id']}/variants", json={"attributes": {"n": str(number)}}
            ).json()
            sku = api.post(
                f"/v1/variants/{variant['id']}/skus",
                json={
                    "code": f"MUG-{number}",
                    "price": {"amount": "9.90", "currency": "EUR"},
                    "stock": STOCK,
                },
            )
            assert sku.status_code == 201, sku.text
            skus.append(sku.json()["id"])
    return Workload(base_url, api_key, store_id, skus)


def fault_mid_run(workload: Workload, fault: Callable[[], None], at: float) -> float:
    """Cause the fault once ``at`` of the commands are answered; return when it ended."""
    eventually(lambda: workload.progress() >= at, timeout=60, every=0.01)
    fault()
    return time.monotonic()


def recorded(application: Any, topic: str, attribute: str) -> Counter[str]:
    """How many events of this topic the application recorded, by one of their fields."""
    return Counter(
        getattr(application.mapper.to_domain_event(n), attribute)
        for n in application.recorder.select_notifications(start=None, limit=1_000_000)
        if n.topic.endswith(topic)
    )


def assert_exactly_once(workload: Workload, services: Services) -> None:
    clients = workload.clients
    commands = [command for client in clients for command in client.commands]
    # Every command was answered 2xx in the end; no answer was ever a 500, and every
    # 503 said when to try again
    for client in clients:
        assert all(a.status_code in (200, 201) for a in client.answers.values()), [
            (k, a.status_code, a.text) for k, a in client.answers.items() if a.status_code > 201
        ]
        assert client.statuses[500] == 0, workload.summary()
        assert client.without_retry_after == 0

    # Every registration key registered exactly one customer
    commerce, webhooks = services.commerce, services.webhooks
    registered = recorded(commerce, "Customer.Registered", "email")
    assert registered == {c.body["email"]: 1 for c in commands if "email" in c.body}

    # Every sale key moved its SKU's stock exactly once
    for sku_id in workload.skus:
        sku = commerce.get(Sku, workload.store_id, UUID(sku_id))
        assert sku.stock == STOCK - ROUNDS
        changes = commerce.recorder.select_events(UUID(sku_id), gt=1)
        assert len(changes) == ROUNDS

    # Every webhook key created exactly one webhook
    created = recorded(webhooks, "Webhook.Created", "description")
    assert created == {c.body["description"]: 1 for c in commands if "url" in c.body}

    # Every key has its answer stored: sent once more, each is answered from storage
    # with the very bytes its client got
    with httpx.Client(
        base_url=workload.base_url,
        headers={"Authorization": f"Bearer {workload.api_key}"},
        timeout=10,
    ) as api:
        for client in clients:
            for command in client.commands:
                again = api.post(
                    command.path, json=command.body, headers={"Idempotency-Key": command.key}
                )
                assert again.headers.get("idempotent-replayed") == "true", command.key
                assert again.content == client.answers[command.key].content, command.key


@contextlib.contextmanager
def opened(settings: Settings) -> Iterator[Services]:
    services = build(settings)
    try:
        yield services
    finally:
        services.close()


def healthy(base_url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(f"{base_url}/healthz", timeout=1).is_success
    return False


def create_store(processes: Processes) -> tuple[UUID, str]:
    created = json.loads(processes.command("stores", "create", "--name", "Exactly-once shop"))
    return UUID(created["storeId"]), created["apiKey"]


@pytest.mark.postgres
def test_keyed_commands_have_one_effect_across_a_postgres_restart(
    tmp_path: Path,
    private_postgres: PrivatePostgres,  # noqa: F811 (the fixture imported above)
) -> None:
    master_key = base64.b64encode(secrets.token_bytes(32)).decode()
    env = base_env(
        tmp_path, WEBROUND_DATABASE_URL=private_postgres.url, WEBROUND_MASTER_KEY=master_key
    )
    processes = Processes(tmp_path / "logs", env)
    try:
        with reported(processes, private_postgres.log_tail):
            # Given the API on a private PostgreSQL, a store, and a SKU per client
            store_id, api_key = create_store(processes)
            port = free_port()
            processes.run("api", "api", "--port", str(port))
            base_url = f"http://127.0.0.1:{port}"
            workload = prepare(base_url, api_key, store_id)

            # When 4 clients send their keyed commands, retrying on errors
            workload.start()
            # And PostgreSQL stops at once (a crash) a quarter of the way, for 2 seconds
            back = fault_mid_run(workload, lambda: private_postgres.restart(down_for=2.0), 0.25)
            workload.finish()
            print(
                f"\n[postgres restart] clients done {time.monotonic() - back:.1f} s after "
                f"the server's return; {workload.summary()}"
            )

            # Then every key had exactly one effect and has its answer stored
            settings = Settings.from_env(env)
            with opened(settings) as services:
                assert_exactly_once(workload, services)
            processes.assert_alive()
    finally:
        processes.stop_all()


def test_keyed_commands_have_one_effect_across_kill_9_of_the_embedded_process(
    tmp_path: Path,
) -> None:
    env = base_env(tmp_path)
    processes = Processes(tmp_path / "logs", env)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"

    def serve() -> None:
        processes.start("serve", "serve", "--port", str(port))
        eventually(lambda: healthy(base_url), timeout=30, every=0.05)

    def kill_and_serve_again() -> None:
        processes.kill("serve")
        time.sleep(0.5)
        serve()

    try:
        with reported(processes):
            # Given the whole service in one process on SQLite files, a store, a SKU each
            store_id, api_key = create_store(processes)
            serve()
            workload = prepare(base_url, api_key, store_id)

            # When 4 clients send their keyed commands, retrying on errors
            workload.start()
            # And the process is killed with SIGKILL twice mid-run, started again each time
            fault_mid_run(workload, kill_and_serve_again, 0.25)
            back = fault_mid_run(workload, kill_and_serve_again, 0.6)
            workload.finish()
            print(
                f"\n[kill -9] clients done {time.monotonic() - back:.1f} s after the "
                f"restart; {workload.summary()}"
            )

            # Then every key had exactly one effect and has its answer stored
            with opened(Settings.from_env(env)) as services:
                assert_exactly_once(workload, services)
    finally:
        processes.stop_all()
