"""Idempotency-Keys stored in the event store's own transaction (SPEC §8, ADR 0023).

"Commands accept an ``Idempotency-Key`` header: the same key and body within 24 h return
the first result and record nothing new." A key's record (`application.idempotency.
KeyRecord`: the request's fingerprint, the API key that sent it, the sealed answer) lives
in the table ``webround_idempotency`` *of the database that holds the command's events*,
and is inserted by the application's recorder in the transaction that inserts them:

- `KeyedPostgresRecorder` and `KeyedSQLiteRecorder` are eventsourcing's application
  recorders plus that insert, done in the ``_insert_events`` hook when ``save()`` passes
  ``idempotency=KeyRecord``. After any crash the events and the key's record are both
  there or both absent. Selected per application by ``<APP>_APPLICATION_RECORDER_TOPIC``
  (`recorder_topic`, used by `infrastructure.persistence`).
- A record younger than 24 h (``ENTRY_TTL``) is unique per ``(store_id, key)``: the
  second of two racing requests fails its whole transaction and `AlreadyAnswered` is
  raised; an older record is replaced in the same transaction.
- `KeyLedger` reads records for the edge (``find``), records the answers of commands
  that saved nothing keyed (``remember``: a refusal, a command of another application)
  in a transaction of their own, and deletes records older than 24 h now and then.

Embedded mode: one SQLite file per application, so each keyed application's file has its
own table and ``find`` looks in each. PostgreSQL: one table in the database's schema,
shared by the applications (the table of earlier versions, with ``key_id`` added; its
unfinished rows, ``status`` NULL, count as absent).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol
from uuid import UUID

import psycopg
from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor
from eventsourcing.utils import get_topic, retry
from psycopg.sql import SQL, Composed, Identifier

from application.idempotency import AlreadyAnswered, Answer, KeyRecord
from infrastructure.tracking import (
    Ddl,
    PostgresFollowerRecorder,
    SqliteFollowerRecorder,
    apply_ddl,
    postgres_dialect,
)

__all__ = [
    "ENTRY_TTL",
    "MAX_KEY_LENGTH",
    "TABLE",
    "KeyLedger",
    "KeyTable",
    "KeyedPostgresRecorder",
    "KeyedSQLiteRecorder",
    "fingerprint",
    "recorder_topic",
    "sealing_context",
]

ENTRY_TTL: Final = timedelta(hours=24)
MAX_KEY_LENGTH: Final = 255
TABLE: Final = "webround_idempotency"
PURGE_EVERY: Final = timedelta(minutes=10)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def fingerprint(method: str, path: str, body: bytes) -> str:
    """SHA-256 (hex) of a request's method, path and body, unambiguously framed."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode()):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    digest.update(body)
    return digest.hexdigest()


def sealing_context(store_id: UUID, key: str) -> str:
    """What a stored answer is sealed to (`SealingKeeper`): answers are confidential —
    the answer to creating a webhook holds its signing secret."""
    return f"idempotency:{store_id}:{key}"


def recorder_topic(embedded: bool) -> str:
    """The eventsourcing topic of the keyed application recorder of a mode."""
    return get_topic(KeyedSQLiteRecorder if embedded else KeyedPostgresRecorder)


class KeyTable(Protocol):
    """The key records of one database (a keyed recorder provides it)."""

    @property
    def key_place(self) -> str:
        """Which table this is: recorders sharing one table say the same."""
        ...

    def select_key(self, store_id: UUID, key: str) -> KeyRecord | None:
        """The key's finished record, of any age."""
        ...

    def insert_key(self, record: KeyRecord) -> None:
        """Record an answer in a transaction of its own (`AlreadyAnswered` if taken)."""
        ...

    def purge_keys(self, before: datetime) -> int:
        """Delete the records made before ``before``; return how many."""
        ...


class KeyLedger:
    """The edge's view of the key records of every keyed application."""

    def __init__(self, tables: Sequence[KeyTable]) -> None:
        places: dict[str, KeyTable] = {}
        for table in tables:
            places.setdefault(table.key_place, table)
        if not places:
            raise ValueError("a key ledger needs at least one table")
        self._tables = list(places.values())
        self._lock = threading.Lock()
        self._next_purge: datetime | None = None

    def find(self, store_id: UUID, key: str, now: datetime) -> KeyRecord | None:
        """The record of the key younger than 24 h, if any (in whichever database)."""
        self._purge_now_and_then(now)
        for table in self._tables:
            record = table.select_key(store_id, key)
            if record is not None and now - record.recorded_at <= ENTRY_TTL:
                return record
        return None

    def remember(self, record: KeyRecord) -> None:
        """Record an answer that no keyed save recorded (`AlreadyAnswered` if taken)."""
        self._tables[0].insert_key(record)

    def purge(self, now: datetime) -> int:
        """Delete the records older than 24 h everywhere; return how many."""
        return sum(table.purge_keys(now - ENTRY_TTL) for table in self._tables)

    def _purge_now_and_then(self, now: datetime) -> None:
        # Expired records already count as absent; deleting them only bounds the tables.
        with self._lock:
            due = self._next_purge is None or now >= self._next_purge
            if due:
                self._next_purge = now + PURGE_EVERY
        if due:
            self.purge(now)


