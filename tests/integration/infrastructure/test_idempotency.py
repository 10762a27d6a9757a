"""Idempotency-Keys recorded with the command's events (SPEC §8, ADR 0023), on real
storage: SQLite (embedded) and PostgreSQL (production), through the real applications.

`reopened` is a second set of services on the same files or database, as another process
would open them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError
from psycopg import sql

from application.idempotency import AlreadyAnswered, Answer, KeyedCommand, KeyRecord, keyed
from domain.customer import Customer
from domain.values import Actor
from infrastructure.bootstrap import Services, build
from infrastructure.idempotency import TABLE, fingerprint
from infrastructure.settings import Settings

T0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
REGISTER = fingerprint("POST", "/v1/customers", b'{"email": "bob@shop.example"}')
OTHER = fingerprint("POST", "/v1/customers", b'{"email": "eve@shop.example"}')
SHOP = uuid4()
CLERK = Actor.person("clerk@shop.example")


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build(settings)
    yield built
    built.close()


@pytest.fixture
def reopened(settings: Settings, services: Services) -> Iterator[Services]:
    built = build(settings)
    yield built
    built.close()


def command(
    key: str, at: datetime = T0, print_: str = REGISTER, store_id: UUID = SHOP
) -> KeyedCommand:
    """A keyed call whose stored answer is the command's result as JSON, with a 201."""
    return KeyedCommand(
        store_id,
        key,
        print_,
        "key-1",
        at,
        lambda result: Answer(201, json.dumps(result).encode(), "application/json"),
    )


def register(services: Services, call: KeyedCommand, email: str = "bob@shop.example") -> Any:
    with keyed(call):
        return services.commerce.register_customer(call.store_id, email, "Bob", None, CLERK)


def registrations(services: Services) -> int:
    notifications = services.commerce.recorder.select_notifications(start=None, limit=1000)
    return sum(1 for n in notifications if n.topic.endswith("Customer.Registered"))


def test_a_keyed_command_records_its_key_with_its_events(
    services: Services, reopened: Services
) -> None:
    # Given a customer registration sent with a key
    call = command("register-bob")

    # When it runs
    customer = register(services, call)

    # Then its event and its key's record are stored, the record holding the answer
    assert registrations(services) == 1
    record = services.idempotency.find(SHOP, "register-bob", T0 + timedelta(seconds=1))
    assert record == call.recorded
    assert record is not None
    assert record.fingerprint == REGISTER
    assert record.key_id == "key-1"
    assert record.answer == Answer(201, json.dumps(customer).encode(), "application/json")
    # And another process sees the same record
    assert reopened.idempotency.find(SHOP, "register-bob", T0 + timedelta(seconds=2)) == record


def test_a_save_the_store_refuses_records_no_key(services: Services) -> None:
    # Given a customer read by a command, and changed by another writer since
    created = services.commerce.register_customer(SHOP, "bob@shop.example", "Bob", None, CLERK)
    stale = services.commerce.get(Customer, SHOP, UUID(created["id"]))
    services.commerce.update_customer(SHOP, stale.id, CLERK, name="Robert")

    # When the command saves its change with its key
    call = command("rename-bob")
    stale.update(CLERK, name="Bobby")
    with keyed(call), pytest.raises(IntegrityError):
        services.commerce.save_answering(stale, result={"name": "Bobby"})

    # Then the key is not recorded either: the transaction failed whole
    assert call.recorded is None
    assert services.idempotency.find(SHOP, "rename-bob", T0) is None


def test_a_second_request_with_a_recorded_key_saves_nothing(services: Services) -> None:
    # Given a registration recorded under a key
    register(services, command("register-bob"))

    # When a second registration with the same key runs to its save
    second = command("register-bob")
    with pytest.raises(AlreadyAnswered):
        register(services, second, email="robert@shop.example")

    # Then it saved nothing at all, and the key keeps the first answer
    assert second.recorded is None
    assert registrations(services) == 1
    record = services.idempotency.find(SHOP, "register-bob", T0)
    assert record is not None
    assert b"bob@shop.example" in record.answer.body


def test_racing_requests_with_one_key_have_one_effect(
    services: Services, reopened: Services
) -> None:
    # Given two processes on the same storage
    instances = [services, reopened]
    for round_number in range(3):
        key = f"race-{round_number}"
        barrier = threading.Barrier(8)

        def attempt(index: int, key: str = key, barrier: threading.Barrier = barrier) -> str:
            barrier.wait(timeout=10)
            try:
                register(instances[index % 2], command(key), email=f"c{index}@shop.example")
            except AlreadyAnswered:
                return "answered before"
            return "recorded"

        # When 8 threads over both send the same keyed registration at once
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(attempt, range(8)))

        # Then exactly one is recorded, the seven others saved nothing
        assert outcomes.count("recorded") == 1, outcomes
        assert registrations(services) == round_number + 1


