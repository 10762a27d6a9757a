"""Faults mid-run (§6, §10, docs/operations.md "What each failure does").

Acceptance: "Fault tests against the real PostgreSQL, Redis and RabbitMQ, each with a few
hundred events in flight to several endpoints: `kill -9` of a worker, of the dispatcher
and of the API at random moments; restart of Redis and of PostgreSQL mid-run. Afterwards
every event reached every subscribed endpoint at least once, every duplicate carries the
same `webhook-id`, and the audit trail accounts for every attempt. The tests print the
counts they checked."

Real `webround api`, `dispatcher` and `worker` processes run against real receivers while
a client records a few hundred store events through the API, as a careful client does:
every command carries an `Idempotency-Key` and is sent again when the connection is cut or
the answer is a 5xx. One endpoint refuses the first attempt of every seventh customer's
events, so retries live in the durable schedule when the fault comes.

The PostgreSQL and Redis that get restarted are private servers of the test
(tests/support/services.py), never the machine's shared ones.

Afterwards the test reads the event stores (one envelope per store event, one delivery
per envelope and endpoint, each succeeded), the receivers' logs (every event answered 2xx
at every endpoint, every duplicate with the same `webhook-id` and body, every attempt an
endpoint saw is a recorded attempt and the other way round) and the audit read model (one
entry per recorded attempt).

The last test makes certain a fault the PostgreSQL restart meets by chance: the database
restarting just after a command is recorded, before its answer reaches the client.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import anyio
import httpx
import psycopg
import pytest
import redis

from domain.delivery import (
    DeliveryAttempted,
    DeliveryScheduled,
    EnvelopeCreated,
    delivery_id_of,
    envelope_id_of,
    event_id_of,
)
from domain.values import Actor
from infrastructure.api.app import create_app
from infrastructure.bootstrap import Services, build
from infrastructure.broker import QUEUE
from infrastructure.settings import Settings
from tests.conftest import IN_CI
from tests.e2e.test_crash_recovery import WEBROUND, base_env, eventually
from tests.support.receiver import Receiver, RecordedRequest, Reply, free_port
from tests.support.services import PrivatePostgres, PrivateRedis, Unavailable

CUSTOMERS = 150  # each registered, then verified: two store events apiece
EVENTS = 2 * CUSTOMERS
FLAKY_EVERY = 7  # the flaky endpoint refuses attempt 1 of every 7th customer's events
ANSWER_SECONDS = 0.02  # every answer takes a little while, so attempts are in flight
RETRY_SCHEDULE = "0.5,0.5,1,2"
LEASE_SECONDS = "3"  # a message lost with a broker or a process comes back this soon
COMMAND_PACE = 0.03  # the client's pause between commands: recording lasts seconds
SETTLE_SECONDS = 45.0
SEED = int(os.environ.get("WEBROUND_FAULT_SEED", "20240611"))

_ENVELOPE_CREATED = "domain.delivery:Envelope.Created"
_SCHEDULED = f"{DeliveryScheduled.__module__}:{DeliveryScheduled.__qualname__}"
_ATTEMPTED = f"{DeliveryAttempted.__module__}:{DeliveryAttempted.__qualname__}"
_AUDIT_KINDS = {
    "succeeded": "delivery.succeeded",
    "retrying": "delivery.attempt_failed",
    "failed": "delivery.failed",
}


# --- the private servers -------------------------------------------------------------------


def _unavailable(error: Unavailable) -> None:
    if IN_CI:
        pytest.fail(f"{error} (CI=true: a missing service is a failure)")
    pytest.skip(str(error))


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this test's own (initdb, spare port), always torn down."""
    try:
        server = PrivatePostgres.start()
    except Unavailable as error:
        _unavailable(error)
        raise
    with server:
        yield server


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own (spare port, nothing on disk), always torn down."""
    try:
        server = PrivateRedis.start()
    except Unavailable as error:
        _unavailable(error)
        raise
    with server:
        yield server


# --- the endpoints --------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One request an endpoint got, and what it answered."""

    event_id: str  # the webhook-id header
    body_event_id: str  # the envelope's eventId
    delivery_id: str
    attempt: int
    status: int
    at: float  # time.time(), to compare with the schedule's lease times
    body: bytes


def expected_status(flaky: bool, customer: int, attempt: int) -> int:
    return 500 if flaky and customer % FLAKY_EVERY == 3 and attempt == 1 else 200


