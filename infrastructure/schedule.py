"""The durable delivery schedule: SQL tables of due deliveries and of each webhook's
health, kept in the dispatch event store's own database and written in the same
transaction as the events that change them.

The dispatch application's recorder (`PostgresDispatchRecorder`, `SqliteDispatchRecorder`,
chosen by `infrastructure.persistence.application_env`) writes a save's `ScheduleWrite`
(`application.schedule`) before its events, in one transaction: a delivery scheduled is
a due row, an attempt recorded moves or removes it and counts in its webhook's health.
No follower reads the log again for it, and rows and events can never disagree.

The dispatcher *claims* due rows for a lease before it enqueues them (`Schedule.claim`);
a row leaves the table only when its delivery succeeds or fails for good, so a message
lost with a killed worker or broker comes back when its lease runs out. Retries due in
hours are rows here, not messages in a worker's memory.

Claims isolate webhooks from each other: at most ``per_webhook`` deliveries of one webhook
are in flight at once, and a webhook whose circuit is open (it kept failing, see
`domain.delivery.CircuitPolicy`) gets none until its cool-down ends, then one probe.

Locks, on PostgreSQL: a save takes row locks on its due rows, then on its webhooks' health
rows, each in id order, and only then eventsourcing's table lock on the events table
(held to the commit): one order for every writer, so writers never deadlock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore

from application.follow import partition_of
from application.schedule import (
    Folded,
    HealthRecord,
    Outcome,
    ScheduleWrite,
    fold_outcomes,
    schedule_write,
)
from application.views import timestamp
from domain.delivery import CircuitPolicy
from infrastructure.sql import transaction
from infrastructure.tracking import (
    SQLITE,
    Ddl,
    Dialect,
    PostgresFollowerRecorder,
    SqliteFollowerRecorder,
)


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


def _str_or_none(value: UUID | None) -> str | None:
    return None if value is None else str(value)


# Bound parameters per ``IN (...)`` list: well within SQLite's and PostgreSQL's limits.
_IN_LIST = 500


def _create_statements(d: Dialect) -> list[Ddl]:
    t = d.types
    columns = [
        # Tables of earlier versions lack these columns (PostgreSQL; a SQLite table is
        # new in dispatch.sqlite): added empty, filled by `migrate_legacy_schedule`.
        Ddl(
            "column",
            f"due_deliveries.{name}",
            d.sql(f"ALTER TABLE {{t}}due_deliveries ADD COLUMN {name} {kind}"),
        )
        for name, kind in (
            ("entity_id", "text"),
            ("position", "bigint"),
            ("partition", "bigint NOT NULL DEFAULT 0"),
        )
    ]
    return [
        Ddl(
            "table",
            "due_deliveries",
            d.sql(
                "CREATE TABLE IF NOT EXISTS {t}due_deliveries ("
                f" delivery_id {t['text']} PRIMARY KEY, webhook_id {t['text']} NOT NULL,"
                f" envelope_id {t['text']} NOT NULL, store_id {t['text']} NOT NULL,"
                f" attempt {t['integer']} NOT NULL, due_at {t['real']} NOT NULL,"
                f" lease_until {t['real']}, entity_id {t['text']}, position {t['integer']},"
                f" partition {t['integer']} NOT NULL DEFAULT 0)"
            ),
        ),
        *(columns if d.postgres else []),
        *(
            Ddl(
                "index",
                name,
                d.sql(f"CREATE INDEX IF NOT EXISTS {name} ON {{t}}due_deliveries ({on})"),
            )
            for name, on in (
                ("due_deliveries_partition", "partition, due_at"),
                ("due_deliveries_due", "due_at"),
                ("due_deliveries_webhook", "webhook_id, lease_until"),
                ("due_deliveries_lease", "lease_until"),
            )
        ),
        Ddl(
            "table",
            "webhook_health",
            d.sql(
                "CREATE TABLE IF NOT EXISTS {t}webhook_health ("
                f" webhook_id {t['text']} PRIMARY KEY,"
                f" consecutive_failures {t['integer']} NOT NULL,"
                f" failing_since {t['real']}, last_success_at {t['real']}, open_until {t['real']})"
            ),
        ),
    ]


class UnexpectedAttempt(IntegrityError):
    """A save records an attempt its delivery is not due for: recorded already (a
    redelivered message, a lease that ran out while the first try was under way), or for
    a delivery that does not exist. The whole save is refused."""


def write_schedule(cursor: Any, d: Dialect, write: ScheduleWrite) -> None:
    """Apply a save's schedule changes and health outcomes with ``cursor``, inside the
    save's transaction (before its events: see the module's note on locks)."""
    if write.expected:
        _check_expected(cursor, d, write.expected)
    _apply_changes(cursor, d, write.changes)
    if write.outcomes:
        _record_outcomes(cursor, d, write.outcomes, write.policy)


def _check_expected(c: Any, d: Dialect, expected: Sequence[tuple[UUID, int]]) -> None:
    """Each (delivery, attempt) must have its due row at that attempt; the rows are
    locked (in id order) until the save commits."""
    wanted = {str(delivery_id): number for delivery_id, number in expected}
    if len(wanted) != len(expected):
        raise UnexpectedAttempt("two attempts of one delivery in one save")
    ids = sorted(wanted)
    found: dict[str, int] = {}
    for start in range(0, len(ids), _IN_LIST):
        chunk = ids[start : start + _IN_LIST]
        c.execute(
            d.sql(
                "SELECT delivery_id, attempt FROM {t}due_deliveries"  # noqa: S608 (placeholders only)
                f" WHERE delivery_id IN ({', '.join('?' * len(chunk))})"
                f" ORDER BY delivery_id{d.for_update}"
            ),
            chunk,
        )
        for row in c.fetchall():
            found[str(_col(row, 0, "delivery_id"))] = int(_col(row, 1, "attempt"))
    for delivery_id, number in wanted.items():
        if found.get(delivery_id) != number:
            raise UnexpectedAttempt(
                f"delivery {delivery_id} is not due for attempt {number}"
                f" (due: {found.get(delivery_id, 'nothing')})"
            )


def _apply_changes(c: Any, d: Dialect, folded: Folded) -> None:
    # In this order (see `Folded`): a delivery may have both a delete and an insert, or
    # an update and an insert, in one batch. Each kind in delivery id order: the row
    # locks of concurrent savers are always taken in one order.
    if folded.deletes:
        c.executemany(
            d.sql("DELETE FROM {t}due_deliveries WHERE delivery_id = ?"),
            [(str(i),) for i in sorted(folded.deletes)],
        )
    if folded.updates:
        c.executemany(
            d.sql(
                "UPDATE {t}due_deliveries SET attempt = ?, due_at = ?, lease_until = NULL "
                "WHERE delivery_id = ? AND attempt < ?"
            ),
            [
                (r.next_attempt, _ts(r.due_at), str(r.delivery_id), r.next_attempt)
                for r in sorted(folded.updates, key=lambda r: r.delivery_id)
            ],
        )
    if folded.inserts:
        c.executemany(
            d.sql(
                "INSERT INTO {t}due_deliveries (delivery_id, webhook_id, envelope_id,"
                " store_id, attempt, due_at, lease_until, entity_id, position, partition)"
                " VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?) ON CONFLICT DO NOTHING"
            ),
            [
                (
                    str(r.delivery_id),
                    str(r.webhook_id),
                    str(r.envelope_id),
                    str(r.store_id),
                    r.attempt,
                    _ts(r.due_at),
                    _str_or_none(r.entity_id),
                    r.position,
                    r.partition,
                )
                for r in sorted(folded.inserts, key=lambda r: r.delivery_id)
            ],
        )


def _record_outcomes(
    c: Any, d: Dialect, outcomes: Sequence[Outcome], policy: CircuitPolicy
) -> None:
    """Count outcomes in their webhooks' health: make sure each webhook has a row, lock
    the rows (in id order), fold the outcomes in log order from them, write them back."""
    webhook_ids = sorted({str(o.webhook_id) for o in outcomes})
    c.executemany(
        d.sql(
            "INSERT INTO {t}webhook_health VALUES (?, 0, NULL, NULL, NULL) "
            "ON CONFLICT (webhook_id) DO NOTHING"
        ),
        [(w,) for w in webhook_ids],
    )
    current: dict[UUID, HealthRecord] = {}
    for start in range(0, len(webhook_ids), _IN_LIST):
        chunk = webhook_ids[start : start + _IN_LIST]
        c.execute(
            d.sql(
                "SELECT webhook_id, consecutive_failures, failing_since, last_success_at,"  # noqa: S608 (placeholders only)
                f" open_until FROM {{t}}webhook_health WHERE webhook_id IN"
                f" ({', '.join('?' * len(chunk))}) ORDER BY webhook_id{d.for_update}"
            ),
            chunk,
        )
        for row in c.fetchall():
            current[UUID(str(_col(row, 0, "webhook_id")))] = _record(row)
    records = fold_outcomes(current, outcomes, policy)
    c.executemany(
        d.sql(
            "UPDATE {t}webhook_health SET consecutive_failures = ?, failing_since = ?,"
            " last_success_at = ?, open_until = ? WHERE webhook_id = ?"
        ),
        [
            (
                r.consecutive_failures,
                _ts_or_none(r.failing_since),
                _ts_or_none(r.last_success_at),
                _ts_or_none(r.open_until),
                str(webhook_id),
            )
            for webhook_id, r in sorted(records.items())
        ],
    )


def _col(row: Any, index: int, name: str) -> Any:
    """A column of a row from either driver's cursor in a recorder's transaction
    (psycopg's dict rows there; sqlite3.Row reads both ways)."""
    return row[name] if isinstance(row, dict) else row[index]


def _record(row: Any) -> HealthRecord:
    """A webhook_health row's record (a row of webhook_id and the four columns)."""
    return HealthRecord(
        int(_col(row, 1, "consecutive_failures")),
        _dt(_col(row, 2, "failing_since")),
        _dt(_col(row, 3, "last_success_at")),
        _dt(_col(row, 4, "open_until")),
    )


# The dispatch event store's recorders ------------------------------------------------


class PostgresDispatchRecorder(PostgresFollowerRecorder):
    """The dispatch application's PostgreSQL recorder: its events, its followers' lanes,
    and the schedule written with them (``schedule=`` on `insert_events`)."""

    def extra_create_statements(self) -> list[Ddl]:
        return [*_create_statements(self.dialect), *super().extra_create_statements()]

    def write_extras(self, c: Any, kwargs: dict[str, Any]) -> None:
        super().write_extras(c, kwargs)
        _write_schedule_of(c, self.dialect, kwargs)


class SqliteDispatchRecorder(SqliteFollowerRecorder):
    """The dispatch application's SQLite recorder (see `PostgresDispatchRecorder`)."""

    def extra_create_statements(self) -> list[Ddl]:
        return [*_create_statements(SQLITE), *super().extra_create_statements()]

    def write_extras(self, c: Any, kwargs: dict[str, Any]) -> None:
        super().write_extras(c, kwargs)
        _write_schedule_of(c, self.dialect, kwargs)


def _write_schedule_of(c: Any, d: Dialect, kwargs: dict[str, Any]) -> None:
    write: ScheduleWrite | None = kwargs.get("schedule")
    if write is not None and not write.empty:
        write_schedule(c, d, write)


# Claims and reads -----------------------------------------------------------------------


class Schedule:
    """Claims and reads of the schedule, on the dispatch event store's database (through
    its recorder's connections)."""

    def __init__(self, recorder: Any, policy: CircuitPolicy | None = None) -> None:
        if not isinstance(recorder, PostgresDispatchRecorder | SqliteDispatchRecorder):
            raise TypeError(f"no schedule in a {type(recorder).__name__}")
        self._datastore: PostgresDatastore | SQLiteDatastore = recorder.datastore
        self._d = recorder.dialect
        self.policy = policy or CircuitPolicy()

    def _transaction(self, write: bool = True) -> Any:
        """A cursor whose rows are tuples, in a transaction (committed if ``write``)."""
        return transaction(self._datastore, write=write)

    def claim(
        self,
        now: datetime,
        limit: int,
        lease_seconds: float,
        per_webhook: int = 1_000_000,
        max_in_flight: int | None = None,
        *,
        per_store: int = 1_000_000,
        partitions: Sequence[int] | None = None,
    ) -> list[Claimed]:
        """Lease up to ``limit`` due deliveries of these ``partitions`` (None: all),
        oldest first: at most ``per_webhook`` of one webhook and ``per_store`` of one
        store in flight; none of a webhook whose circuit is open, one probe of a webhook
        whose circuit is half-open; of one entity to one webhook, one at a time (so a
        healthy endpoint gets an entity's events in log order); given ``max_in_flight``,
        no more than bring the deliveries in flight (`in_flight`) to that many in all."""
        moment = _ts(now)
        if partitions is not None and not partitions:
            return []
        where_partition, partition_params = self._in_partitions("d.", partitions)
        busy_partition, busy_params = self._in_partitions("", partitions)
        if max_in_flight is None:
            room, room_params = "?", [limit]
        else:
            # What is left of max_in_flight, up to limit (never negative: SQLite reads a
            # negative LIMIT as none at all).
            room = (
                "(SELECT CASE WHEN r < 0 THEN 0 WHEN r < ? THEN r ELSE ? END"
                " FROM (SELECT ? - COUNT(*) AS r FROM busy) AS room)"
            )
            room_params = [limit, limit, max_in_flight]
        with self._transaction() as c:
            c.execute(
                self._d.sql(
                    # In flight: leased, lease not run out.
                    "WITH busy AS (SELECT webhook_id, store_id, entity_id"  # noqa: S608 (ours, not input)
                    f"  FROM {{t}}due_deliveries WHERE lease_until >= ?{busy_partition}),"
                    " busy_webhook AS (SELECT webhook_id, count(*) AS n FROM busy"
                    "  GROUP BY webhook_id),"
                    " busy_store AS (SELECT store_id, count(*) AS n FROM busy GROUP BY store_id),"
                    " busy_entity AS (SELECT DISTINCT webhook_id, entity_id FROM busy"
                    "  WHERE entity_id IS NOT NULL),"
                    # Due, unleased rows, ranked oldest first per webhook, per store and per
                    # (webhook, entity). A webhook whose circuit is open or already at its
                    # cap, a store at its cap, an entity with a delivery in flight to the
                    # webhook: left out before the ranking (their held rows, however many,
                    # cost no sorting). A webhook's cap is per_webhook, or 1 (one probe)
                    # while its circuit is half-open.
                    " candidates AS (SELECT d.delivery_id, d.due_at, d.entity_id,"
                    "  COALESCE(bw.n, 0) AS w_busy, COALESCE(bs.n, 0) AS s_busy,"
                    "  CASE WHEN h.open_until IS NULL THEN ? ELSE 1 END AS cap,"
                    "  ROW_NUMBER() OVER (PARTITION BY d.webhook_id"
                    "   ORDER BY d.due_at, d.position) AS w_rank,"
                    "  ROW_NUMBER() OVER (PARTITION BY d.store_id"
                    "   ORDER BY d.due_at, d.position) AS s_rank,"
                    "  ROW_NUMBER() OVER (PARTITION BY d.webhook_id, d.entity_id"
                    "   ORDER BY d.position, d.due_at) AS e_rank"
                    "  FROM {t}due_deliveries d"
                    "  LEFT JOIN {t}webhook_health h ON h.webhook_id = d.webhook_id"
                    "  LEFT JOIN busy_webhook bw ON bw.webhook_id = d.webhook_id"
                    "  LEFT JOIN busy_store bs ON bs.store_id = d.store_id"
                    # (An anti-join, not NOT EXISTS: hashed, not a loop per candidate.)
                    "  LEFT JOIN busy_entity be ON be.webhook_id = d.webhook_id"
                    "   AND be.entity_id = d.entity_id"
                    "  WHERE d.due_at <= ? AND (d.lease_until IS NULL OR d.lease_until < ?)"
                    "  AND be.webhook_id IS NULL"
                    f"  {where_partition}"
                    "  AND (h.open_until IS NULL OR h.open_until <= ?)"
                    "  AND COALESCE(bw.n, 0) < CASE WHEN h.open_until IS NULL THEN ? ELSE 1 END"
                    "  AND COALESCE(bs.n, 0) < ?),"
                    " chosen AS (SELECT delivery_id FROM candidates"
                    "  WHERE w_rank + w_busy <= cap AND s_rank + s_busy <= ?"
                    "  AND (entity_id IS NULL OR e_rank = 1)"
                    f"  ORDER BY due_at LIMIT {room}),"
                    # PostgreSQL: lock the chosen rows, skipping those another transaction
                    # holds (a concurrent claim, or a save recording their attempt), so
                    # that claims never wait for locks in another order (a deadlock).
                    " taken AS (SELECT delivery_id FROM {t}due_deliveries"
                    f"  WHERE delivery_id IN (SELECT delivery_id FROM chosen){self._d.skip_locked})"
                    # Re-checked as each row is taken: on PostgreSQL a row that a
                    # concurrent claim leased since this one's snapshot is found leased and
                    # skipped, so no row is handed out twice (SQLite runs one writer at a
                    # time).
                    " UPDATE {t}due_deliveries SET lease_until = ?"
                    " WHERE delivery_id IN (SELECT delivery_id FROM taken)"
                    " AND (lease_until IS NULL OR lease_until < ?)"
                    " RETURNING delivery_id, webhook_id, envelope_id, store_id, attempt, due_at"
                ),
                [
                    moment,
                    *busy_params,
                    per_webhook,
                    moment,
                    moment,
                    *partition_params,
                    moment,
                    per_webhook,
                    per_store,
                    per_store,
                    *room_params,
                    moment + lease_seconds,
                    moment,
                ],
            )
            rows = c.fetchall()
        # RETURNING comes in no particular order.
        return [_claimed(row) for row in sorted(rows, key=lambda row: float(row[5]))]

    @staticmethod
    def _in_partitions(alias: str, partitions: Sequence[int] | None) -> tuple[str, list[int]]:
        if partitions is None:
            return "", []
        marks = ", ".join("?" * len(partitions))
        return f" AND {alias}partition IN ({marks})", list(partitions)

    def postpone(self, delivery_id: UUID, due_at: datetime) -> None:
        with self._transaction() as c:
            c.execute(
                self._d.sql(
                    "UPDATE {t}due_deliveries SET due_at = ?, lease_until = NULL"
                    " WHERE delivery_id = ?"
                ),
                (_ts(due_at), str(delivery_id)),
            )

    def release_leases(self) -> int:
        with self._transaction() as c:
            c.execute(
                self._d.sql(
                    "UPDATE {t}due_deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL"
                )
            )
            return int(c.rowcount)

    # Reads ---------------------------------------------------------------------------

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._transaction(write=False) as c:
            c.execute(self._d.sql(sql), params)
            return c.fetchone()[0]

    def next_due(self, now: datetime, partitions: Sequence[int] | None = None) -> datetime | None:
        """When something of these partitions may next be claimable that is not now: a
        retry falling due, a lease running out, an open circuit's cool-down ending (None:
        nothing pending). Rows due now but not claimed are held by caps, freed by
        attempts being recorded (a commit wakes the dispatcher), so they are not
        counted."""
        moment = _ts(now)
        if partitions is not None and not partitions:
            return None
        where, params = self._in_partitions("", partitions)
        with self._transaction(write=False) as c:
            found = []
            due = "SELECT min(due_at) FROM {t}due_deliveries WHERE due_at > ?"
            leased = "SELECT min(lease_until) FROM {t}due_deliveries WHERE lease_until >= ?"
            opens = "SELECT min(open_until) FROM {t}webhook_health WHERE open_until > ?"
            for sql, extra in ((due + where, params), (leased + where, params), (opens, [])):
                c.execute(self._d.sql(sql), (moment, *extra))
                value = c.fetchone()[0]
                if value is not None:
                    found.append(float(value))
        return _dt(min(found)) if found else None

    def in_flight(self, now: datetime) -> int:
        return int(
            self._one("SELECT count(*) FROM {t}due_deliveries WHERE lease_until >= ?", (_ts(now),))
        )

    def pending(self) -> int:
        return int(self._one("SELECT count(*) FROM {t}due_deliveries"))

    def oldest_due(self, now: datetime) -> float:
        """Seconds the oldest due, unclaimed delivery has waited (queue lag)."""
        oldest = self._one(
            "SELECT min(due_at) FROM {t}due_deliveries WHERE due_at <= ? "
            "AND (lease_until IS NULL OR lease_until < ?)",
            (_ts(now), _ts(now)),
        )
        return 0.0 if oldest is None else max(_ts(now) - float(oldest), 0.0)

    def circuits_open(self, now: datetime) -> int:
        """Webhooks whose circuit is open at ``now`` (held until their cool-down ends)."""
        return int(
            self._one("SELECT count(*) FROM {t}webhook_health WHERE open_until > ?", (_ts(now),))
        )

    def health(self, webhook_id: UUID) -> Health:
        with self._transaction(write=False) as c:
            c.execute(
                self._d.sql(
                    "SELECT webhook_id, consecutive_failures, failing_since, last_success_at,"
                    " open_until FROM {t}webhook_health WHERE webhook_id = ?"
                ),
                (str(webhook_id),),
            )
            row = c.fetchone()
        r = HealthRecord() if row is None else _record(row)
        return Health(
            webhook_id, r.consecutive_failures, r.failing_since, r.last_success_at, r.open_until
        )

    def failing_for_too_long(self, now: datetime) -> list[UUID]:
        """Webhooks whose every attempt has failed for the policy's ``disable_after``."""
        cutoff = _ts(now - self.policy.disable_after)
        with self._transaction(write=False) as c:
            c.execute(
                self._d.sql("SELECT webhook_id FROM {t}webhook_health WHERE failing_since <= ?"),
                (cutoff,),
            )
            return [UUID(str(row[0])) for row in c.fetchall()]

    def forgive(self, webhook_id: UUID) -> None:
        """Start a re-enabled webhook with a clean record (closed circuit)."""
        with self._transaction() as c:
            c.execute(
                self._d.sql(
                    "UPDATE {t}webhook_health SET consecutive_failures = 0, failing_since = NULL,"
                    " open_until = NULL WHERE webhook_id = ?"
                ),
                (str(webhook_id),),
            )

    def close(self) -> None:
        """Nothing of its own to close: the connections are the event store's."""


def _claimed(row: Sequence[Any]) -> Claimed:
    return Claimed(
        UUID(str(row[0])), UUID(str(row[1])), UUID(str(row[2])), UUID(str(row[3])), int(row[4])
    )


# Upgrading an installation ----------------------------------------------------------------


def migrate_legacy_schedule(dispatch: Any, data_dir: Path) -> bool:
    """Bring a schedule kept by an earlier version — a projection of the dispatch log
    with its own position (``due_tracking``; embedded: in ``schedule.sqlite``) — into the
    tables written with the events: its rows are kept (with their store's partition), the
    events it had not applied yet are applied, and the old position (and file) are
    retired. Idempotent; True when there was something to migrate. Run once at start,
    under the schema lock."""
    recorder = dispatch.recorder
    d: Dialect = recorder.dialect
    partitions: int = dispatch.partitions
    legacy_file = data_dir / "schedule.sqlite"
    with transaction(recorder.datastore) as c:
        if d.postgres:
            c.execute("SELECT to_regclass('due_tracking')")
            if c.fetchone()[0] is None:
                return False
            # Rows of the earlier version: their partition column was added empty.
            c.execute("SELECT delivery_id, store_id FROM due_deliveries")
            c.executemany(
                "UPDATE due_deliveries SET partition = %s WHERE delivery_id = %s",
                [(partition_of(UUID(store), partitions), i) for i, store in c.fetchall()],
            )
            c.execute("SELECT position FROM due_tracking")
            row = c.fetchone()
        else:
            if not legacy_file.exists():
                return False
            legacy = sqlite3.connect(legacy_file)
            try:
                due = legacy.execute(
                    "SELECT delivery_id, webhook_id, envelope_id, store_id, attempt, due_at"
                    " FROM due_deliveries"
                ).fetchall()
                health = legacy.execute("SELECT * FROM webhook_health").fetchall()
                row = legacy.execute("SELECT position FROM due_tracking").fetchone()
            finally:
                legacy.close()
            c.executemany(
                "INSERT OR IGNORE INTO due_deliveries (delivery_id, webhook_id, envelope_id,"
                " store_id, attempt, due_at, partition) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*r, partition_of(UUID(r[3]), partitions)) for r in due],
            )
            c.executemany("INSERT OR IGNORE INTO webhook_health VALUES (?, ?, ?, ?, ?)", health)
        position = int(row[0]) if row else 0
        # The events the old projection had not applied yet: folded, as one save would.
        events: list[Any] = []
        while notifications := recorder.select_notifications(start=position + 1, limit=1000):
            events.extend(dispatch.mapper.to_domain_event(n) for n in notifications)
            position = notifications[-1].id
        write = schedule_write(events, dispatch.circuit, partitions)
        write_schedule(c, d, replace(write, expected=()))
        if d.postgres:
            c.execute("DROP TABLE due_tracking")
    if not d.postgres:
        legacy_file.rename(legacy_file.with_name("schedule.sqlite.migrated"))
    return True