def test_a_command_that_changes_nothing_still_records_its_key(services: Services) -> None:
    # Given a customer named Bob
    created = services.commerce.register_customer(SHOP, "bob@shop.example", "Bob", None, CLERK)

    # When a keyed update sets the name it already has
    call = command("rename-to-bob")
    with keyed(call):
        services.commerce.update_customer(SHOP, UUID(created["id"]), CLERK, name="Bob")

    # Then no event is recorded, and the key is: a retry answers the same
    assert services.commerce.get(Customer, SHOP, UUID(created["id"])).version == 1
    assert services.idempotency.find(SHOP, "rename-to-bob", T0) == call.recorded


def test_a_record_older_than_24_hours_gives_way(services: Services) -> None:
    # Given a key recorded at T0
    register(services, command("register-bob"))
    day_later = T0 + timedelta(hours=24, seconds=1)

    # When the key comes back a day later with another request
    assert services.idempotency.find(SHOP, "register-bob", day_later) is None
    again = command("register-bob", at=day_later, print_=OTHER)
    register(services, again, email="eve@shop.example")

    # Then that request runs, and its record replaces the old one
    assert registrations(services) == 2
    assert services.idempotency.find(SHOP, "register-bob", day_later) == again.recorded


def test_purging_deletes_the_records_older_than_24_hours(services: Services) -> None:
    # Given a key recorded at T0 and another an hour later
    register(services, command("old"))
    register(services, command("recent", at=T0 + timedelta(hours=1)), email="r@shop.example")

    # When 24 h and a second have passed since T0
    day_later = T0 + timedelta(hours=24, seconds=1)

    # Then a purge deletes the old record only, and a second one finds nothing more
    assert services.idempotency.purge(day_later) == 1
    assert services.idempotency.purge(day_later) == 0
    assert services.idempotency.find(SHOP, "old", T0 + timedelta(hours=2)) is None
    assert services.idempotency.find(SHOP, "recent", day_later) is not None


def test_the_same_key_in_two_stores_is_two_records(services: Services) -> None:
    # Given two stores that both use the key "register"
    other_shop = uuid4()
    register(services, command("register"))

    # When the second store uses it too, for another request
    other = command("register", print_=OTHER, store_id=other_shop)
    register(services, other, email="eve@shop.example")

    # Then each store has its own record
    assert registrations(services) == 2
    mine = services.idempotency.find(SHOP, "register", T0)
    assert mine is not None
    assert mine.fingerprint == REGISTER
    assert services.idempotency.find(other_shop, "register", T0) == other.recorded


def test_an_answer_recorded_on_its_own_takes_the_key_too(services: Services) -> None:
    # Given an answer recorded without events (a refused command)
    refused = KeyRecord(SHOP, "pay-1", REGISTER, "key-1", T0, Answer(409, b"{}", "x/y"))
    services.idempotency.remember(refused)

    # When a command with the same key runs to its save, or the answer is recorded again
    # Then both are refused, and the first answer stays
    with pytest.raises(AlreadyAnswered):
        register(services, command("pay-1"))
    with pytest.raises(AlreadyAnswered):
        services.idempotency.remember(refused)
    assert registrations(services) == 0
    assert services.idempotency.find(SHOP, "pay-1", T0) == refused


@pytest.mark.postgres
def test_an_unfinished_entry_of_the_earlier_version_counts_as_absent(
    tmp_path: Path, postgres_url: str, request: pytest.FixtureRequest
) -> None:
    # Given an entry the earlier version left unfinished (status NULL) in the same table
    services = build(Settings(data_dir=tmp_path, database_url=postgres_url))
    request.addfinalizer(services.close)
    dsn, _, query = postgres_url.partition("?")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            sql.SQL(
                "INSERT INTO {} (store_id, key, fingerprint, created_at) VALUES (%s, %s, %s, %s)"
            ).format(sql.Identifier(query.removeprefix("schema="), TABLE)),
            (SHOP, "register-bob", REGISTER, T0),
        )

    # When the key is looked up, and its command runs
    assert services.idempotency.find(SHOP, "register-bob", T0) is None
    call = command("register-bob")
    register(services, call)

    # Then the command is recorded with its key in place of the old entry
    assert registrations(services) == 1
    assert services.idempotency.find(SHOP, "register-bob", T0) == call.recorded


def test_the_fingerprint_covers_method_path_and_body() -> None:
    # Given one request
    base = fingerprint("POST", "/v1/orders", b"{}")

    # When any part of it changes
    # Then the fingerprint changes; the same request always gives the same SHA-256 hex
    assert base == fingerprint("POST", "/v1/orders", b"{}")
    assert base == fingerprint("post", "/v1/orders", b"{}")
    assert len(base) == 64
    assert base != fingerprint("PUT", "/v1/orders", b"{}")
    assert base != fingerprint("POST", "/v1/orders/", b"{}")
    assert base != fingerprint("POST", "/v1/orders", b"{ }")
    # And the parts cannot bleed into each other
    assert fingerprint("POST", "/a", b"b") != fingerprint("POST", "/ab", b"")
