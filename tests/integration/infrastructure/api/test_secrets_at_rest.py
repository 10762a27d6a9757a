"""Signing secrets and custom header values at rest (SPEC §3): shown once, never again —
not by a read, not in a log line, not in the bytes of the database — yet kept, encrypted,
so the dispatcher can sign with them.

The database is read the hard way: every file of the data directory as raw bytes on SQLite,
every row of every table of the test schema (as text and, for bytea columns, as raw bytes
and hex) on PostgreSQL. Positive controls prove each dump holds the sealed values, so a
dump that missed the data could not pass by accident.
"""

from __future__ import annotations

import base64
import logging
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from infrastructure.settings import Settings

if TYPE_CHECKING:
    from tests.integration.infrastructure.api.conftest import Api

pytestmark = pytest.mark.anyio

HEADER_VALUE = "tok-SECRET-123"
URL = "https://93.184.215.14/hooks"


@dataclass
class Flow:
    """What the merchant did, and what the API showed them once."""

    webhook_id: UUID
    first_secret: str  # from the creation
    second_secret: str  # from the rotation
    reads: list[str]  # every later answer, as text
    records: list[logging.LogRecord]

    @property
    def secrets(self) -> tuple[str, str]:
        return self.first_secret, self.second_secret


def text_needles(flow: Flow) -> dict[str, str]:
    """Every textual form a leaked secret could take."""
    needles = {"header value": HEADER_VALUE}
    for n, secret in enumerate(flow.secrets, 1):
        key = base64.b64decode(secret.removeprefix("whsec_"))
        needles[f"secret {n}"] = secret
        needles[f"secret {n} base64"] = secret.removeprefix("whsec_")
        needles[f"secret {n} key, urlsafe base64"] = base64.urlsafe_b64encode(key).decode()
        needles[f"secret {n} key, hex"] = key.hex()
    return needles


def byte_needles(flow: Flow) -> dict[str, bytes]:
    """Every byte form: the text forms, their hex, and the raw key bytes."""
    needles = {name: text.encode() for name, text in text_needles(flow).items()}
    for name, text in text_needles(flow).items():
        needles[f"{name}, as hex"] = text.encode().hex().encode()
    for n, secret in enumerate(flow.secrets, 1):
        key = base64.b64decode(secret.removeprefix("whsec_"))
        needles[f"secret {n} raw key bytes"] = key
    return needles


def sealed_values(api: Api, flow: Flow) -> list[str]:
    webhook = api.services.webhooks.get_webhook(api.shop.store_id, flow.webhook_id)
    assert webhook.sealed_headers is not None
    return [*(s.sealed for s in webhook.secrets), webhook.sealed_headers]


