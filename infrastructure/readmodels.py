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

import functools
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.application import Application

from application.ports import EventHistory
from application.replay import replay
from infrastructure.sql import Cursor, Database, PostgresDatabase, SqliteDatabase
from projections.readmodels import (
    BY_NAME,
    READ_MODELS,
    TABLES,
    Add,
    Context,
    Operation,
    ReadModel,
    Table,
    Update,
    fold,
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
        # Where each model stands in each source, as this store last wrote it; None until
        # read (and again after any failed batch). The guarded UPDATE of every batch
        # checks it against the table, so a stale value costs a retry, never a double.
        self._positions: dict[tuple[str, str], int] | None = None
        with self.db.transaction() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS rm_tracking (model TEXT, source TEXT, "
                f"position {database.types['integer']} NOT NULL, PRIMARY KEY (model, source))"
            )
            for model in READ_MODELS:
                self._create_tables(c, model, suffix="")
                if self._reshaped(c, model):
                    # Its tables predate a column the model now writes: start it again,
                    # empty and at position zero; catching up fills it from the stores.
                    self._drop(c, model, suffix="")
                    c.execute(f"DELETE FROM rm_tracking WHERE model = {self._ph}", (model.name,))
                    self._create_tables(c, model, suffix="")
                for table in model.tables:
                    self._index(c, table, suffix="")

    # Catching up -------------------------------------------------------------------

    def catch_up_all(self, limit: int = BATCH) -> int:
        """Apply up to ``limit`` new events of each source to every model that follows it;
        returns how many events were read. Each source's log is read and decoded once for
        all its models (not once per model), and their rows and positions commit in one
        transaction."""
        if self._positions is None:
            self._positions = self._all_positions()
        done = 0
        for source in self._sources:
            models = [m for m in READ_MODELS if source in m.sources]
            if not models:
                continue
            # Models at the same position share one read (after a rebuild one may differ).
            by_start: dict[int, list[ReadModel]] = {}
            for model in models:
                by_start.setdefault(self._positions.get((model.name, source), 0), []).append(model)
            for start, group in sorted(by_start.items()):
                done += self._catch_up_group(source, start, group, limit)
        return done

    def _catch_up_group(self, source: str, start: int, models: list[ReadModel], limit: int) -> int:
        batch = self._read(source, start, models, limit)
        if batch is None:
            return 0
        count, end, operations = batch
        try:
            # Derived rows and their position commit together: a commit lost in a crash
            # loses both, and the events are applied again, so no flush is awaited.
            with self.db.transaction(durable=False) as c:
                for model in models:
                    self._advance(c, model.name, source, start, end)
                self._apply(c, operations, "")
        except BaseException:
            self._positions = None  # read them again: another writer may have moved on
            raise
        assert self._positions is not None
        for model in models:
            self._positions[(model.name, source)] = end
        return count

    def _read(
        self, source: str, start: int, models: Sequence[ReadModel], limit: int
    ) -> tuple[int, int, list[Operation]] | None:
        """Up to ``limit`` events of ``source`` after ``start``, read and decoded once for
        all ``models``: (how many, the last position, their row operations); None when
        there are none."""
        app = self._sources[source]
        notifications = app.recorder.select_notifications(start=start + 1, limit=limit)
        if not notifications:
            return None
        events = [(n.id, app.mapper.to_domain_event(n)) for n in notifications]
        self._warm(models, [event for _, event in events])
        operations = [
            operation
            for model in models
            for position, event in events
            for operation in model.handle(source, position, event, self._context)
        ]
        return len(notifications), notifications[-1].id, operations

    def catch_up(self, model: ReadModel, *, suffix: str = "", limit: int = BATCH) -> int:
        """Apply up to ``limit`` new events of each source; returns how many were read."""
        if not suffix:
            self._positions = None  # moved here, behind `catch_up_all`'s back
        done = 0
        for source in model.sources:
            start = self._position(model.name + suffix, source)
            batch = self._read(source, start, [model], limit)
            if batch is None:
                continue
            count, end, operations = batch
            with self.db.transaction(durable=False) as c:
                self._advance(c, model.name + suffix, source, start, end)
                self._apply(c, operations, suffix)
            done += count
        return done

    def _warm(self, models: Sequence[ReadModel], events: Sequence[Any]) -> None:
        wanted = [
            pair
            for model in models
            if model.view_wanted is not None
            for event in events
            if (pair := model.view_wanted(event)) is not None
        ]
        if wanted:
            self._context.warm_views(wanted)

    def _all_positions(self) -> dict[tuple[str, str], int]:
        with self.db.transaction(write=False) as c:
            c.execute("SELECT model, source, position FROM rm_tracking")
            return {(str(m), str(s)): int(p) for m, s, p in c.fetchall()}

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
        # Folded (one operation per row where one does the same), then one `executemany`
        # per statement shape: psycopg pipelines it into one round trip.
        for generation in fold(operations):
            statements: dict[str, list[tuple[Any, ...]]] = {}
            for op in generation:
                sql, params = self._statement(op, suffix)
                statements.setdefault(sql, []).append(params)
            for sql, params_seq in statements.items():
                if len(params_seq) == 1:
                    c.execute(sql, params_seq[0])
                else:
                    c.executemany(sql, params_seq)

    def _statement(self, op: Operation, suffix: str) -> tuple[str, tuple[Any, ...]]:
        if isinstance(op, Update):
            sql = self._sql_of(
                "update", op.table + suffix, tuple(op.values), tuple(op.key), (), op.table
            )
            return sql, (*op.values.values(), *op.key.values())
        counters = op.counters if isinstance(op, Add) else ()
        kind = "add" if isinstance(op, Add) else "upsert"
        return self._sql_of(kind, op.table + suffix, tuple(op.row), (), counters, op.table), tuple(
            op.row.values()
        )

    @functools.lru_cache(maxsize=256)  # noqa: B019 - a handful of shapes, store lives long
    def _sql_of(
        self,
        kind: str,
        table_name: str,
        columns: tuple[str, ...],
        key: tuple[str, ...],
        counters: tuple[str, ...],
        table: str,
    ) -> str:
        ph = self._ph
        name = f"rm_{table_name}"
        if kind == "update":
            sets = ", ".join(f"{k} = {ph}" for k in columns)
            where = " AND ".join(f"{k} = {ph}" for k in key)
            return f"UPDATE {name} SET {sets} WHERE {where}"
        table_key = TABLES[table].key
        placeholders = ", ".join([ph] * len(columns))
        updates = [
            f"{k} = {name}.{k} + excluded.{k}" if k in counters else f"{k} = excluded.{k}"
            for k in columns
            if k not in table_key
        ]
        return (
            f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({placeholders}) "
            f"ON CONFLICT ({', '.join(table_key)}) DO UPDATE SET {', '.join(updates)}"
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
                while batch := self._read(source, start, [model], 2000):
                    count, end, operations = batch
                    self._advance(c, model.name + NEXT, source, start, end)
                    self._apply(c, operations, NEXT)
                    read += count
                    start = end
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
        self._create_tables(c, model, suffix)
        for table in model.tables:
            self._index(c, table, suffix)

    def _create_tables(self, c: Cursor, model: ReadModel, suffix: str) -> None:
        types = self.db.types
        for table in model.tables:
            name = f"rm_{table.name}{suffix}"
            columns = ", ".join(f"{col} {types[kind]}" for col, kind in table.columns.items())
            key = ", ".join(table.key)
            c.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns}, PRIMARY KEY ({key}))")

    def _reshaped(self, c: Cursor, model: ReadModel) -> bool:
        """Whether a live table of the model lacks one of the columns it declares."""
        for table in model.tables:
            c.execute(f"SELECT * FROM rm_{table.name} WHERE 1 = 0")
            if set(table.columns) - {column[0] for column in c.description}:
                return True
        return False

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


