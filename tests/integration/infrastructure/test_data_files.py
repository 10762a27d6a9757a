"""Embedded data files are private (issue #12, item 14): every SQLite file of the data
directory — event stores (with the schedule and idempotency keys beside them), read
models, and their -wal and -shm companions — is readable and writable by its owner only
(0600), whatever the umask and even in a data directory that is open to others (0755)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from domain.values import Actor
from infrastructure.bootstrap import build
from infrastructure.settings import Settings


@pytest.fixture
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # files 0644 and folders 0755 unless told otherwise
    yield
    os.umask(previous)


def modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.is_file()}


def use(settings: Settings) -> None:
    """Start the embedded services, write to every store, and stop."""
    services = build(settings)
    try:
        store = UUID(services.webhooks.create_store("Shop", Actor.system())["storeId"])
        services.webhooks.create_webhook(
            store, Actor.system(), url="https://93.184.215.14/h", event_types=["*"]
        )
        services.commerce.register_customer(store, "a@b.example", "A", None, Actor.system())
        services.dispatch.process_new_events()
        services.read_models.catch_up_all()
    finally:
        services.close()


def test_every_data_file_is_private_in_a_folder_open_to_others(
    tmp_path: Path, usual_umask: None
) -> None:
    # Given a data directory that exists already, open to everyone (0755)
    data = tmp_path / "data"
    data.mkdir(mode=0o755)

    # When the embedded service runs in it
    use(Settings(data_dir=data))

    # Then every file it made is readable and writable by its owner only
    files = modes(data)
    assert {"commerce.sqlite", "dispatch.sqlite", "readmodels.sqlite"} <= files.keys()
    assert {name: mode for name, mode in files.items() if mode != 0o600} == {}


def test_data_files_an_earlier_version_left_open_are_made_private(
    tmp_path: Path, usual_umask: None
) -> None:
    # Given data files made 0644 by an earlier version
    data = tmp_path / "data"
    use(Settings(data_dir=data))
    for path in data.glob("*.sqlite*"):
        path.chmod(0o644)

    # When the service starts again
    use(Settings(data_dir=data))

    # Then its databases are private again
    open_ones = {n: m for n, m in modes(data).items() if ".sqlite" in n and m != 0o600}
    assert open_ones == {}
