"""The durable delivery schedule: SQL tables of due deliveries and of each webhook's health,
projected from the dispatch log with their tracking position in the same transaction.

The dispatcher *claims* due rows for a lease before it enqueues them; a row leaves the
table only when its delivery succeeds or fails for good, so a message lost with a killed
worker or broker comes back when its lease runs out. Retries due in hours are rows here,
not messages in a worker's memory.

Claims isolate webhooks from each other: at most ``per_webhook`` deliveries of one webhook
are in flight at once, and a webhook whose circuit is open (it kept failing, see
`domain.delivery.CircuitPolicy`) gets none until its cool-down ends, then one probe.

It is on the dispatcher's hot path, so each step costs few statements: a catch-up folds
its batch per delivery and per webhook (`projections.schedule`) and writes the result
with one ``executemany`` per kind of row, remembering its position between batches; a
claim is one statement.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from application.dispatch import Dispatch
from application.views import timestamp
from domain.delivery import CircuitPolicy, DeliveryAttempted, DeliveryScheduled
from infrastructure.sql import Cursor, Database, PostgresDatabase, SqliteDatabase
from projections.schedule import (
    Folded,
    HealthRecord,
    Outcome,
    fold_changes,
    fold_outcomes,
    outcome_of,
    schedule_change,
)

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


def _ts_or_none(moment: datetime | None) -> float | None:
    return None if moment is None else _ts(moment)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# Bound parameters per ``IN (...)`` list: well within SQLite's and PostgreSQL's limits.
_IN_LIST = 500


class _Overtaken(RuntimeError):
    """The tracking position is not where this batch began: another writer moved it on,
    or the server lost our last (non-durable) commits."""

    def __init__(self) -> None:
        super().__init__("the schedule was advanced by another process")


class Schedule:
    def __init__(
        self, db: Database, policy: CircuitPolicy | None = None, recheck_after: float = 1.0
    ) -> None:
        self.db = db
        self.policy = policy or CircuitPolicy()
        self._ph = db.placeholder
        self._lock = " FOR UPDATE SKIP LOCKED" if isinstance(db, PostgresDatabase) else ""
        # The tracking position as this instance last committed or read it (None: not
        # known, read it), and when. A batch's guard finds it out of date if the position
        # moved meanwhile (another writer moved it on, or the server lost our last
        # non-durable commits); with nothing new in the log there is no batch to find
        # that, so the position is read again once it is ``recheck_after`` seconds old.
        self._position: int | None = None
        self._position_at = 0.0
        self._recheck_after = recheck_after
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
        """Apply up to ``limit`` new notifications of the dispatch log (deliveries and
        attempts) exactly once, rows and position in one transaction; returns the number
        of schedule changes applied."""
        head = dispatch.recorder.max_notification_id() or 0
        start = self._position
        if start is not None:
            if head > start:
                try:
                    return self._catch_up(dispatch, start, head, limit)
                except _Overtaken:
                    pass  # the position moved since we knew it: go on from where it is
            elif time.monotonic() - self._position_at < self._recheck_after:
                return 0  # nothing new since we knew the position: not even a transaction
        start = self.position()
        if head <= start:
            self._remember(start)
            return 0
        return self._catch_up(dispatch, start, head, limit)

    def _remember(self, position: int) -> None:
        self._position, self._position_at = position, time.monotonic()

    def _catch_up(self, dispatch: Dispatch, start: int, head: int, limit: int) -> int:
        self._position = None  # known again only once this batch commits
        notifications = dispatch.recorder.select_notifications(
            start=start + 1, limit=limit, stop=head, topics=_TOPICS
        )
        # Fewer than asked for means every notification up to ``head`` was seen.
        position = notifications[-1].id if len(notifications) == limit else head
        events = [dispatch.mapper.to_domain_event(n) for n in notifications]
        changes = [c for c in map(schedule_change, events) if c is not None]
        outcomes = [o for o in map(outcome_of, events) if o is not None]
        # Rows and position commit together: a commit lost in a crash loses both and is
        # applied again (see `_position`), so the commit need not wait for the WAL flush.
        with self.db.transaction(durable=False) as c:
            # The position moves forward only from where this batch began: a second
            # writer fails here rather than apply the same changes twice.
            c.execute(
                self._sql("UPDATE due_tracking SET position = ? WHERE position = ?"),
                (position, start),
            )
            if c.rowcount != 1:
                raise _Overtaken()
            self._apply(c, fold_changes(changes))
            self._record_outcomes(c, outcomes)
        self._remember(position)
        return len(changes)

    def _apply(self, c: Cursor, folded: Folded) -> None:
        # In this order (see `Folded`): a delivery may have both a delete and an insert, or
        # an update and an insert, in one batch.
        if folded.deletes:
            c.executemany(
                self._sql("DELETE FROM due_deliveries WHERE delivery_id = ?"),
                [(str(delivery_id),) for delivery_id in folded.deletes],
            )
        if folded.updates:
            c.executemany(
                self._sql(
                    "UPDATE due_deliveries SET attempt = ?, due_at = ?, lease_until = NULL "
                    "WHERE delivery_id = ? AND attempt < ?"
                ),
                [
                    (r.next_attempt, _ts(r.due_at), str(r.delivery_id), r.next_attempt)
                    for r in folded.updates
                ],
            )
        if folded.inserts:
            c.executemany(
                self._sql(
                    "INSERT INTO due_deliveries VALUES (?, ?, ?, ?, ?, ?, NULL) "
                    "ON CONFLICT DO NOTHING"
                ),
                [
                    (
                        str(d.delivery_id),
                        str(d.webhook_id),
                        str(d.envelope_id),
                        str(d.store_id),
                        d.attempt,
                        _ts(d.due_at),
                    )
                    for d in folded.inserts
                ],
            )

    def _record_outcomes(self, c: Cursor, outcomes: Sequence[Outcome]) -> None:
        """Count the batch's attempt outcomes in their webhooks' health: one read of the
        current records, folded in log order, and one upsert per webhook."""
        if not outcomes:
            return
        webhook_ids = [str(w) for w in dict.fromkeys(o.webhook_id for o in outcomes)]
        current: dict[UUID, HealthRecord] = {}
        for chunk in _chunks(webhook_ids, _IN_LIST):
            c.execute(
                self._sql(
                    "SELECT webhook_id, consecutive_failures, failing_since, last_success_at,"  # noqa: S608 (placeholders only)
                    " open_until FROM webhook_health"
                    f" WHERE webhook_id IN ({', '.join('?' * len(chunk))})"
                ),
                chunk,
            )
            for row in c.fetchall():
                current[UUID(str(row[0]))] = _record(row[1:])
        records = fold_outcomes(current, outcomes, self.policy)
        c.executemany(
            self._sql(
                "INSERT INTO webhook_health VALUES (?, ?, ?, ?, ?) ON CONFLICT (webhook_id) DO "
                "UPDATE SET consecutive_failures = excluded.consecutive_failures, "
                "failing_since = excluded.failing_since, "
                "last_success_at = excluded.last_success_at, open_until = excluded.open_until"
            ),
            [
                (
                    str(webhook_id),
                    r.consecutive_failures,
                    _ts_or_none(r.failing_since),
                    _ts_or_none(r.last_success_at),
                    _ts_or_none(r.open_until),
                )
                for webhook_id, r in records.items()
            ],
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
        r = HealthRecord() if row is None else _record(row)
        return Health(
            webhook_id, r.consecutive_failures, r.failing_since, r.last_success_at, r.open_until
        )

    # Claims --------------------------------------------------------------------------

    def claim(
        self,
        now: datetime,
        limit: int,
        lease_seconds: float,
        per_webhook: int = 1_000_000,
        max_in_flight: int | None = None,
    ) -> list[Claimed]:
        """Lease up to ``limit`` due deliveries, oldest first, at most ``per_webhook`` of
        one webhook in flight, none of a webhook whose circuit is open and one probe of a
        webhook whose circuit is half-open; given ``max_in_flight``, no more than bring
        the deliveries in flight (`in_flight`) to that many in all."""
        moment = _ts(now)
        if max_in_flight is None:
            room, room_params = "?", [limit]
        else:
            # What is left of max_in_flight, up to limit (never negative: SQLite reads a
            # negative LIMIT as none at all).
            room = (
                "(SELECT CASE WHEN r < 0 THEN 0 WHEN r < ? THEN r ELSE ? END"
                " FROM (SELECT ? - COALESCE(sum(n), 0) AS r FROM busy) AS room)"
            )
            room_params = [limit, limit, max_in_flight]
        with self.db.transaction() as c:
            c.execute(
                self._sql(
                    # In flight: leased, lease not run out.
                    "WITH busy AS (SELECT webhook_id, count(*) AS n FROM due_deliveries"  # noqa: S608 (ours, not input)
                    "  WHERE lease_until >= ? GROUP BY webhook_id),"
                    # Due, unleased rows ranked per webhook, oldest first. A webhook whose
                    # circuit is open, or already at its cap, is left out before the
                    # ranking: its held rows (however many) cost no sorting. The cap is
                    # per_webhook, or 1 (one probe) while the circuit is half-open.
                    " candidates AS (SELECT d.delivery_id, d.due_at,"
                    "  COALESCE(b.n, 0) AS in_flight,"
                    "  CASE WHEN h.open_until IS NULL THEN ? ELSE 1 END AS cap,"
                    "  ROW_NUMBER() OVER (PARTITION BY d.webhook_id ORDER BY d.due_at) AS rank"
                    "  FROM due_deliveries d"
                    "  LEFT JOIN webhook_health h ON h.webhook_id = d.webhook_id"
                    "  LEFT JOIN busy b ON b.webhook_id = d.webhook_id"
                    "  WHERE d.due_at <= ? AND (d.lease_until IS NULL OR d.lease_until < ?)"
                    "  AND (h.open_until IS NULL OR h.open_until <= ?)"
                    "  AND COALESCE(b.n, 0) < CASE WHEN h.open_until IS NULL THEN ? ELSE 1 END),"
                    " chosen AS (SELECT delivery_id FROM candidates WHERE rank + in_flight <= cap"
                    f"  ORDER BY due_at LIMIT {room}),"
                    # PostgreSQL: lock the chosen rows, skipping those another transaction
                    # holds (a concurrent claim takes them), so that claims never wait for
                    # each other's locks in different orders (a deadlock).
                    " taken AS (SELECT delivery_id FROM due_deliveries"
                    f"  WHERE delivery_id IN (SELECT delivery_id FROM chosen){self._lock})"
                    # Re-checked as each row is taken: on PostgreSQL a row that a
                    # concurrent claim leased since this one's snapshot is found leased and
                    # skipped, so no row is handed out twice (SQLite runs one writer at a
                    # time).
                    " UPDATE due_deliveries SET lease_until = ?"
                    " WHERE delivery_id IN (SELECT delivery_id FROM taken)"
                    " AND (lease_until IS NULL OR lease_until < ?)"
                    " RETURNING delivery_id, webhook_id, envelope_id, store_id, attempt, due_at"
                ),
                [
                    moment,
                    per_webhook,
                    moment,
                    moment,
                    moment,
                    per_webhook,
                    *room_params,
                    moment + lease_seconds,
                    moment,
                ],
            )
            rows = c.fetchall()
        # RETURNING comes in no particular order.
        return [_claimed(row) for row in sorted(rows, key=lambda row: float(row[5]))]

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


def _record(row: Sequence[Any]) -> HealthRecord:
    """A webhook_health row's record, from its columns after webhook_id."""
    return HealthRecord(int(row[0]), _dt(row[1]), _dt(row[2]), _dt(row[3]))


def _claimed(row: Sequence[Any]) -> Claimed:
    return Claimed(
        UUID(str(row[0])), UUID(str(row[1])), UUID(str(row[2])), UUID(str(row[3])), int(row[4])
    )


def open_schedule_db(data_dir: Path, database_url: str | None) -> Database:
    if database_url is None:
        return SqliteDatabase(data_dir / "schedule.sqlite")
    return PostgresDatabase(database_url)
