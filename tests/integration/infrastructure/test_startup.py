"""What every `webround` role checks before it works (issue #12, items 6 and 13), on
SQLite and PostgreSQL: a master key in production, the installation's master key
everywhere (a key check value), and one clear line for each operator error."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from uuid import UUID

import pytest

from domain.values import Actor
from infrastructure.bootstrap import build
from infrastructure.secrets import MasterKey
from infrastructure.settings import Settings
from infrastructure.startup import StartupError, open_services
from tests.support.receiver import free_port

URL = "https://93.184.215.14/hook"


def with_key(settings: Settings, key: MasterKey | None = None) -> Settings:
    return dataclasses.replace(settings, master_key=(key or MasterKey.generate()).encode())


@pytest.mark.postgres
def test_a_production_role_refuses_to_start_without_a_configured_master_key(
    postgres_url: str, tmp_path: Path
) -> None:
    # Given production settings (a database URL) without WEBROUND_MASTER_KEY(_FILE)
    # (embedded mode generates its key file in the data directory, by design)
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url)

    # When a role starts
    with pytest.raises(StartupError) as refused:
        open_services(settings)

    # Then it refuses, in one line naming both settings, before touching anything
    message = str(refused.value)
    assert "WEBROUND_MASTER_KEY or WEBROUND_MASTER_KEY_FILE" in message
    assert "\n" not in message
    assert not (settings.data_dir / "master.key").exists()


def test_every_start_checks_the_key_against_the_installations(settings: Settings) -> None:
    # Given an installation whose first process started with key A
    key = MasterKey.generate()
    open_services(with_key(settings, key)).close()

    # When another process starts with key A, it runs
    open_services(with_key(settings, key)).close()

    # But when one starts with key B (another data directory, a key not copied over)
    with pytest.raises(StartupError) as refused:
        open_services(with_key(settings))

    # Then it refuses in one line naming the settings and both key ids
    message = str(refused.value)
    assert "WEBROUND_MASTER_KEY or WEBROUND_MASTER_KEY_FILE" in message
    assert key.key_id in message
    assert "\n" not in message
    assert refused.value.exit_code != 0


def test_an_installation_older_than_the_check_proves_the_key_on_a_stored_secret(
    settings: Settings,
) -> None:
    # Given secrets sealed under key A by a version that recorded no key check value
    key = MasterKey.generate()
    old = build(with_key(settings, key))
    try:
        store = UUID(old.webhooks.create_store("Shop", Actor.system())["storeId"])
        old.webhooks.create_webhook(store, Actor.system(), url=URL, event_types=["*"])
    finally:
        old.close()

    # When a process starts with key B, it is refused: B opens none of them
    with pytest.raises(StartupError):
        open_services(with_key(settings))

    # And when one starts with key A, it runs, and records the check for everyone
    open_services(with_key(settings, key)).close()
    with pytest.raises(StartupError):
        open_services(with_key(settings))


def test_an_unreachable_database_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    # Given a database URL where nothing listens
    port = free_port()
    closed = f"postgresql://postgres:hunter2@127.0.0.1:{port}/test"
    settings = with_key(Settings(data_dir=tmp_path / "data", database_url=closed))

    # When a role starts
    started = time.monotonic()
    with pytest.raises(StartupError) as refused:
        open_services(settings)

    # Then it is one line naming WEBROUND_DATABASE_URL and where, never the password
    message = str(refused.value)
    assert "WEBROUND_DATABASE_URL" in message
    assert f"127.0.0.1:{port}/test" in message
    assert "hunter2" not in message
    assert "\n" not in message
    assert refused.value.exit_code == 1
    assert time.monotonic() - started < 30
