"""Prototypes of the recommended production changes, measured without editing production
code: ``python -m bench.experiments ROLE`` applies the patches named in
``BENCH_PATCHES`` (comma-separated) to this process and then runs ``webround ROLE``.
The suite uses it when a run is given ``--set BENCH_PATCHES=...``.

Patches (each mirrors a recommendation of bench/README.md):

``batch_load``  the worker's group commit loads the batch's deliveries with one
                ``SELECT ... WHERE originator_id = ANY(...)`` instead of one query per
                delivery (`Dispatch.record_attempts`). PostgreSQL only; elsewhere a no-op.
``claim_once``  the dispatcher leases due deliveries with one ``UPDATE ... RETURNING``
                instead of a SELECT and one UPDATE per row (`Schedule.claim`).

These are measuring aids, not the implementation: the lead applies the real change.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID


def _patch_batch_load() -> None:
    from application.dispatch import AttemptResult, Dispatch
    from domain.delivery import Delivery

    original = Dispatch.record_attempts

    def load(dispatch: Dispatch, ids: set[UUID]) -> dict[UUID, Delivery]:
        recorder: Any = dispatch.recorder
        datastore = getattr(recorder, "datastore", None)
        if datastore is None or not hasattr(datastore, "schema") or not ids:
            return {}
        from eventsourcing.persistence import StoredEvent
        from psycopg.sql import SQL, Identifier

        statement = SQL(
            "SELECT * FROM {schema}.{table} WHERE originator_id = ANY(%s) "
            "ORDER BY originator_id, originator_version"
        ).format(schema=Identifier(datastore.schema), table=Identifier(recorder.events_table_name))
        with datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, [list(ids)])
            rows = curs.fetchall()
        found: dict[UUID, Any] = {}
        for row in rows:
            stored = StoredEvent(
                originator_id=row["originator_id"],
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )
            event: Any = dispatch.mapper.to_domain_event(stored)
            found[row["originator_id"]] = event.mutate(found.get(row["originator_id"]))
        return {k: v for k, v in found.items() if isinstance(v, Delivery)}

    def record_attempts(self: Dispatch, results: Sequence[AttemptResult]) -> list[Delivery]:
        preloaded = load(self, {r.delivery_id for r in results})
        if not preloaded:
            return original(self, results)
        # Each preloaded delivery is used once: a fallback after a conflict reloads.
        self._delivery = lambda delivery_id: (
            preloaded.pop(delivery_id, None)
            or Dispatch._delivery(  # type: ignore[method-assign]
                self, delivery_id
            )
        )
        try:
            return original(self, results)
        finally:
            del self._delivery

    Dispatch.record_attempts = record_attempts  # type: ignore[method-assign]


def _patch_claim_once() -> None:
    from infrastructure import schedule as module
    from infrastructure.schedule import Claimed, Schedule, _claimed, _ts

    def claim(
        self: Schedule,
        now: datetime,
        limit: int,
        lease_seconds: float,
        per_webhook: int = 1_000_000,
    ) -> list[Claimed]:
        moment = _ts(now)
        with self.db.transaction() as c:
            c.execute(
                self._sql(
                    "WITH busy AS (SELECT webhook_id, count(*) AS n FROM due_deliveries"
                    "  WHERE lease_until >= ? GROUP BY webhook_id),"
                    " candidates AS (SELECT d.delivery_id, d.webhook_id, d.due_at,"
                    "  ROW_NUMBER() OVER (PARTITION BY d.webhook_id ORDER BY d.due_at) AS rank"
                    "  FROM due_deliveries d WHERE d.due_at <= ?"
                    "  AND (d.lease_until IS NULL OR d.lease_until < ?)),"
                    " chosen AS (SELECT c.delivery_id FROM candidates c"
                    "  LEFT JOIN busy b ON b.webhook_id = c.webhook_id"
                    "  LEFT JOIN webhook_health h ON h.webhook_id = c.webhook_id"
                    "  WHERE (h.open_until IS NULL AND c.rank + COALESCE(b.n, 0) <= ?)"
                    "   OR (h.open_until <= ? AND c.rank + COALESCE(b.n, 0) <= 1)"
                    "  ORDER BY c.due_at LIMIT ?)"
                    " UPDATE due_deliveries SET lease_until = ?"
                    " WHERE delivery_id IN (SELECT delivery_id FROM chosen)"
                    " AND (lease_until IS NULL OR lease_until < ?)"
                    " RETURNING delivery_id, webhook_id, envelope_id, store_id, attempt, due_at"
                ),
                (
                    moment,
                    moment,
                    moment,
                    per_webhook,
                    moment,
                    limit,
                    moment + lease_seconds,
                    moment,
                ),
            )
            rows = sorted(c.fetchall(), key=lambda row: row[5])
        return [_claimed(row) for row in rows]

    module.Schedule.claim = claim  # type: ignore[method-assign]


PATCHES = {"batch_load": _patch_batch_load, "claim_once": _patch_claim_once}


def main() -> int:
    for name in filter(None, os.environ.get("BENCH_PATCHES", "").split(",")):
        PATCHES[name.strip()]()
    from infrastructure.cli import main as webround

    return webround(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
