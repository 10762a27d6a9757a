"""The production roles as an operator runs them (SPEC §10): real `webround` processes.

- A single active dispatcher by lock: two `webround dispatcher` on one PostgreSQL schema
  (or one SQLite data directory), one active and one on standby; `kill -9` the active one
  and the standby takes over within seconds, and deliveries go on.
- Graceful shutdown: SIGTERM to a worker in the middle of slow attempts lets them finish
  and be recorded, then exits 0; what it had not started is done by the next worker.
- Logs in JSON (`WEBROUND_LOG_FORMAT=json`) are one object per line, with their fields.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar
from uuid import UUID

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from domain.values import Actor
from infrastructure.bootstrap import Services, build
from infrastructure.settings import Settings
from tests.support.receiver import Receiver, RecordedRequest, Reply, free_port

WEBROUND = Path(sys.executable).parent / "webround"
TAKEOVER_SECONDS = 5.0

T = TypeVar("T")


def eventually(condition: Callable[[], T | None], timeout: float, every: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {condition}")
        time.sleep(every)


class Process:
    """One `webround ROLE` process, its output in a file of its own."""

    def __init__(self, role: str, env: dict[str, str], log: Path) -> None:
        self.role = role
        self.log = log
        self._file: IO[bytes] = log.open("wb")
        self.popen = subprocess.Popen(
            [str(WEBROUND), role], env=env, stdout=self._file, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def json_lines(self) -> list[dict[str, Any]]:
        """Every log record (the lines that are not the role's own `print`s)."""
        return [
            json.loads(line)
            for line in self.output().splitlines()
            if not line.startswith("webround:")
        ]

    def says(self, text: str) -> bool:
        return text in self.output()

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        def said() -> bool:
            assert self.popen.poll() is None or self.says(text), (
                f"{self.role} exited with {self.popen.returncode}:\n{self.output()}"
            )
            return self.says(text)

        eventually(said, timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=10)
        self._file.close()


class Fleet:
    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.env = env
        self.dir = tmp_path / "logs"
        self.dir.mkdir()
        self.processes: list[Process] = []

    def start(self, role: str, wait_for: str | None = None, **env: str) -> Process:
        name = f"{role}-{sum(p.role == role for p in self.processes) + 1}.log"
        process = Process(role, {**self.env, **env}, self.dir / name)
        self.processes.append(process)
        if wait_for is not None:
            process.wait_for(wait_for)
        return process

    def command(self, *args: str) -> str:
        done = subprocess.run(
            [str(WEBROUND), *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()

    def tails(self) -> str:
        return "\n".join(
            f"----- {p.log.name}\n" + "\n".join(p.output().splitlines()[-30:])
            for p in self.processes
        )


@contextlib.contextmanager
def running(fleet: Fleet) -> Iterator[Fleet]:
    try:
        yield fleet
    except BaseException:
        print(fleet.tails(), file=sys.stderr)
        raise
    finally:
        fleet.stop_all()


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("WEBROUND_")}
    return {
        **inherited,
        "PYTHONUNBUFFERED": "1",
        "WEBROUND_DATA_DIR": str(tmp_path / "data"),
        "WEBROUND_ALLOWED_TARGETS": "127.0.0.0/8",
        "WEBROUND_RETRY_SCHEDULE": "1,1",
        "WEBROUND_LEASE_SECONDS": "3",
        **extra,
    }


def production_env(tmp_path: Path, postgres_url: str, redis_url: str) -> dict[str, str]:
    return base_env(
        tmp_path,
        WEBROUND_DATABASE_URL=postgres_url,
        WEBROUND_BROKER_URL=redis_url,
        WEBROUND_MASTER_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        WEBROUND_LOG_FORMAT="json",
    )


@contextlib.contextmanager
def applications(env: dict[str, str]) -> Iterator[Services]:
    """The in-process applications on the same stores as the processes."""
    services = build(Settings.from_env(env))
    try:
        yield services
    finally:
        services.close()


def webhook(services: Services, store_id: UUID, receiver: Receiver) -> UUID:
    created = services.webhooks.create_webhook(
        store_id, Actor.system(), url=receiver.url + "hooks", event_types=["customer.registered"]
    )
    time.sleep(0.01)  # the events to come must happen after the webhook exists
    return UUID(created["id"])


def register(services: Services, store_id: UUID, *names: str) -> None:
    for name in names:
        services.commerce.register_customer(
            store_id, f"{name}@shop.example", name, None, Actor.system()
        )


def names_answered(receiver: Receiver) -> set[str]:
    return {json.loads(r.body)["data"]["customer"]["name"] for r in receiver.requests}


def active(process: Process) -> int:
    return sum(r.get("message", "").startswith("dispatcher active") for r in process.json_lines())


# --- a single active dispatcher ----------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_one_dispatcher_is_active_and_the_standby_takes_over_when_it_is_killed(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    env = production_env(tmp_path, postgres_url, redis_url)
    fleet = Fleet(tmp_path, env)
    # (The in-process applications are opened only while needed: each `webround` process
    # holds some twenty PostgreSQL connections, and the server allows a hundred.)
    with Receiver() as receiver, running(fleet):
        # Given a store (by the CLI) with a webhook to a receiver, and a first event
        store_id = UUID(json.loads(fleet.command("stores", "create", "--name", "Shop"))["storeId"])
        with applications(env) as services:
            webhook(services, store_id, receiver)
            register(services, store_id, "before")
        # And two dispatchers and a worker on one schema, the dispatchers logging JSON
        first = fleet.start("dispatcher", wait_for="dispatcher active")
        second = fleet.start("dispatcher", wait_for="dispatcher on standby")
        fleet.start("worker", wait_for="webround: worker running")

        # Then exactly one of them is active, and the other says it is on standby
        assert (active(first), active(second)) == (1, 0)
        standby = [r for r in second.json_lines() if "standby" in r["message"]]
        assert standby
        assert standby[0]["level"] == "INFO"
        assert "advisory lock" in standby[0]["lock"]
        # And the event is delivered
        eventually(lambda: "before" in names_answered(receiver), timeout=15)

        # When the active dispatcher is killed (SIGKILL: no chance to let go)
        first.popen.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        first.popen.wait(timeout=10)

        # Then the standby takes over within a few seconds
        eventually(lambda: active(second) == 1, timeout=TAKEOVER_SECONDS)
        print(f"\ntakeover after {time.monotonic() - killed:.1f} s")
        # And deliveries go on
        with applications(env) as services:
            register(services, store_id, "after")
        eventually(lambda: "after" in names_answered(receiver), timeout=15)

        # And the worker's JSON log lines carry each attempt's fields
        worker = fleet.processes[2]

        def attempts_logged() -> list[dict[str, Any]] | None:
            found = [r for r in worker.json_lines() if r["message"] == "delivery attempt"]
            return found if len(found) >= 2 else None

        attempts = eventually(attempts_logged, timeout=5)
        for record in attempts:
            assert record["logger"] == "webround.worker"
            assert record["status_code"] == 200
            assert record["attempt"] == 1
            assert record["event_id"].startswith("evt_")
            UUID(record["delivery_id"])
            UUID(record["webhook_id"])
            assert record["duration_ms"] >= 0


def test_one_embedded_dispatcher_per_data_directory_by_file_lock(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, base_env(tmp_path, WEBROUND_LOG_FORMAT="json"))
    with running(fleet):
        # Given two dispatchers on one SQLite data directory
        first = fleet.start("dispatcher", wait_for="dispatcher active")
        second = fleet.start("dispatcher", wait_for="dispatcher on standby")

        # Then one is active and the other stands by, the lock file naming the holder
        assert (active(first), active(second)) == (1, 0)
        lock_file = tmp_path / "data" / "dispatcher.lock"
        assert lock_file.read_text().strip() == str(first.popen.pid)

        # When the active one is killed
        first.popen.send_signal(signal.SIGKILL)
        first.popen.wait(timeout=10)

        # Then the standby takes over within a few seconds
        eventually(lambda: active(second) == 1, timeout=TAKEOVER_SECONDS)
        assert lock_file.read_text().strip() == str(second.popen.pid)


# --- graceful shutdown --------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_sigterm_lets_a_worker_finish_and_record_its_attempts_then_exit_0(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    env = production_env(tmp_path, postgres_url, redis_url)
    fleet = Fleet(tmp_path, env)
    delay = {"seconds": 1.0}

    def slowly(request: RecordedRequest) -> Reply:
        return Reply(status=200, body=b"ok", delay=delay["seconds"])

    with Receiver(slowly) as receiver, running(fleet), applications(env) as services:
        # Given a webhook to a receiver that takes a second to answer
        store_id = UUID(json.loads(fleet.command("stores", "create", "--name", "Shop"))["storeId"])
        webhook(services, store_id, receiver)
        # And a dispatcher and a worker of two threads
        fleet.start("dispatcher", wait_for="dispatcher active")
        worker = fleet.start(
            "worker", wait_for="webround: worker running", **{"WEBROUND_WORKER_THREADS": "2"}
        )
        # And six deliveries to make
        names = [f"c{n}" for n in range(6)]
        register(services, store_id, *names)

        # When the worker gets SIGTERM while two attempts are in flight
        eventually(lambda: len(receiver.requests) >= 2, timeout=15)
        worker.popen.send_signal(signal.SIGTERM)

        # Then it exits 0 once those attempts are done
        assert worker.popen.wait(timeout=20) == 0
        assert worker.says("webround: worker stopping")
        started = receiver.requests
        assert 2 <= len(started) < len(names)
        # And every attempt it started was answered and recorded as such
        for request in started:
            delivery = services.dispatch.delivery(UUID(request.headers["webround-delivery-id"]))
            number = int(request.headers["webround-attempt"])
            recorded = [a for a in delivery.attempts if a.number == number]
            assert recorded, f"attempt {number} of {delivery.id} was not recorded"
            assert recorded[0].status_code == 200
            assert delivery.status == "succeeded"

        # And what it had not started is done by the next worker: nothing is lost
        delay["seconds"] = 0.0
        port = free_port()
        fleet.start("worker", wait_for="webround: worker running", WEBROUND_METRICS_PORT=str(port))
        eventually(lambda: names_answered(receiver) == set(names), timeout=20)
        ids = {UUID(r.headers["webround-delivery-id"]) for r in receiver.requests}
        assert len(ids) == len(names)
        eventually(
            lambda: all(services.dispatch.delivery(i).status == "succeeded" for i in ids),
            timeout=10,
        )
        # And that worker counts the attempts it recorded on its own metrics port
        exposed = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        counted = {
            sample.labels["outcome"]: sample.value
            for family in text_string_to_metric_families(exposed)
            for sample in family.samples
            if sample.name == "webround_delivery_attempts_total"
        }
        assert counted == {"succeeded": len(names) - len(started), "failed": 0, "retrying": 0}