def _record(store_id: UUID, key: str, row: Any, recorded_at: datetime) -> KeyRecord:
    """A record as read from a row of either database (its time read by the caller)."""
    return KeyRecord(
        store_id=store_id,
        key=key,
        fingerprint=row["fingerprint"],
        key_id=row["key_id"],
        recorded_at=recorded_at,
        answer=Answer(row["status"], bytes(row["body"]), row["content_type"]),
    )


def _refused_key(record: KeyRecord) -> AlreadyAnswered:
    return AlreadyAnswered(record.store_id, record.key)


# PostgreSQL ------------------------------------------------------------------------------


class KeyedPostgresRecorder(PostgresApplicationRecorder):
    """eventsourcing's PostgreSQL application recorder, recording Idempotency-Keys with
    the events: the key's insert is pipelined before the table lock and the events'."""

    def __init__(self, datastore: PostgresDatastore, **tables: Any) -> None:
        super().__init__(datastore, **tables)
        table = SQL("{}.{}").format(Identifier(self.datastore.schema), Identifier(TABLE))
        self._key_ddl = [
            Ddl(
                "table",
                TABLE,
                SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " store_id uuid NOT NULL,"
                    " key text NOT NULL,"
                    " fingerprint text NOT NULL,"
                    " created_at timestamptz NOT NULL,"
                    " status integer,"
                    " body bytea,"
                    " content_type text,"
                    " key_id text,"
                    " PRIMARY KEY (store_id, key))"
                )
                .format(table)
                .as_string(),
            ),
            # Tables made by earlier versions lack the API key of the request.
            Ddl(
                "column",
                f"{TABLE}.key_id",
                SQL("ALTER TABLE {} ADD COLUMN key_id text").format(table).as_string(),
            ),
            Ddl(
                "index",
                f"{TABLE}_created_at",
                SQL("CREATE INDEX IF NOT EXISTS {} ON {} (created_at)")
                .format(Identifier(f"{TABLE}_created_at"), table)
                .as_string(),
            ),
        ]
        # An expired record, or an unfinished one of an earlier version, gives way.
        self._delete_stale: Composed = SQL(
            "DELETE FROM {} WHERE store_id = %s AND key = %s"
            " AND (created_at < %s OR status IS NULL)"
        ).format(table)
        self._insert_key_statement: Composed = SQL(
            "INSERT INTO {} (store_id, key, fingerprint, created_at, status, body,"
            " content_type, key_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        ).format(table)
        self._select_key: Composed = SQL(
            "SELECT fingerprint, created_at, status, body, content_type, key_id FROM {}"
            " WHERE store_id = %s AND key = %s AND status IS NOT NULL"
        ).format(table)
        self._purge: Composed = SQL("DELETE FROM {} WHERE created_at < %s").format(table)

    def create_table(self) -> None:
        super().create_table()  # eventsourcing's tables, in a transaction of their own
        from infrastructure.sql import transaction

        # The keys' table apart, created only where missing (see `apply_ddl`: DDL at
        # every start would lock against the running processes' writes).
        with transaction(self.datastore) as c:
            apply_ddl(c, postgres_dialect(self.datastore.schema), self._key_ddl)

    @property
    def key_place(self) -> str:
        return f"postgresql schema {self.datastore.schema}"

    def insert_events(self, stored_events: Sequence[Any], **kwargs: Any) -> Sequence[int] | None:
        record: KeyRecord | None = kwargs.get("idempotency")
        try:
            notification_ids: Sequence[int] | None = super().insert_events(stored_events, **kwargs)
        except IntegrityError as error:
            if record is not None and _on_key_table(error):
                raise _refused_key(record) from None
            raise
        return notification_ids

    def _insert_events(self, curs: Any, stored_events: Sequence[Any], **kwargs: Any) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        record: KeyRecord | None = kwargs.get("idempotency")
        if record is not None:
            self._write_key(curs, record)

    def _write_key(self, curs: Any, record: KeyRecord) -> None:
        answer = record.answer
        curs.execute(self._delete_stale, (record.store_id, record.key, _expiry(record)))
        curs.execute(
            self._insert_key_statement,
            (
                record.store_id,
                record.key,
                record.fingerprint,
                record.recorded_at,
                answer.status,
                answer.body,
                answer.content_type,
                record.key_id,
            ),
        )

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.1)
    def select_key(self, store_id: UUID, key: str) -> KeyRecord | None:
        with self.datastore.get_connection() as connection:
            row = connection.execute(self._select_key, (store_id, key)).fetchone()
        return None if row is None else _record(store_id, key, row, row["created_at"])

    def insert_key(self, record: KeyRecord) -> None:
        try:
            with self.datastore.transaction(commit=True) as curs:
                self._write_key(curs, record)
        except IntegrityError as error:
            if _on_key_table(error):
                raise _refused_key(record) from None
            raise

    def purge_keys(self, before: datetime) -> int:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self._purge, (before,))
            return curs.rowcount


