"""An operator's mistake is one clear line, never a traceback (issue #12, items 6 and 13).

Real `webround` processes, started as an operator would, each with one thing wrong: no
master key in production, another installation's key, a key file that cannot be read,
a database that cannot be reached or takes no more connections, a metrics port already
in use. Each exits non-zero at once with one line on standard error naming the setting
to fix.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.receiver import free_port
from tests.support.services import PrivatePostgres, Unavailable

WEBROUND = Path(sys.executable).parent / "webround"


def key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def env(tmp_path: Path, **settings: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("WEBROUND_")}
    return {**inherited, "WEBROUND_DATA_DIR": str(tmp_path / "data"), **settings}


def webround(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command; a role that started after all is stopped after 60 s (a failure)."""
    return subprocess.run(
        [str(WEBROUND), *args], env=environment, capture_output=True, text=True, timeout=60
    )


def assert_one_line(done: subprocess.CompletedProcess[str], *names: str) -> str:
    """A non-zero exit, and one line on standard error that names each of ``names``."""
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.mark.postgres
@pytest.mark.parametrize("role", ["worker", "dispatcher", "api"])
def test_a_production_role_without_a_master_key_refuses_to_start(
    tmp_path: Path, postgres_url: str, role: str
) -> None:
    # Given production settings without WEBROUND_MASTER_KEY(_FILE)
    # When a role starts
    done = webround(env(tmp_path, WEBROUND_DATABASE_URL=postgres_url), role)

    # Then it exits at once with one line naming the settings, having generated no key
    assert_one_line(done, "WEBROUND_MASTER_KEY", "WEBROUND_MASTER_KEY_FILE")
    assert done.returncode == 2
    assert not (tmp_path / "data" / "master.key").exists()


@pytest.mark.postgres
def test_a_worker_with_another_installations_key_refuses_to_start(
    tmp_path: Path, postgres_url: str
) -> None:
    # Given an installation started with its key (creating a store records the check)
    first = env(tmp_path, WEBROUND_DATABASE_URL=postgres_url, WEBROUND_MASTER_KEY=key())
    assert webround(first, "stores", "create", "--name", "Shop").returncode == 0

    # When a worker starts with another key (say, another host's generated one)
    done = webround({**first, "WEBROUND_MASTER_KEY": key()}, "worker")

    # Then it exits with one line naming the settings, instead of failing every delivery
    assert_one_line(done, "WEBROUND_MASTER_KEY", "key id")
    assert done.returncode == 2


def test_an_embedded_process_with_another_key_refuses_to_start(tmp_path: Path) -> None:
    # Given an embedded installation that started with its generated key file
    first = env(tmp_path)
    assert webround(first, "stores", "create", "--name", "Shop").returncode == 0

    # When a process is given another key for the same data directory
    done = webround({**first, "WEBROUND_MASTER_KEY": key()}, "stores", "create", "--name", "X")

    # Then it refuses in one line
    assert_one_line(done, "WEBROUND_MASTER_KEY")


@pytest.mark.parametrize(
    ("mode", "why"), [(None, "does not exist"), (0o644, "chmod 600")], ids=["missing", "0644"]
)
def test_an_unreadable_master_key_file_is_one_line(
    tmp_path: Path, mode: int | None, why: str
) -> None:
    # Given WEBROUND_MASTER_KEY_FILE naming a file that is missing, or readable by others
    path = tmp_path / "master.key"
    if mode is not None:
        path.write_text(key())
        path.chmod(mode)

    # When a process starts
    done = webround(env(tmp_path, WEBROUND_MASTER_KEY_FILE=str(path)), "worker")

    # Then it is one line naming the setting and what is wrong
    assert_one_line(done, "WEBROUND_MASTER_KEY_FILE", why)


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    # Given a database URL where nothing listens
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"

    # When a worker starts
    done = webround(env(tmp_path, WEBROUND_DATABASE_URL=url, WEBROUND_MASTER_KEY=key()), "worker")

    # Then it exits 1 with one line naming the setting
    assert_one_line(done, "WEBROUND_DATABASE_URL", "cannot use the database")
    assert done.returncode == 1


@pytest.fixture
def crowded_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL of its own taking 4 connections, all of them taken."""
    try:
        server = PrivatePostgres.start(max_connections=4)
    except Unavailable as error:
        pytest.skip(str(error))
    held = []
    try:
        for _ in range(4):
            held.append(psycopg.connect(server.url, autocommit=True))
        yield server
    finally:
        for connection in held:
            connection.close()
        server.close()


def test_a_database_with_too_many_clients_is_one_line(
    tmp_path: Path, crowded_postgres: PrivatePostgres
) -> None:
    # Given a database that takes no more connections
    settings = env(tmp_path, WEBROUND_DATABASE_URL=crowded_postgres.url, WEBROUND_MASTER_KEY=key())

    # When a worker starts
    done = webround(settings, "worker")

    # Then it exits 1 with one line saying so and naming the setting
    assert_one_line(done, "too many clients", "WEBROUND_DATABASE_URL")
    assert done.returncode == 1


def test_a_metrics_port_in_use_is_one_line(tmp_path: Path) -> None:
    # Given WEBROUND_METRICS_PORT set to a port another process holds (the same port set
    # for every process of a host)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        # When a worker starts
        done = webround(env(tmp_path, WEBROUND_METRICS_PORT=str(port)), "worker")

    # Then it exits at once with one line naming the setting, before doing any work
    assert_one_line(done, "WEBROUND_METRICS_PORT", f"127.0.0.1:{port}")
    assert done.returncode == 2


# --demo is single-user (issue #12, item 12) -------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])  # noqa: S104
def test_the_demo_refuses_to_serve_beyond_loopback(tmp_path: Path, host: str) -> None:
    # Given the demo, which lets every store's webhooks reach 127.0.0.1
    # When it is asked to serve on an address other people can reach
    done = webround(env(tmp_path), "serve", "--demo", "--host", host, "--port", str(free_port()))

    # Then it refuses in one line, naming the setting, before creating anything
    assert_one_line(done, "--demo", "--host", "WEBROUND_HOST")
    assert not (tmp_path / "data" / "first-store").exists()


def test_the_demo_says_it_is_single_user(tmp_path: Path) -> None:
    # Given the demo started on loopback, its output in a file
    output = tmp_path / "serve.log"
    with (
        output.open("wb") as sink,
        subprocess.Popen(
            [str(WEBROUND), "serve", "--demo", "--port", str(free_port())],
            env=env(tmp_path),
            stdout=sink,
            stderr=subprocess.STDOUT,
        ) as process,
    ):
        try:
            # When it has started
            deadline = time.monotonic() + 60
            while "SINGLE-USER" not in output.read_text() and time.monotonic() < deadline:
                assert process.poll() is None, output.read_text()
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)

    # Then it said loudly that it is single-user
    assert "DEMO MODE IS SINGLE-USER" in output.read_text()
