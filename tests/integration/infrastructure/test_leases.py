"""Partitions and roles leased to dispatcher processes (`infrastructure.leases`) on a real
PostgreSQL: fair shares, a member that stops renewing loses its leases, one that joins
gets its share, a graceful stop lets go at once. Lease times are a few seconds here."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrastructure.bootstrap import Services, build
from infrastructure.leases import LeaseError, Leases, lease_table
from infrastructure.settings import Settings

pytestmark = pytest.mark.postgres

ROLES = ["read-models@commerce", "read-models@webhooks", "read-models@dispatch"]
LEASE = 2.0


@pytest.fixture
def services(postgres_url: str, tmp_path: Path) -> Iterator[Services]:
    built = build(Settings(data_dir=tmp_path / "data", database_url=postgres_url))
    yield built
    built.close()


def member(services: Services, name: str, partitions: int = 8) -> Leases:
    recorder: object = services.dispatch.recorder
    return Leases(recorder.datastore, partitions, ROLES, LEASE, member=name)  # type: ignore[attr-defined]


def beat_all(*members: Leases) -> None:
    """Two rounds of beats: the first lets go of what is beyond the shares, the second
    takes what was let go."""
    for _ in range(2):
        for m in members:
            m.beat()


def test_one_member_holds_everything(services: Services) -> None:
    # Given one dispatcher
    only = member(services, "a")

    # When it beats
    held = only.beat()

    # Then it holds every partition and every role
    assert held.partitions == frozenset(range(8))
    assert held.roles == frozenset(ROLES)


def test_members_share_the_partitions_and_roles_fairly(services: Services) -> None:
    # Given one dispatcher holding everything, and a second that joins
    a, b = member(services, "a"), member(services, "b")
    a.beat()

    # When both beat (twice: the first let go, the second takes)
    beat_all(b, a, b)

    # Then each holds half the partitions, none twice, and the roles are shared
    pa, pb = a.owned().partitions, b.owned().partitions
    assert len(pa) == len(pb) == 4
    assert not pa & pb
    assert pa | pb == frozenset(range(8))
    ra, rb = a.owned().roles, b.owned().roles
    assert not ra & rb
    assert ra | rb == frozenset(ROLES)
    assert max(len(ra), len(rb)) == 2
    # And the table shows every lease with its owner
    owners = {
        row["name"]: row["owner"] for row in lease_table(services.dispatch.recorder.datastore)
    }  # type: ignore[attr-defined]
    assert set(owners.values()) == {"a", "b"}


def test_the_leases_of_a_member_that_stops_renewing_move_to_the_others(
    services: Services,
) -> None:
    # Given two dispatchers sharing the work
    a, b = member(services, "a"), member(services, "b")
    beat_all(a, b)
    assert len(a.owned().partitions) == 4

    # When one stops renewing (killed) and its lease runs out
    time.sleep(LEASE + 0.5)
    held = b.beat()

    # Then the other holds everything
    assert held.partitions == frozenset(range(8))
    assert held.roles == frozenset(ROLES)
    # And the one that stopped may no longer work on any of it (its lease ran out)
    assert a.owned().partitions == frozenset()


def test_a_graceful_stop_lets_go_at_once(services: Services) -> None:
    # Given two dispatchers sharing the work
    a, b = member(services, "a"), member(services, "b")
    beat_all(a, b)

    # When one stops gracefully
    a.close()

    # Then the other takes everything at its next beat, without waiting for the lease
    assert b.beat().partitions == frozenset(range(8))


def test_a_third_member_gets_its_share(services: Services) -> None:
    # Given two dispatchers sharing 9 partitions
    a, b = member(services, "a", 9), member(services, "b", 9)
    beat_all(a, b)

    # When a third joins
    c = member(services, "c", 9)
    beat_all(c, a, b, c)

    # Then each holds three, and together all nine
    held = [m.owned().partitions for m in (a, b, c)]
    assert [len(h) for h in held] == [3, 3, 3]
    assert frozenset().union(*held) == frozenset(range(9))


def test_the_number_of_partitions_is_fixed_once_set(services: Services) -> None:
    # Given an installation set up with 8 partitions
    member(services, "a", 8)

    # When a dispatcher starts configured with another number
    # Then it refuses, saying what to set
    with pytest.raises(LeaseError, match=r"WEBROUND_PARTITIONS is 16.*set it back to 8"):
        member(services, "b", 16)
