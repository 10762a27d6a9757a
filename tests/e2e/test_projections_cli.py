"""`webround projections rebuild|status|checksum` as an operator runs them: the real
command in a subprocess, against an embedded data directory and against PostgreSQL, while
the service runs in this process (§7, §10).

A rebuild reproduces the live read models (same checksum), never sends a webhook (a real
receiver sees nothing while it runs, though a dispatcher and a worker are running), and the
API keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import httpx

from domain.values import Actor
from infrastructure.api.app import create_app
from infrastructure.bootstrap import (
    Services,
    build,
)
from infrastructure.settings import Settings
from projections.readmodels import READ_MODELS
from tests.e2e.conftest import Pipeline, wait_until
from tests.e2e.test_dispatch import drive_every_event_type
from tests.support.receiver import Receiver, Reply

WEBROUND = Path(sys.executable).parent / "webround"
ANN = Actor.person("ann@shop.example")
SYSTEM = Actor.system()
MODEL_NAMES = [m.name for m in READ_MODELS]


def environment(settings: Settings) -> dict[str, str]:
    """The environment the command runs in: this test's data dir (and database) only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBROUND_")}
    env["WEBROUND_DATA_DIR"] = str(settings.data_dir)
    if settings.database_url is not None:
        env["WEBROUND_DATABASE_URL"] = settings.database_url
        # Production roles are given the installation's key: the one the in-process
        # services generated in the data directory.
        env["WEBROUND_MASTER_KEY_FILE"] = str(settings.data_dir / "master.key")
    return env


