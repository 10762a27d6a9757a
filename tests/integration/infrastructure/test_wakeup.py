"""The commit listener on a real PostgreSQL: commits wake the dispatcher.

eventsourcing NOTIFYs a channel per events table in every transaction that records
events; `CommitListener` LISTENs on the commerce and dispatch channels and signals the
dispatcher, so an idle dispatcher picks new events up at once rather than when its
safety-net interval runs out. These are functional checks with generous bounds, not
benchmarks.
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
    connect_signals,
    open_queue,
    start_dispatcher,
)
from infrastructure.followers import Signals
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


def listen(services: Services, on_commit: Any) -> CommitListener:
    """A listener on the commerce and dispatch channels, as the dispatcher's."""
    url = services.settings.database_url
    assert url is not None
    channels = ["commerce_events", "dispatch_events"]
    return CommitListener(url.split("?", 1)[0], channels, on_commit).start()


def wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.postgres
def test_a_commit_of_another_process_wakes_an_idle_dispatcher(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a store with a webhook, and a dispatcher that would idle for 5 s between
    # passes (an in-process queue, to count what it hands out), woken by its listener
    monkeypatch.setattr(bootstrap, "MAX_IDLE_LISTENING", LONG_IDLE)
    store_id = UUID(services.webhooks.create_store("Shop", Actor.system())["storeId"])
    services.webhooks.create_webhook(
        store_id, Actor.system(), url="https://93.184.215.14/hook", event_types=["*"]
    )
    queue = open_queue(services)
    start_dispatcher(services, queue)
    broker: Any = queue.broker
    time.sleep(1.0)  # listening, and the first passes are done
    other = build(services.settings)  # another process: its saves signal nothing here
    try:
        # When an event is recorded through the other process
        started = time.monotonic()
        register(other, store_id)

        # Then the dispatcher turns it into a delivery and hands it out well within 2 s
        assert wait_for(lambda: broker.queues[queue.name].qsize() == 1, timeout=2.0)
        assert time.monotonic() - started < 2.0
    finally:
        other.close()


@pytest.mark.postgres
def test_the_listener_listens_again_after_its_connection_is_killed(services: Services) -> None:
    # Given a listener on the store's channel
    store_id = UUID(services.webhooks.create_store("Shop", Actor.system())["storeId"])
    woken = threading.Event()
    listener = listen(services, lambda channels: woken.set())
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
    listener = listen(services, lambda channels: None)
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
        # When the dispatcher's wake-ups are connected
        wakes = connect_signals(services, Signals(), [services.commerce, services.dispatch])

        # Then there is no listener (it polls for other processes' commits)
        assert wakes.listener is None
        assert wakes.max_idle() == bootstrap.MAX_IDLE_POLL
        wakes.close()
    finally:
        services.close()


def test_a_listener_on_a_database_that_is_not_there_keeps_trying_and_closes(
    tmp_path: Path,
) -> None:
    # Given a listener on a port where no database answers
    listener = CommitListener(
        "postgresql://postgres@127.0.0.1:1/test", ["commerce_events"], lambda channels: None
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
    monkeypatch.setattr(bootstrap, "MAX_IDLE_POLL", LONG_IDLE)
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


def test_in_embedded_mode_a_command_of_another_process_is_seen_by_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the embedded mode with a webhook, a dispatcher polling every 0.2 s (nothing
    # signals it of another process's SQLite commits), idle after its first passes
    monkeypatch.setattr(bootstrap, "MAX_IDLE_POLL", 0.2)
    services = build(Settings(data_dir=tmp_path / "data"))
    other = build(services.settings)  # another process: its saves signal nothing here
    try:
        store_id = UUID(services.webhooks.create_store("Shop", Actor.system())["storeId"])
        services.webhooks.create_webhook(
            store_id, Actor.system(), url="https://93.184.215.14/hook", event_types=["*"]
        )
        queue = open_queue(services)
        start_dispatcher(services, queue)
        broker: Any = queue.broker
        time.sleep(0.5)

        # When an event is recorded through the other process
        register(other, store_id)

        # Then a poll finds it, and its delivery is handed to the queue within 2 s
        assert wait_for(lambda: broker.queues[queue.name].qsize() == 1, timeout=2.0)
    finally:
        other.close()
        services.close()
