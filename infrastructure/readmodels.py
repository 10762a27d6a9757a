"""The SQL side of the read models: apply, track, rebuild aside and swap, checksum.

Tables are named ``rm_<table>``. The read models follow the event stores with
`application.follow.Follower`s — one per source log, reading and decoding each batch once
for every model that follows that log — and their positions are eventsourcing tracking
records (an eventsourcing tracking recorder's table, in the same database), one lane per
model and source (``events@dispatch``). A batch's rows and the lanes' new positions
commit in one transaction, and a lane moves only from the position the batch started
at, so no event is applied twice; an event a model cannot apply is skipped and recorded
(``skipped_events``) rather than stopping the models of every store.

A rebuild fills ``rm_<table>__next`` beside the live tables (its own lanes,
``events__next@dispatch``) while the live tables keep serving, then — holding the lock on
the tracking table, which every live batch writes — catches up the last events and swaps
tables and lanes in one transaction.

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
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder

from application.follow import Batch, Follower
from application.ports import EventHistory
from application.replay import replay
from infrastructure.sql import transaction
from infrastructure.tracking import (
    SQLITE,
    Ddl,
    apply_ddl,
    first_column,
    poison_statements,
    postgres_dialect,
    write_skipped,
    write_trackings,
)
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


def lane(model: str, source: str) -> str:
    """The tracking name of one model's position in one source log."""
    return f"{model}@{source}"


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
        recorder: PostgresTrackingRecorder | SQLiteTrackingRecorder,
        sources: dict[str, Application[Any]],
        context: Context,
        *,
        configure: Callable[[list[Follower]], None] = lambda followers: None,
    ) -> None:
        self.recorder = recorder
        self._datastore = recorder.datastore
        if isinstance(recorder, PostgresTrackingRecorder):
            self.dialect = postgres_dialect(recorder.datastore.schema)
            self._tracking = recorder.tracking_table_name
        else:
            self.dialect = SQLITE
            self._tracking = "tracking"
        self._sources = sources
        self._context = context
        # Infrastructure's failure classification and poison counter for new followers.
        self._configure = configure
        with transaction(self._datastore) as c:
            apply_ddl(c, self.dialect, poison_statements(self.dialect))
            self._migrate_positions(c)
            for model in READ_MODELS:
                self._create_tables(c, model, suffix="")
                if self._reshaped(c, model):
                    # Its tables predate a column the model now writes: start it again,
                    # empty and at position zero; catching up fills it from the stores.
                    self._drop(c, model, suffix="")
                    self._forget_positions(c, model, suffix="")
                    self._create_tables(c, model, suffix="")
                for table in model.tables:
                    self._index(c, table, suffix="")
        self.followers = [
            self._follower(source, [m for m in READ_MODELS if source in m.sources], "")
            for source in sources
        ]

    @property
    def postgres(self) -> bool:
        return isinstance(self._datastore, PostgresDatastore)

    def _follower(self, source: str, models: Sequence[ReadModel], suffix: str) -> Follower:
        view = _Lanes(self, source, {lane(m.name + suffix, source): m for m in models}, suffix)
        follower = Follower(
            f"read-models@{source}" if not suffix else f"rebuild@{source}",
            self._sources[source],
            view,
            lanes=list(view.models),
        )
        self._configure([follower])
        return follower

    # Catching up -------------------------------------------------------------------

    def catch_up_all(self, limit: int = BATCH, only: Collection[str] | None = None) -> int:
        """Apply up to ``limit`` new events of each source to every model that follows
        it (of the followers named ``only``, when given); returns how many notifications
        were read."""
        done = 0
        for follower in self.followers:
            if only is not None and follower.name not in only:
                continue
            follower.batch_size = limit
            done += follower.pull()
        return done

    def catch_up(self, model: ReadModel, *, suffix: str = "", limit: int = BATCH) -> int:
        """Apply up to ``limit`` new events of each of ``model``'s sources to it alone
        (or to its rebuild's tables, with ``suffix``); returns how many were read."""
        done = 0
        for source in model.sources:
            follower = self._follower(source, [model], suffix)
            follower.batch_size = limit
            done += follower.pull()
        return done

    def _apply(self, c: Any, operations: Sequence[Operation], suffix: str) -> None:
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
        ph = self.dialect.placeholder
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

    def _position(self, name: str, source: str) -> int:
        return self.recorder.max_tracking_id(lane(name, source)) or 0

    def _migrate_positions(self, c: Any) -> None:
        """Positions kept by earlier versions in ``rm_tracking`` become tracking records
        (once; the old table is then dropped)."""
        if not self._table_exists(c, "rm_tracking"):
            return
        c.execute("SELECT model, source, position FROM rm_tracking")
        found = [(lane(str(m), str(s)), int(p)) for m, s, p in c.fetchall()]
        trackings = [Tracking(name, p) for name, p in found if p > 0]
        write_trackings(c, self.dialect, self._tracking, trackings, {})
        c.execute("DROP TABLE rm_tracking")

    def _table_exists(self, c: Any, name: str) -> bool:
        if self.postgres:
            c.execute("SELECT to_regclass(%s)", (name,))
            return first_column(c.fetchone()) is not None
        c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return c.fetchone() is not None

    # Rebuild -----------------------------------------------------------------------

    def rebuild(self, model: ReadModel, progress: Callable[[int, int], None] | None = None) -> int:
        """Rebuild ``model`` from position zero beside the live tables, then swap it in.
        Returns how many events were read. The live tables answer queries throughout."""
        with transaction(self._datastore) as c:
            self._drop(c, model, NEXT)
            self._create(c, model, suffix=NEXT)
            self._forget_positions(c, model, suffix=NEXT)
        head = sum(self._head(source) for source in model.sources)
        followers = [self._follower(source, [model], NEXT) for source in model.sources]
        for follower in followers:
            follower.batch_size = 2000
        read = 0
        while True:
            step = sum(follower.pull() for follower in followers)
            read += step
            if progress:
                progress(read, max(head, read))
            if step == 0:
                break
        # The last events, recorded while we rebuilt, under the tracking table's lock
        # (every live batch writes it); then the swap, in the same transaction.
        lock = self._tracking if self.postgres else None
        with transaction(self._datastore, lock=lock) as c:
            for follower in followers:
                read += self._final_catch_up(c, follower)
            self._swap(c, model)
        for live in self.followers:
            live.follow_lanes(live.lanes)  # their positions moved: read them again
        return read

    def _final_catch_up(self, c: Any, follower: Follower) -> int:
        view = follower.view
        assert isinstance(view, _Lanes)
        [name] = follower.lanes
        c.execute(
            self.dialect.sql(
                f"SELECT notification_id FROM {self._tracking} WHERE application_name = ?"
            ),
            (name,),
        )
        row = c.fetchone()
        start = 0 if row is None else int(row[0])
        app = follower.source
        read = 0
        while notifications := app.recorder.select_notifications(start=start + 1, limit=2000):
            batch = Batch(
                app.name,
                [view.item(n) for n in notifications],
                notifications[-1].id,
                [Tracking(name, notifications[-1].id)],
                {name: start},
            )
            view.apply_in(c, batch)
            read += len(notifications)
            start = notifications[-1].id
        return read

    def _swap(self, c: Any, model: ReadModel) -> None:
        self._drop(c, model, "")
        for table in model.tables:
            c.execute(f"ALTER TABLE rm_{table.name}{NEXT} RENAME TO rm_{table.name}")
            # Indexes keep the names they were built under; give them the live names
            # (SQLite cannot rename an index, so drop and create: the same everywhere).
            for index in table.indexes:
                c.execute(f"DROP INDEX IF EXISTS {_index_name(table, index, NEXT)}")
            self._index(c, table, "")
        for source in model.sources:
            live, aside = lane(model.name, source), lane(model.name + NEXT, source)
            c.execute(
                self.dialect.sql(f"DELETE FROM {self._tracking} WHERE application_name = ?"),
                (live,),
            )
            c.execute(
                self.dialect.sql(
                    f"UPDATE {self._tracking} SET application_name = ? WHERE application_name = ?"
                ),
                (live, aside),
            )

    def _create(self, c: Any, model: ReadModel, suffix: str) -> None:
        self._create_tables(c, model, suffix)
        for table in model.tables:
            self._index(c, table, suffix)

    def _create_tables(self, c: Any, model: ReadModel, suffix: str) -> None:
        types = self.dialect.types
        for table in model.tables:
            name = f"rm_{table.name}{suffix}"
            columns = ", ".join(f"{col} {types[kind]}" for col, kind in table.columns.items())
            key = ", ".join(table.key)
            sql = f"CREATE TABLE IF NOT EXISTS {name} ({columns}, PRIMARY KEY ({key}))"
            apply_ddl(c, self.dialect, [Ddl("table", name, sql)])

    def _reshaped(self, c: Any, model: ReadModel) -> bool:
        """Whether a live table of the model lacks one of the columns it declares."""
        for table in model.tables:
            c.execute(f"SELECT * FROM rm_{table.name} WHERE 1 = 0")
            if set(table.columns) - {column[0] for column in c.description}:
                return True
        return False

    def _forget_positions(self, c: Any, model: ReadModel, suffix: str) -> None:
        for source in model.sources:
            c.execute(
                self.dialect.sql(f"DELETE FROM {self._tracking} WHERE application_name = ?"),
                (lane(model.name + suffix, source),),
            )

    def _index(self, c: Any, table: Table, suffix: str) -> None:
        for index in table.indexes:
            name = _index_name(table, index, suffix)
            sql = (
                f"CREATE INDEX IF NOT EXISTS {name} ON rm_{table.name}{suffix} ({', '.join(index)})"
            )
            apply_ddl(c, self.dialect, [Ddl("index", name, sql)])

    def _drop(self, c: Any, model: ReadModel, suffix: str) -> None:
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
                with transaction(self._datastore, write=False) as c:
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
        if self.postgres:
            sql = sql.replace("?", "%s")
        with transaction(self._datastore, write=False) as c:
            c.execute(sql, tuple(params))
            rows = c.fetchall()
            names = [d[0] for d in c.description]
        return [dict(zip(names, row, strict=True)) for row in rows]


