"""The durable delivery schedule: a SQL table of due deliveries, projected from the
dispatch log with its tracking position in the same transaction (exactly once).

The dispatcher *claims* due rows for a lease before it enqueues them; a row leaves the
table only when its delivery succeeds or fails for good, so a message lost with a killed
worker or broker comes back when its lease runs out. Retries due in hours are rows here,
not messages in a worker's memory.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

from application.dispatch import Dispatch
from domain.delivery import DeliveryAttempted, DeliveryScheduled
from projections.schedule import Change, Due, Retry, schedule_change

_TOPICS = [f"{cls.__module__}:{cls.__qualname__}" for cls in (DeliveryScheduled, DeliveryAttempted)]


@dataclass(frozen=True)
class Claimed:
    delivery_id: UUID
    webhook_id: UUID
    envelope_id: UUID
    store_id: UUID
    attempt: int


class Schedule(Protocol):
    def catch_up(self, dispatch: Dispatch, limit: int = 1000) -> int: ...
    def claim(self, now: datetime, limit: int, lease_seconds: float) -> list[Claimed]: ...
    def postpone(self, delivery_id: UUID, due_at: datetime) -> None: ...
    def release_leases(self) -> int: ...
    def in_flight(self, now: datetime) -> int: ...
    def pending(self) -> int: ...
    def position(self) -> int: ...
    def close(self) -> None: ...


def _ts(moment: datetime) -> float:
    return moment.astimezone(UTC).timestamp()


def _pull(dispatch: Dispatch, start: int, limit: int) -> tuple[list[Change], int]:
    """The schedule changes after ``start``, and the position they bring us to."""
    head = dispatch.recorder.max_notification_id() or 0
    if head <= start:
        return [], start
    notifications = dispatch.recorder.select_notifications(
        start=start + 1, limit=limit, stop=head, topics=_TOPICS
    )
    # Fewer than asked for means every notification up to ``head`` was seen.
    position = notifications[-1].id if len(notifications) == limit else head
    changes = [schedule_change(dispatch.mapper.to_domain_event(n)) for n in notifications]
    return [c for c in changes if c is not None], position


class SqliteSchedule:
    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        # Outside any transaction: SQLite refuses to change the journal mode inside one.
        self._connection.execute("PRAGMA journal_mode=WAL")
        with self._transaction() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS due_deliveries ("
                " delivery_id TEXT PRIMARY KEY, webhook_id TEXT NOT NULL,"
                " envelope_id TEXT NOT NULL, store_id TEXT NOT NULL,"
                " attempt INTEGER NOT NULL, due_at REAL NOT NULL, lease_until REAL)"
            )
            c.execute("CREATE INDEX IF NOT EXISTS due_deliveries_due ON due_deliveries (due_at)")
            c.execute(
                "CREATE TABLE IF NOT EXISTS due_tracking (id INTEGER PRIMARY KEY CHECK (id = 1),"
                " position INTEGER NOT NULL)"
            )
            c.execute("INSERT OR IGNORE INTO due_tracking VALUES (1, 0)")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    def position(self) -> int:
        with self._transaction() as c:
            return int(c.execute("SELECT position FROM due_tracking").fetchone()[0])

    def catch_up(self, dispatch: Dispatch, limit: int = 1000) -> int:
        start = self.position()
        changes, position = _pull(dispatch, start, limit)
        if position == start:
            return 0
        with self._transaction() as c:
            # The position moves forward only: a second dispatcher would fail here
            # rather than apply the same changes twice.
            c.execute("UPDATE due_tracking SET position = ? WHERE position = ?", (position, start))
            if c.rowcount != 1:
                raise RuntimeError("the schedule was advanced by another process")
            for change in changes:
                self._apply(c, change)
        return len(changes)

    def _apply(self, c: sqlite3.Cursor, change: Change) -> None:
        if isinstance(change, Due):
            c.execute(
                "INSERT OR IGNORE INTO due_deliveries VALUES (?, ?, ?, ?, 1, ?, NULL)",
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
                "UPDATE due_deliveries SET attempt = ?, due_at = ?, lease_until = NULL "
                "WHERE delivery_id = ? AND attempt < ?",
                (
                    change.next_attempt,
                    _ts(change.due_at),
                    str(change.delivery_id),
                    change.next_attempt,
                ),
            )
        else:
            c.execute(
                "DELETE FROM due_deliveries WHERE delivery_id = ?", (str(change.delivery_id),)
            )

    def claim(self, now: datetime, limit: int, lease_seconds: float) -> list[Claimed]:
        moment = _ts(now)
        with self._transaction() as c:
            rows = c.execute(
                "SELECT delivery_id, webhook_id, envelope_id, store_id, attempt "
                "FROM due_deliveries WHERE due_at <= ? AND (lease_until IS NULL OR "
                "lease_until < ?) ORDER BY due_at LIMIT ?",
                (moment, moment, limit),
            ).fetchall()
            c.executemany(
                "UPDATE due_deliveries SET lease_until = ? WHERE delivery_id = ?",
                [(moment + lease_seconds, row[0]) for row in rows],
            )
        return [_claimed(row) for row in rows]

    def postpone(self, delivery_id: UUID, due_at: datetime) -> None:
        with self._transaction() as c:
            c.execute(
                "UPDATE due_deliveries SET due_at = ?, lease_until = NULL WHERE delivery_id = ?",
                (_ts(due_at), str(delivery_id)),
            )

    def release_leases(self) -> int:
        with self._transaction() as c:
            c.execute("UPDATE due_deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL")
            return c.rowcount

    def in_flight(self, now: datetime) -> int:
        with self._transaction() as c:
            row = c.execute(
                "SELECT count(*) FROM due_deliveries WHERE lease_until >= ?", (_ts(now),)
            ).fetchone()
        return int(row[0])

    def pending(self) -> int:
        with self._transaction() as c:
            return int(c.execute("SELECT count(*) FROM due_deliveries").fetchone()[0])

    def close(self) -> None:
        self._connection.close()


def _claimed(row: Sequence[Any]) -> Claimed:
    return Claimed(
        UUID(str(row[0])), UUID(str(row[1])), UUID(str(row[2])), UUID(str(row[3])), int(row[4])
    )


class PostgresSchedule:
    def __init__(self, database_url: str) -> None:
        from psycopg import sql
        from psycopg_pool import ConnectionPool

        schema = parse_qs(urlsplit(database_url).query).get("schema", ["public"])[0]
        dsn = database_url.split("?", 1)[0]
        self._pool = ConnectionPool(dsn, min_size=1, max_size=3, open=True, timeout=10)
        self._due = sql.Identifier(schema, "dispatch_due")
        self._tracking = sql.Identifier(schema, "dispatch_due_tracking")
        self._sql = sql
        with self._pool.connection() as conn:
            conn.execute(sql.SQL("SELECT pg_advisory_xact_lock(hashtext('webround.schedule'))"))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (delivery_id uuid PRIMARY KEY,"
                    " webhook_id uuid NOT NULL, envelope_id uuid NOT NULL, store_id uuid NOT NULL,"
                    " attempt integer NOT NULL, due_at double precision NOT NULL,"
                    " lease_until double precision)"
                ).format(self._due)
            )
            conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS dispatch_due_at ON {} (due_at)").format(
                    self._due
                )
            )
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id integer PRIMARY KEY CHECK (id = 1),"
                    " position bigint NOT NULL)"
                ).format(self._tracking)
            )
            conn.execute(
                sql.SQL("INSERT INTO {} VALUES (1, 0) ON CONFLICT DO NOTHING").format(
                    self._tracking
                )
            )

    def _q(self, text: str) -> Any:
        return self._sql.SQL(text).format(due=self._due, tracking=self._tracking)

    def position(self) -> int:
        with self._pool.connection() as conn:
            row = conn.execute(self._q("SELECT position FROM {tracking}")).fetchone()
        assert row is not None
        return int(row[0])

    def catch_up(self, dispatch: Dispatch, limit: int = 1000) -> int:
        start = self.position()
        changes, position = _pull(dispatch, start, limit)
        if position == start:
            return 0
        with self._pool.connection() as conn, conn.transaction():
            cursor = conn.execute(
                self._q("UPDATE {tracking} SET position = %s WHERE position = %s"),
                (position, start),
            )
            if cursor.rowcount != 1:
                raise RuntimeError("the schedule was advanced by another process")
            for change in changes:
                self._apply(conn, change)
        return len(changes)

    def _apply(self, conn: Any, change: Change) -> None:
        if isinstance(change, Due):
            conn.execute(
                self._q(
                    "INSERT INTO {due} VALUES (%s, %s, %s, %s, 1, %s, NULL) ON CONFLICT DO NOTHING"
                ),
                (
                    change.delivery_id,
                    change.webhook_id,
                    change.envelope_id,
                    change.store_id,
                    _ts(change.due_at),
                ),
            )
        elif isinstance(change, Retry):
            conn.execute(
                self._q(
                    "UPDATE {due} SET attempt = %s, due_at = %s, lease_until = NULL "
                    "WHERE delivery_id = %s AND attempt < %s"
                ),
                (change.next_attempt, _ts(change.due_at), change.delivery_id, change.next_attempt),
            )
        else:
            conn.execute(self._q("DELETE FROM {due} WHERE delivery_id = %s"), (change.delivery_id,))

    def claim(self, now: datetime, limit: int, lease_seconds: float) -> list[Claimed]:
        moment = _ts(now)
        with self._pool.connection() as conn:
            rows = conn.execute(
                self._q(
                    "UPDATE {due} SET lease_until = %s WHERE delivery_id IN ("
                    " SELECT delivery_id FROM {due} WHERE due_at <= %s AND"
                    " (lease_until IS NULL OR lease_until < %s) ORDER BY due_at LIMIT %s"
                    " FOR UPDATE SKIP LOCKED)"
                    " RETURNING delivery_id, webhook_id, envelope_id, store_id, attempt"
                ),
                (moment + lease_seconds, moment, moment, limit),
            ).fetchall()
        return [_claimed(row) for row in rows]

    def postpone(self, delivery_id: UUID, due_at: datetime) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                self._q("UPDATE {due} SET due_at = %s, lease_until = NULL WHERE delivery_id = %s"),
                (_ts(due_at), delivery_id),
            )

    def release_leases(self) -> int:
        with self._pool.connection() as conn:
            cursor = conn.execute(
                self._q("UPDATE {due} SET lease_until = NULL WHERE lease_until IS NOT NULL")
            )
            return cursor.rowcount

    def in_flight(self, now: datetime) -> int:
        with self._pool.connection() as conn:
            row = conn.execute(
                self._q("SELECT count(*) FROM {due} WHERE lease_until >= %s"), (_ts(now),)
            ).fetchone()
        assert row is not None
        return int(row[0])

    def pending(self) -> int:
        with self._pool.connection() as conn:
            row = conn.execute(self._q("SELECT count(*) FROM {due}")).fetchone()
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        self._pool.close()
