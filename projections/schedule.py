"""The delivery schedule: which deliveries are due, when, and for which attempt.

A projection of the dispatch log: a delivery is due from when it is scheduled, again at
each failed attempt's ``next_attempt_at``, and leaves the schedule when it succeeds or
fails for good. This pure mapping says what each event changes; the SQL table that holds
the schedule (and its tracking position, in the same transaction) is infrastructure's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.delivery import DeliveryAttempted, DeliveryScheduled


@dataclass(frozen=True)
class Due:
    """A new delivery, due at ``due_at`` for its first attempt."""

    delivery_id: UUID
    webhook_id: UUID
    envelope_id: UUID
    store_id: UUID
    due_at: datetime


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


def outcome_of(domain_event: Any) -> Outcome | None:
    if isinstance(domain_event, DeliveryAttempted):
        a: Any = domain_event
        ok = a.status_code is not None and 200 <= a.status_code < 300
        return Outcome(a.webhook_id, ok, a.started_at)
    return None


def schedule_change(domain_event: Any) -> Change | None:
    if isinstance(domain_event, DeliveryScheduled):
        e: Any = domain_event
        return Due(e.originator_id, e.webhook_id, e.envelope_id, e.store_id, e.due_at)
    if isinstance(domain_event, DeliveryAttempted):
        a: Any = domain_event
        if a.next_attempt_at is None:
            return Done(a.originator_id)
        return Retry(a.originator_id, a.number + 1, a.next_attempt_at)
    return None
