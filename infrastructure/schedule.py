"""The durable delivery schedule: SQL tables of due deliveries and of each webhook's health,
projected from the dispatch log with their tracking position in the same transaction.

The dispatcher *claims* due rows for a lease before it enqueues them; a row leaves the
table only when its delivery succeeds or fails for good, so a message lost with a killed
worker or broker comes back when its lease runs out. Retries due in hours are rows here,
not messages in a worker's memory.

Claims isolate webhooks from each other: at most ``per_webhook`` deliveries of one webhook
are in flight at once, and a webhook whose circuit is open (it kept failing, see
`domain.delivery.CircuitPolicy`) gets none until its cool-down ends, then one probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from application.dispatch import Dispatch
from application.views import timestamp
from domain.delivery import CircuitPolicy, DeliveryAttempted, DeliveryScheduled
from infrastructure.sql import Cursor, Database, PostgresDatabase, SqliteDatabase
from projections.schedule import Change, Due, Outcome, Retry, outcome_of, schedule_change

_TOPICS = [f"{cls.__module__}:{cls.__qualname__}" for cls in (DeliveryScheduled, DeliveryAttempted)]


@dataclass(frozen=True)
class Claimed:
    delivery_id: UUID
    webhook_id: UUID
    envelope_id: UUID
    store_id: UUID
    attempt: int


@dataclass(frozen=True)
class Health:
    """A webhook's recent record, as the circuit breaker and auto-disable see it."""

    webhook_id: UUID
    consecutive_failures: int
    failing_since: datetime | None
    last_success_at: datetime | None
    open_until: datetime | None

    def state(self, now: datetime) -> str:
        if self.open_until is None:
            return "closed"
        return "open" if now < self.open_until else "half-open"

    def to_json(self, now: datetime) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return timestamp(moment) if moment else None

        return {
            "state": self.state(now),
            "openUntil": iso(self.open_until),
            "consecutiveFailures": self.consecutive_failures,
            "failingSince": iso(self.failing_since),
            "lastSuccessAt": iso(self.last_success_at),
        }


