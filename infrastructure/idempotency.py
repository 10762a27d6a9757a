"""Idempotency keys for command requests (SPEC §8).

"Commands accept an ``Idempotency-Key`` header: the same key and body within 24 h return
the first result and record nothing new." The API wraps each command request of a store
(tenant) like this::

    outcome = idempotency.begin(store_id, key, fingerprint(method, path, body), now)
    match outcome:
        case Replay(response=response): ...  # answer with the stored response
        case InProgress(): ...               # 409: the first request is still running
        case Mismatch(): ...                 # 422: the key was used for another request
        case Proceed():
            try:
                response = run_the_command()
            except Exception:
                idempotency.abandon(store_id, key)  # a retry may run it again
                raise
            idempotency.finish(store_id, key, response)

Rules, the same on both backends:

- An entry is identified by ``(store_id, key)``: the same key from two stores is two
  entries. Keys are 1 to 255 characters without control characters (``ValueError``).
- Entries older than 24 h (``ENTRY_TTL``) count as absent and ``purge`` deletes them.
- An entry still in progress after 60 s (``IN_PROGRESS_TIMEOUT``) was left by a request
  that never finished (a killed process): it counts as abandoned and the next ``begin``
  takes it over (``Proceed``, with a fresh 24 h window).
- ``begin`` is atomic: of any number of concurrent requests with the same key, in this
  process or in others, exactly one gets ``Proceed``.
- ``finish`` stores the response of an entry still in progress and never overwrites a
  finished one (the first result wins); ``abandon`` forgets an entry still in progress
  and never a finished one. Both do nothing when the entry is gone.
- Times are timezone-aware datetimes passed in by the caller (``ValueError`` if naive).

Embedded mode keeps the entries in their own SQLite file (``idempotency.sqlite`` in the
data directory); production mode in the table ``webround_idempotency`` of the PostgreSQL
database (in the ``?schema=`` schema when the URL names one). Nothing here touches the
file system or the network at import time.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from uuid import UUID

from infrastructure.settings import Settings

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg_pool import ConnectionPool

__all__ = [
    "ENTRY_TTL",
    "IN_PROGRESS_TIMEOUT",
    "MAX_KEY_LENGTH",
    "IdempotencyStore",
    "InProgress",
    "Mismatch",
    "Outcome",
    "PostgresIdempotencyStore",
    "Proceed",
    "Replay",
    "SqliteIdempotencyStore",
    "StoredResponse",
    "fingerprint",
    "open_idempotency_store",
]

ENTRY_TTL: Final = timedelta(hours=24)
IN_PROGRESS_TIMEOUT: Final = timedelta(seconds=60)
MAX_KEY_LENGTH: Final = 255
SQLITE_FILENAME: Final = "idempotency.sqlite"
TABLE: Final = "webround_idempotency"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_SQLITE_BUSY_TIMEOUT_SECONDS: Final = 10.0
_POSTGRES_CONNECT_TIMEOUT_SECONDS: Final = 5
_POSTGRES_POOL_WAIT_SECONDS: Final = 10.0
_POSTGRES_BEGIN_ATTEMPTS: Final = 5
# pg_advisory_xact_lock key serialising our DDL between processes starting together.
_DDL_LOCK_ID: Final = 0x7765_6272_6964_656D  # "webridem"


@dataclass(frozen=True)
class StoredResponse:
    """The response of the first request, replayed byte for byte."""

    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Proceed:
    """First use of the key (or the old entry expired or was abandoned): run the command."""


@dataclass(frozen=True)
class Replay:
    """The same request finished before: answer with its response, record nothing new."""

    response: StoredResponse


@dataclass(frozen=True)
class InProgress:
    """The same request is still running (the API answers 409)."""


@dataclass(frozen=True)
class Mismatch:
    """The key was used for a different request (the API answers 422)."""


Outcome = Proceed | Replay | InProgress | Mismatch


class IdempotencyStore(Protocol):
    """Where idempotency entries live; see the module docstring for the rules."""

    def begin(self, store_id: UUID, key: str, fingerprint: str, now: datetime) -> Outcome:
        """Claim ``key`` for a request, or say why it cannot run."""
        ...

    def finish(self, store_id: UUID, key: str, response: StoredResponse) -> None:
        """Record the response of the request that got ``Proceed``."""
        ...

    def abandon(self, store_id: UUID, key: str) -> None:
        """Forget an unfinished entry (the command failed) so that a retry can run."""
        ...

    def purge(self, now: datetime) -> int:
        """Delete the entries older than 24 h; return how many were deleted."""
        ...

    def close(self) -> None:
        """Release files and connections."""
        ...


def fingerprint(method: str, path: str, body: bytes) -> str:
    """SHA-256 (hex) of a request's method, path and body, unambiguously framed."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode()):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    digest.update(body)
    return digest.hexdigest()


def open_idempotency_store(settings: Settings) -> IdempotencyStore:
    """The store of the configured mode: PostgreSQL when a database URL is set, else SQLite."""
    if settings.database_url is None:
        return SqliteIdempotencyStore(settings.data_dir / SQLITE_FILENAME)
    return PostgresIdempotencyStore(settings.database_url)