def webround(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command; its output decoded as is (``\r`` kept: no universal newlines)."""
    done = subprocess.run(
        [str(WEBROUND), *args],
        env=environment(settings),
        capture_output=True,
        timeout=120,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def caught_up(services: Services) -> bool:
    return all(s.lag == 0 for s in services.read_models.status())


# A rebuild reproduces the live models and sends nothing -------------------------------------


def test_rebuild_all_reproduces_the_checksum_and_sends_no_webhook(
    cli_settings: Settings, running: tuple[Services, Receiver]
) -> None:
    # Given every store event type delivered to a real receiver, two attempts failing first
    services, receiver = running
    store = UUID(services.webhooks.create_store("Shop", SYSTEM)["storeId"])
    for event_types in (["*"], ["customer.*"]):
        services.webhooks.create_webhook(
            store, SYSTEM, url=receiver.url + "hooks", event_types=event_types
        )
    time.sleep(0.01)  # store events happen after the webhooks exist (timestamps)
    receiver.enqueue(Reply(status=500, body=b"down"), Reply(status=503))
    drive_every_event_type(cast(Pipeline, _Shop(services, store)))

    # And every delivery finished, and the read models caught up with all of it
    wait_until(lambda: finished(services), timeout=30)
    wait_until(lambda: caught_up(services))
    sent = len(receiver.requests)
    assert sent >= 24 + 2
    dispatch_head = services.dispatch.recorder.max_notification_id()

    # When the operator checks the status and the checksum, rebuilds all, and checks again
    status = webround(cli_settings, "projections", "status")
    status_json = webround(cli_settings, "projections", "status", "--json")
    before = webround(cli_settings, "projections", "checksum")
    rebuild = webround(cli_settings, "projections", "rebuild", "--all")
    requests_during_rebuild = len(receiver.requests) - sent
    after = webround(cli_settings, "projections", "checksum")
    after_json = webround(cli_settings, "projections", "checksum", "--json")

    # Then the rebuild succeeded and the checksum is the same
    assert rebuild.returncode == 0, rebuild.stderr
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    digest = before.stdout.strip()
    assert len(digest) == 64
    assert set(digest) <= set("0123456789abcdef")
    assert after.stdout.strip() == digest
    assert json.loads(after_json.stdout)["checksum"] == digest
    assert set(json.loads(after_json.stdout)["models"]) == set(MODEL_NAMES)

    # And the receiver got no request during the rebuild, nor after it, and no delivery
    # was scheduled (the dispatcher and the worker kept running all along)
    assert requests_during_rebuild == 0
    time.sleep(0.5)
    assert len(receiver.requests) == sent
    assert services.dispatch.recorder.max_notification_id() == dispatch_head

    # And the progress bar showed events/s for every model, redrawn in place on stderr
    for name in MODEL_NAMES:
        assert f"\r{name}" in rebuild.stderr
    assert "events/s" in rebuild.stderr
    assert "100%" in rebuild.stderr
    # And one summary line per model on stdout: events read, seconds, events/s
    lines = rebuild.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == MODEL_NAMES
    assert all(line.endswith("events/s") and " s " in line for line in lines)

    # And the status shows every model at its head, lag 0, as a table and as JSON
    assert status.returncode == 0, status.stderr
    header, *rows = status.stdout.strip().splitlines()
    assert header.split() == ["MODEL", "SOURCE", "POSITION", "HEAD", "LAG"]
    assert {row.split()[0] for row in rows} == set(MODEL_NAMES)
    assert all(row.split()[-1] == "0" and row.split()[2] == row.split()[3] for row in rows)
    report = json.loads(status_json.stdout)
    assert {r["model"] for r in report} == set(MODEL_NAMES)
    assert all(r["lag"] == 0 and r["position"] == r["head"] > 0 for r in report)
    # And it still does after the rebuild
    wait_until(lambda: caught_up(services))
    again = json.loads(webround(cli_settings, "projections", "status", "--json").stdout)
    assert again == report


def finished(services: Services) -> bool:
    rows = services.read_models.query(
        "SELECT count(*) AS total, "
        "sum(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS pending FROM rm_deliveries"
    )
    return caught_up(services) and rows[0]["total"] > 0 and not rows[0]["pending"]


@dataclasses.dataclass
class _Shop:
    """What drive_every_event_type uses of a pipeline."""

    services: Services
    store_id: UUID


def test_an_unknown_read_model_is_refused_with_the_list_of_names(tmp_path: Path) -> None:
    # Given an embedded data directory
    settings = Settings(data_dir=tmp_path / "data")

    # When a rebuild names a model that does not exist, or names none
    unknown = webround(settings, "projections", "rebuild", "events", "orders")
    nothing = webround(settings, "projections", "rebuild")

    # Then both exit 2, naming the read models there are, and touch nothing
    for result in (unknown, nothing):
        assert result.returncode == 2
        assert "events, deliveries, webhook_stats, entities, audit" in result.stderr
    assert "unknown read model(s): orders" in unknown.stderr
    assert not (tmp_path / "data").exists()


# The API answers during a rebuild ------------------------------------------------------------


CUSTOMERS = 1000  # three events each: 3,000 store events, and as many envelopes


def test_the_api_answers_while_a_rebuild_of_thousands_of_events_runs(
    cli_settings: Settings,
) -> None:
    # Given 3,000 store events, their envelopes, and read models caught up with them
    services = build(cli_settings)
    poller: Poller | None = None
    try:
        store = UUID(services.webhooks.create_store("Shop", SYSTEM)["storeId"])
        key = services.webhooks.create_api_key(store, "ann@shop.example", SYSTEM)["apiKey"]
        services.webhooks.create_webhook(
            store, SYSTEM, url="https://93.184.215.14/h", event_types=["order.*"]
        )
        c = services.commerce
        for number in range(CUSTOMERS):
            customer = UUID(
                c.register_customer(store, f"c{number}@x.example", "C", None, ANN)["id"]
            )
            c.update_customer(store, customer, ANN, name="Cee")
            c.verify_customer(store, customer, SYSTEM)
        while services.dispatch.process_new_events(limit=500):
            pass
        while services.read_models.catch_up_all(limit=2000):
            pass
        checksum = services.read_models.checksum()

        # And the API, polled from another thread: health, the webhook list (with an API
        # key), and a read model's live table
        poller = Poller(services, key)
        poller.start()
        wait_until(lambda: len(poller.answers) >= 3)

        # When `webround projections rebuild --all` runs
        with subprocess.Popen(
            [str(WEBROUND), "projections", "rebuild", "--all"],
            env=environment(cli_settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as process:
            progress = StreamTimes(process)
            try:
                process.wait(timeout=120)
            finally:
                if process.poll() is None:
                    process.kill()
            ended = time.monotonic()
            output = progress.join()
        poller.stop()

        # Then it rebuilt every model from thousands of events, showing events/s
        assert process.returncode == 0, output
        assert "events/s" in output
        assert f"{3 * CUSTOMERS:,}/{3 * CUSTOMERS:,} events" in output
        assert progress.first is not None
        # And the API answered, every time, several times while the rebuild ran (from its
        # first progress line to its exit)
        assert not poller.failures, poller.failures[:3]
        during = [a for a in poller.answers if progress.first <= a.at <= ended]
        for kind in ("healthz", "webhooks", "read_model"):
            assert sum(a.kind == kind for a in during) >= 3, (kind, len(during))
        # And the live table kept every row until the swap, and after it
        assert all(a.value == 3 * CUSTOMERS for a in poller.answers if a.kind == "read_model")
        assert all(a.value == "ok" for a in poller.answers if a.kind == "healthz")
        assert all(a.value == 1 for a in poller.answers if a.kind == "webhooks")
        assert services.read_models.checksum() == checksum
    finally:
        if poller is not None:
            poller.stop()
        services.close()


@dataclasses.dataclass(frozen=True)
class Answer:
    at: float
    kind: str
    value: Any


class Poller:
    """Calls the API (in-process, httpx over ASGI) and a read model in a loop, in a thread
    with its own event loop, recording when each successful answer came."""

    def __init__(self, services: Services, api_key: str) -> None:
        self.services = services
        self.headers = {"authorization": f"Bearer {api_key}"}
        self.answers: list[Answer] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._poll()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    async def _poll(self) -> None:
        transport = httpx.ASGITransport(app=create_app(self.services))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            while not self._stop.is_set():
                try:
                    await self._round(client)
                except Exception as error:  # recorded: the test fails on any
                    self.failures.append(repr(error))
                await asyncio.sleep(0.005)

    async def _round(self, client: httpx.AsyncClient) -> None:
        health = await client.get("/healthz")
        self._record("healthz", health, lambda body: body["status"])
        hooks = await client.get("/v1/webhooks", headers=self.headers)
        self._record("webhooks", hooks, lambda body: len(body["data"]))
        rows = await asyncio.to_thread(
            self.services.read_models.query, "SELECT count(*) AS n FROM rm_events"
        )
        self.answers.append(Answer(time.monotonic(), "read_model", rows[0]["n"]))

    def _record(self, kind: str, response: httpx.Response, value: Any) -> None:
        if response.status_code != 200:
            self.failures.append(f"{kind}: {response.status_code} {response.text}")
            return
        self.answers.append(Answer(time.monotonic(), kind, value(response.json())))


class StreamTimes:
    """Reads a process's stderr (and stdout) as it comes, noting when the first progress
    line arrived."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.first: float | None = None
        self._chunks: list[bytes] = []
        self._out = b""
        assert process.stderr is not None
        assert process.stdout is not None
        self._threads = [
            threading.Thread(target=self._read_err, args=(process.stderr.fileno(),)),
            threading.Thread(target=self._read_out, args=(process.stdout,)),
        ]
        for thread in self._threads:
            thread.start()

    def _read_err(self, fd: int) -> None:
        while chunk := os.read(fd, 4096):
            if self.first is None and b"events" in chunk:
                self.first = time.monotonic()
            self._chunks.append(chunk)

    def _read_out(self, stream: Any) -> None:
        self._out = stream.read()

    def join(self) -> str:
        for thread in self._threads:
            thread.join(timeout=30)
        return (b"".join(self._chunks) + self._out).decode()
