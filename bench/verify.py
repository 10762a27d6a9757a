"""What the stores say happened: every delivery and every recorded attempt, read from
the dispatch event store (the source of truth) by a `Services` built in the bench
process with the mode's own settings.

During a scenario only notification ids are counted (cheap); the events are decoded
once it is over, so the check costs the system under test next to nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from domain.delivery import DeliveryAttempted, DeliveryScheduled

SCHEDULED = f"{DeliveryScheduled.__module__}:{DeliveryScheduled.__qualname__}"
ATTEMPTED = f"{DeliveryAttempted.__module__}:{DeliveryAttempted.__qualname__}"
_PAGE = 5000


@dataclass
class DeliveryRecord:
    delivery_id: str
    webhook_id: str
    store_id: str
    event_id: str
    scheduled_at: float  # when the dispatcher created it (event timestamp)
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return any(
            a["status_code"] is not None and 200 <= a["status_code"] < 300 for a in self.attempts
        )


class DispatchLog:
    """Follows the dispatch log of one installation from a position."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self.recorder = services.dispatch.recorder
        self.mapper = services.dispatch.mapper

    def head(self) -> int:
        return int(self.recorder.max_notification_id() or 0)

    def _select(self, start: int, topics: list[str]) -> Iterable[Any]:
        while True:
            page = self.recorder.select_notifications(start=start, limit=_PAGE, topics=topics)
            yield from page
            if len(page) < _PAGE:
                return
            start = page[-1].id + 1

    def wait_for_attempts(
        self,
        since: int,
        expected: int,
        timeout: float,
        every: float = 0.25,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Wait until ``expected`` distinct deliveries have an attempt recorded after
        position ``since``; returns how many have (fewer when it timed out)."""
        seen: set[Any] = set()
        cursor = since + 1
        deadline = time.monotonic() + timeout
        while True:
            page = list(self._select(cursor, [ATTEMPTED]))
            for n in page:
                seen.add(n.originator_id)
            if page:
                cursor = page[-1].id + 1
            if progress:
                progress(len(seen))
            if len(seen) >= expected or time.monotonic() > deadline:
                return len(seen)
            time.sleep(every)

    def wait_for_scheduled(
        self, since: int, expected: int, timeout: float, every: float = 0.25
    ) -> int:
        count, cursor = 0, since + 1
        deadline = time.monotonic() + timeout
        while True:
            page = list(self._select(cursor, [SCHEDULED]))
            count += len(page)
            if page:
                cursor = page[-1].id + 1
            if count >= expected or time.monotonic() > deadline:
                return count
            time.sleep(every)

    def deliveries(self, since: int, store_ids: set[str]) -> dict[str, DeliveryRecord]:
        """Every delivery of these stores scheduled after ``since``, with its attempts."""
        found: dict[str, DeliveryRecord] = {}
        for n in self._select(since + 1, [SCHEDULED, ATTEMPTED]):
            event: Any = self.mapper.to_domain_event(n)
            if str(event.store_id) not in store_ids:
                continue
            key = str(event.originator_id)
            if n.topic == SCHEDULED:
                found[key] = DeliveryRecord(
                    key,
                    str(event.webhook_id),
                    str(event.store_id),
                    event.event_id,
                    event.timestamp.timestamp(),
                )
            elif key in found:
                found[key].attempts.append(
                    {
                        "number": event.number,
                        "status_code": event.status_code,
                        "error": event.error,
                        "started_at": event.started_at.timestamp(),
                        "recorded_at": event.timestamp.timestamp(),
                        "outcome": event.outcome,
                    }
                )
        return found


def check(
    deliveries: dict[str, DeliveryRecord],
    arrivals: list[list[Any]],
    expected: int,
    healthy_webhooks: set[str] | None = None,
) -> dict[str, Any]:
    """Cross-check the store against the receiver: the expected number of deliveries,
    each with an attempt recorded (on healthy webhooks: a successful one), and every
    attempt the receiver saw (delivery id and attempt number) recorded in the store.
    ``ok`` is False when anything is missing. Deliveries of a failing webhook with no
    attempt yet are held by its circuit breaker (pending, due): expected, not missing."""
    healthy, failing = [], []
    for d in deliveries.values():
        ok_hook = healthy_webhooks is None or d.webhook_id in healthy_webhooks
        (healthy if ok_hook else failing).append(d)
    not_succeeded = [d.delivery_id for d in healthy if not d.succeeded]
    recorded = {(d.delivery_id, str(a["number"])) for d in deliveries.values() for a in d.attempts}
    seen = [(row[4], str(row[5])) for row in arrivals if row[4]]
    unrecorded = {pair for pair in seen if pair[0] in deliveries and pair not in recorded}
    unknown = {pair for pair in seen if pair[0] not in deliveries}
    ok = len(deliveries) == expected and not not_succeeded and not unrecorded
    return {
        "ok": ok,
        "deliveries_expected": expected,
        "deliveries_scheduled": len(deliveries),
        "deliveries_with_attempt": sum(1 for d in deliveries.values() if d.attempts),
        "held_without_attempt": sum(1 for d in failing if not d.attempts),
        "attempts_recorded": len(recorded),
        "receiver_posts": len(seen),
        "receiver_duplicates": len(seen) - len(set(seen)),
        "healthy_not_succeeded": len(not_succeeded),
        "posts_not_recorded": len(unrecorded),
        "posts_unknown_delivery": len(unknown),
    }