def _check_key(key: str) -> None:
    if not 0 < len(key) <= MAX_KEY_LENGTH:
        raise ValueError(f"an idempotency key has 1 to {MAX_KEY_LENGTH} characters")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in key):
        raise ValueError("an idempotency key contains no control characters")


def _check_now(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("idempotency times must be timezone-aware")


@dataclass(frozen=True)
class _Entry:
    fingerprint: str
    age: timedelta
    response: StoredResponse | None


def _judge(entry: _Entry | None, fingerprint: str) -> Outcome | None:
    """The outcome an existing entry dictates, or None when the caller may take the key."""
    if entry is None or entry.age > ENTRY_TTL:
        return None
    if entry.response is None and entry.age > IN_PROGRESS_TIMEOUT:
        return None
    if entry.fingerprint != fingerprint:
        return Mismatch()
    if entry.response is None:
        return InProgress()
    return Replay(entry.response)


def _response(status: int, body: bytes, content_type: str) -> StoredResponse:
    return StoredResponse(status=status, body=bytes(body), content_type=content_type)


class _ContextManager:
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class SqliteIdempotencyStore(_ContextManager):
    """Entries in their own SQLite file (WAL), shared safely by threads and processes.

    One connection serves all threads under a lock; writes run in ``BEGIN IMMEDIATE``
    transactions, so other processes on the same file are serialised by SQLite itself.
    Times are stored as integer microseconds since the epoch (UTC).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(
            path,
            timeout=_SQLITE_BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
            with self._transaction() as connection:
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS webround_idempotency ("
                    " store_id TEXT NOT NULL,"
                    " key TEXT NOT NULL,"
                    " fingerprint TEXT NOT NULL,"
                    " created_at INTEGER NOT NULL,"
                    " status INTEGER,"
                    " body BLOB,"
                    " content_type TEXT,"
                    " PRIMARY KEY (store_id, key))"
                )
                connection.execute(
                    "CREATE INDEX IF NOT EXISTS webround_idempotency_created_at"
                    " ON webround_idempotency (created_at)"
                )
        except BaseException:
            self._connection.close()
            raise

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

    def begin(self, store_id: UUID, key: str, fingerprint: str, now: datetime) -> Outcome:
        _check_key(key)
        _check_now(now)
        now_us = (now - _EPOCH) // _MICROSECOND
        with self._transaction() as connection:
            row = connection.execute(
                "SELECT fingerprint, created_at, status, body, content_type"
                " FROM webround_idempotency WHERE store_id = ? AND key = ?",
                (str(store_id), key),
            ).fetchone()
            entry = None
            if row is not None:
                stored_fingerprint, created_us, status, body, content_type = row
                entry = _Entry(
                    fingerprint=stored_fingerprint,
                    age=timedelta(microseconds=now_us - created_us),
                    response=None if status is None else _response(status, body, content_type),
                )
            outcome = _judge(entry, fingerprint)
            if outcome is not None:
                return outcome
            connection.execute(
                "INSERT OR REPLACE INTO webround_idempotency"
                " (store_id, key, fingerprint, created_at, status, body, content_type)"
                " VALUES (?, ?, ?, ?, NULL, NULL, NULL)",
                (str(store_id), key, fingerprint, now_us),
            )
            return Proceed()

    def finish(self, store_id: UUID, key: str, response: StoredResponse) -> None:
        _check_key(key)
        with self._transaction() as connection:
            connection.execute(
                "UPDATE webround_idempotency SET status = ?, body = ?, content_type = ?"
                " WHERE store_id = ? AND key = ? AND status IS NULL",
                (response.status, response.body, response.content_type, str(store_id), key),
            )

    def abandon(self, store_id: UUID, key: str) -> None:
        _check_key(key)
        with self._transaction() as connection:
            connection.execute(
                "DELETE FROM webround_idempotency"
                " WHERE store_id = ? AND key = ? AND status IS NULL",
                (str(store_id), key),
            )

    def purge(self, now: datetime) -> int:
        _check_now(now)
        cutoff_us = (now - ENTRY_TTL - _EPOCH) // _MICROSECOND
        with self._transaction() as connection:
            cursor = connection.execute(
                "DELETE FROM webround_idempotency WHERE created_at < ?", (cutoff_us,)
            )
            return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def _split_database_url(database_url: str) -> tuple[str, str | None]:
    """The libpq DSN (``schema`` removed from the query) and the schema, if any."""
    parts = urlsplit(database_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for name, value in query if name == "schema"]
    rest = [(name, value) for name, value in query if name != "schema"]
    dsn = urlunsplit(parts._replace(query=urlencode(rest)))
    return dsn, (schemas[0] if schemas and schemas[0] else None)


class PostgresIdempotencyStore(_ContextManager):
    """Entries in the PostgreSQL table ``webround_idempotency``, through a small pool.

    ``begin`` inserts with ``ON CONFLICT DO NOTHING``; on a conflict it locks the existing
    row (``SELECT … FOR UPDATE``) and decides within the same transaction, so concurrent
    requests with one key, from any process, are serialised by the row lock.
    """

    def __init__(self, database_url: str) -> None:
        from psycopg import sql
        from psycopg_pool import ConnectionPool

        dsn, schema = _split_database_url(database_url)
        table = sql.Identifier(schema, TABLE) if schema else sql.Identifier(TABLE)
        self._create_schema = (
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            if schema
            else None
        )
        self._create_table = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " store_id UUID NOT NULL,"
            " key TEXT NOT NULL,"
            " fingerprint TEXT NOT NULL,"
            " created_at TIMESTAMPTZ NOT NULL,"
            " status INTEGER,"
            " body BYTEA,"
            " content_type TEXT,"
            " PRIMARY KEY (store_id, key))"
        ).format(table)
        self._create_index = sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (created_at)").format(
            sql.Identifier(f"{TABLE}_created_at"), table
        )
        self._insert = sql.SQL(
            "INSERT INTO {} (store_id, key, fingerprint, created_at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING 1"
        ).format(table)
        self._select_for_update = sql.SQL(
            "SELECT fingerprint, created_at, status, body, content_type FROM {}"
            " WHERE store_id = %s AND key = %s FOR UPDATE"
        ).format(table)
        self._take_over = sql.SQL(
            "UPDATE {} SET fingerprint = %s, created_at = %s,"
            " status = NULL, body = NULL, content_type = NULL"
            " WHERE store_id = %s AND key = %s"
        ).format(table)
        self._finish = sql.SQL(
            "UPDATE {} SET status = %s, body = %s, content_type = %s"
            " WHERE store_id = %s AND key = %s AND status IS NULL"
        ).format(table)
        self._abandon = sql.SQL(
            "DELETE FROM {} WHERE store_id = %s AND key = %s AND status IS NULL"
        ).format(table)
        self._purge = sql.SQL("DELETE FROM {} WHERE created_at < %s").format(table)

        self._pool: ConnectionPool[Connection[tuple[Any, ...]]] = ConnectionPool(
            dsn,
            min_size=1,
            max_size=4,
            open=True,
            kwargs={"connect_timeout": _POSTGRES_CONNECT_TIMEOUT_SECONDS},
            name="webround-idempotency",
            # A connection the server closed (a restart) is replaced before use, instead
            # of failing the request that happens to draw it.
            check=ConnectionPool.check_connection,
        )
        try:
            self._pool.wait(timeout=_POSTGRES_POOL_WAIT_SECONDS)
            self._migrate(schema)
        except BaseException:
            self._pool.close()
            raise

    def _migrate(self, schema: str | None) -> None:
        # The advisory lock keeps processes starting together from racing on the catalog
        # (concurrent CREATE … IF NOT EXISTS can still fail on a unique index).
        with self._pool.connection() as connection:
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK_ID,))
            if self._create_schema is not None:
                # CREATE SCHEMA needs the CREATE privilege even when the schema exists.
                exists = connection.execute(
                    "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
                ).fetchone()
                if exists is None:
                    connection.execute(self._create_schema)
            connection.execute(self._create_table)
            connection.execute(self._create_index)

    def begin(self, store_id: UUID, key: str, fingerprint: str, now: datetime) -> Outcome:
        _check_key(key)
        _check_now(now)
        # One read-committed transaction: each statement sees the latest commits, so a row
        # deleted between the conflicting INSERT and the SELECT is simply inserted anew.
        with self._pool.connection() as connection:
            for _ in range(_POSTGRES_BEGIN_ATTEMPTS):
                inserted = connection.execute(
                    self._insert, (store_id, key, fingerprint, now)
                ).fetchone()
                if inserted is not None:
                    return Proceed()
                row = connection.execute(self._select_for_update, (store_id, key)).fetchone()
                if row is not None:
                    break
            else:
                raise RuntimeError(f"idempotency key {key!r} keeps changing under us")
            stored_fingerprint, created_at, status, body, content_type = row
            entry = _Entry(
                fingerprint=stored_fingerprint,
                age=now - created_at,
                response=None if status is None else _response(status, body, content_type),
            )
            outcome = _judge(entry, fingerprint)
            if outcome is not None:
                return outcome
            connection.execute(self._take_over, (fingerprint, now, store_id, key))
            return Proceed()

    def finish(self, store_id: UUID, key: str, response: StoredResponse) -> None:
        _check_key(key)
        with self._pool.connection() as connection:
            connection.execute(
                self._finish,
                (response.status, response.body, response.content_type, store_id, key),
            )

    def abandon(self, store_id: UUID, key: str) -> None:
        _check_key(key)
        with self._pool.connection() as connection:
            connection.execute(self._abandon, (store_id, key))

    def purge(self, now: datetime) -> int:
        _check_now(now)
        with self._pool.connection() as connection:
            return connection.execute(self._purge, (now - ENTRY_TTL,)).rowcount

    def close(self) -> None:
        self._pool.close()
