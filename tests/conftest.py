"""Fixtures shared by every tier: the real backing services, found or reported missing.

A test that needs PostgreSQL, Redis or RabbitMQ talks to the real server on its standard
local port. Where the server is missing the test is skipped on a developer's machine and
fails under CI=true, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from infrastructure.settings import Settings

POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(name: str, port: int) -> None:
    """Skip (locally) or fail (in CI) when the service's port does not answer."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        message = f"{name} is not running on 127.0.0.1:{port}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: a missing service is a failure)")
        pytest.skip(message)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database URL whose private schema exists only for this test."""
    require_service("PostgreSQL", 5432)
    schema = f"test_{uuid.uuid4().hex[:12]}"
    yield f"{POSTGRES_DSN}?schema={schema}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for the embedded mode (SQLite) and for production (PostgreSQL)."""
    if request.param == "sqlite":
        return Settings(data_dir=tmp_path / "data")
    url: str = request.getfixturevalue("postgres_url")
    return Settings(data_dir=tmp_path / "data", database_url=url)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis_url() -> str:
    """The local Redis with a namespace of its own, so tests never share a queue."""
    require_service("Redis", 6379)
    return f"redis://127.0.0.1:6379/0?namespace=test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def rabbitmq_url() -> str:
    """The local RabbitMQ with a queue of this test's own."""
    require_service("RabbitMQ", 5672)
    return f"amqp://guest:guest@127.0.0.1:5672/?namespace=test-{uuid.uuid4().hex[:12]}"
