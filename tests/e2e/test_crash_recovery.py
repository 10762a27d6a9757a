"""Crash recovery (§6, §10): every process is killed with SIGKILL mid-run, then started again.

Acceptance: "with deliveries pending and a retry scheduled, stop every process abruptly and
start again: every due delivery is attempted, no envelope duplicated, no delivery lost."

Real `webround` processes run against a real receiver. The receiver answers by the
customer's name in the envelope: `flaky-*` events fail their first attempt (so a retry
lives in the durable schedule at the kill), `slow-*` events take two seconds (so some
attempts are in flight at the kill), `ok-*` events succeed at once. After the restart the
test reads the event stores itself (no worker of its own) and the receiver's log.

Duplicate requests are allowed (at-least-once): a message lost with a killed process is
handed out again when its lease runs out, and may also come back from the broker. Every
duplicate must carry the same webhook-id and body.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar
from uuid import UUID

import httpx
import pytest

from domain.delivery import Delivery, delivery_id_of, event_id_of
from infrastructure.bootstrap import Services, build
from infrastructure.settings import Settings
from tests.support.receiver import Receiver, RecordedRequest, Reply, free_port

WEBROUND = Path(sys.executable).parent / "webround"

CUSTOMERS = 25  # each registered, then verified: two store events apiece
EVENTS = 2 * CUSTOMERS
KINDS = ("ok", "ok", "flaky", "ok", "slow")  # by customer number; the last one is slow
SLOW_SECONDS = 2.0
RETRY_SCHEDULE = "2,1,1"  # the first retry (1.6-2.4 s) is still due when the kill comes
LEASE_SECONDS = "3"  # above SLOW_SECONDS, so a slow answer is not taken for a lost one
SETTLE_SECONDS = 60.0

_SCHEDULED = "domain.delivery:Delivery.Scheduled"
_ENVELOPE_CREATED = "domain.delivery:Envelope.Created"

T = TypeVar("T")


# --- the receiver's script -----------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One request the receiver got, and what it answered."""

    event_id: str  # the webhook-id header
    body_event_id: str  # the envelope's eventId
    delivery_id: str
    attempt: int
    status: int
    delay: float
    arrived: float  # time.monotonic()
    body: bytes

    def in_flight_at(self, moment: float) -> bool:
        return self.arrived <= moment < self.arrived + self.delay