class _Lanes:
    """The view of one source log for the models that follow it (one lane each)."""

    def __init__(
        self, store: ReadModelStore, source: str, models: dict[str, ReadModel], suffix: str
    ) -> None:
        self._store = store
        self._source = source
        self.models = models
        self._suffix = suffix

    def position(self, name: str) -> int:
        return self._store.recorder.max_tracking_id(name) or 0

    def item(self, notification: Any) -> Any:
        from application.follow import Item

        app = self._store._sources[self._source]
        return Item(notification, app.mapper.to_domain_event(notification), tuple(self.models))

    def apply(self, batch: Batch) -> None:
        # Derived rows and their positions commit together: a commit lost in a crash
        # loses both, and the events are applied again, so no flush is awaited.
        with transaction(self._store._datastore, durable=False) as c:
            self.apply_in(c, batch)

    def apply_in(self, c: Any, batch: Batch) -> None:
        store = self._store
        store._warm(list(self.models.values()), [i.event for i in batch.items])
        operations = [
            operation
            for item in batch.items
            for name in item.lanes
            for operation in self.models[name].handle(
                self._source, item.notification.id, item.event, store._context
            )
        ]
        write_trackings(c, store.dialect, store._tracking, batch.trackings, batch.starts)
        store._apply(c, operations, self._suffix)

    def skip(self, batch: Batch, error: Exception) -> None:
        store = self._store
        with transaction(store._datastore, durable=False) as c:
            write_trackings(c, store.dialect, store._tracking, batch.trackings, batch.starts)
            write_skipped(c, store.dialect, f"read-models@{self._source}", batch, error)


def _index_name(table: Table, columns: tuple[str, ...], suffix: str) -> str:
    return f"ix_{table.name}_{'_'.join(columns)}{suffix}"


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