def _ts(moment: datetime) -> float:
    return moment.astimezone(UTC).timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class Schedule:
    def __init__(self, db: Database, policy: CircuitPolicy | None = None) -> None:
        self.db = db
        self.policy = policy or CircuitPolicy()
        self._ph = db.placeholder
        t = db.types
        with db.transaction() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS due_deliveries ("
                f" delivery_id {t['text']} PRIMARY KEY, webhook_id {t['text']} NOT NULL,"
                f" envelope_id {t['text']} NOT NULL, store_id {t['text']} NOT NULL,"
                f" attempt {t['integer']} NOT NULL, due_at {t['real']} NOT NULL,"
                f" lease_until {t['real']})"
            )
            c.execute("CREATE INDEX IF NOT EXISTS due_deliveries_due ON due_deliveries (due_at)")
            c.execute(
                "CREATE INDEX IF NOT EXISTS due_deliveries_webhook "
                "ON due_deliveries (webhook_id, lease_until)"
            )
            c.execute(
                "CREATE TABLE IF NOT EXISTS webhook_health ("
                f" webhook_id {t['text']} PRIMARY KEY,"
                f" consecutive_failures {t['integer']} NOT NULL,"
                f" failing_since {t['real']}, last_success_at {t['real']}, open_until {t['real']})"
            )
            c.execute(
                "CREATE TABLE IF NOT EXISTS due_tracking ("
                f" id {t['integer']} PRIMARY KEY CHECK (id = 1), position {t['integer']} NOT NULL)"
            )
            c.execute(self._sql("INSERT INTO due_tracking VALUES (1, 0) ON CONFLICT DO NOTHING"))

    def _sql(self, text: str) -> str:
        return text if self._ph == "?" else text.replace("?", self._ph)

    # Projection ----------------------------------------------------------------------

    def position(self) -> int:
        with self.db.transaction() as c:
            c.execute("SELECT position FROM due_tracking")
            return int(c.fetchone()[0])

    def catch_up(self, dispatch: Dispatch, limit: int = 1000) -> int:
        start = self.position()
        head = dispatch.recorder.max_notification_id() or 0
        if head <= start:
            return 0
        notifications = dispatch.recorder.select_notifications(
            start=start + 1, limit=limit, stop=head, topics=_TOPICS
        )
        # Fewer than asked for means every notification up to ``head`` was seen.
        position = notifications[-1].id if len(notifications) == limit else head
        events = [dispatch.mapper.to_domain_event(n) for n in notifications]
        changes = [c for c in map(schedule_change, events) if c is not None]
        outcomes = [o for o in map(outcome_of, events) if o is not None]
        with self.db.transaction() as c:
            # The position moves forward only from where this batch began: a second
            # writer fails here rather than apply the same changes twice.
            c.execute(
                self._sql("UPDATE due_tracking SET position = ? WHERE position = ?"),
                (position, start),
            )
            if c.rowcount != 1:
                raise RuntimeError("the schedule was advanced by another process")
            for change in changes:
                self._apply(c, change)
            for outcome in outcomes:
                self._record_outcome(c, outcome)
        return len(changes)

    def _apply(self, c: Cursor, change: Change) -> None:
        if isinstance(change, Due):
            c.execute(
                self._sql(
                    "INSERT INTO due_deliveries VALUES (?, ?, ?, ?, 1, ?, NULL) "
                    "ON CONFLICT DO NOTHING"
                ),
                (
                    str(change.delivery_id),
                    str(change.webhook_id),
                    str(change.envelope_id),
                    str(change.store_id),
                    _ts(change.due_at),
                ),
            )
        elif isinstance(change, Retry):
            c.execute(
                self._sql(
                    "UPDATE due_deliveries SET attempt = ?, due_at = ?, lease_until = NULL "
                    "WHERE delivery_id = ? AND attempt < ?"
                ),
                (
                    change.next_attempt,
                    _ts(change.due_at),
                    str(change.delivery_id),
                    change.next_attempt,
                ),
            )
        else:
            c.execute(
                self._sql("DELETE FROM due_deliveries WHERE delivery_id = ?"),
                (str(change.delivery_id),),
            )

    def _record_outcome(self, c: Cursor, outcome: Outcome) -> None:
        current = self._health_in(c, outcome.webhook_id)
        row: tuple[int, float | None, float | None, float | None]
        if outcome.succeeded:
            row = (0, None, _ts(outcome.at), None)
        else:
            failures = current.consecutive_failures + 1
            since = current.failing_since or outcome.at
            until = self.policy.open_until(failures, outcome.at)
            last = current.last_success_at
            row = (failures, _ts(since), _ts(last) if last else None, _ts(until) if until else None)
        c.execute(
            self._sql(
                "INSERT INTO webhook_health VALUES (?, ?, ?, ?, ?) ON CONFLICT (webhook_id) DO "
                "UPDATE SET consecutive_failures = excluded.consecutive_failures, "
                "failing_since = excluded.failing_since, "
                "last_success_at = excluded.last_success_at, open_until = excluded.open_until"
            ),
            (str(outcome.webhook_id), *row),
        )

    def _health_in(self, c: Cursor, webhook_id: UUID) -> Health:
        c.execute(
            self._sql(
                "SELECT consecutive_failures, failing_since, last_success_at, open_until "
                "FROM webhook_health WHERE webhook_id = ?"
            ),
            (str(webhook_id),),
        )
        row = c.fetchone()
        if row is None:
            return Health(webhook_id, 0, None, None, None)
        return Health(webhook_id, int(row[0]), _dt(row[1]), _dt(row[2]), _dt(row[3]))

    # Claims --------------------------------------------------------------------------

    def claim(
        self,
        now: datetime,
        limit: int,
        lease_seconds: float,
        per_webhook: int = 1_000_000,
    ) -> list[Claimed]:
        """Lease up to ``limit`` due deliveries, oldest first, at most ``per_webhook`` of
        one webhook in flight, none of a webhook whose circuit is open and one probe of a
        webhook whose circuit is half-open."""
        moment = _ts(now)
        with self.db.transaction() as c:
            c.execute(
                self._sql(
                    "WITH busy AS (SELECT webhook_id, count(*) AS n FROM due_deliveries"
                    "  WHERE lease_until >= ? GROUP BY webhook_id),"
                    " candidates AS (SELECT d.delivery_id, d.webhook_id, d.envelope_id,"
                    "  d.store_id, d.attempt, d.due_at, ROW_NUMBER() OVER"
                    "  (PARTITION BY d.webhook_id ORDER BY d.due_at) AS rank"
                    "  FROM due_deliveries d WHERE d.due_at <= ?"
                    "  AND (d.lease_until IS NULL OR d.lease_until < ?))"
                    " SELECT c.delivery_id, c.webhook_id, c.envelope_id, c.store_id, c.attempt"
                    " FROM candidates c"
                    " LEFT JOIN busy b ON b.webhook_id = c.webhook_id"
                    " LEFT JOIN webhook_health h ON h.webhook_id = c.webhook_id"
                    " WHERE (h.open_until IS NULL AND c.rank + COALESCE(b.n, 0) <= ?)"
                    "  OR (h.open_until <= ? AND c.rank + COALESCE(b.n, 0) <= 1)"
                    " ORDER BY c.due_at LIMIT ?"
                ),
                (moment, moment, moment, per_webhook, moment, limit),
            )
            taken = []
            for row in c.fetchall():
                # Re-checked as the row is taken: on PostgreSQL a concurrent claim waits for
                # this row's lock and then finds it leased, so no row is handed out twice.
                c.execute(
                    self._sql(
                        "UPDATE due_deliveries SET lease_until = ? WHERE delivery_id = ? "
                        "AND (lease_until IS NULL OR lease_until < ?)"
                    ),
                    (moment + lease_seconds, str(row[0]), moment),
                )
                if c.rowcount == 1:
                    taken.append(_claimed(row))
        return taken

    def postpone(self, delivery_id: UUID, due_at: datetime) -> None:
        with self.db.transaction() as c:
            c.execute(
                self._sql(
                    "UPDATE due_deliveries SET due_at = ?, lease_until = NULL WHERE delivery_id = ?"
                ),
                (_ts(due_at), str(delivery_id)),
            )

    def release_leases(self) -> int:
        with self.db.transaction() as c:
            c.execute("UPDATE due_deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL")
            return int(c.rowcount)

    # Reads ---------------------------------------------------------------------------

    def in_flight(self, now: datetime) -> int:
        with self.db.transaction() as c:
            c.execute(
                self._sql("SELECT count(*) FROM due_deliveries WHERE lease_until >= ?"),
                (_ts(now),),
            )
            return int(c.fetchone()[0])

    def pending(self) -> int:
        with self.db.transaction() as c:
            c.execute("SELECT count(*) FROM due_deliveries")
            return int(c.fetchone()[0])

    def oldest_due(self, now: datetime) -> float:
        """Seconds the oldest due, unclaimed delivery has waited (queue lag)."""
        with self.db.transaction() as c:
            c.execute(
                self._sql(
                    "SELECT min(due_at) FROM due_deliveries WHERE due_at <= ? "
                    "AND (lease_until IS NULL OR lease_until < ?)"
                ),
                (_ts(now), _ts(now)),
            )
            oldest = c.fetchone()[0]
        return 0.0 if oldest is None else max(_ts(now) - float(oldest), 0.0)

    def health(self, webhook_id: UUID) -> Health:
        with self.db.transaction() as c:
            return self._health_in(c, webhook_id)

    def failing_for_too_long(self, now: datetime) -> list[UUID]:
        """Webhooks whose every attempt has failed for the policy's ``disable_after``."""
        cutoff = _ts(now - self.policy.disable_after)
        with self.db.transaction() as c:
            c.execute(
                self._sql("SELECT webhook_id FROM webhook_health WHERE failing_since <= ?"),
                (cutoff,),
            )
            return [UUID(str(row[0])) for row in c.fetchall()]

    def forgive(self, webhook_id: UUID) -> None:
        """Start a re-enabled webhook with a clean record (closed circuit)."""
        with self.db.transaction() as c:
            c.execute(
                self._sql(
                    "UPDATE webhook_health SET consecutive_failures = 0, failing_since = NULL, "
                    "open_until = NULL WHERE webhook_id = ?"
                ),
                (str(webhook_id),),
            )

    def close(self) -> None:
        self.db.close()


def _claimed(row: Sequence[Any]) -> Claimed:
    return Claimed(
        UUID(str(row[0])), UUID(str(row[1])), UUID(str(row[2])), UUID(str(row[3])), int(row[4])
    )


def open_schedule_db(data_dir: Path, database_url: str | None) -> Database:
    if database_url is None:
        return SqliteDatabase(data_dir / "schedule.sqlite")
    return PostgresDatabase(database_url)