class Endpoint:
    """A real receiver whose answers depend on the event and the attempt only, so a
    duplicate gets the same answer as the original; with the log of every answer."""

    def __init__(self, name: str, *, flaky: bool = False, delay: float = ANSWER_SECONDS) -> None:
        self.name = name
        self.flaky = flaky
        self.delay = delay
        self.receiver = Receiver(self._answer)
        self._lock = threading.Lock()
        self._answers: list[Answer] = []

    def _answer(self, request: RecordedRequest) -> Reply:
        envelope = json.loads(request.body)
        customer = int(envelope["data"]["customer"]["name"].rsplit("-", 1)[1])
        attempt = int(request.headers["webround-attempt"])
        status = expected_status(self.flaky, customer, attempt)
        with self._lock:
            self._answers.append(
                Answer(
                    event_id=request.headers["webhook-id"],
                    body_event_id=envelope["eventId"],
                    delivery_id=request.headers["webround-delivery-id"],
                    attempt=attempt,
                    status=status,
                    at=time.time(),
                    body=request.body,
                )
            )
        return Reply(status=status, body=b"ok" if status < 300 else b"down", delay=self.delay)

    @property
    def answers(self) -> list[Answer]:
        with self._lock:
            return list(self._answers)

    def delivered(self) -> set[str]:
        return {a.event_id for a in self.answers if a.status < 300}


@contextlib.contextmanager
def endpoints(*specs: tuple[str, bool], delay: float = ANSWER_SECONDS) -> Iterator[list[Endpoint]]:
    running = [Endpoint(name, flaky=flaky, delay=delay) for name, flaky in specs]
    with contextlib.ExitStack() as stack:
        for endpoint in running:
            stack.enter_context(endpoint.receiver)
        yield running


# --- the processes --------------------------------------------------------------------------


@dataclass
class _Process:
    role: str
    args: tuple[str, ...]
    popen: subprocess.Popen[bytes]
    log: IO[bytes]
    path: Path