@pytest.fixture
async def flow(api: Api, caplog: pytest.LogCaptureFixture) -> Flow:
    """A webhook created with a custom header, its secret rotated, then read back; every
    log record of every logger at DEBUG captured throughout."""
    caplog.set_level(logging.DEBUG)  # the root logger: every logger that propagates
    headers = api.shop.headers
    created = await api.client.post(
        "/v1/webhooks",
        json={"url": URL, "eventTypes": ["*"], "headers": {"X-Api-Token": HEADER_VALUE}},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    webhook_id = created.json()["id"]
    rotated = await api.client.post(f"/v1/webhooks/{webhook_id}/rotate-secret", headers=headers)
    assert rotated.status_code == 200, rotated.text
    reads = [
        await api.client.get(f"/v1/webhooks/{webhook_id}", headers=headers),
        await api.client.get("/v1/webhooks", headers=headers),
        await api.client.patch(
            f"/v1/webhooks/{webhook_id}", json={"description": "after"}, headers=headers
        ),
        await api.client.get("/v1/webhooks?limit=1", headers=headers),
    ]
    assert [r.status_code for r in reads] == [200, 200, 200, 200]
    # A marker proves the capture really runs at DEBUG.
    logging.getLogger("webround.tests").debug("flow done for webhook %s", webhook_id)
    return Flow(
        UUID(webhook_id),
        created.json()["secret"],
        rotated.json()["secret"],
        [r.text for r in reads],
        list(caplog.get_records("setup")),
    )


async def test_no_read_shows_a_secret_or_a_header_value(flow: Flow) -> None:
    # Given the flow
    # Then no later answer holds a secret, in any encoding, or the header value
    assert flow.first_secret != flow.second_secret
    for read in flow.reads:
        for name, needle in text_needles(flow).items():
            assert needle not in read, f"{name} in {read}"
        assert '"secret"' not in read
        assert '"X-Api-Token":"[redacted]"' in read.replace(" ", "")


async def test_no_log_line_shows_a_secret_or_a_header_value(flow: Flow) -> None:
    # Given every record logged at DEBUG during the flow
    assert any(r.name == "webround.tests" for r in flow.records), "DEBUG capture is off"

    # Then none holds a secret or the header value: not its message, arguments or extras
    formatter = logging.Formatter()
    for record in flow.records:
        text = "\n".join([record.getMessage(), formatter.format(record), repr(record.__dict__)])
        for name, needle in text_needles(flow).items():
            assert needle not in text, f"{name} logged by {record.name}: {record.getMessage()}"


async def test_the_database_never_holds_a_secret_or_a_header_value(
    api: Api, flow: Flow, settings: Settings
) -> None:
    # Given the flow, and everything the service stored, read as raw bytes
    if settings.database_url is None:
        stored = dump_data_dir(settings)
        assert any(name.endswith("webhooks.sqlite") for name in stored), sorted(stored)
    else:
        stored = {**dump_postgres(settings.database_url), **dump_data_dir(settings)}
    everything = b"\n".join(stored.values())

    # Then the sealed forms are there (the dump reads where the data is)...
    for sealed in sealed_values(api, flow):
        assert sealed.encode() in everything or sealed.encode().hex().encode() in everything
    # ...and neither secret nor the header value is, in any form
    for name, needle in byte_needles(flow).items():
        leaks = [where for where, data in stored.items() if needle in data]
        assert not leaks, f"{name} found in {leaks}"


async def test_the_sealed_secrets_open_with_the_keeper(api: Api, flow: Flow) -> None:
    # Given the webhook as the dispatcher loads it
    webhook = api.services.webhooks.get_webhook(api.shop.store_id, flow.webhook_id)
    keeper = api.services.keeper

    # Then its sealed secrets are not the secrets, and open to exactly what the API showed
    assert len(webhook.secrets) == 2
    for sealed in webhook.secrets:
        assert not sealed.sealed.startswith("whsec_")
        assert all(secret not in sealed.sealed for secret in flow.secrets)
    opened = [keeper.open_secret(flow.webhook_id, s.sealed) for s in webhook.secrets]
    assert [s.reveal() for s in opened] == [flow.second_secret, flow.first_secret]
    # And the old one is the one that expires
    assert webhook.secrets[0].expires_at is None
    assert webhook.secrets[1].expires_at is not None
    # And the header values open too, bound to this webhook
    assert webhook.sealed_headers is not None
    assert keeper.open_headers(flow.webhook_id, webhook.sealed_headers) == {
        "X-Api-Token": HEADER_VALUE
    }


async def test_a_sealed_secret_does_not_open_for_another_webhook(api: Api, flow: Flow) -> None:
    # Given the sealed secret of the webhook
    sealed = api.services.webhooks.get_webhook(api.shop.store_id, flow.webhook_id).secrets[0]

    # When it is opened as if it belonged to another webhook
    # Then it does not open
    with pytest.raises(Exception, match="authentication"):
        api.services.keeper.open_secret(UUID(int=flow.webhook_id.int ^ 1), sealed.sealed)


async def test_the_master_key_file_is_private(api: Api, settings: Settings) -> None:
    # Given a service started on the default configuration (no key in the environment)
    assert settings.master_key is None
    assert settings.master_key_file is None
    key_file = settings.data_dir / "master.key"

    # Then its generated master key file is readable and writable by its owner only
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


async def test_an_idempotent_creation_does_not_store_the_secret(
    api: Api, settings: Settings
) -> None:
    # Given a webhook created and its secret rotated, each with an Idempotency-Key
    headers = api.shop.headers
    created = await api.client.post(
        "/v1/webhooks",
        json={"url": URL, "eventTypes": ["*"]},
        headers={**headers, "idempotency-key": "create-1"},
    )
    assert created.status_code == 201, created.text
    rotated = await api.client.post(
        f"/v1/webhooks/{created.json()['id']}/rotate-secret",
        headers={**headers, "idempotency-key": "rotate-1"},
    )
    assert rotated.status_code == 200, rotated.text

    # When everything stored is read as raw bytes
    if settings.database_url is None:
        stored = dump_data_dir(settings)
    else:
        stored = dump_postgres(settings.database_url)

    # Then neither secret is there, in text or hex
    for secret in (created.json()["secret"], rotated.json()["secret"]):
        for needle in (secret.encode(), secret.encode().hex().encode()):
            leaks = [where for where, data in stored.items() if needle in data]
            assert not leaks, f"a signing secret is stored in plain text in {leaks}"


# Dumps ------------------------------------------------------------------------------------


def dump_data_dir(settings: Settings) -> dict[str, bytes]:
    """Every file under the data directory (SQLite databases, -wal/-shm/-journal files…)."""
    return {str(path): path.read_bytes() for path in settings.data_dir.rglob("*") if path.is_file()}


def dump_postgres(database_url: str) -> dict[str, bytes]:
    """Every row of every table of the test schema: as text, and bytea columns as raw
    bytes and as hex."""
    schema = parse_qs(urlsplit(database_url).query)["schema"][0]
    dsn = database_url.split("?", 1)[0]
    dump: dict[str, bytes] = {}
    with psycopg.connect(dsn, autocommit=True) as connection:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
        ]
        assert any(t.endswith("_events") for t in tables), tables
        for table in tables:
            name = sql.Identifier(schema, table)
            rows = connection.execute(sql.SQL("SELECT t::text FROM {} t").format(name))
            dump[f"{table} (text)"] = "\n".join(row[0] for row in rows).encode()
            columns = [
                row[0]
                for row in connection.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = %s AND table_name = %s AND data_type = 'bytea'",
                    (schema, table),
                )
            ]
            for column in columns:
                column_sql = sql.Identifier(column)
                raw = connection.execute(
                    sql.SQL("SELECT {} FROM {} WHERE {} IS NOT NULL").format(
                        column_sql, name, column_sql
                    )
                ).fetchall()
                dump[f"{table}.{column} (bytes)"] = b"\n".join(bytes(row[0]) for row in raw)
                hexed = connection.execute(
                    sql.SQL("SELECT encode({}, 'hex') FROM {} WHERE {} IS NOT NULL").format(
                        column_sql, name, column_sql
                    )
                ).fetchall()
                dump[f"{table}.{column} (hex)"] = "\n".join(row[0] for row in hexed).encode()
    return dump
