"""SQL plumbing shared by our own tables (read models, the delivery schedule): one
`Database` interface over SQLite (embedded) and PostgreSQL (production).

SQLite: one connection per thread, WAL, and ``BEGIN IMMEDIATE`` transactions — SQLite's
single write lock serialises writers across threads and processes. PostgreSQL: a small
pool whose connections use the configured schema as their search path.

Everything kept here is derived from the event stores (projections with their tracking
position in the same transaction), so a transaction may be opened ``durable=False``: on
PostgreSQL its commit does not wait for the WAL flush (``synchronous_commit = off``),
and SQLite files run ``synchronous=NORMAL`` in WAL mode. A crash can then lose the last
few commits — rows and position together — and the projection does them again
(docs/adr/0012-batched-projections-and-wake-ups.md).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit


class Cursor(Protocol):
    @property
    def description(self) -> Any: ...

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def executemany(self, sql: str, params_seq: Iterable[Sequence[Any]]) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def fetchone(self) -> Any: ...


class Database(Protocol):
    placeholder: str
    types: dict[str, str]

    def transaction(
        self, *, exclusive: bool = False, write: bool = True, durable: bool = True
    ) -> Any: ...
    def close(self) -> None: ...


class SqliteDatabase:
    placeholder = "?"
    types = {"text": "TEXT", "integer": "INTEGER", "real": "REAL"}

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=30
            )
            connection.execute("PRAGMA journal_mode=WAL")
            # Derived data only (see the module's docstring): in WAL mode NORMAL keeps
            # every commit atomic and skips the fsync per commit.
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    @contextmanager
    def transaction(
        self, *, exclusive: bool = False, write: bool = True, durable: bool = True
    ) -> Iterator[Cursor]:
        # One connection per thread; BEGIN IMMEDIATE takes SQLite's single write lock,
        # which is also what serialises a rebuild's swap against the live writer. Reads
        # (write=False) take a snapshot without it, so they never wait behind a writer.
        cursor = self._connection().cursor()
        cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield cursor
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()


_CHECK_IDLE_SECONDS = 2.0


class PostgresDatabase:
    placeholder = "%s"
    types = {"text": "text", "integer": "bigint", "real": "double precision"}

    def __init__(self, database_url: str) -> None:
        from psycopg_pool import ConnectionPool

        self._last_used: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        schema = parse_qs(urlsplit(database_url).query).get("schema", ["public"])[0]
        dsn = database_url.split("?", 1)[0]
        self._pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=4,
            open=True,
            timeout=10,
            kwargs={"options": f"-c search_path={schema}"},
            check=self._check,  # survive a database restart
        )

    def _check(self, connection: Any) -> None:
        # A round trip before every transaction doubled the cost of the small ones; a
        # connection used moments ago is taken as it is (were the server restarted in
        # between, that one transaction fails, the pool drops the connection and the
        # caller's loop retries).
        last = self._last_used.get(connection)
        if last is None or time.monotonic() - last > _CHECK_IDLE_SECONDS:
            from psycopg_pool import ConnectionPool

            ConnectionPool.check_connection(connection)

    @contextmanager
    def transaction(
        self, *, exclusive: bool = False, write: bool = True, durable: bool = True
    ) -> Iterator[Cursor]:
        with self._pool.connection() as connection, connection.transaction():
            cursor = connection.cursor()
            if not durable:
                cursor.execute("SET LOCAL synchronous_commit = off")
            if exclusive:
                # The read models' writer updates rm_tracking in every batch: this lock
                # holds it off while a rebuild swaps tables.
                cursor.execute("LOCK TABLE rm_tracking IN EXCLUSIVE MODE")
            yield cursor
        self._last_used[connection] = time.monotonic()

    def close(self) -> None:
        self._pool.close()
