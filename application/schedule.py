"""The delivery schedule: which deliveries are due, when, and for which attempt; and each
webhook's health (the circuit breaker's record).

A delivery is due from when it is scheduled, again at each failed attempt's
``next_attempt_at``, and leaves the schedule when it succeeds or fails for good. The
schedule's rows are written *in the same transaction as the events that change them*
(the dispatch application hands a `ScheduleWrite` to its event store's recorder with
every save; infrastructure's recorder writes it before the events): no follower decodes
the events again, and the rows can never disagree with the log.

This pure mapping says what each event changes, and how a batch of changes folds into
few row operations (`fold_changes`, `fold_outcomes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from uuid import UUID

from application.follow import partition_of
from domain.delivery import CircuitPolicy, DeliveryAttempted, DeliveryScheduled, succeeded


@dataclass(frozen=True)
class Due:
    """A new delivery, due at ``due_at`` for ``attempt``: its first when it is scheduled,
    a later one when a retry in the same batch was folded into it (`fold_changes`).
    ``entity_id`` and ``position`` (its envelope's) order deliveries of one entity."""

    delivery_id: UUID
    webhook_id: UUID
    envelope_id: UUID
    store_id: UUID
    due_at: datetime
    attempt: int = 1
    entity_id: UUID | None = None
    position: int | None = None
    partition: int = 0  # the store's (`application.follow.partition_of`)


@dataclass(frozen=True)
class Retry:
    """A delivery whose attempt failed: due again at ``due_at`` for ``next_attempt``."""

    delivery_id: UUID
    next_attempt: int
    due_at: datetime


@dataclass(frozen=True)
class Done:
    """A delivery that succeeded or failed for good: nothing more is due."""

    delivery_id: UUID


@dataclass(frozen=True)
class Outcome:
    """An attempt's result for its webhook's health (circuit breaker, auto-disable)."""

    webhook_id: UUID
    succeeded: bool
    at: datetime


Change = Due | Retry | Done


def outcome_of(domain_event: object) -> Outcome | None:
    if isinstance(domain_event, DeliveryAttempted):
        e = domain_event
        return Outcome(e.webhook_id, succeeded(e.status_code), e.started_at)
    return None


def schedule_change(domain_event: object, partitions: int = 1) -> Change | None:
    match domain_event:
        case DeliveryScheduled():
            e = domain_event
            return Due(
                e.originator_id,
                e.webhook_id,
                e.envelope_id,
                e.store_id,
                e.due_at,
                entity_id=e.entity_id,
                position=e.position,
                partition=partition_of(e.store_id, partitions),
            )
        case DeliveryAttempted(next_attempt_at=None):
            return Done(domain_event.originator_id)
        case DeliveryAttempted():
            a = domain_event
            assert a.next_attempt_at is not None
            return Retry(a.originator_id, a.number + 1, a.next_attempt_at)
    return None


@dataclass(frozen=True)
class ScheduleWrite:
    """What one save of the dispatch application changes in the schedule and in the
    webhooks' health, written by the event store's recorder in the save's transaction:
    ``changes`` folded to row operations, ``outcomes`` to fold into the current health
    records (read and updated under a lock in that transaction) by ``policy``."""

    changes: Folded
    outcomes: tuple[Outcome, ...]
    policy: CircuitPolicy
    # (delivery, attempt number) of each attempt whose delivery was scheduled by an
    # earlier save: the delivery must be due for exactly that attempt, or the save is
    # refused (an attempt recorded twice, or for a delivery that is not waiting for it).
    expected: tuple[tuple[UUID, int], ...] = ()

    @property
    def empty(self) -> bool:
        c = self.changes
        return not (c.deletes or c.updates or c.inserts or self.outcomes or self.expected)


def schedule_write(
    events: Iterable[object], policy: CircuitPolicy, partitions: int = 1
) -> ScheduleWrite:
    """The `ScheduleWrite` of a save's events (in log order)."""
    listed = list(events)
    changes = [c for e in listed if (c := schedule_change(e, partitions)) is not None]
    outcomes = tuple(o for o in map(outcome_of, listed) if o is not None)
    scheduled_here = {c.delivery_id for c in changes if isinstance(c, Due)}
    expected = tuple(
        (e.originator_id, e.number)
        for e in listed
        if isinstance(e, DeliveryAttempted) and e.originator_id not in scheduled_here
    )
    return ScheduleWrite(fold_changes(changes), outcomes, policy, expected)


# Folding a batch ------------------------------------------------------------------------


@dataclass(frozen=True)
class Folded:
    """A batch's changes as row operations, to run in this order: ``deletes``, then
    ``updates`` (each only where the row's attempt is lower than the retry's, so an old
    retry never overwrites a newer one), then ``inserts`` (none where the row exists)."""

    deletes: list[UUID] = field(default_factory=list)
    updates: list[Retry] = field(default_factory=list)
    inserts: list[Due] = field(default_factory=list)


@dataclass
class _Net:
    """What one delivery's changes in a batch amount to so far."""

    earlier: bool  # a row from an earlier batch may still be in the table
    delete: bool = False  # delete that row (the delivery was done)
    update: Retry | None = None  # move that row to this retry (where its attempt is lower)
    insert: Due | None = None  # add this row (where there is none)


def fold_changes(changes: Iterable[Change]) -> Folded:
    """Fold a batch of changes, in log order, into at most one delete, update and insert
    per delivery, leaving the same rows as applying each change in turn would: a Due
    inserts its row unless there is one, a Retry moves the row to its attempt if that is
    higher than the row's, a Done deletes the row.

    A delivery's Due comes from its first event (`DeliveryScheduled`, version 1), and
    the tracking position applies every event once, so no row of it exists before the
    batch that holds its Due: a Due then Done needs no row at all, and a Due then Retry
    is inserted at the retry's attempt and due time.
    """
    nets: dict[UUID, _Net] = {}
    for change in changes:
        net = nets.get(change.delivery_id)
        if net is None:
            net = nets[change.delivery_id] = _Net(earlier=not isinstance(change, Due))
        if isinstance(change, Due):
            if net.insert is None:  # a second Due would find the row there: nothing
                net.insert = change
        elif isinstance(change, Retry):
            if net.insert is not None and net.insert.attempt < change.next_attempt:
                net.insert = replace(net.insert, attempt=change.next_attempt, due_at=change.due_at)
            # Guarded updates compose: the later of two applies only if its attempt is
            # higher, so the one with the highest attempt (the first of equals) says it all.
            if net.earlier and (
                net.update is None or net.update.next_attempt < change.next_attempt
            ):
                net.update = change
        else:
            net.delete = net.delete or net.earlier
            net.earlier, net.update, net.insert = False, None, None
    folded = Folded()
    for delivery_id, net in nets.items():
        if net.delete:
            folded.deletes.append(delivery_id)
        if net.update is not None:
            folded.updates.append(net.update)
        if net.insert is not None:
            folded.inserts.append(net.insert)
    return folded


@dataclass(frozen=True)
class HealthRecord:
    """A webhook's record as its attempts' outcomes leave it (circuit breaker,
    auto-disable): a webhook without outcomes has the empty record, a closed circuit."""

    consecutive_failures: int = 0
    failing_since: datetime | None = None
    last_success_at: datetime | None = None
    open_until: datetime | None = None

    def after(self, outcome: Outcome, policy: CircuitPolicy) -> HealthRecord:
        """The record once ``outcome`` is counted: a success closes the circuit and
        clears the failures; a failure adds one and (re)opens the circuit per ``policy``."""
        if outcome.succeeded:
            return HealthRecord(0, None, outcome.at, None)
        failures = self.consecutive_failures + 1
        return HealthRecord(
            failures,
            self.failing_since or outcome.at,
            self.last_success_at,
            policy.open_until(failures, outcome.at),
        )


def fold_outcomes(
    current: Mapping[UUID, HealthRecord], outcomes: Iterable[Outcome], policy: CircuitPolicy
) -> dict[UUID, HealthRecord]:
    """The records of the webhooks that have ``outcomes`` (in log order), starting from
    their ``current`` ones (the empty record where there is none)."""
    records: dict[UUID, HealthRecord] = {}
    for outcome in outcomes:
        before = records.get(outcome.webhook_id)
        if before is None:
            before = current.get(outcome.webhook_id, HealthRecord())
        records[outcome.webhook_id] = before.after(outcome, policy)
    return records
