"""SQL our event-store recorders and views share: the two dialects, several tracking
records written in one statement, and the table of events a follower skipped.

Followers (`application.follow`) write eventsourcing's tracking records — the tables
eventsourcing's tracking recorders create (``<app>_tracking`` on PostgreSQL, ``tracking``
in a SQLite file), one row per lane — in the same transaction as what they apply. Each
row moves only forward: `write_trackings` refuses (`IntegrityError`) a batch whose
position is not ahead of the stored one, so no batch is applied twice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteProcessRecorder

from application.follow import Batch


@dataclass(frozen=True)
class Dialect:
    """What differs between the two databases in our SQL."""

    placeholder: str
    prefix: str  # '"schema".' on PostgreSQL
    types: dict[str, str]
    skip_locked: str  # row locks a claim takes, skipping rows another claim holds
    for_update: str

    def sql(self, text: str) -> str:
        """``text`` with ``?`` placeholders and ``{t}`` table prefixes made real."""
        text = text.replace("{t}", self.prefix)
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    @property
    def postgres(self) -> bool:
        return self.placeholder == "%s"


def postgres_dialect(schema: str) -> Dialect:
    return Dialect(
        "%s",
        f'"{schema}".',
        {"text": "text", "integer": "bigint", "real": "double precision"},
        " FOR UPDATE SKIP LOCKED",
        " FOR UPDATE",
    )


SQLITE = Dialect("?", "", {"text": "TEXT", "integer": "INTEGER", "real": "REAL"}, "", "")


def write_trackings(
    c: Any, d: Dialect, table: str, trackings: Sequence[Tracking], starts: Mapping[str, int]
) -> None:
    """Move each lane's tracking record from its ``starts`` position (0: no record yet)
    to its new one — compare and set — or refuse them all (`IntegrityError`)."""
    if not trackings:
        return
    names = [t.application_name for t in trackings]
    news = [t.notification_id for t in trackings]
    olds = [starts.get(name, 0) for name in names]
    if d.postgres:  # one statement, one round trip
        c.execute(
            d.sql(
                "WITH v (name, old, new) AS"  # noqa: S608 (ours)
                " (SELECT * FROM unnest(?::text[], ?::bigint[], ?::bigint[])),"
                f" moved AS (UPDATE {{t}}{table} AS t SET notification_id = v.new FROM v"
                "  WHERE t.application_name = v.name AND v.old > 0"
                "  AND t.notification_id = v.old RETURNING 1),"
                f" created AS (INSERT INTO {{t}}{table} (application_name, notification_id)"
                "  SELECT name, new FROM v WHERE old = 0 ON CONFLICT DO NOTHING RETURNING 1)"
                " SELECT (SELECT count(*) FROM moved) + (SELECT count(*) FROM created)"
            ),
            (names, olds, news),
        )
        done = int(first_column(c.fetchone()))
    else:
        raw = getattr(c, "sqlite_cursor", c)  # eventsourcing's wrapper, or the driver's
        before = raw.connection.total_changes
        for name, old, new in zip(names, olds, news, strict=True):
            if old:
                raw.execute(
                    f"UPDATE {table} SET notification_id = ?"  # noqa: S608 (ours)
                    " WHERE application_name = ? AND notification_id = ?",
                    (new, name, old),
                )
            else:
                raw.execute(
                    f"INSERT INTO {table} (application_name, notification_id) VALUES (?, ?)"  # noqa: S608 (ours)
                    " ON CONFLICT DO NOTHING",
                    (name, new),
                )
        done = raw.connection.total_changes - before
    if done != len(trackings):
        raise IntegrityError(
            f"{len(trackings) - done} of {len(trackings)} lanes moved meanwhile: applied already"
        )


def read_positions(datastore: Any, d: Dialect, table: str, names: Sequence[str]) -> dict[str, int]:
    """Lanes' tracking records, in one read."""
    from infrastructure.sql import transaction

    if not names:
        return {}
    with transaction(datastore, write=False) as c:
        c.execute(
            d.sql(
                f"SELECT application_name, notification_id FROM {{t}}{table}"  # noqa: S608 (ours)
                f" WHERE application_name IN ({', '.join('?' * len(names))})"
            ),
            list(names),
        )
        return {str(name): int(position) for name, position in c.fetchall()}


def first_column(row: Any) -> Any:
    """A row's first value, from a tuple row or a dict row (eventsourcing's cursors)."""
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


@dataclass(frozen=True)
class Ddl:
    """One statement that creates a table, an index or a column, by name (for a
    column, ``table.column``): on PostgreSQL it runs only where that is missing."""

    kind: str  # "table" | "index" | "column"
    name: str
    sql: str


