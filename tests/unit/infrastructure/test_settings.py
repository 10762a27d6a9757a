"""Settings: one table of environment variables, parsed once, with errors that name the variable."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from infrastructure.persistence import application_env
from infrastructure.settings import (
    DEFAULT_RETRY_SCHEDULE,
    Settings,
    SettingsError,
    markdown_table,
)

ROOT = Path(__file__).resolve().parents[3]


def test_an_empty_environment_gives_the_embedded_default() -> None:
    # Given no WEBROUND_* variables
    # When settings are read
    settings = Settings.from_env({})

    # Then the service runs embedded, in ./.webround, on 127.0.0.1:8000, with the §6 schedule
    assert settings.embedded
    assert settings.data_dir == Path(".webround")
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.retry_schedule == DEFAULT_RETRY_SCHEDULE
    assert sum(DEFAULT_RETRY_SCHEDULE) / 86400 == pytest.approx(3.0, abs=0.3)


def test_every_variable_is_read() -> None:
    # Given every variable set
    env = {
        "WEBROUND_DATA_DIR": "/srv/webround",
        "WEBROUND_DATABASE_URL": "postgresql://u:p@db:5433/shop",
        "WEBROUND_BROKER_URL": "redis://127.0.0.1:6379/0",
        "WEBROUND_MASTER_KEY_FILE": "/run/secrets/key",
        "WEBROUND_ALLOWED_TARGETS": "127.0.0.0/8, ::1/128",
        "WEBROUND_RETRY_SCHEDULE": "1,1,2",
        "WEBROUND_PORT": "9000",
    }

    # When settings are read
    settings = Settings.from_env(env)

    # Then each lands typed in its field
    assert not settings.embedded
    assert settings.data_dir == Path("/srv/webround")
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.master_key_file == Path("/run/secrets/key")
    assert settings.allowed_targets == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert settings.retry_schedule == (1.0, 1.0, 2.0)
    assert settings.port == 9000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEBROUND_DATABASE_URL", "mysql://x/y"),
        ("WEBROUND_BROKER_URL", "kafka://x"),
        ("WEBROUND_ALLOWED_TARGETS", "10.0.0.0/33"),
        ("WEBROUND_RETRY_SCHEDULE", "5,soon"),
        ("WEBROUND_RETRY_SCHEDULE", "-1"),
        ("WEBROUND_PORT", "80000"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name: str, value: str) -> None:
    # Given a variable with a value that cannot work
    # When settings are read
    # Then the error names the variable
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_the_master_key_never_shows_in_the_settings_repr() -> None:
    # Given a master key in the environment
    settings = Settings.from_env({"WEBROUND_MASTER_KEY": "c2VjcmV0LWtleS1tYXRlcmlhbA=="})

    # When the settings are printed
    # Then the key is not in the text
    assert "c2VjcmV0" not in repr(settings)


def test_the_configuration_doc_is_generated_from_the_settings_table() -> None:
    # Given docs/configuration.md
    doc = (ROOT / "docs" / "configuration.md").read_text()

    # When compared with the table generated from SETTINGS
    # Then the doc holds it verbatim (regenerate with `webround settings --markdown`)
    assert markdown_table() in doc


def test_each_application_gets_its_own_sqlite_file(tmp_path: Path) -> None:
    # Given the embedded default
    settings = Settings(data_dir=tmp_path)

    # When two applications' environments are built
    commerce = application_env(settings, "commerce")
    webhooks = application_env(settings, "webhooks")

    # Then each names its own file, under keys prefixed with the application name
    assert commerce["COMMERCE_SQLITE_DBNAME"] == str(tmp_path / "commerce.sqlite")
    assert webhooks["WEBHOOKS_SQLITE_DBNAME"] == str(tmp_path / "webhooks.sqlite")


def test_postgres_urls_become_the_librarys_settings() -> None:
    # Given a PostgreSQL URL with credentials and a schema
    settings = Settings(
        database_url="postgresql://shop%40x:p%2Fw@db.internal:5433/orders?schema=wr"
    )

    # When the commerce environment is built
    env = application_env(settings, "commerce")

    # Then every part is decoded into its POSTGRES_* key
    assert env["COMMERCE_PERSISTENCE_MODULE"] == "infrastructure.persistence:SharedPostgresFactory"
    assert env["COMMERCE_POSTGRES_USER"] == "shop@x"
    assert env["COMMERCE_POSTGRES_PASSWORD"] == "p/w"
    assert env["COMMERCE_POSTGRES_HOST"] == "db.internal"
    assert env["COMMERCE_POSTGRES_PORT"] == "5433"
    assert env["COMMERCE_POSTGRES_DBNAME"] == "orders"
    assert env["COMMERCE_POSTGRES_SCHEMA"] == "wr"
