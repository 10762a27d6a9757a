"""Commands racing on one aggregate from two processes (ADR 0026), on SQLite and PostgreSQL:
the loser of a race runs again on the fresh state, so every change applies once and no
rule is broken — here, with no turns to take between the two processes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID, uuid4

import pytest

from application.commerce import Commerce
from application.idempotency import AlreadyAnswered, Answer, KeyedCommand, keyed
from domain.catalog import Sku
from domain.customer import Customer
from domain.errors import InsufficientStock
from domain.values import Actor
from infrastructure.bootstrap import Services, build
from infrastructure.settings import Settings
from tests.integration.application.test_commerce import make_sku

ALICE = Actor.person("alice@shop.example")
THREADS = 4  # per process


@pytest.fixture
def processes(settings: Settings) -> Iterator[list[Services]]:
    """Two sets of services on the same storage: two processes."""
    first, second = build(settings), build(settings)
    yield [first, second]
    second.close()
    first.close()


def race(processes: list[Services], commands: list[Callable[[Commerce], object]]) -> list[str]:
    """Run the commands from THREADS threads in each process; each one's outcome."""

    def run(index: int) -> str:
        try:
            commands[index](processes[index % 2].commerce)
        except InsufficientStock:
            return "insufficient stock"
        except AlreadyAnswered:
            return "answered before"
        return "done"

    with ThreadPoolExecutor(max_workers=THREADS * len(processes)) as pool:
        return list(pool.map(run, range(len(commands))))


def test_updates_of_one_customer_from_two_processes_all_apply(
    processes: list[Services],
) -> None:
    # Given a customer
    store = uuid4()
    commerce = processes[0].commerce
    customer = UUID(commerce.register_customer(store, "a@shop.example", "A", None, ALICE)["id"])

    # When two processes apply 60 renames of it at once
    def rename(n: int) -> Callable[[Commerce], object]:
        return lambda app: app.update_customer(store, customer, ALICE, name=f"name {n}")

    outcomes = race(processes, [rename(n) for n in range(60)])

    # Then every one applied: the customer is at version 61
    assert outcomes == ["done"] * 60
    assert commerce.get(Customer, store, customer).version == 61


def test_orders_for_one_sku_from_two_processes_never_oversell(
    processes: list[Services],
) -> None:
    # Given a SKU with 30 in stock and a customer
    store = uuid4()
    commerce = processes[0].commerce
    sku = make_sku(commerce, store, stock=30)
    customer = UUID(commerce.register_customer(store, "a@shop.example", "A", None, ALICE)["id"])

    # When two processes place 40 orders of one at once
    def order(app: Commerce) -> object:
        return app.place_order(store, customer, "EUR", [(sku, 1)], ALICE)

    outcomes = race(processes, [order] * 40)

    # Then 30 are placed and 10 refused, and the SKU is at 0 after 30 stock changes
    assert Counter(outcomes) == {"done": 30, "insufficient stock": 10}
    final = commerce.get(Sku, store, sku)
    assert (final.stock, final.version) == (0, 31)


def test_keyed_orders_racing_on_one_sku_are_placed_once_per_key(
    processes: list[Services],
) -> None:
    # Given a SKU with 100 in stock
    store = uuid4()
    commerce = processes[0].commerce
    sku = make_sku(commerce, store, stock=100)
    customer = UUID(commerce.register_customer(store, "a@shop.example", "A", None, ALICE)["id"])

    # When 8 orders are each sent twice at once, with a key of their own, from both
    # processes, all racing for the SKU
    def order(key: str) -> Callable[[Commerce], object]:
        def send(app: Commerce) -> object:
            call = KeyedCommand(
                store, key, "print", "key-1", commerce.clock(), lambda _: Answer(201, b"", "")
            )
            with keyed(call):
                return app.place_order(store, customer, "EUR", [(sku, 1)], ALICE)

        return send

    outcomes = race(processes, [order(f"order-{n // 2}") for n in range(16)])

    # Then each key placed one order (its twin found it answered): 8 taken from stock
    assert Counter(outcomes) == {"done": 8, "answered before": 8}
    assert commerce.get(Sku, store, sku).stock == 92