def apply_ddl(c: Any, d: Dialect, statements: Sequence[Ddl]) -> None:
    """Create what is missing. On PostgreSQL even ``IF NOT EXISTS`` DDL takes locks
    (``CREATE INDEX`` a share lock on its table, ``ALTER TABLE`` an exclusive one) that
    wait behind, and deadlock with, the running processes' writes: so the catalog is
    asked first, and nothing is locked where everything exists (every start but the
    first, and an upgrade's)."""
    for statement in statements:
        if d.postgres and _exists(c, statement):
            continue
        c.execute(statement.sql)


def _exists(c: Any, statement: Ddl) -> bool:
    if statement.kind == "column":
        table, column = statement.name.split(".")
        c.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = %s AND column_name = %s",
            (table, column),
        )
        return c.fetchone() is not None
    c.execute("SELECT to_regclass(%s)", (statement.name,))
    return first_column(c.fetchone()) is not None


def poison_statements(d: Dialect) -> list[Ddl]:
    t = d.types
    return [
        Ddl(
            "table",
            "skipped_events",
            d.sql(
                "CREATE TABLE IF NOT EXISTS {t}skipped_events ("
                f" follower {t['text']} NOT NULL, source {t['text']} NOT NULL,"
                f" position {t['integer']} NOT NULL, originator_id {t['text']} NOT NULL,"
                f" topic {t['text']} NOT NULL, error {t['text']} NOT NULL,"
                f" skipped_at {t['real']} NOT NULL, PRIMARY KEY (follower, source, position))"
            ),
        )
    ]


# What is kept of a failure's message: enough to find the bug, bounded.
_ERROR_CHARS = 500


def write_skipped(c: Any, d: Dialect, follower: str, batch: Batch, error: Exception) -> None:
    """Record the one item of ``batch`` as skipped by ``follower`` because of ``error``."""
    [item] = batch.items
    n = item.notification
    message = f"{type(error).__name__}: {error}"[:_ERROR_CHARS].replace("\x00", "\\x00")
    c.execute(
        d.sql("INSERT INTO {t}skipped_events VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"),
        (follower, batch.source, n.id, str(n.originator_id), n.topic, message, time.time()),
    )


# Event stores that followers write into -------------------------------------------------


class PostgresFollowerRecorder(PostgresProcessRecorder):
    """A process application's PostgreSQL recorder whose saves may carry a follower's
    lanes (``trackings=``) and the event it skipped (``skipped=``), written in the same
    transaction as the events (`application.follow`)."""

    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        events_table_name: str = "stored_events",
        tracking_table_name: str = "notification_tracking",
    ) -> None:
        super().__init__(
            datastore,
            events_table_name=events_table_name,
            tracking_table_name=tracking_table_name,
        )
        self.dialect = postgres_dialect(datastore.schema)

    def create_table(self) -> None:
        super().create_table()  # eventsourcing's own tables, in a transaction of their own
        from infrastructure.sql import transaction

        with transaction(self.datastore) as c:
            apply_ddl(c, self.dialect, self.extra_create_statements())

    def extra_create_statements(self) -> list[Ddl]:
        return poison_statements(self.dialect)

    def tracking_positions(self, names: Sequence[str]) -> dict[str, int]:
        """Several lanes' positions in one read (absent: no record)."""
        return read_positions(self.datastore, self.dialect, self.tracking_table_name, names)

    def _insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        self.write_extras(curs, kwargs)

    def write_extras(self, c: Any, kwargs: dict[str, Any]) -> None:
        write_trackings(
            c,
            self.dialect,
            self.tracking_table_name,
            kwargs.get("trackings", ()),
            kwargs.get("starts", {}),
        )
        skipped = kwargs.get("skipped")
        if skipped is not None:
            write_skipped(c, self.dialect, *skipped)


class SqliteFollowerRecorder(SQLiteProcessRecorder):
    """`PostgresFollowerRecorder` for SQLite."""

    dialect = SQLITE

    def construct_create_table_statements(self) -> list[str]:
        extra = [statement.sql for statement in self.extra_create_statements()]
        return [*super().construct_create_table_statements(), *extra]

    def extra_create_statements(self) -> list[Ddl]:
        return poison_statements(SQLITE)

    def tracking_positions(self, names: Sequence[str]) -> dict[str, int]:
        """Several lanes' positions in one read (absent: no record)."""
        return read_positions(self.datastore, SQLITE, "tracking", names)

    def _insert_events(
        self, c: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        # A write first takes SQLite's write lock before anything is read: a read first
        # could not be upgraded to a write once another process committed.
        c.execute("DELETE FROM skipped_events WHERE 0")
        self.write_extras(c, kwargs)
        return super()._insert_events(c, stored_events, **kwargs)

    def write_extras(self, c: Any, kwargs: dict[str, Any]) -> None:
        write_trackings(
            c, SQLITE, "tracking", kwargs.get("trackings", ()), kwargs.get("starts", {})
        )
        skipped = kwargs.get("skipped")
        if skipped is not None:
            write_skipped(c, SQLITE, *skipped)