def open_database(data_dir: Path, database_url: str | None) -> Database:
    if database_url is None:
        return SqliteDatabase(data_dir / "readmodels.sqlite")
    return PostgresDatabase(database_url)


class EntityViews:
    """Store entities' JSON views at a version, cached (a version's view never changes).
    `warm` reads the events of many entities in one query and keeps the views wanted, so
    a batch of the `entities` model is not one repository read per event."""

    def __init__(
        self,
        app: Application[Any],
        history: EventHistory,
        render: Callable[[Any], dict[str, Any]],
        maxsize: int = 10_000,
    ) -> None:
        self._app = app
        self._history = history
        self._render = render
        self._maxsize = maxsize
        self._cache: OrderedDict[tuple[UUID, int], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, entity_id: UUID, version: int) -> dict[str, Any]:
        with self._lock:
            found = self._cache.get((entity_id, version))
            if found is not None:
                self._cache.move_to_end((entity_id, version))
                return found
        view = self._render(self._app.repository.get(entity_id, version=version))
        self._keep((entity_id, version), view)
        return view

    def warm(self, wanted: Sequence[tuple[UUID, int]]) -> None:
        with self._lock:
            missing = {pair for pair in wanted if pair not in self._cache}
        if not missing:
            return
        ids = sorted({entity_id for entity_id, _ in missing})
        for event, aggregate in replay(self._app.mapper, self._history.events_of(ids)):
            pair = (event.originator_id, event.originator_version)
            if pair in missing and aggregate is not None:
                self._keep(pair, self._render(aggregate))

    def _keep(self, pair: tuple[UUID, int], view: dict[str, Any]) -> None:
        with self._lock:
            self._cache[pair] = view
            self._cache.move_to_end(pair)
            while len(self._cache) > self._maxsize:
                self._cache.popitem(last=False)


def store_lookup(sources: dict[str, Application[Any]]) -> Callable[[str, UUID], UUID]:
    """(application, aggregate id) -> the aggregate's store id, cached (it never changes)."""
    cache: dict[UUID, UUID] = {}

    def store_of(source: str, aggregate_id: UUID) -> UUID:
        if aggregate_id not in cache:
            aggregate: Any = sources[source].repository.get(aggregate_id)
            cache[aggregate_id] = aggregate.store_id
        return cache[aggregate_id]

    return store_of
