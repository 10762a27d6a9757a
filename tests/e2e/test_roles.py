"""The production roles as an operator runs them (SPEC §10, §11): real `webround` processes.

- Dispatchers share the partitions (PostgreSQL): two hold four of eight each; `kill -9`
  one and the other holds all within two lease periods, every event still arriving; a
  third joins and they share again. Embedded (one SQLite data directory): one active
  dispatcher by file lock, the other on standby, taking over when the first is killed.
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
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar
from uuid import UUID

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from domain.values import Actor
from infrastructure.bootstrap import Services, build
from infrastructure.settings import Settings
from tests.conftest import POSTGRES_DSN
from tests.support.receiver import Receiver, RecordedRequest, Reply, free_port

WEBROUND = Path(sys.executable).parent / "webround"
TAKEOVER_SECONDS = 10.0  # generous: a loaded machine starts processes slowly

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


def production_env(
    tmp_path: Path, postgres_url: str, redis_url: str, **extra: str
) -> dict[str, str]:
    return base_env(
        tmp_path,
        WEBROUND_DATABASE_URL=postgres_url,
        WEBROUND_BROKER_URL=redis_url,
        WEBROUND_MASTER_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        WEBROUND_LOG_FORMAT="json",
        **extra,
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


# --- dispatchers sharing the partitions -----------------------------------------------


def holders(fleet: Fleet) -> dict[str, int]:
    """Partitions per dispatcher holding any, as `webround dispatchers --json` says."""
    counts: dict[str, int] = {}
    for lease in json.loads(fleet.command("dispatchers", "--json")):
        if lease["name"].startswith("partition:") and lease["owner"]:
            counts[lease["owner"]] = counts.get(lease["owner"], 0) + 1
    return counts


def dispatcher(fleet: Fleet, metrics_port: int) -> Process:
    return fleet.start(
        "dispatcher", "webround: dispatcher running", WEBROUND_METRICS_PORT=str(metrics_port)
    )


def partitions_metric(port: int) -> float:
    exposed = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return next(
        sample.value
        for family in text_string_to_metric_families(exposed)
        for sample in family.samples
        if sample.name == "webround_dispatcher_partitions"
    )


@pytest.mark.postgres
@pytest.mark.redis
def test_dispatchers_share_the_partitions_and_those_of_a_killed_one_move(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    lease = 3.0
    env = production_env(
        tmp_path,
        postgres_url,
        redis_url,
        WEBROUND_PARTITIONS="8",
        WEBROUND_PARTITION_LEASE_SECONDS=str(lease),
    )
    fleet = Fleet(tmp_path, env)
    ports = [free_port() for _ in range(3)]
    with Receiver() as receiver, running(fleet):
        # Given eight stores, each with a webhook to a receiver (the stores fall into
        # several partitions), two dispatchers and two workers
        with applications(env) as services:
            stores = [
                UUID(services.webhooks.create_store(f"Shop {n}", Actor.system())["storeId"])
                for n in range(8)
            ]
            for store in stores:
                webhook(services, store, receiver)
        first = fleet.start(
            "dispatcher", "webround: dispatcher running", WEBROUND_METRICS_PORT=str(ports[0])
        )
        fleet.start(
            "dispatcher", "webround: dispatcher running", WEBROUND_METRICS_PORT=str(ports[1])
        )
        for _ in range(2):
            fleet.start("worker", wait_for="webround: worker running")

        # Then both dispatchers hold partitions, four each, as the CLI and their
        # metrics say
        eventually(lambda: sorted(holders(fleet).values()) == [4, 4], timeout=4 * lease)
        assert [partitions_metric(p) for p in ports[:2]] == [4.0, 4.0]

        # When events flow to every store, and one dispatcher is killed midway
        names: list[str] = []
        with applications(env) as services:
            for round_ in range(3):
                batch = [f"r{round_}-s{n}" for n in range(len(stores))]
                for store, name in zip(stores, batch, strict=True):
                    register(services, store, name)
                names += batch
                if round_ == 0:
                    eventually(lambda: len(names_answered(receiver)) >= 4, timeout=15)
                    first.popen.send_signal(signal.SIGKILL)
                    killed = time.monotonic()
                    first.popen.wait(timeout=10)

        # Then its partitions move to the other within two lease periods
        eventually(lambda: sorted(holders(fleet).values()) == [8], timeout=2 * lease + 2)
        print(f"\npartitions moved after {time.monotonic() - killed:.1f} s")
        # And every event reaches its endpoint; a duplicate carries the same webhook-id
        eventually(lambda: names_answered(receiver) >= set(names), timeout=30)
        ids: dict[str, set[str]] = {}
        for request in receiver.requests:
            envelope = request.headers["webround-envelope-id"]
            ids.setdefault(envelope, set()).add(request.headers["webhook-id"])
        assert all(len(found) == 1 for found in ids.values())

        # When a third dispatcher starts
        fleet.start(
            "dispatcher", "webround: dispatcher running", WEBROUND_METRICS_PORT=str(ports[2])
        )

        # Then the partitions are shared again, and events still flow
        eventually(lambda: sorted(holders(fleet).values()) == [4, 4], timeout=4 * lease)
        with applications(env) as services:
            late = [f"late-s{n}" for n in range(len(stores))]
            for store, name in zip(stores, late, strict=True):
                register(services, store, name)
        eventually(lambda: names_answered(receiver) >= set(late), timeout=30)


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
        fleet.start("dispatcher", wait_for="webround: dispatcher running")
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


# --- the connection budget ------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_api_dispatcher_and_worker_hold_at_most_sixteen_connections(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    env = production_env(tmp_path, postgres_url, redis_url)
    fleet = Fleet(tmp_path, env)
    tag = UUID(int=int(time.time_ns())).hex[-8:]  # names this test's connections
    roles = {
        "api": f"wr-{tag}-api",
        "dispatcher": f"wr-{tag}-dispatcher",
        "worker": f"wr-{tag}-worker",
    }
    with Receiver() as receiver, running(fleet):
        # Given the three roles of an installation, with the default pool size
        port = free_port()
        fleet.start("api", "serving on", PGAPPNAME=roles["api"], WEBROUND_PORT=str(port))
        fleet.start("dispatcher", "webround: dispatcher running", PGAPPNAME=roles["dispatcher"])
        fleet.start("worker", "webround: worker running", PGAPPNAME=roles["worker"])
        store = json.loads(fleet.command("stores", "create", "--name", "Shop"))
        headers = {"authorization": f"Bearer {store['apiKey']}"}
        api = f"http://127.0.0.1:{port}"
        httpx.post(
            f"{api}/v1/webhooks",
            json={"url": receiver.url + "hooks", "eventTypes": ["*"]},
            headers=headers,
            timeout=10,
        ).raise_for_status()

        # When they work: commands from eight clients at once, deliveries flowing
        peak: dict[str, int] = {}

        def sample() -> None:
            with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
                rows = admin.execute(
                    "SELECT application_name, count(*) FROM pg_stat_activity"
                    " WHERE application_name LIKE %s GROUP BY application_name",
                    (f"wr-{tag}-%",),
                ).fetchall()
            for name, count in rows:
                peak[name] = max(peak.get(name, 0), int(count))

        def commands(n: int) -> None:
            with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
                for i in range(25):
                    client.post("/v1/customers", json={"email": f"c{n}-{i}@x.example", "name": "C"})

        threads = [threading.Thread(target=commands, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            sample()
            time.sleep(0.1)
        eventually(lambda: len(receiver.requests) >= 200, timeout=60)
        sample()

        # Then no role held more than its pool (and the dispatcher its commit
        # listener), and all three together at most sixteen
        print(f"\npeak connections: {peak}")
        assert peak.get(roles["api"], 0) <= 4
        assert peak.get(roles["dispatcher"], 0) <= 5
        assert peak.get(roles["worker"], 0) <= 4
        assert sum(peak.values()) <= 16
        assert set(peak) == set(roles.values())
