"""The dispatcher lock (SPEC §10 "a single active dispatcher by lock"): a PostgreSQL
advisory lock per schema, a file lock per data directory, and the standby loop."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from infrastructure.leader import FileLock, PostgresLock, lock_key, run_as_leader
from tests.conftest import POSTGRES_DSN


def eventually(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(0.02)


@pytest.fixture
def locks() -> Iterator[list[PostgresLock | FileLock]]:
    made: list[PostgresLock | FileLock] = []
    yield made
    for lock in made:
        lock.release()


def terminate(lock: PostgresLock) -> None:
    """Kill the lock's server session, as a restart or a network cut would."""
    key = lock.key & 0xFFFF_FFFF_FFFF_FFFF  # a bigint key shows as two halves in pg_locks
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
        terminated = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
            "AND granted AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
            (key >> 32, key & 0xFFFF_FFFF),
        ).fetchall()
    assert terminated == [(True,)]


@pytest.mark.postgres
def test_one_schema_has_one_holder_and_other_schemas_are_not_blocked(
    postgres_url: str, locks: list[PostgresLock | FileLock]
) -> None:
    # Given two dispatchers' locks on one schema, and one on another schema
    first, second = PostgresLock(postgres_url), PostgresLock(postgres_url)
    elsewhere = PostgresLock(postgres_url.replace("schema=", "schema=other_"))
    locks += [first, second, elsewhere]

    # When each tries to take it
    # Then the first holds it, the second does not, and the other installation does too
    assert first.try_acquire()
    assert not second.try_acquire()
    assert elsewhere.try_acquire()
    assert first.key != elsewhere.key
    assert first.key == lock_key(first.schema)

    # And once the holder lets go, the second gets it
    first.release()
    assert second.try_acquire()
    assert second.healthy()


@pytest.mark.postgres
def test_a_lost_session_is_noticed_and_frees_the_lock(
    postgres_url: str, locks: list[PostgresLock | FileLock]
) -> None:
    # Given a holder and a standby
    holder, standby = PostgresLock(postgres_url), PostgresLock(postgres_url)
    locks += [holder, standby]
    assert holder.try_acquire()
    assert not standby.try_acquire()

    # When the holder's server session is terminated
    terminate(holder)

    # Then the holder's health check says so, and the standby can take the lock
    assert not holder.healthy()
    assert standby.try_acquire()
    # And the former holder, trying again, is refused
    assert not holder.try_acquire()


@pytest.mark.postgres
def test_the_active_part_stops_at_once_when_the_lock_is_lost_and_comes_back(
    postgres_url: str, locks: list[PostgresLock | FileLock]
) -> None:
    # Given a dispatcher loop holding the lock, checking it every 0.3 s
    lock, rival = PostgresLock(postgres_url), PostgresLock(postgres_url)
    locks += [lock, rival]
    events: list[str] = []

    def start() -> Callable[[], None]:
        events.append("start")
        return lambda: events.append("stop")

    stop = threading.Event()
    loop = threading.Thread(
        target=run_as_leader,
        args=(lock, start, stop),
        kwargs={"retry_seconds": 0.05, "check_seconds": 0.3},
    )
    loop.start()
    try:
        eventually(lambda: events == ["start"])

        # When its session is terminated and a rival takes the lock at once
        terminate(lock)
        eventually(rival.try_acquire)

        # Then it stops its active part within a check, and stands by while the rival
        # holds the lock
        eventually(lambda: events == ["start", "stop"], timeout=1.0)
        time.sleep(0.4)
        assert events == ["start", "stop"]
        # And it becomes active again once the rival lets go
        rival.release()
        eventually(lambda: events == ["start", "stop", "start"])
    finally:
        # And stopping the loop stops the active part and lets go of the lock
        stop.set()
        loop.join(timeout=10)
    assert events == ["start", "stop", "start", "stop"]
    assert rival.try_acquire()


def test_a_file_lock_has_one_holder_per_data_directory(
    tmp_path: Path, locks: list[PostgresLock | FileLock]
) -> None:
    # Given two locks on one data directory's lock file, and one on another directory's
    first, second = (
        FileLock(tmp_path / "a" / "dispatcher.lock"),
        FileLock(tmp_path / "a" / "dispatcher.lock"),
    )
    elsewhere = FileLock(tmp_path / "b" / "dispatcher.lock")
    locks += [first, second, elsewhere]

    # Then only one of the first two holds it at a time
    assert first.try_acquire()
    assert first.healthy()
    assert not second.try_acquire()
    assert elsewhere.try_acquire()
    first.release()
    assert second.try_acquire()


def test_a_file_lock_is_freed_when_its_process_is_killed(
    tmp_path: Path, locks: list[PostgresLock | FileLock]
) -> None:
    # Given another process holding the data directory's lock
    path = tmp_path / "dispatcher.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from infrastructure.leader import FileLock; "
            f"assert FileLock(Path({str(path)!r})).try_acquire(); "
            "print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        lock = FileLock(path)
        locks.append(lock)
        assert not lock.try_acquire()

        # When that process is killed (SIGKILL: no clean-up of its own)
        holder.kill()
        holder.wait(timeout=10)

        # Then the lock is free for this one
        assert lock.try_acquire()
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
