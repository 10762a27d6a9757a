"""The SQL side of the read models: apply, track, rebuild aside and swap, checksum.

Tables are named ``rm_<table>``; their positions in each source log live in
``rm_tracking``. A batch of events and the new position commit in one transaction, and
the position moves only from the value the batch started at, so two writers can never
apply the same events twice. A rebuild fills ``rm_<table>__next`` from position zero while
the live tables keep serving, then — holding the write lock — catches up the last events
and swaps the tables in one transaction.

SQLite (embedded: ``readmodels.sqlite`` in the data directory) and PostgreSQL
(production: tables in the configured database and schema) speak the same SQL here, but
for placeholders and column types.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.application import Application

from infrastructure.sql import Cursor, Database, PostgresDatabase, SqliteDatabase
from projections.readmodels import (
    BY_NAME,
    READ_MODELS,
    Add,
    Context,
    Operation,
    ReadModel,
    Table,
    Update,
    Upsert,
)

NEXT = "__next"
BATCH = 500


@dataclass(frozen=True)
class Status:
    model: str
    source: str
    position: int
    head: int

    @property
    def lag(self) -> int:
        return max(self.head - self.position, 0)


class ReadModelStore:
    """Keeps the read models of `projections.readmodels` in step with the event stores."""

    def __init__(
        self,
        database: Database,
        sources: dict[str, Application[Any]],
        context: Context,
    ) -> None:
        self.db = database
        self._sources = sources
        self._context = context
        self._ph = database.placeholder
        with self.db.transaction() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS rm_tracking (model TEXT, source TEXT, "
                f"position {database.types['integer']} NOT NULL, PRIMARY KEY (model, source))"
            )
            for model in READ_MODELS:
                self._create(c, model, suffix="")

    # Catching up -------------------------------------------------------------------

    def catch_up_all(self, limit: int = BATCH) -> int:
        return sum(self.catch_up(model, limit=limit) for model in READ_MODELS)

    def catch_up(self, model: ReadModel, *, suffix: str = "", limit: int = BATCH) -> int:
        """Apply up to ``limit`` new events of each source; returns how many were read."""
        done = 0
        for source in model.sources:
            start = self._position(model.name + suffix, source)
            app = self._sources[source]
            notifications = app.recorder.select_notifications(start=start + 1, limit=limit)
            if not notifications:
                continue
            operations = [
                operation
                for n in notifications
                for operation in model.handle(
                    source, n.id, app.mapper.to_domain_event(n), self._context
                )
            ]
            with self.db.transaction() as c:
                self._advance(c, model.name + suffix, source, start, notifications[-1].id)
                self._apply(c, operations, suffix)
            done += len(notifications)
        return done

    def _position(self, name: str, source: str) -> int:
        with self.db.transaction() as c:
            return self._position_in(c, name, source)

    def _advance(self, c: Cursor, name: str, source: str, start: int, position: int) -> None:
        ph = self._ph
        if start == 0:
            c.execute(
                f"INSERT INTO rm_tracking VALUES ({ph}, {ph}, {ph}) ON CONFLICT DO NOTHING",
                (name, source, 0),
            )
        result = c.execute(
            f"UPDATE rm_tracking SET position = {ph} "
            f"WHERE model = {ph} AND source = {ph} AND position = {ph}",
            (position, name, source, start),
        )
        if result.rowcount != 1:
            # Another writer moved this model on (or a rebuild swapped it in): this batch
            # is rolled back and the next pass starts from the new position.
            raise StalePosition(f"{name} on {source} moved past {start}")

    def _apply(self, c: Cursor, operations: Sequence[Operation], suffix: str) -> None:
        ph = self._ph
        for op in operations:
            table = f"rm_{op.table}{suffix}"
            if isinstance(op, Update):
                sets = ", ".join(f"{k} = {ph}" for k in op.values)
                where = " AND ".join(f"{k} = {ph}" for k in op.key)
                c.execute(
                    f"UPDATE {table} SET {sets} WHERE {where}",
                    (*op.values.values(), *op.key.values()),
                )
                continue
            key = _table(op.table).key
            columns = list(op.row)
            placeholders = ", ".join([ph] * len(columns))
            if isinstance(op, Add):
                updates = [
                    f"{k} = {table}.{k} + excluded.{k}"
                    if k in op.counters
                    else f"{k} = excluded.{k}"
                    for k in columns
                    if k not in key
                ]
            else:
                assert isinstance(op, Upsert)
                updates = [f"{k} = excluded.{k}" for k in columns if k not in key]
            c.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) "
                f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {', '.join(updates)}",
                tuple(op.row.values()),
            )

    # Rebuild -----------------------------------------------------------------------

    def rebuild(self, model: ReadModel, progress: Callable[[int, int], None] | None = None) -> int:
        """Rebuild ``model`` from position zero beside the live tables, then swap it in.
        Returns how many events were read. The live tables answer queries throughout."""
        with self.db.transaction() as c:
            self._drop(c, model, NEXT)
            self._create(c, model, suffix=NEXT)
            c.execute(f"DELETE FROM rm_tracking WHERE model = {self._ph}", (model.name + NEXT,))
        head = sum(self._head(source) for source in model.sources)
        read = 0
        while True:
            step = self.catch_up(model, suffix=NEXT, limit=2000)
            read += step
            if progress:
                progress(read, max(head, read))
            if step == 0:
                break
        # The last events, recorded while we rebuilt, under the write lock; then the swap.
        with self.db.transaction(exclusive=True) as c:
            for source in model.sources:
                start = self._position_in(c, model.name + NEXT, source)
                app = self._sources[source]
                while True:
                    notifications = app.recorder.select_notifications(start=start + 1, limit=2000)
                    if not notifications:
                        break
                    operations = [
                        op
                        for n in notifications
                        for op in model.handle(
                            source, n.id, app.mapper.to_domain_event(n), self._context
                        )
                    ]
                    self._advance(c, model.name + NEXT, source, start, notifications[-1].id)
                    self._apply(c, operations, NEXT)
                    read += len(notifications)
                    start = notifications[-1].id
            self._swap(c, model)
        return read

    def _position_in(self, c: Cursor, name: str, source: str) -> int:
        ph = self._ph
        c.execute(
            f"SELECT position FROM rm_tracking WHERE model = {ph} AND source = {ph}", (name, source)
        )
        row = c.fetchone()
        return int(row[0]) if row else 0

    def _swap(self, c: Cursor, model: ReadModel) -> None:
        self._drop(c, model, "")
        for table in model.tables:
            c.execute(f"ALTER TABLE rm_{table.name}{NEXT} RENAME TO rm_{table.name}")
            # Indexes keep the names they were built under; give them the live names
            # (SQLite cannot rename an index, so drop and create: the same everywhere).
            for index in table.indexes:
                c.execute(f"DROP INDEX IF EXISTS {_index_name(table, index, NEXT)}")
            self._index(c, table, "")
        c.execute(f"DELETE FROM rm_tracking WHERE model = {self._ph}", (model.name,))
        c.execute(
            f"UPDATE rm_tracking SET model = {self._ph} WHERE model = {self._ph}",
            (model.name, model.name + NEXT),
        )

    def _create(self, c: Cursor, model: ReadModel, suffix: str) -> None:
        types = self.db.types
        for table in model.tables:
            name = f"rm_{table.name}{suffix}"
            columns = ", ".join(f"{col} {types[kind]}" for col, kind in table.columns.items())
            key = ", ".join(table.key)
            c.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns}, PRIMARY KEY ({key}))")
            self._index(c, table, suffix)

    def _index(self, c: Cursor, table: Table, suffix: str) -> None:
        for index in table.indexes:
            c.execute(
                f"CREATE INDEX IF NOT EXISTS {_index_name(table, index, suffix)} "
                f"ON rm_{table.name}{suffix} ({', '.join(index)})"
            )

    def _drop(self, c: Cursor, model: ReadModel, suffix: str) -> None:
        for table in model.tables:
            c.execute(f"DROP TABLE IF EXISTS rm_{table.name}{suffix}")

    # Status and checksum -----------------------------------------------------------

    def _head(self, source: str) -> int:
        return self._sources[source].recorder.max_notification_id() or 0

    def status(self) -> list[Status]:
        return [
            Status(model.name, source, self._position(model.name, source), self._head(source))
            for model in READ_MODELS
            for source in model.sources
        ]

    def checksum(self, names: Sequence[str] | None = None) -> str:
        """One digest of every row of the read models (same rows, same digest)."""
        digest = hashlib.sha256()
        for model in READ_MODELS if names is None else [BY_NAME[n] for n in names]:
            for table in model.tables:
                columns = list(table.columns)
                with self.db.transaction(write=False) as c:
                    c.execute(
                        f"SELECT {', '.join(columns)} FROM rm_{table.name} "
                        f"ORDER BY {', '.join(table.key)}"
                    )
                    rows = c.fetchall()
                digest.update(table.name.encode())
                for row in rows:
                    digest.update(json.dumps(list(row), default=str).encode())
        return digest.hexdigest()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts; ``sql`` uses ``?`` placeholders on both databases."""
        if self._ph != "?":
            sql = sql.replace("?", self._ph)
        with self.db.transaction(write=False) as c:
            c.execute(sql, tuple(params))
            rows = c.fetchall()
            names = [d[0] for d in c.description]
        return [dict(zip(names, row, strict=True)) for row in rows]

    def close(self) -> None:
        self.db.close()


class StalePosition(RuntimeError):
    """A batch started from a position another writer has since moved on from."""


def _index_name(table: Table, columns: tuple[str, ...], suffix: str) -> str:
    return f"ix_{table.name}_{'_'.join(columns)}{suffix}"


def _table(name: str) -> Table:
    for model in READ_MODELS:
        for table in model.tables:
            if table.name == name:
                return table
    raise LookupError(name)


def open_database(data_dir: Path, database_url: str | None) -> Database:
    if database_url is None:
        return SqliteDatabase(data_dir / "readmodels.sqlite")
    return PostgresDatabase(database_url)


def store_lookup(sources: dict[str, Application[Any]]) -> Callable[[str, UUID], UUID]:
    """(application, aggregate id) -> the aggregate's store id, cached (it never changes)."""
    cache: dict[UUID, UUID] = {}

    def store_of(source: str, aggregate_id: UUID) -> UUID:
        if aggregate_id not in cache:
            aggregate: Any = sources[source].repository.get(aggregate_id)
            cache[aggregate_id] = aggregate.store_id
        return cache[aggregate_id]

    return store_of
