"""Where each application's events live: the eventsourcing environment built from settings.

Embedded: one SQLite file per application in the data directory (the SQLite recorders'
table names are fixed, so applications cannot share a file). Production: one PostgreSQL
database shared by all applications, each with its own tables (``commerce_events``, …).
See docs/adr/0002-persistence.md.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

from eventsourcing.postgres import PostgresDatastore, PostgresFactory
from eventsourcing.utils import Environment

from infrastructure.idempotency import follower_recorder_topic, recorder_topic
from infrastructure.settings import Settings, SettingsError

# The applications whose commands take Idempotency-Keys: their recorders write a key's
# record in the transaction of the command's events (ADR 0023).
KEYED_APPLICATIONS = frozenset({"commerce", "webhooks"})


def application_env(settings: Settings, application_name: str) -> dict[str, str]:
    """The eventsourcing environment of one application.

    Keys carry the upper-cased application name as prefix, which eventsourcing reads
    before the bare key, so stray ``POSTGRES_*`` variables in the process environment
    cannot redirect our stores.
    """
    if settings.database_url is None:
        database = private_file(settings.data_dir / f"{application_name.lower()}.sqlite")
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(database),
            "SQLITE_LOCK_TIMEOUT": "10",
        }
    else:
        env = {
            "PERSISTENCE_MODULE": "infrastructure.persistence:SharedPostgresFactory",
            **postgres_env(settings.database_url, settings.db_pool_size),
        }
    if application_name in KEYED_APPLICATIONS:
        env["APPLICATION_RECORDER_TOPIC"] = recorder_topic(settings.embedded)
    if application_name == "dispatch":
        # The dispatch store's recorder also writes the delivery schedule, in the same
        # transaction as the events (infrastructure/schedule.py).
        kind = "Sqlite" if settings.embedded else "Postgres"
        env["PROCESS_RECORDER_TOPIC"] = f"infrastructure.schedule:{kind}DispatchRecorder"
    if application_name == "webhooks":
        # A process application: the webhook policies follow the attempts into it,
        # their saves carrying tracking records, and its commands take keys.
        env["PROCESS_RECORDER_TOPIC"] = follower_recorder_topic(settings.embedded)
    prefix = application_name.upper()
    return {f"{prefix}_{key}": value for key, value in env.items()}


def private_file(path: Path) -> Path:
    """``path``, a data file readable by this user only (0600) in a directory that is
    theirs only (0700, when we create it): created empty before a library opens it with
    its own mode (SQLite's is 0644 less the umask; it gives its -wal and -shm files the
    mode of the database file), and tightened where an earlier version left it open."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        for existing in (
            path,
            path.with_name(path.name + "-wal"),
            path.with_name(path.name + "-shm"),
        ):
            try:
                mode = stat.S_IMODE(existing.stat().st_mode)
            except FileNotFoundError:
                continue
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                existing.chmod(mode & ~(stat.S_IRWXG | stat.S_IRWXO))
    return path


def postgres_env(database_url: str, pool_size: int = 4) -> dict[str, str]:
    """The ``POSTGRES_*`` keys for a ``postgresql://`` URL (``?schema=`` picks a schema),
    for a pool of at most ``pool_size`` connections (one pool per process: see
    `SharedPostgresFactory`)."""
    parts = urlsplit(database_url)
    if not parts.path.strip("/"):
        raise SettingsError("WEBROUND_DATABASE_URL: the URL names no database")
    env = {
        "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")),
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_CONNECT_TIMEOUT": "5",
        # No pre-ping: it doubles the round trips of every read, and the library's
        # recorders already retry an operation that meets a connection closed by a
        # database restart.
        # The process's one pool opens one connection and grows on demand up to
        # WEBROUND_DB_POOL_SIZE (PostgreSQL's default max_connections is 100, shared by
        # every process of every installation on the server).
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": str(max(pool_size - 1, 0)),
    }
    schema = parse_qs(parts.query).get("schema")
    if schema:
        env["POSTGRES_SCHEMA"] = schema[0]
    return env


@contextmanager
def schema_lock(database_url: str | None) -> Iterator[None]:
    """Serialise start-up DDL between processes on one PostgreSQL database: eventsourcing
    re-creates its functions on every start, which PostgreSQL cannot do concurrently
    ("tuple concurrently updated"). A no-op on SQLite."""
    if database_url is None:
        yield
        return
    import psycopg

    dsn = database_url.split("?", 1)[0]
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as connection:
        connection.execute("SELECT pg_advisory_lock(hashtext('webround.schema'))")
        try:
            yield
        finally:
            connection.execute("SELECT pg_advisory_unlock(hashtext('webround.schema'))")


def ensure_schema(database_url: str) -> None:
    """Create the PostgreSQL schema named by ``?schema=`` when it does not exist yet."""
    schema = parse_qs(urlsplit(database_url).query).get("schema")
    if not schema:
        return
    import psycopg
    from psycopg import sql

    dsn = database_url.split("?", 1)[0]
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as connection:
        connection.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema[0]))
        )


class SharedPostgresFactory(PostgresFactory):
    """eventsourcing's PostgreSQL factory, but with one datastore — one pool of
    connections — per process for every application and view on the same database and
    schema (eventsourcing makes one per application). Its connections use the schema
    as their search path, so our own SQL names tables without it."""

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _shared: ClassVar[dict[tuple[str, ...], list[Any]]] = {}  # key -> [datastore, users]

    def __init__(self, env: Environment | dict[str, str] | None) -> None:
        super().__init__(env)
        own: PostgresDatastore = self.datastore
        keys = (self.POSTGRES_DBNAME, self.POSTGRES_HOST, self.POSTGRES_PORT, self.POSTGRES_USER)
        self._key = (*(str(self.env.get(k)) for k in keys), own.schema)
        with self._lock:
            entry = self._shared.get(self._key)
            if entry is None:
                # Not opened yet: the pool connects on first use, with these options.
                options = own.pool.kwargs
                assert isinstance(options, dict)
                options["options"] = f"-c search_path={own.schema}"
                entry = self._shared[self._key] = [own, 0]
            entry[1] += 1
        self.datastore = entry[0]

    _closed = False

    def close(self) -> None:
        # Called by the application's close, and again when it is collected: each
        # factory lets go of the shared datastore once.
        with self._lock:
            if self._closed:
                return
            self._closed = True
            entry = self._shared.get(self._key)
            if entry is None or entry[0] is not self.datastore:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del self._shared[self._key]
        self.datastore.close()
