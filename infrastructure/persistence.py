"""Where each application's events live: the eventsourcing environment built from settings.

Embedded: one SQLite file per application in the data directory (the SQLite recorders'
table names are fixed, so applications cannot share a file). Production: one PostgreSQL
database shared by all applications, each with its own tables (``commerce_events``, …).
See docs/adr/0002-persistence.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, unquote, urlsplit

from infrastructure.idempotency import recorder_topic
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
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(settings.data_dir / f"{application_name.lower()}.sqlite"),
            "SQLITE_LOCK_TIMEOUT": "10",
        }
    else:
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            **postgres_env(settings.database_url),
        }
    if application_name in KEYED_APPLICATIONS:
        env["APPLICATION_RECORDER_TOPIC"] = recorder_topic(settings.embedded)
    prefix = application_name.upper()
    return {f"{prefix}_{key}": value for key, value in env.items()}


def postgres_env(database_url: str) -> dict[str, str]:
    """The ``POSTGRES_*`` keys for a ``postgresql://`` URL (``?schema=`` picks a schema)."""
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
        # The pool opens POOL_SIZE connections at start and grows on demand: three
        # applications per process must not take 15 connections before doing anything
        # (PostgreSQL's default max_connections is 100, shared by every process).
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": "9",
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