def _on_key_table(error: IntegrityError) -> bool:
    """Whether a unique violation is about a key's record (not about the events)."""
    cause = error.__cause__
    return isinstance(cause, psycopg.errors.UniqueViolation) and cause.diag.table_name == TABLE


def _expiry(record: KeyRecord) -> datetime:
    return record.recorded_at - ENTRY_TTL


# SQLite ----------------------------------------------------------------------------------

_SQLITE_CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS webround_idempotency ("
    " store_id TEXT NOT NULL,"
    " key TEXT NOT NULL,"
    " fingerprint TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " status INTEGER NOT NULL,"
    " body BLOB NOT NULL,"
    " content_type TEXT NOT NULL,"
    " key_id TEXT,"
    " PRIMARY KEY (store_id, key))"
)
_SQLITE_CREATE_INDEX = (
    "CREATE INDEX IF NOT EXISTS webround_idempotency_created_at"
    " ON webround_idempotency (created_at)"
)
_SQLITE_DELETE_STALE = (
    "DELETE FROM webround_idempotency WHERE store_id = ? AND key = ? AND created_at < ?"
)
_SQLITE_INSERT = (
    "INSERT INTO webround_idempotency (store_id, key, fingerprint, created_at, status,"
    " body, content_type, key_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_SELECT = (
    "SELECT fingerprint, created_at, status, body, content_type, key_id"
    " FROM webround_idempotency WHERE store_id = ? AND key = ?"
)
_SQLITE_PURGE = "DELETE FROM webround_idempotency WHERE created_at < ?"


class KeyedSQLiteRecorder(SQLiteApplicationRecorder):
    """eventsourcing's SQLite application recorder, recording Idempotency-Keys with the
    events in the application's own file. Times are integer microseconds since the epoch."""

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            _SQLITE_CREATE_TABLE,
            _SQLITE_CREATE_INDEX,
        ]

    @property
    def key_place(self) -> str:
        return f"sqlite {self.datastore.pool.db_name}"

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[Any], **kwargs: Any
    ) -> Sequence[int] | None:
        record: KeyRecord | None = kwargs.get("idempotency")
        if record is not None:
            self._write_key(c, record)
        return super()._insert_events(c, stored_events, **kwargs)

    def _write_key(self, c: SQLiteCursor, record: KeyRecord) -> None:
        answer = record.answer
        c.execute(
            _SQLITE_DELETE_STALE, (str(record.store_id), record.key, _micros(_expiry(record)))
        )
        try:
            c.execute(
                _SQLITE_INSERT,
                (
                    str(record.store_id),
                    record.key,
                    record.fingerprint,
                    _micros(record.recorded_at),
                    answer.status,
                    answer.body,
                    answer.content_type,
                    record.key_id,
                ),
            )
        except sqlite3.IntegrityError:
            # Raised inside the transaction: it rolls back whole, events included.
            raise _refused_key(record) from None

    def select_key(self, store_id: UUID, key: str) -> KeyRecord | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(_SQLITE_SELECT, (str(store_id), key))
            row = c.fetchone()
        if row is None:
            return None
        return _record(store_id, key, row, _EPOCH + row["created_at"] * _MICROSECOND)

    def insert_key(self, record: KeyRecord) -> None:
        with self.datastore.transaction(commit=True) as c:
            self._write_key(c, record)

    def purge_keys(self, before: datetime) -> int:
        with self.datastore.transaction(commit=True) as c:
            c.execute(_SQLITE_PURGE, (_micros(before),))
            c.execute("SELECT changes()")
            deleted: int = c.fetchone()[0]
            return deleted


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("idempotency times must be timezone-aware")
    return (moment - _EPOCH) // _MICROSECOND


class KeyedPostgresFollowerRecorder(KeyedPostgresRecorder, PostgresFollowerRecorder):
    """A keyed recorder that followers also write into (its saves may carry tracking
    records: the webhooks store, which the webhook policies follow into)."""


class KeyedSQLiteFollowerRecorder(KeyedSQLiteRecorder, SqliteFollowerRecorder):
    """`KeyedPostgresFollowerRecorder` for SQLite."""


def follower_recorder_topic(embedded: bool) -> str:
    """The eventsourcing topic of the keyed process recorder of a mode."""
    return get_topic(KeyedSQLiteFollowerRecorder if embedded else KeyedPostgresFollowerRecorder)
