"""The commit listener on a real PostgreSQL: commits wake the dispatcher.

eventsourcing NOTIFYs a channel per events table in every transaction that records
events; `CommitListener` LISTENs on the commerce and dispatch channels and nudges the
dispatcher, so an idle dispatcher picks new events up at once rather than when its poll
interval runs out. These are functional checks with generous bounds, not benchmarks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from domain.values import Actor
from infrastructure import bootstrap
from infrastructure.bootstrap import (
    Services,
    build,
    open_queue,
    start_commit_listener,
    start_dispatcher,
)
from infrastructure.dispatcher import Dispatcher
from infrastructure.settings import Settings
from infrastructure.wakeup import CommitListener
from tests.conftest import POSTGRES_DSN

LONG_IDLE = 5.0  # the dispatcher's poll interval here: far longer than any bound below


@pytest.fixture
def services(postgres_url: str, tmp_path: Path) -> Iterator[Services]:
    built = build(Settings(data_dir=tmp_path / "data", database_url=postgres_url))
    yield built
    built.close()


def register(services: Services, store_id: UUID) -> None:
    services.commerce.register_customer(
        store_id, f"c{time.monotonic_ns()}@x.example", "C", None, Actor.system()
    )


def wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.postgres
def test_a_commit_wakes_an_idle_dispatcher_long_before_its_interval(services: Services) -> None:
    # Given a store with a webhook, and a dispatcher that idles for 5 s between passes,
    # woken by a commit listener
    store_id = UUID(services.webhooks.create_store("Shop", Actor.system())["storeId"])
    services.webhooks.create_webhook(
        store_id, Actor.system(), url="https://93.184.215.14/hook", event_types=["*"]
    )
    schedule = services.schedule()
    sent: list[dict[str, Any]] = []
    dispatcher = Dispatcher(services.dispatch, schedule, sent.extend, webhooks=services.webhooks)
    listener = start_commit_listener(services, dispatcher.nudge)
    assert listener is not None
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop, LONG_IDLE), daemon=True)
    thread.start()
    try:
        assert listener.wait_listening(10)
        time.sleep(0.5)  # the first passes (at start, on the listener's first nudge) are done

        # When an event is recorded through the store
        started = time.monotonic()
        register(services, store_id)

        # Then the dispatcher turns it into a delivery and hands it out well within 2 s
        assert wait_for(lambda: len(sent) == 1, timeout=2.0), "not woken by the commit"
        assert time.monotonic() - started < 2.0
        assert sent[0]["eventType"] == "customer.registered"
    finally:
        stop.set()
        dispatcher.nudge()
        thread.join(timeout=10)
        listener.close()
        schedule.close()


@pytest.mark.postgres
def test_the_listener_listens_again_after_its_connection_is_killed(services: Services) -> None:
    # Given a listener on the store's channel
    store_id = UUID(services.webhooks.create_store("Shop", Actor.system())["storeId"])
    woken = threading.Event()
    listener = start_commit_listener(services, woken.set)
    assert listener is not None
    try:
        assert listener.wait_listening(10)
        first_pid = listener.backend_pid
        woken.wait(2)  # its own nudge after LISTEN (it may have missed commits before)
        woken.clear()

        # When its connection is killed (a database restart, a failover)
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first_pid,))

        # Then it connects and listens again, on a new connection
        assert wait_for(lambda: listener.backend_pid not in (None, first_pid), timeout=10)
        assert listener.wait_listening(10)
        woken.wait(2)
        woken.clear()
        # And a commit wakes it as before
        register(services, store_id)
        assert woken.wait(2), "no nudge after reconnecting"
    finally:
        listener.close()


@pytest.mark.postgres
def test_closing_the_listener_is_prompt(services: Services) -> None:
    # Given a listener, listening
    listener = start_commit_listener(services, lambda: None)
    assert listener is not None
    assert listener.wait_listening(10)

    # When it is closed
    started = time.monotonic()
    listener.close()

    # Then it stopped at once, not after a poll interval, and left no connection behind
    assert time.monotonic() - started < 1.0
    assert not listener.listening
    assert listener.backend_pid is None


def test_embedded_mode_has_no_listener(tmp_path: Path) -> None:
    # Given the embedded mode (SQLite: no NOTIFY)
    services = build(Settings(data_dir=tmp_path / "data"))
    try:
        # When a listener is asked for
        # Then there is none (the dispatcher keeps polling)
        assert start_commit_listener(services, lambda: None) is None
    finally:
        services.close()


def test_a_listener_on_a_database_that_is_not_there_keeps_trying_and_closes(
    tmp_path: Path,
) -> None:
    # Given a listener on a port where no database answers
    listener = CommitListener(
        "postgresql://postgres@127.0.0.1:1/test", ["commerce_events"], lambda: None
    ).start()
    try:
        # Then it is not listening (the dispatcher polls meanwhile), and does not fail
        time.sleep(0.5)
        assert not listener.listening
    finally:
        # And it closes promptly all the same
        started = time.monotonic()
        listener.close()
        assert time.monotonic() - started < 2.0


def test_in_embedded_mode_a_command_of_the_same_process_wakes_the_dispatcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the embedded mode with a webhook, and a dispatcher started as `serve` starts
    # it but polling only every 5 s
    monkeypatch.setattr(bootstrap, "IDLE_POLL", LONG_IDLE)
    services = build(Settings(data_dir=tmp_path / "data"))
    try:
        store_id = UUID(services.webhooks.create_store("Shop", Actor.system())["storeId"])
        services.webhooks.create_webhook(
            store_id, Actor.system(), url="https://93.184.215.14/hook", event_types=["*"]
        )
        queue = open_queue(services)
        start_dispatcher(services, queue)
        broker: Any = queue.broker
        time.sleep(0.5)  # the first pass, at start, is done

        # When an event is recorded through the store, in the same process
        register(services, store_id)

        # Then the dispatcher hands its delivery to the queue well within 2 s
        assert wait_for(lambda: broker.queues[queue.name].qsize() == 1, timeout=2.0)
    finally:
        services.close()
