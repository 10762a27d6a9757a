"""Sharing the dispatch work among dispatcher processes: partitions and roles, leased.

The stores' work is divided into a fixed number of partitions
(`application.follow.partition_of`): a store
event belongs to the partition of its entity, a delivery to the partition of its store
(so a webhook's deliveries, its caps, circuit and ordering are one dispatcher's). Each
partition, and each of the read models' followers (a *role*), is leased to one live
dispatcher at a time, in PostgreSQL:

- ``dispatch_members``: each dispatcher heartbeats its row (`Leases.beat`, every third
  of the lease); a member whose row ran out is gone.
- ``dispatch_leases``: one row per partition and role, with its owner and until when.
  At every beat a member renews what it holds, lets go of what is beyond its fair share
  (a new member joined), and takes free or run-out leases up to its share (a member
  died, or let go). Times are the database's clock, the same for every host.

A member that cannot renew (the database away) stops working on its partitions once its
last lease would have run out (`Leases.owned` is then empty), before anyone else may take
them. Correctness does not rest on the leases — followers move their lanes by compare
and set, envelopes and deliveries have derived ids, claims lease rows — they keep two
dispatchers from doing the same work.

Embedded mode runs one process (a file lock, `infrastructure.leader`): `SoleOwner` holds
every partition and role.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eventsourcing.postgres import PostgresDatastore

from infrastructure.sql import transaction

log = logging.getLogger("webround.leases")

PARTITION = "partition:"
ROLE = "role:"


def partition_names(partitions: int) -> list[str]:
    return [f"{PARTITION}{p:03d}" for p in range(partitions)]


@dataclass(frozen=True)
class Holding:
    """What a member holds: partitions (numbers) and roles (names)."""

    partitions: frozenset[int]
    roles: frozenset[str]


class Owner(Protocol):
    def beat(self) -> Holding: ...
    def owned(self) -> Holding: ...
    def close(self) -> None: ...


class SoleOwner:
    """The only dispatcher there is (embedded mode): it holds everything."""

    def __init__(self, partitions: int, roles: Sequence[str]) -> None:
        self._holding = Holding(frozenset(range(partitions)), frozenset(roles))

    def beat(self) -> Holding:
        return self._holding

    def owned(self) -> Holding:
        return self._holding

    def close(self) -> None:
        pass


def member_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Leases:
    """This process's membership and leases in PostgreSQL (see the module's docstring)."""

    def __init__(
        self,
        datastore: PostgresDatastore,
        partitions: int,
        roles: Sequence[str],
        lease_seconds: float,
        member: str | None = None,
    ) -> None:
        self._datastore = datastore
        self.partitions = partitions
        self.roles = tuple(roles)
        self.lease_seconds = lease_seconds
        self.member = member or member_name()
        self._holding = Holding(frozenset(), frozenset())
        self._valid_until = 0.0  # time.monotonic() after which the holding may be stale
        names = [*partition_names(partitions), *(f"{ROLE}{r}" for r in self.roles)]
        with transaction(datastore) as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS dispatch_members (member text PRIMARY KEY,"
                " until double precision NOT NULL)"
            )
            c.execute(
                "CREATE TABLE IF NOT EXISTS dispatch_leases (name text PRIMARY KEY,"
                " owner text, until double precision NOT NULL DEFAULT 0)"
            )
            c.execute("SELECT count(*) FROM dispatch_leases WHERE name LIKE %s", (PARTITION + "%",))
            existing = int(c.fetchone()[0])
            if existing and existing != partitions:
                raise LeaseError(
                    f"WEBROUND_PARTITIONS is {partitions}, but this installation was set up "
                    f"with {existing} partitions: set it back to {existing}"
                )
            c.executemany(
                "INSERT INTO dispatch_leases (name) VALUES (%s) ON CONFLICT DO NOTHING",
                [(name,) for name in names],
            )

    def owned(self) -> Holding:
        """What this member may work on now: nothing once its leases may have run out."""
        if time.monotonic() >= self._valid_until:
            return Holding(frozenset(), frozenset())
        return self._holding

    def beat(self) -> Holding:
        """Heartbeat, renew, let go of the excess, take a fair share; returns what this
        member holds (raises if the database cannot be reached: `owned` then runs out)."""
        began = time.monotonic()
        lease = self.lease_seconds
        with transaction(self._datastore) as c:
            c.execute("SELECT extract(epoch from clock_timestamp())")
            now = float(c.fetchone()[0])
            c.execute(
                "INSERT INTO dispatch_members VALUES (%s, %s) ON CONFLICT (member)"
                " DO UPDATE SET until = excluded.until",
                (self.member, now + lease),
            )
            c.execute("DELETE FROM dispatch_members WHERE until < %s", (now - lease,))
            c.execute("SELECT count(*) FROM dispatch_members WHERE until >= %s", (now,))
            members = max(int(c.fetchone()[0]), 1)
            c.execute(
                "UPDATE dispatch_leases SET until = %s WHERE owner = %s RETURNING name",
                (now + lease, self.member),
            )
            mine = sorted(str(row[0]) for row in c.fetchall())
            partitions = self._balance(
                c, mine, PARTITION, math.ceil(self.partitions / members), now
            )
            roles = self._balance(
                c, mine, ROLE, math.ceil(len(self.roles) / members) if self.roles else 0, now
            )
        self._holding = Holding(
            frozenset(int(name.removeprefix(PARTITION)) for name in partitions),
            frozenset(name.removeprefix(ROLE) for name in roles),
        )
        # Valid for the lease counted from before the beat, less a margin for clocks.
        self._valid_until = began + lease * 0.9
        return self._holding

    def _balance(self, c: Any, mine: list[str], prefix: str, share: int, now: float) -> list[str]:
        held = [name for name in mine if name.startswith(prefix)]
        if len(held) > share:
            extra = held[share:]
            c.execute(
                "UPDATE dispatch_leases SET owner = NULL, until = 0"
                " WHERE owner = %s AND name = ANY(%s)",
                (self.member, extra),
            )
            return held[:share]
        if len(held) < share:
            c.execute(
                "UPDATE dispatch_leases SET owner = %s, until = %s WHERE name IN"
                " (SELECT name FROM dispatch_leases WHERE name LIKE %s"
                "  AND (owner IS NULL OR until < %s) ORDER BY name LIMIT %s"
                "  FOR UPDATE SKIP LOCKED) RETURNING name",
                (self.member, now + self.lease_seconds, prefix + "%", now, share - len(held)),
            )
            held += sorted(str(row[0]) for row in c.fetchall())
        return held

    def close(self) -> None:
        """Let go of everything at once (a graceful stop): the others take over at their
        next beat rather than after the lease."""
        self._valid_until = 0.0
        try:
            with transaction(self._datastore) as c:
                c.execute(
                    "UPDATE dispatch_leases SET owner = NULL, until = 0 WHERE owner = %s",
                    (self.member,),
                )
                c.execute("DELETE FROM dispatch_members WHERE member = %s", (self.member,))
        except Exception as error:  # the leases run out by themselves
            log.warning("could not let go of the leases: %s", type(error).__name__)


class LeaseError(RuntimeError):
    """The leases cannot be used as configured (the message says what to change)."""


def lease_table(datastore: PostgresDatastore) -> list[dict[str, Any]]:
    """Every lease with its owner and seconds left (for `webround dispatchers`)."""
    with transaction(datastore, write=False) as c:
        c.execute("SELECT to_regclass('dispatch_leases')")
        if c.fetchone()[0] is None:
            return []  # no dispatcher has started yet
        c.execute("SELECT extract(epoch from clock_timestamp())")
        now = float(c.fetchone()[0])
        c.execute("SELECT name, owner, until FROM dispatch_leases ORDER BY name")
        return [
            {
                "name": str(name),
                "owner": owner if owner and until >= now else None,
                "secondsLeft": round(max(until - now, 0.0), 1) if owner else None,
            }
            for name, owner, until in c.fetchall()
        ]
