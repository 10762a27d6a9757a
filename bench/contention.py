"""Orders per second on one hot SKU against orders on distinct SKUs, in the same run
(issue 18, ADR 0026): what contention on one aggregate costs.

    .venv/bin/python -m bench.contention [--orders 400] [--clients 16] [--database-url URL]

Both phases send the same number of `POST /v1/orders` (one item each) from the same
number of concurrent clients through the real API in this process (ASGI, no network):
first every order takes the same SKU, then each client orders its own SKU. The SKUs,
customer and store are made before the clock starts. Storage is fresh: a temporary data
directory (embedded SQLite), or with ``--database-url`` a PostgreSQL schema of its own,
dropped afterwards. Prints both rates and their ratio.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import anyio
import httpx

from domain.values import Actor
from infrastructure.api.app import create_app
from infrastructure.bootstrap import Services, build
from infrastructure.settings import Settings

SYSTEM = Actor.system()


def _sku(services: Services, store: uuid.UUID, stock: int) -> str:
    commerce = services.commerce
    product = commerce.create_product(store, "Bench mug", None, SYSTEM)
    variant = commerce.create_variant(store, uuid.UUID(product["id"]), {"n": "1"}, SYSTEM)
    sku = commerce.create_sku(store, uuid.UUID(variant["id"]), "B", "9.90", "EUR", stock, SYSTEM)
    return str(sku["id"])


async def _orders_per_second(
    api: httpx.AsyncClient, customer: str, skus: list[str], orders: int
) -> float:
    """Place ``orders`` orders from ``len(skus)`` clients, client n ordering ``skus[n]``."""
    left = [orders]

    async def client(sku: str) -> None:
        body = {"customerId": customer, "currency": "EUR", "lines": [{"skuId": sku, "quantity": 1}]}
        while left[0] > 0:
            left[0] -= 1
            answer = await api.post("/v1/orders", json=body)
            if answer.status_code != 201:
                raise SystemExit(f"an order failed: {answer.status_code} {answer.text}")

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for sku in skus:
            group.start_soon(client, sku)
    return orders / (time.perf_counter() - started)


async def _run(services: Services, orders: int, clients: int) -> tuple[float, float]:
    store = uuid.UUID(services.webhooks.create_store("Bench", SYSTEM)["storeId"])
    key = services.webhooks.create_api_key(store, None, SYSTEM)["apiKey"]
    customer = services.commerce.register_customer(store, "b@bench.example", "B", None, SYSTEM)
    hot = _sku(services, store, orders)
    distinct = [_sku(services, store, orders) for _ in range(clients)]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(services)),
        base_url="http://bench",
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    ) as api:
        one_sku = await _orders_per_second(api, customer["id"], [hot] * clients, orders)
        own_skus = await _orders_per_second(api, customer["id"], distinct, orders)
    return one_sku, own_skus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.contention", description=__doc__)
    parser.add_argument("--orders", type=int, default=400, help="orders per phase")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--database-url", help="postgresql://… (default: embedded SQLite)")
    args = parser.parse_args(argv)

    data_dir = Path(tempfile.mkdtemp(prefix="webround-bench-contention-"))
    schema = f"bench_contention_{uuid.uuid4().hex[:8]}"
    url = f"{args.database_url.split('?')[0]}?schema={schema}" if args.database_url else None
    services = build(Settings(data_dir=data_dir, database_url=url))
    try:
        hot, distinct = anyio.run(_run, services, args.orders, args.clients)
    finally:
        services.close()
        shutil.rmtree(data_dir, ignore_errors=True)
        if url is not None:
            _drop(url, schema)
    where = "PostgreSQL" if url else "embedded SQLite"
    print(f"{args.orders} orders per phase, {args.clients} clients, {where}")
    print(f"one hot SKU:       {hot:8.1f} orders/s")
    print(f"distinct SKUs:     {distinct:8.1f} orders/s")
    print(f"hot / distinct:    {hot / distinct:8.2f}")
    return 0


def _drop(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url.split("?")[0], autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


if __name__ == "__main__":
    raise SystemExit(main())