class Script:
    """How the receiver answers each request, and the log of every answer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: list[Answer] = []

    def __call__(self, request: RecordedRequest) -> Reply:
        envelope = json.loads(request.body)
        kind = envelope["data"]["customer"]["name"].split("-", 1)[0]
        attempt = int(request.headers["webround-attempt"])
        status, delay = 200, 0.0
        if kind == "flaky" and attempt == 1:
            status = 500
        elif kind == "slow":
            delay = SLOW_SECONDS
        with self._lock:
            self._answers.append(
                Answer(
                    event_id=request.headers["webhook-id"],
                    body_event_id=envelope["eventId"],
                    delivery_id=request.headers["webround-delivery-id"],
                    attempt=attempt,
                    status=status,
                    delay=delay,
                    arrived=time.monotonic(),
                    body=request.body,
                )
            )
        return Reply(status=status, body=b"down" if status == 500 else b"ok", delay=delay)

    @property
    def answers(self) -> list[Answer]:
        with self._lock:
            return list(self._answers)


def retries_pending(answers: list[Answer]) -> set[str]:
    """Events whose first attempt was refused and that nobody has tried again yet."""
    by_event: dict[str, list[Answer]] = {}
    for answer in answers:
        by_event.setdefault(answer.event_id, []).append(answer)
    return {
        event_id
        for event_id, seen in by_event.items()
        if all(a.status == 500 and a.attempt == 1 for a in seen)
    }


def in_flight(answers: list[Answer], moment: float) -> set[str]:
    return {a.event_id for a in answers if a.in_flight_at(moment)}


# --- the processes ---------------------------------------------------------------------


class Fleet:
    """The `webround` processes of one test, each logging to a file of its own."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.env = env
        self._log_dir = log_dir
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._running: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
        self._names: Counter[str] = Counter()

    def command(self, *args: str) -> str:
        """Run a one-off command (e.g. `stores create`) and return its standard output."""
        done = subprocess.run(
            [str(WEBROUND), *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, role: str, *args: str) -> Path:
        """Start `webround ROLE ARGS...`; returns the path of its log file."""
        self._names[role] += 1
        path = self._log_dir / f"{role}-{self._names[role]}.log"
        log = path.open("wb")
        process = subprocess.Popen(
            [str(WEBROUND), role, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self._running.append((process, log))
        return path

    def kill_all(self) -> None:
        """SIGKILL every running process (all first, then reap them): no graceful stop."""
        for process, _ in self._running:
            process.kill()
        for process, log in self._running:
            process.wait(timeout=10)
            log.close()
        self._running.clear()

    def assert_alive(self) -> None:
        for process, log in self._running:
            assert process.poll() is None, f"{process.args} exited with {process.returncode}"
            log.flush()

    def tails(self, lines: int = 40) -> str:
        parts = []
        for path in sorted(self._log_dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"----- {path.name} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(parts)

    @contextlib.contextmanager
    def tails_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            print(self.tails(), file=sys.stderr)
            raise


def wait_for_health(fleet: Fleet, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fleet.assert_alive()
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"no healthy answer on port {port} within {timeout} s")


def wait_for_line(fleet: Fleet, log: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fleet.assert_alive()
        if text in log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{log.name} did not say {text!r} within {timeout} s")


def eventually(condition: Callable[[], T | None], timeout: float, every: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {condition}")
        time.sleep(every)


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("WEBROUND_")}
    return {
        **inherited,
        "PYTHONUNBUFFERED": "1",
        "WEBROUND_DATA_DIR": str(tmp_path / "data"),
        "WEBROUND_ALLOWED_TARGETS": "127.0.0.0/8",
        "WEBROUND_RETRY_SCHEDULE": RETRY_SCHEDULE,
        "WEBROUND_LEASE_SECONDS": LEASE_SECONDS,
        **extra,
    }


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, Script]]:
    script = Script()
    with Receiver(script) as running:
        yield running, script


# --- the workload and what the stores say afterwards ----------------------------------


def record_workload(api: httpx.Client) -> None:
    """Register and verify CUSTOMERS customers through the API: EVENTS store events."""
    for number in range(CUSTOMERS):
        kind = KINDS[number % len(KINDS)]
        created = api.post(
            "/v1/customers",
            json={"email": f"c{number}@shop.example", "name": f"{kind}-{number:02d}"},
        )
        assert created.status_code == 201, created.text
        verified = api.post(f"/v1/customers/{created.json()['id']}/verify", json={})
        assert verified.status_code == 200, verified.text


def create_webhook(api: httpx.Client, receiver: Receiver) -> UUID:
    created = api.post("/v1/webhooks", json={"url": receiver.url + "hooks", "eventTypes": ["*"]})
    assert created.status_code == 201, created.text
    time.sleep(0.01)  # the events to come must happen after the webhook exists
    return UUID(created.json()["id"])


@dataclass
class Census:
    """What the event stores say: the store events, their envelopes, their deliveries."""

    event_ids: list[str]
    envelope_event_ids: list[str]
    deliveries: list[Delivery]  # original deliveries (not replays) to the webhook

    @property
    def settled(self) -> bool:
        return (
            len(self.event_ids) == EVENTS
            and len(self.envelope_event_ids) >= EVENTS
            and len(self.deliveries) >= EVENTS
            and all(d.status == "succeeded" for d in self.deliveries)
        )


def take_census(services: Services, webhook_id: UUID) -> Census:
    commerce, dispatch = services.commerce, services.dispatch
    events = commerce.recorder.select_notifications(start=None, limit=100_000)
    envelopes = dispatch.recorder.select_notifications(
        start=None, limit=100_000, topics=[_ENVELOPE_CREATED]
    )
    scheduled = dispatch.recorder.select_notifications(
        start=None, limit=100_000, topics=[_SCHEDULED]
    )
    deliveries = []
    for notification in scheduled:
        event: Any = dispatch.mapper.to_domain_event(notification)
        if event.webhook_id == webhook_id and not event.replay:
            deliveries.append(dispatch.delivery(event.originator_id))
    created: list[Any] = [dispatch.mapper.to_domain_event(n) for n in envelopes]
    return Census(
        event_ids=[event_id_of(n.originator_id, n.originator_version) for n in events],
        envelope_event_ids=[e.event_id for e in created],
        deliveries=deliveries,
    )


@dataclass(frozen=True)
class Kill:
    """The moment every process died, and what the receiver had seen by then."""

    at: datetime
    monotonic: float
    answers: list[Answer]
    retries_pending: set[str]
    in_flight: set[str]
    undelivered: int  # store events without a 2xx answer yet


def kill_when_work_is_pending(fleet: Fleet, script: Script) -> Kill:
    """SIGKILL everything once a refused first attempt awaits its retry and a slow attempt
    is in flight (the workload is recorded by then). The refusal must be a little old, so
    that its attempt is surely recorded: the retry then lives in the durable schedule."""

    def work_is_pending() -> bool:
        answers, now = script.answers, time.monotonic()
        recorded = {a.event_id for a in answers if a.status == 500 and a.arrived < now - 0.2}
        return bool(retries_pending(answers) & recorded and in_flight(answers, now))

    eventually(work_is_pending, timeout=20, every=0.01)
    fleet.kill_all()
    moment, at = time.monotonic(), datetime.now(UTC)
    answers = script.answers
    delivered = {a.event_id for a in answers if a.status < 300 and not a.in_flight_at(moment)}
    return Kill(
        at=at,
        monotonic=moment,
        answers=answers,
        retries_pending=retries_pending(answers),
        in_flight=in_flight(answers, moment),
        undelivered=EVENTS - len(delivered),
    )


def assert_recovered(
    services: Services, webhook_id: UUID, script: Script, kill: Kill, label: str
) -> None:
    """Every store event has one envelope and one delivery, which succeeded at a real 2xx
    of the receiver; work pending at the kill was done by the new processes."""
    started = time.monotonic()
    census = eventually(
        lambda: c if (c := take_census(services, webhook_id)).settled else None,
        timeout=SETTLE_SECONDS,
    )
    settle_seconds = time.monotonic() - started
    answers = script.answers

    # Exactly one envelope per store event, none duplicated
    assert len(census.event_ids) == EVENTS
    assert len(census.envelope_event_ids) == EVENTS
    assert Counter(census.envelope_event_ids) == Counter(census.event_ids)

    # Exactly one original delivery per envelope to the webhook, every one succeeded
    assert len(census.deliveries) == EVENTS
    assert sorted(d.event_id for d in census.deliveries) == sorted(census.event_ids)
    for delivery in census.deliveries:
        assert delivery.id == delivery_id_of(delivery.envelope_id, webhook_id)
        assert delivery.status == "succeeded", delivery.attempts
        assert delivery.attempts[-1].status_code == 200

    # Each recorded success is a 2xx the receiver really gave to that attempt (an answer
    # still on its way when the kill came reached nobody, so it does not count)
    completed = [a for a in answers if not a.in_flight_at(kill.monotonic)]
    answered = {(a.delivery_id, a.attempt, a.status) for a in completed}
    for delivery in census.deliveries:
        assert (str(delivery.id), delivery.attempts[-1].number, 200) in answered, delivery.id
    assert {a.event_id for a in completed if a.status == 200} == set(census.event_ids)

    # Duplicates carry the same webhook-id and the same bytes
    for answer in answers:
        assert answer.event_id == answer.body_event_id
    bodies: dict[str, set[bytes]] = {}
    for answer in answers:
        bodies.setdefault(answer.event_id, set()).add(answer.body)
    assert all(len(b) == 1 for b in bodies.values())
    deliveries_by_event = {d.event_id: str(d.id) for d in census.deliveries}
    assert all(a.delivery_id == deliveries_by_event[a.event_id] for a in answers)
    resent = sum(n - 1 for n in Counter((a.event_id, a.attempt) for a in answers).values())
    twice_ok = sum(
        n - 1 for n in Counter(a.event_id for a in completed if a.status == 200).values()
    )

    # A retry that was due in durable storage at the kill was made by the new processes
    by_event = {d.event_id: d for d in census.deliveries}
    assert kill.retries_pending, "the kill came when no retry was pending"
    for event_id in kill.retries_pending:
        attempts = by_event[event_id].attempts
        assert attempts[-1].started_at > kill.at, attempts
    carried_over = [
        d
        for d in census.deliveries
        if d.attempts[0].status_code == 500
        and d.attempts[0].started_at < kill.at < d.attempts[-1].started_at
    ]
    assert carried_over, "no refused attempt recorded before the kill was retried after it"

    # An attempt in flight at the kill was made again after the restart, and succeeded
    assert kill.in_flight, "the kill came when nothing was in flight"
    for event_id in kill.in_flight:
        assert any(a.arrived > kill.monotonic for a in answers if a.event_id == event_id)
        assert by_event[event_id].attempts[-1].started_at > kill.at

    print(
        f"\n[{label}] at the kill: {len(kill.answers)} requests received, "
        f"{kill.undelivered} of {EVENTS} events not yet delivered, "
        f"{len(kill.retries_pending)} retries pending, {len(kill.in_flight)} in flight"
        f"\n[{label}] after the restart (settled in {settle_seconds:.1f} s): "
        f"events={len(census.event_ids)} envelopes={len(census.envelope_event_ids)} "
        f"deliveries={len(census.deliveries)} requests={len(answers)} "
        f"duplicates: {resent} attempts sent again ({len(kill.in_flight)} cut off by the "
        f"kill), {twice_ok} events answered 2xx more than once; "
        f"retried across the crash={len(carried_over)}"
    )


# --- the tests -------------------------------------------------------------------------


def test_embedded_serve_killed_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, receiver: tuple[Receiver, Script]
) -> None:
    endpoint, script = receiver
    env = base_env(tmp_path)
    fleet = Fleet(tmp_path / "logs", env)
    services: Services | None = None
    try:
        with fleet.tails_on_failure():
            # Given a store and its key, made by the CLI on the data directory
            key = json.loads(fleet.command("stores", "create", "--name", "Crash shop"))["apiKey"]
            # And `webround serve` running with a webhook to the receiver
            port = free_port()
            fleet.start("serve", "--port", str(port))
            wait_for_health(fleet, port)
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            ) as api:
                webhook_id = create_webhook(api, endpoint)

                # When the store records its events quickly
                record_workload(api)
            # And the process is killed while retries are due and attempts in flight
            kill = kill_when_work_is_pending(fleet, script)

            # And a new `webround serve` starts on the same data directory
            restarted = time.monotonic()
            port = free_port()
            fleet.start("serve", "--port", str(port))
            wait_for_health(fleet, port)
            print(f"\n[embedded] restart healthy in {time.monotonic() - restarted:.1f} s")

            # Then every event was delivered once per webhook, nothing lost or duplicated
            services = build(Settings.from_env(env))
            assert_recovered(services, webhook_id, script, kill, "embedded")
    finally:
        fleet.kill_all()
        if services is not None:
            services.close()


@pytest.mark.postgres
@pytest.mark.redis
def test_production_processes_killed_mid_run_lose_and_duplicate_nothing(
    tmp_path: Path, receiver: tuple[Receiver, Script], postgres_url: str, redis_url: str
) -> None:
    endpoint, script = receiver
    master_key = base64.b64encode(secrets.token_bytes(32)).decode()
    env = base_env(
        tmp_path,
        WEBROUND_DATABASE_URL=postgres_url,
        WEBROUND_BROKER_URL=redis_url,
        WEBROUND_MASTER_KEY=master_key,
    )
    fleet = Fleet(tmp_path / "logs", env)
    services: Services | None = None
    try:
        with fleet.tails_on_failure():
            # Given a store and its key, made by the CLI on PostgreSQL
            key = json.loads(fleet.command("stores", "create", "--name", "Crash shop"))["apiKey"]
            # And the API, a dispatcher and two workers running, on PostgreSQL and Redis
            port = free_port()
            fleet.start("api", "--port", str(port))
            wait_for_health(fleet, port)
            start_background(fleet)
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            ) as api:
                # And a webhook to the receiver
                webhook_id = create_webhook(api, endpoint)

                # When the store records its events quickly
                record_workload(api)
            # And every process is killed while retries are due and attempts in flight
            kill = kill_when_work_is_pending(fleet, script)

            # And one dispatcher and two workers start again
            restarted = time.monotonic()
            start_background(fleet)
            print(f"\n[production] restart running in {time.monotonic() - restarted:.1f} s")

            # Then every event was delivered once per webhook, nothing lost or duplicated
            services = build(Settings.from_env(env))
            assert_recovered(services, webhook_id, script, kill, "production")
    finally:
        fleet.kill_all()
        if services is not None:
            services.close()


def start_background(fleet: Fleet) -> None:
    """One dispatcher and two workers, each started once the one before says it is running.

    One at a time: processes starting together on one PostgreSQL schema can die in
    eventsourcing's `CREATE OR REPLACE FUNCTION` ("tuple concurrently updated"), a start-up
    race that is not what this test is about.
    """
    for role in ("dispatcher", "worker", "worker"):
        wait_for_line(fleet, fleet.start(role), f"webround: {role} running")
