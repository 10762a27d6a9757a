"""`EventHistory` for the two event stores: an aggregate's version as of a log position.

Both recorders keep the notification position on each stored event (SQLite: the rowid;
PostgreSQL: ``notification_id``); commit order equals position order on both, so the
answer for a position already read never changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg import sql


class SqliteEventHistory:
    def __init__(self, recorder: SQLiteApplicationRecorder) -> None:
        self._recorder = recorder
        self._statement = (
            f"SELECT originator_version FROM {recorder.events_table_name} "  # noqa: S608
            "WHERE originator_id = ? AND rowid <= ? ORDER BY originator_version DESC LIMIT 1"
        )

    def version_at(self, originator_id: UUID, position: int) -> int | None:
        with self._recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(self._statement, (originator_id.hex, position))
            row = cursor.fetchone()
        return None if row is None else int(row[0])

    def events_of(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        marks = ", ".join("?" * len(originator_ids))
        statement = (
            "SELECT originator_id, originator_version, topic, state FROM "  # noqa: S608
            f"{self._recorder.events_table_name} WHERE originator_id IN ({marks}) "
            "ORDER BY originator_id, originator_version"
        )
        with self._recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, [i.hex for i in originator_ids])
            rows = cursor.fetchall()
        return [StoredEvent(UUID(r[0]), int(r[1]), r[2], bytes(r[3])) for r in rows]


class PostgresEventHistory:
    def __init__(self, recorder: PostgresApplicationRecorder) -> None:
        self._recorder = recorder
        self._statement = sql.SQL(
            "SELECT originator_version FROM {}.{} WHERE originator_id = %s "
            "AND notification_id <= %s ORDER BY originator_version DESC LIMIT 1"
        ).format(
            sql.Identifier(recorder.datastore.schema), sql.Identifier(recorder.events_table_name)
        )

    def version_at(self, originator_id: UUID, position: int) -> int | None:
        with self._recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(self._statement, (originator_id, position))
            row: Any = cursor.fetchone()
        return None if row is None else int(row["originator_version"])

    def events_of(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        statement = sql.SQL(
            "SELECT originator_id, originator_version, topic, state FROM {}.{} "
            "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
        ).format(
            sql.Identifier(self._recorder.datastore.schema),
            sql.Identifier(self._recorder.events_table_name),
        )
        with self._recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, (list(originator_ids),))
            rows: Any = cursor.fetchall()
        return [
            StoredEvent(r["originator_id"], r["originator_version"], r["topic"], bytes(r["state"]))
            for r in rows
        ]


def event_history(recorder: ApplicationRecorder) -> SqliteEventHistory | PostgresEventHistory:
    if isinstance(recorder, SQLiteApplicationRecorder):
        return SqliteEventHistory(recorder)
    if isinstance(recorder, PostgresApplicationRecorder):
        return PostgresEventHistory(recorder)
    raise TypeError(f"no event history for {type(recorder).__name__}")