class Processes:
    """The `webround` processes of one test by name, each run logging to a file of its
    own, so that one can be killed and started again."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.env = env
        self._log_dir = log_dir
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._running: dict[str, _Process] = {}
        self._runs: Counter[str] = Counter()
        self.kills: Counter[str] = Counter()
        self._failed_starts: set[Path] = set()
        self.start_retries = 0

    def command(self, *args: str) -> str:
        """Run a one-off command (e.g. `stores create`) and return its standard output."""
        for _ in range(10):
            done = subprocess.run(
                [str(WEBROUND), *args], env=self.env, capture_output=True, text=True, timeout=60
            )
            if done.returncode == 0 or _FULL not in done.stderr:
                break
            self.start_retries += 1
            time.sleep(1.0)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, name: str, role: str, *args: str) -> Path:
        assert name not in self._running, name
        self._runs[name] += 1
        path = self._log_dir / f"{name}.{self._runs[name]}.log"
        log = path.open("wb")
        popen = subprocess.Popen(
            [str(WEBROUND), role, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self._running[name] = _Process(role, args, popen, log, path)
        return path

    def ready(self, name: str, timeout: float = 30.0) -> None:
        """Wait until the process serves (the API answers /healthz) or says it runs."""
        process = self._running[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.assert_alive()
            if process.role == "api":
                port = int(process.args[process.args.index("--port") + 1])
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                        return
            elif f"webround: {process.role} running" in process.path.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise AssertionError(f"{name} was not ready within {timeout} s")

    def run(self, name: str, role: str, *args: str) -> None:
        """Start a process and wait until it is ready. Like a supervisor, start it again
        when it could not even connect because the PostgreSQL server had no connection
        left (a shared server, busy with other test runs): that is the machine's state,
        not a behaviour under test. Such starts are counted and reported."""
        for _ in range(10):
            self.start(name, role, *args)
            try:
                self.ready(name)
            except AssertionError:
                process = self._running[name]
                if process.popen.poll() is None or not _out_of_connections(process.path):
                    raise
                self._forget(name)
                self._failed_starts.add(process.path)
                self.start_retries += 1
                time.sleep(1.0)
                continue
            return
        raise AssertionError(f"{name} could not start: the PostgreSQL server stays full")

    def stop(self, name: str) -> None:
        """SIGTERM, the graceful stop: the process must finish and exit 0."""
        process = self._running[name]
        process.popen.send_signal(signal.SIGTERM)
        code = process.popen.wait(timeout=30)
        self._forget(name)
        assert code == 0, f"{name} stopped with {code}"

    def _forget(self, name: str) -> None:
        process = self._running.pop(name)
        process.popen.wait(timeout=10)
        process.log.close()

    def kill(self, name: str) -> None:
        """SIGKILL: no graceful stop, nothing finished or released by the process."""
        self._running[name].popen.send_signal(signal.SIGKILL)
        self._forget(name)
        self.kills[name.split("-")[0]] += 1

    def restart(self, name: str, role: str, *args: str) -> None:
        self.run(name, role, *args)

    def args_of(self, name: str) -> tuple[str, tuple[str, ...]]:
        process = self._running[name]
        return process.role, process.args

    def assert_alive(self) -> None:
        for name, process in self._running.items():
            code = process.popen.poll()
            assert code is None, f"{name} ({process.role}) exited by itself with {code}"

    def stop_all(self) -> None:
        for process in self._running.values():
            process.popen.kill()
        for process in self._running.values():
            process.popen.wait(timeout=10)
            process.log.close()
        self._running.clear()

    def log_text(self) -> str:
        """The logs of every process that started (not of starts refused a connection)."""
        return "\n".join(
            path.read_text(errors="replace")
            for path in sorted(self._log_dir.glob("*.log"))
            if path not in self._failed_starts
        )

    def tails(self, lines: int = 30) -> str:
        parts = []
        for path in sorted(self._log_dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"----- {path.name} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(parts)


_FULL = "too many clients already"
# What a process says when it could not open its connection pools at start: psycopg_pool
# retries the refused connections quietly, then gives up with this.
_POOL_TIMEOUT = "psycopg_pool.PoolTimeout: couldn't get a connection"


def _out_of_connections(log: Path) -> bool:
    text = log.read_text(errors="replace")
    return _FULL in text or _POOL_TIMEOUT in text


@contextlib.contextmanager
def reported(processes: Processes, *extra: Callable[[], str]) -> Iterator[None]:
    """On failure, print the tail of every process's log (and of the servers')."""
    try:
        yield
    except BaseException:
        print(processes.tails(), file=sys.stderr)
        for tail in extra:
            print(tail(), file=sys.stderr)
        raise


def start_installation(processes: Processes, api_port: int) -> None:
    """The API, a dispatcher and two workers; one at a time (start-up DDL is serialised
    by a lock, and a crowd of starting processes only slows each other)."""
    processes.run("api", "api", "--port", str(api_port))
    processes.run("dispatcher", "dispatcher")
    processes.run("worker-1", "worker")
    processes.run("worker-2", "worker")


# --- the client -----------------------------------------------------------------------------


class Shopper(threading.Thread):
    """Records the workload through the API: CUSTOMERS customers registered, then
    verified. Every command carries an Idempotency-Key and is sent again (same key, same
    body) when the connection fails or the answer is a 5xx, until it gets an answer.

    A 409 would be a refusal; none is expected (a key's answer is recorded with the
    command's events, ADR 0023: a command cut off is answered when sent again). Should
    one come, the client gives that command up and the census allows for it."""

    def __init__(self, base_url: str, api_key: str, pace: float = COMMAND_PACE) -> None:
        super().__init__(name="shopper", daemon=True)
        self._base_url = base_url
        self._api_key = api_key
        self._pace = pace
        self.confirmed = 0  # commands answered 2xx: each recorded exactly one event
        self.retried = 0  # commands that needed more than one request
        self.replayed = 0  # answers marked Idempotent-Replayed (the first one was lost)
        self.given_up = 0  # commands abandoned on a 409 (recorded or not)
        self.requests_failed = 0  # requests cut off or answered 5xx
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.sending = threading.Event()  # a request is on its way or being answered

    def run(self) -> None:
        try:
            with httpx.Client(
                base_url=self._base_url,
                headers={"Authorization": f"Bearer {self._api_key}"},
                timeout=10,
            ) as api:
                for number in range(CUSTOMERS):
                    body = {"email": f"c{number}@shop.example", "name": f"cust-{number:04d}"}
                    created = self._command(api, "/v1/customers", body, f"register-{number}")
                    if created is not None:
                        path = f"/v1/customers/{created['id']}/verify"
                        self._command(api, path, {}, f"verify-{number}")
        except BaseException as error:
            self.error = error
        finally:
            self.done.set()

    def _command(
        self, api: httpx.Client, path: str, body: dict[str, Any], key: str
    ) -> dict[str, Any] | None:
        time.sleep(self._pace)
        deadline = time.monotonic() + 40
        tries = 0
        while True:
            tries += 1
            if tries == 2:
                self.retried += 1
            assert time.monotonic() < deadline, f"{key}: no answer within 40 s"
            self.sending.set()
            try:
                answer: httpx.Response | None = api.post(
                    path, json=body, headers={"Idempotency-Key": key}
                )
            except httpx.TransportError:  # cut off, or nobody listening
                answer = None
            finally:
                self.sending.clear()
            if answer is None or answer.status_code >= 500:
                self.requests_failed += 1
                time.sleep(0.1)
                continue
            if answer.status_code == 409:
                self.given_up += 1
                return None
            assert answer.is_success, (key, answer.status_code, answer.text)
            if answer.headers.get("idempotent-replayed") == "true":
                self.replayed += 1
            self.confirmed += 1
            result: dict[str, Any] = answer.json()
            return result

    def finish(self, timeout: float = 60.0) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the client did not finish recording"
        if self.error is not None:
            raise self.error

    def summary(self) -> str:
        return (
            f"commands confirmed={self.confirmed} retried={self.retried} "
            f"replayed={self.replayed} given up on 409={self.given_up} "
            f"failed requests={self.requests_failed}"
        )


def create_store(processes: Processes) -> tuple[UUID, str]:
    created = json.loads(processes.command("stores", "create", "--name", "Fault shop"))
    return UUID(created["storeId"]), created["apiKey"]


def create_webhooks(base_url: str, api_key: str, targets: list[Endpoint]) -> dict[UUID, Endpoint]:
    webhooks = {}
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10
    ) as api:
        for endpoint in targets:
            created = api.post(
                "/v1/webhooks",
                json={"url": endpoint.receiver.url + endpoint.name, "eventTypes": ["*"]},
            )
            assert created.status_code == 201, created.text
            webhooks[UUID(created.json()["id"])] = endpoint
    time.sleep(0.01)  # the events to come must happen after the webhooks exist
    return webhooks


# --- what the stores say ----------------------------------------------------------------


@dataclass
class Census:
    """The event stores: store events, envelopes, and the dispatch log's deliveries."""

    event_ids: list[str]
    envelope_event_ids: list[str]
    scheduled: list[Any]  # Delivery.Scheduled events
    attempted: list[Any]  # Delivery.Attempted events

    def originals(self) -> list[Any]:
        return [s for s in self.scheduled if not s.replay]

    def settled(self, webhooks: int, events: int) -> bool:
        """Every store event enveloped and delivered to every webhook with a success."""
        succeeded = {a.originator_id for a in self.attempted if a.outcome == "succeeded"}
        originals = self.originals()
        return (
            len(self.event_ids) == events
            and len(self.envelope_event_ids) >= events
            and len(originals) >= events * webhooks
            and all(s.originator_id in succeeded for s in originals)
        )


def take_census(services: Services) -> Census:
    commerce, dispatch = services.commerce, services.dispatch
    events = commerce.recorder.select_notifications(start=None, limit=1_000_000)
    notifications = dispatch.recorder.select_notifications(
        start=None, limit=1_000_000, topics=[_ENVELOPE_CREATED, _SCHEDULED, _ATTEMPTED]
    )
    decoded = [dispatch.mapper.to_domain_event(n) for n in notifications]
    envelopes: list[Any] = [e for e in decoded if isinstance(e, EnvelopeCreated)]
    return Census(
        event_ids=[event_id_of(UUID(str(n.originator_id)), n.originator_version) for n in events],
        envelope_event_ids=[e.event_id for e in envelopes],
        scheduled=[e for e in decoded if isinstance(e, DeliveryScheduled)],
        attempted=[e for e in decoded if isinstance(e, DeliveryAttempted)],
    )


def settled_census(services: Services, webhooks: int, events: int) -> tuple[Census, float]:
    def census_if_settled() -> Census | None:
        try:
            census = take_census(services)
        except Exception:  # a store briefly away right after a fault: look again
            return None
        return census if census.settled(webhooks, events) else None

    started = time.monotonic()
    census = eventually(census_if_settled, timeout=SETTLE_SECONDS, every=0.5)
    return census, time.monotonic() - started


def leases(database_url: str) -> dict[tuple[str, int], float]:
    """Deliveries handed to the broker whose attempt is not recorded yet (leased rows of
    the schedule): (delivery id, attempt) -> the lease's end, in Unix seconds."""
    dsn, _, query = database_url.partition("?")
    schema = query.removeprefix("schema=") if query.startswith("schema=") else "public"
    with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as db:
        rows = db.execute(
            "SELECT delivery_id, attempt, lease_until FROM due_deliveries "
            "WHERE lease_until >= extract(epoch FROM now())"
        ).fetchall()
    return {(str(row[0]), int(row[1])): float(row[2]) for row in rows}


def queued_in(redis_server: PrivateRedis) -> int:
    """Messages waiting in the deliveries queue of Redis (no worker has taken them)."""
    with contextlib.closing(redis.Redis.from_url(redis_server.url)) as client:
        return int(client.llen(f"dramatiq:{QUEUE}"))


def finish_recording(processes: Processes, shopper: Shopper, env: dict[str, str]) -> Services:
    """Once the client is done: every process still runs (none died of the fault); the
    API stops gracefully (its PostgreSQL connections are freed for the test's own) and
    the test opens the stores itself."""
    shopper.finish()
    processes.assert_alive()
    processes.stop("api")
    for _ in range(10):
        try:
            return build(Settings.from_env(env))
        except psycopg.OperationalError as error:
            if _FULL not in str(error):
                raise
            processes.start_retries += 1
            time.sleep(1.0)
    raise AssertionError("the PostgreSQL server stays full")


@dataclass
class Report:
    label: str
    lines: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.lines.append(text)

    def print(self) -> None:
        print("\n" + "\n".join(f"[{self.label}] {line}" for line in self.lines))


def assert_everything_delivered(
    services: Services,
    store_id: UUID,
    webhooks: dict[UUID, Endpoint],
    shopper: Shopper,
    processes: Processes,
    report: Report,
) -> None:
    """The acceptance's "afterwards", checked against the stores, the endpoints' logs and
    the audit read model."""

    # Atomic, idempotent commands: every confirmed one recorded once, none twice; a
    # command given up may or may not have been recorded
    def events_known() -> int | None:
        try:
            count = len(
                services.commerce.recorder.select_notifications(start=None, limit=1_000_000)
            )
        except Exception:
            return None
        return count

    events_expected = eventually(events_known, timeout=30)
    assert shopper.confirmed <= events_expected <= shopper.confirmed + shopper.given_up
    assert events_expected >= EVENTS - 2 * shopper.given_up

    census, settle_seconds = settled_census(services, len(webhooks), events_expected)
    events = census.event_ids
    event_set = set(events)
    assert len(event_set) == len(events)

    # Exactly one envelope per store event, none duplicated
    assert Counter(census.envelope_event_ids) == Counter(events)

    # Exactly one delivery per envelope and webhook (no replays were asked for)
    originals = census.originals()
    assert len(originals) == len(census.scheduled)
    assert len(originals) == len(events) * len(webhooks)
    assert len({s.originator_id for s in originals}) == len(originals)
    delivery_of: dict[tuple[str, UUID], UUID] = {}
    for scheduled in originals:
        assert scheduled.webhook_id in webhooks
        assert scheduled.originator_id == delivery_id_of(
            envelope_id_of(scheduled.event_id), scheduled.webhook_id
        )
        delivery_of[(scheduled.event_id, scheduled.webhook_id)] = scheduled.originator_id
    for webhook_id in webhooks:
        assert {e for e, w in delivery_of if w == webhook_id} == event_set

    # Every delivery succeeded; its attempts are numbered 1..n, only the last one 2xx,
    # each with the status the endpoint gives that attempt of that event
    recorded: dict[UUID, set[tuple[str, int]]] = {w: set() for w in webhooks}
    unanswered: dict[UUID, set[tuple[str, int]]] = {w: set() for w in webhooks}
    attempts_by_kind: Counter[tuple[str, int, str]] = Counter()
    customers = {}
    for answer in (a for endpoint in webhooks.values() for a in endpoint.answers):
        body = json.loads(answer.body)
        customers[answer.event_id] = int(body["data"]["customer"]["name"].rsplit("-", 1)[1])
    for (event_id, webhook_id), delivery_id in delivery_of.items():
        delivery = services.dispatch.delivery(delivery_id)
        assert delivery.status == "succeeded", delivery.attempts
        numbers = [a.number for a in delivery.attempts]
        assert numbers == list(range(1, len(numbers) + 1)), numbers
        flaky = webhooks[webhook_id].flaky
        for attempt in delivery.attempts:
            if attempt.status_code is None:
                # The network failed before any answer (e.g. a kept-alive connection the
                # receiver closed while the broker was down): a failed attempt, retried.
                assert attempt.error is not None, (delivery_id, attempt)
                assert attempt.next_attempt_at is not None, (delivery_id, attempt)
                unanswered[webhook_id].add((str(delivery_id), attempt.number))
            else:
                expected = expected_status(flaky, customers[event_id], attempt.number)
                assert attempt.status_code == expected, (delivery_id, attempt)
                recorded[webhook_id].add((str(delivery_id), attempt.number))
            outcome = (
                "succeeded"
                if attempt.succeeded
                else ("retrying" if attempt.next_attempt_at else "failed")
            )
            attempts_by_kind[(str(delivery_id), attempt.number, _AUDIT_KINDS[outcome])] += 1
    attempts = sum(attempts_by_kind.values())
    assert attempts == len(census.attempted)

    # Every endpoint got every event with a 2xx; every request carries the event's id as
    # webhook-id, and duplicates the same id, delivery and bytes; every attempt an
    # endpoint saw is a recorded attempt, and every recorded attempt was seen
    requests = duplicates = twice_ok = 0
    for webhook_id, endpoint in webhooks.items():
        answers = endpoint.answers
        requests += len(answers)
        assert endpoint.delivered() == event_set, endpoint.name
        bodies: dict[str, set[bytes]] = {}
        for answer in answers:
            assert answer.event_id == answer.body_event_id
            assert answer.delivery_id == str(delivery_of[(answer.event_id, webhook_id)])
            bodies.setdefault(answer.event_id, set()).add(answer.body)
        assert all(len(b) == 1 for b in bodies.values()), endpoint.name
        seen = {(a.delivery_id, a.attempt) for a in answers}
        # Every answered attempt was seen; an unanswered one may or may not have arrived
        assert recorded[webhook_id] <= seen <= recorded[webhook_id] | unanswered[webhook_id]
        duplicates += len(answers) - len(seen)
        twice_ok += sum(
            n - 1 for n in Counter(a.event_id for a in answers if a.status < 300).values()
        )

    # The audit trail has one entry per delivery and one per recorded attempt, once the
    # active dispatcher's projector has caught up
    def audit_caught_up() -> bool:
        try:
            statuses = services.read_models.status()
        except Exception:
            return False
        return all(s.lag == 0 for s in statuses if s.model == "audit")

    eventually(audit_caught_up, timeout=30)
    rows = services.read_models.query(
        "SELECT kind, delivery_id, event_id, webhook_id, details FROM rm_audit "
        "WHERE store_id = ? AND kind LIKE ?",
        [str(store_id), "delivery.%"],
    )
    created = Counter(r["delivery_id"] for r in rows if r["kind"] == "delivery.created")
    assert created == Counter(str(d) for d in delivery_of.values())
    audited = Counter(
        (r["delivery_id"], json.loads(r["details"])["attempt"], r["kind"])
        for r in rows
        if r["kind"] in _AUDIT_KINDS.values()
    )
    assert audited == attempts_by_kind
    assert len(rows) == len(originals) + attempts

    # No process died on its own: each recovered from the fault by itself
    processes.assert_alive()
    tracebacks = processes.log_text().count("Traceback")

    retries = sum(1 for key in attempts_by_kind if key[1] > 1)
    report.add(
        f"settled in {settle_seconds:.1f} s: events={len(events)} "
        f"envelopes={len(census.envelope_event_ids)} deliveries={len(originals)} "
        f"({len(webhooks)} endpoints) recorded attempts={attempts} (retries={retries}) "
        f"requests={requests} duplicates={duplicates} (events answered 2xx more than once: "
        f"{twice_ok}) audit entries={len(rows)} ({len(originals)} created + {attempts} "
        f"attempts) tracebacks in process logs={tracebacks}"
    )
    report.add(f"client: {shopper.summary()}")
    if processes.start_retries:
        report.add(
            f"{processes.start_retries} process starts were refused by a full PostgreSQL "
            f"server ({_FULL!r}) and tried again"
        )


def delivered_pairs(webhooks: dict[UUID, Endpoint]) -> int:
    return sum(len(endpoint.delivered()) for endpoint in webhooks.values())


def production_env(
    tmp_path: Path, database_url: str, broker_url: str, **extra: str
) -> dict[str, str]:
    return base_env(
        tmp_path,
        WEBROUND_DATABASE_URL=database_url,
        WEBROUND_BROKER_URL=broker_url,
        WEBROUND_MASTER_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        WEBROUND_RETRY_SCHEDULE=RETRY_SCHEDULE,
        WEBROUND_LEASE_SECONDS=LEASE_SECONDS,
        **extra,
    )


@dataclass(frozen=True)
class Fault:
    """What was pending when a server went away, and when it was back."""

    down_at: float  # time.time()
    up_at: float
    leased: dict[tuple[str, int], float]  # handed to the broker, unrecorded at the fault
    delivered: int  # (event, endpoint) pairs answered 2xx by then
    recording: bool  # the client was still recording events

    def fates(self, webhooks: dict[UUID, Endpoint]) -> Counter[str]:
        """What became of each attempt leased at the fault, by the endpoints' logs."""
        arrivals: dict[tuple[str, int], list[float]] = {}
        for endpoint in webhooks.values():
            for answer in endpoint.answers:
                arrivals.setdefault((answer.delivery_id, answer.attempt), []).append(answer.at)
        fates: Counter[str] = Counter()
        for attempt, lease_until in self.leased.items():
            seen = arrivals.get(attempt, [])
            if not seen:
                fates["never sent"] += 1
            elif any(at < self.down_at for at in seen):
                fates["sent before the fault"] += 1
            elif min(seen) >= lease_until:
                fates["lost, sent again once its lease ran out"] += 1
            else:
                fates["sent after the fault by a worker holding it"] += 1
        return fates

    def longest_pause(self, webhooks: dict[UUID, Endpoint]) -> float:
        """The longest time without any request at any endpoint, from the fault on."""
        moments = sorted(a.at for e in webhooks.values() for a in e.answers if a.at >= self.down_at)
        points = [self.down_at, *moments]
        return max(b - a for a, b in itertools.pairwise(points))

    def describe(self, webhooks: dict[UUID, Endpoint]) -> str:
        return (
            f"down for {self.up_at - self.down_at:.1f} s with {len(self.leased)} attempts "
            f"handed to the broker and unrecorded ({dict(self.fates(webhooks))}), "
            f"{self.delivered} of {EVENTS * len(webhooks)} (event, endpoint) pairs delivered, "
            f"client still recording: {self.recording}; longest pause of deliveries "
            f"from the fault on: {self.longest_pause(webhooks):.1f} s"
        )


def restart_mid_run(
    restart: Callable[[], None],
    database_url: str,
    webhooks: dict[UUID, Endpoint],
    shopper: Shopper,
    when: Callable[[], bool] | None = None,
) -> Fault:
    """Restart a server once a quarter of the deliveries are done (and ``when`` holds):
    the client is still recording, deliveries are in flight and retries are due."""
    eventually(
        lambda: delivered_pairs(webhooks) >= EVENTS * len(webhooks) // 4 and (not when or when()),
        timeout=30,
        every=0.02,
    )
    leased, delivered = leases(database_url), delivered_pairs(webhooks)
    recording = not shopper.done.is_set()
    down_at = time.time()
    restart()
    return Fault(down_at, time.time(), leased, delivered, recording)


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_postgres_restarts_mid_run(
    tmp_path: Path, private_postgres: PrivatePostgres, redis_url: str
) -> None:
    env = production_env(tmp_path, private_postgres.url, redis_url)
    processes = Processes(tmp_path / "logs", env)
    services: Services | None = None
    report = Report("postgres restart")
    try:
        with (
            endpoints(("alpha", False), ("beta", True), ("gamma", False)) as targets,
            reported(processes, private_postgres.log_tail),
        ):
            # Given an installation on a private PostgreSQL and the shared Redis: the API,
            # a dispatcher and two workers, with webhooks to three endpoints (one flaky)
            store_id, api_key = create_store(processes)
            port = free_port()
            start_installation(processes, port)
            base_url = f"http://127.0.0.1:{port}"
            webhooks = create_webhooks(base_url, api_key, targets)

            # When a client records a few hundred events through the API
            shopper = Shopper(base_url, api_key)
            shopper.start()
            # And PostgreSQL stops at once (a crash) while deliveries are in flight,
            # and comes back two seconds later
            fault = restart_mid_run(
                lambda: private_postgres.restart(down_for=2.0),
                private_postgres.url,
                webhooks,
                shopper,
            )
            services = finish_recording(processes, shopper, env)

            # Then every process reconnected by itself and every event reached every
            # endpoint, nothing duplicated in the stores, the audit trail complete
            assert_everything_delivered(services, store_id, webhooks, shopper, processes, report)
            report.add("PostgreSQL " + fault.describe(webhooks))
    finally:
        report.print()
        processes.stop_all()
        if services is not None:
            services.close()


@pytest.mark.postgres
@pytest.mark.redis
def test_redis_restarts_mid_run(
    tmp_path: Path, private_postgres: PrivatePostgres, private_redis: PrivateRedis
) -> None:
    # Slow endpoints, few worker threads and high per-webhook and per-store limits: a
    # backlog of messages waits in Redis (not only in the workers' hands) when it dies
    env = production_env(
        tmp_path,
        private_postgres.url,
        private_redis.url,
        WEBROUND_WORKER_THREADS="4",
        WEBROUND_WEBHOOK_CONCURRENCY="16",
        WEBROUND_STORE_CONCURRENCY="48",
    )
    processes = Processes(tmp_path / "logs", env)
    services: Services | None = None
    report = Report("redis restart")
    try:
        with (
            endpoints(("alpha", False), ("beta", True), ("gamma", False), delay=0.1) as targets,
            reported(processes),
        ):
            # Given an installation on a private PostgreSQL and a private Redis, with
            # webhooks to three slow endpoints (one flaky)
            store_id, api_key = create_store(processes)
            port = free_port()
            start_installation(processes, port)
            base_url = f"http://127.0.0.1:{port}"
            webhooks = create_webhooks(base_url, api_key, targets)

            # When a client records a few hundred events through the API, quickly
            shopper = Shopper(base_url, api_key, pace=0.0)
            shopper.start()
            # And Redis is killed while deliveries are in flight and messages wait in its
            # queue (all lost), and an empty one starts on the same port a second later
            fault = restart_mid_run(
                lambda: private_redis.restart(down_for=1.0),
                private_postgres.url,
                webhooks,
                shopper,
                when=lambda: queued_in(private_redis) >= 10,
            )
            services = finish_recording(processes, shopper, env)

            # Then every event reached every endpoint, the audit trail complete
            assert_everything_delivered(services, store_id, webhooks, shopper, processes, report)
            # And messages the broker lost came back when their leases ran out
            report.add("Redis " + fault.describe(webhooks))
            assert fault.fates(webhooks)["lost, sent again once its lease ran out"] > 0
    finally:
        report.print()
        processes.stop_all()
        if services is not None:
            services.close()


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_kill_9_at_random_moments_on_rabbitmq(
    tmp_path: Path, postgres_url: str, rabbitmq_url: str
) -> None:
    env = production_env(tmp_path, postgres_url, rabbitmq_url)
    processes = Processes(tmp_path / "logs", env)
    services: Services | None = None
    report = Report(f"kill -9, seed {SEED}")
    rng = random.Random(SEED)
    try:
        with endpoints(("alpha", False), ("beta", True)) as targets, reported(processes):
            # Given an installation on PostgreSQL and RabbitMQ, webhooks to two endpoints
            store_id, api_key = create_store(processes)
            port = free_port()
            start_installation(processes, port)
            base_url = f"http://127.0.0.1:{port}"
            webhooks = create_webhooks(base_url, api_key, targets)

            # When a client records a few hundred events through the API
            shopper = Shopper(base_url, api_key)
            shopper.start()
            # And the API, the dispatcher and a worker are each killed twice with
            # SIGKILL at random moments, each started again after a random pause
            victims = ["api", "dispatcher", "worker", "api", "dispatcher", "worker"]
            rng.shuffle(victims)
            mid_run = False
            for victim in victims:
                time.sleep(rng.uniform(0.2, 1.2))
                name = rng.choice(["worker-1", "worker-2"]) if victim == "worker" else victim
                role, args = processes.args_of(name)
                delivered = delivered_pairs(webhooks)
                recording = not shopper.done.is_set()
                if victim == "api":  # at a random moment of the client's next request
                    with contextlib.suppress(AssertionError):
                        eventually(shopper.sending.is_set, timeout=2, every=0.001)
                    time.sleep(rng.uniform(0.0, 0.02))
                cut = victim == "api" and shopper.sending.is_set()
                processes.kill(name)
                time.sleep(rng.uniform(0.0, 0.8))
                processes.restart(name, role, *args)
                report.add(
                    f"killed {name} with {delivered} of {EVENTS * len(webhooks)} pairs "
                    f"delivered, client recording: {recording}"
                    + (", a client request cut off" if cut else "")
                )
                mid_run = mid_run or delivered < EVENTS * len(webhooks)
            assert mid_run, "every kill came after the work was done"
            services = finish_recording(processes, shopper, env)

            # Then every event reached every endpoint, nothing duplicated in the stores,
            # duplicates at the endpoints with the same webhook-id, the audit trail complete
            assert_everything_delivered(services, store_id, webhooks, shopper, processes, report)
            report.add(f"kills: {dict(processes.kills)}")
    finally:
        report.print()
        processes.stop_all()
        if services is not None:
            services.close()


@pytest.mark.postgres
@pytest.mark.anyio
async def test_command_cut_by_a_postgres_restart_is_answered_when_sent_again(
    tmp_path: Path, private_postgres: PrivatePostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault that `test_postgres_restarts_mid_run` meets by chance, made certain:
    PostgreSQL restarts just after a command is recorded, before its answer is sent."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=private_postgres.url,
        master_key=base64.b64encode(secrets.token_bytes(32)).decode(),
    )
    services = build(settings)
    try:
        # Given the API on a private PostgreSQL, a store and its key
        store = services.webhooks.create_store("Fault shop", Actor.system())
        key = services.webhooks.create_api_key(UUID(store["storeId"]), None, Actor.system())
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {key['apiKey']}"},
            timeout=30,
        ) as api:
            # And a first command answered: the connection pools are in use
            body = {"email": "warm@shop.example", "name": "cust-0000"}
            warm = await api.post("/v1/customers", json=body, headers={"Idempotency-Key": "w"})
            assert warm.status_code == 201, warm.text

            # When PostgreSQL restarts just after the next command is recorded
            register = services.commerce.register_customer

            def register_then_restart(*args: Any, **kwargs: Any) -> Any:
                recorded = register(*args, **kwargs)
                private_postgres.restart(down_for=0.5)
                return recorded

            monkeypatch.setattr(services.commerce, "register_customer", register_then_restart)
            body = {"email": "cut@shop.example", "name": "cust-0001"}
            cut = await api.post("/v1/customers", json=body, headers={"Idempotency-Key": "c"})
            monkeypatch.undo()

            # And the client sends it again with the same key until it gets an answer
            deadline = time.monotonic() + 30
            while True:
                again = await api.post("/v1/customers", json=body, headers={"Idempotency-Key": "c"})
                if again.status_code < 500 or time.monotonic() > deadline:
                    break
                await anyio.sleep(0.25)

        # Then the answer is the command's result, and the customer was recorded once
        print(f"\n[cut command] first answer {cut.status_code}, sent again: {again.status_code}")
        assert again.status_code == 201, (cut.status_code, again.status_code, again.text)
        assert again.headers.get("idempotent-replayed") == "true"
        registered = [
            n
            for n in services.commerce.recorder.select_notifications(start=None, limit=100)
            if n.topic.endswith("Customer.Registered")
        ]
        assert len(registered) == 2
        assert str(registered[-1].originator_id) == again.json()["id"]
    finally:
        services.close()
