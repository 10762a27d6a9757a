"""The persistence limit: raw eventsourcing saves per second on the installation's own
database, run as its own process with the mode's environment:
``python -m bench.persist_baseline --seconds 3``. Prints one JSON object.

The application is configured exactly like ours (`infrastructure.persistence.
application_env`: the same pool, schema and SQLite options) under its own name
(``benchraw``: its own tables), and saves a small aggregate whose one event carries
about as much as a delivery attempt. Two shapes: one new aggregate per ``save()``
(one transaction each), and 100 aggregates per ``save()`` (one transaction per batch,
as the dispatcher and the worker's group commit do)."""

from __future__ import annotations

import argparse
import json
import os
import time
from uuid import UUID, uuid4

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from infrastructure.persistence import application_env, ensure_schema
from infrastructure.settings import Settings


class Probe(Aggregate):
    @event("Created")
    def __init__(
        self, webhook_id: UUID, status_code: int, detail: str, headers: dict[str, str]
    ) -> None:
        self.webhook_id = webhook_id
        self.status_code = status_code
        self.detail = detail
        self.headers = headers


class BenchRaw(Application[UUID]):
    name = "benchraw"


def _probe() -> Probe:
    return Probe(
        uuid4(),
        204,
        "x" * 120,
        {"content-type": "text/plain", "date": "Thu, 01 Jan 2026 00:00:00 GMT", "server": "bench"},
    )


def measure(app: BenchRaw, seconds: float, batch: int) -> dict[str, float | int]:
    saves = events = 0
    began = time.perf_counter()
    stop = began + seconds
    while time.perf_counter() < stop:
        app.save(*[_probe() for _ in range(batch)])
        saves += 1
        events += batch
    elapsed = time.perf_counter() - began
    return {
        "batch": batch,
        "saves": saves,
        "events": events,
        "seconds": round(elapsed, 3),
        "saves_per_second": round(saves / elapsed, 1),
        "events_per_second": round(events / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    settings = Settings.from_env(os.environ)
    if settings.database_url:
        ensure_schema(settings.database_url)
    app = BenchRaw(env=application_env(settings, BenchRaw.name))
    try:
        app.save(_probe())  # tables created, connections open
        single = measure(app, args.seconds, 1)
        batched = measure(app, args.seconds, 100)
    finally:
        app.close()
    print(json.dumps({"single": single, "batched": batched}))


if __name__ == "__main__":
    main()
