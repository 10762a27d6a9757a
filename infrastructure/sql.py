"""Transactions for our own SQL, on an eventsourcing datastore's connections.

Our tables — the delivery schedule beside the dispatch events, the read models beside
their tracking records — live in the databases of eventsourcing recorders and use those
recorders' connections (`PostgresDatastore`'s pool, `SQLiteDatastore`'s connections), so
that a process keeps one set of connections per database, and so that what must commit
together can.

`transaction` gives a cursor whose rows are tuples, on either database. Options:

- ``write=False``: a read (rolled back at the end; on SQLite no write lock is taken).
- ``durable=False``: for derived data written with its tracking record (read models):
  on PostgreSQL the commit does not wait for the WAL flush (``synchronous_commit =
  off``). A crash can then lose the last few commits — rows and position together — and
  the follower applies those events again (docs/adr/0012-batched-projections-and-wake-ups.md).
- ``lock``: a table to lock in EXCLUSIVE mode first (PostgreSQL). On SQLite a write
  transaction takes the database's one write lock as it begins (``BEGIN IMMEDIATE``),
  waiting its turn: a transaction that read first and wrote later could find another
  writer committed since its snapshot, and fail at once ("database is locked").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteCursor, SQLiteDatastore, SQLiteTransaction
from psycopg.rows import tuple_row


@contextmanager
def transaction(
    datastore: PostgresDatastore | SQLiteDatastore,
    *,
    write: bool = True,
    durable: bool = True,
    lock: str | None = None,
) -> Iterator[Any]:
    if isinstance(datastore, PostgresDatastore):
        with (
            datastore.get_connection() as connection,
            connection.transaction(force_rollback=not write),
            connection.cursor(row_factory=tuple_row) as cursor,
        ):
            if not durable:
                cursor.execute("SET LOCAL synchronous_commit = off")
            if lock is not None:
                cursor.execute(f"LOCK TABLE {lock} IN EXCLUSIVE MODE")
            yield cursor
    else:
        with datastore.get_connection(commit=write) as lite:
            begin = (_Immediate if write else SQLiteTransaction)(lite, commit=write)
            with begin as lite_cursor, lite_cursor:
                yield lite_cursor.sqlite_cursor  # the driver's own: it has rowcount


class _Immediate(SQLiteTransaction):
    """eventsourcing's SQLite transaction (its errors, its commit), begun IMMEDIATE."""

    def __enter__(self) -> SQLiteCursor:
        cursor = self.connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        return cursor
