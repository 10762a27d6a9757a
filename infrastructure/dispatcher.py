"""The dispatcher: new store events → envelopes and deliveries → due attempts → queue.

Each pass pulls the followers it runs — the fan-out (`Dispatch.fan_out`: store events
become envelopes and deliveries) and the webhook policies (`application.policies`) — when
their source committed, then claims what is due and enqueues it. Everything is a
catch-up from durable state, so the loop can stop anywhere (even by `kill -9`) and
resume: followers from their tracking records, claimed-but-lost messages when their
lease runs out.

It keeps endpoints from hurting each other: per-webhook concurrency and rate limits and
the circuit breaker decide what is claimed; one claimed item that cannot be handled is
left to its lease, never an abort of the pass for the others.

Run by an `infrastructure.followers.Runner`: a pass that finds nothing sleeps until a
commit signals, or until `seconds_to_next_due` (a retry falling due, a lease running out,
a circuit's cool-down ending).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from application.dispatch import AttemptResult, DeliveryRef, Dispatch
from application.follow import Follower
from infrastructure.followers import Pulled, Signals
from infrastructure.leases import Owner, SoleOwner
from infrastructure.metrics import PARTITIONS_OWNED
from infrastructure.schedule import Claimed, Schedule
from infrastructure.worker import Message

log = logging.getLogger("webround.dispatcher")

# While a webhook is disabled its deliveries wait, looked at again this often.
HOLD = timedelta(seconds=60)


@dataclass
class _Bucket:
    """A token bucket: ``rate`` sends per second, bursts of up to ``max(rate, 1)``."""

    rate: float
    tokens: float
    at: datetime

    def take(self, now: datetime) -> float:
        """Take a token; returns 0 when one was available, else seconds until one is."""
        capacity = max(self.rate, 1.0)
        self.tokens = min(capacity, self.tokens + (now - self.at).total_seconds() * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Dispatcher:
    def __init__(
        self,
        dispatch: Dispatch,
        schedule: Schedule,
        enqueue_many: Callable[[list[dict[str, Any]]], None],
        *,
        owner: Owner | None = None,
        signals: Signals | None = None,
        policies: Follower | None = None,
        lease_seconds: float = 60.0,
        per_webhook: int = 8,
        per_store: int = 1_000_000,
        max_in_flight: int = 2000,
        beat_every: float = 5.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.dispatch = dispatch
        self.schedule = schedule
        self.signals = signals or Signals()
        self.owner: Owner = owner or SoleOwner(dispatch.partitions, ())
        self._partitioned = [f for f in (dispatch.fan_out, policies) if f is not None]
        self._followers = [Pulled(follower, self.signals) for follower in self._partitioned]
        self._beat_every = beat_every
        self._beat_at = 0.0
        self._partitions: tuple[int, ...] = ()
        self._per_store = per_store
        # Sends one pass's messages together (infrastructure.broker.enqueue_many).
        self._enqueue_many = enqueue_many
        self._lease = lease_seconds
        self._per_webhook = per_webhook
        self._max_in_flight = max_in_flight
        self._clock = clock or (lambda: datetime.now(UTC))
        self._envelope = dispatch.envelope_by_id
        self._buckets: dict[UUID, _Bucket] = {}

    def step(self) -> int:
        """One pass: the leases when due, the followers that have news, then the
        claims; returns how much work it found."""
        self._hold()
        done = sum(pulled.pull() for pulled in self._followers)
        return done + self.enqueue_due()

    def _hold(self) -> None:
        """Renew the leases when due, and work on what this process holds (nothing once
        they may have run out)."""
        if time.monotonic() >= self._beat_at:
            self._beat_at = time.monotonic() + self._beat_every
            try:
                self.owner.beat()
            except Exception as error:
                log.warning("cannot renew the dispatcher's leases (%s)", type(error).__name__)
        owned = tuple(sorted(self.owner.owned().partitions))
        if owned != self._partitions:
            self._partitions = owned
            for follower in self._partitioned:
                follower.follow_partitions(owned, self.dispatch.partitions)
            PARTITIONS_OWNED.set(len(owned))
            for pulled in self._followers:
                pulled.again()
            log.info("dispatching %d of %d partitions", len(owned), self.dispatch.partitions)

    @property
    def partitions(self) -> tuple[int, ...]:
        """The partitions this dispatcher works on now."""
        return self._partitions

    def seconds_to_next_due(self) -> float:
        """How long an idle dispatcher may sleep (unless a commit wakes it): until the
        next time-driven work of its partitions, or its next lease renewal."""
        now = self._clock()
        due = self.schedule.next_due(now, self._partitions)
        until_due = 3600.0 if due is None else max((due - now).total_seconds(), 0.0)
        return min(until_due, max(self._beat_at - time.monotonic(), 0.0))

    def nudge(self, *sources: str) -> None:
        """Something was recorded (in ``sources``; all when none are named): the next
        pass looks at it now rather than after idling."""
        names = sources or tuple(p.follower.source.name for p in self._followers)
        self.signals.raise_(*names)

    def enqueue_due(self) -> int:
        now = self._clock()
        claimed = self.schedule.claim(
            now,
            500,
            self._lease,
            self._per_webhook,
            max_in_flight=self._max_in_flight,
            per_store=self._per_store,
            partitions=self._partitions,
        )
        if not claimed:
            return 0
        self.dispatch.directory.refresh()
        messages: list[dict[str, Any]] = []
        try:
            for item in claimed:
                try:
                    message = self._message_for(item, now)
                except Exception as error:
                    # One item that cannot be handled (its webhook's data, the database
                    # for a moment) is left to its lease; the others go out.
                    log.error(
                        "delivery %s left to its lease: %s",
                        item.delivery_id,
                        type(error).__name__,
                    )
                    continue
                if message is not None:
                    messages.append(message)
        finally:
            # One send for the pass (one round trip on Redis). Whatever is not sent —
            # by a broker failing midway — stays leased and is claimed again when its
            # lease runs out.
            if messages:
                self._enqueue_many(messages)
        return len(claimed)

    def _message_for(self, item: Claimed, now: datetime) -> dict[str, Any] | None:
        """The message that attempts a claimed delivery now, or None when the delivery
        is settled here instead (webhook deleted), postponed (disabled, rate limited)."""
        target = self.dispatch.directory.get(item.webhook_id)
        if target is None or target.deleted:
            envelope = self._envelope(item.envelope_id)
            self.dispatch.record_attempts(
                [
                    AttemptResult(
                        DeliveryRef(
                            item.delivery_id, item.webhook_id, item.store_id, envelope.event_id
                        ),
                        item.attempt,
                        now,
                        0.0,
                        None,
                        error="webhook_deleted",
                        detail="the webhook was deleted before this delivery could be sent",
                        final=True,
                    )
                ]
            )
            return None
        if not target.enabled:
            self.schedule.postpone(item.delivery_id, now + HOLD)
            return None
        if target.rate_limit:
            bucket = self._buckets.get(target.webhook_id)
            if bucket is None or bucket.rate != target.rate_limit:
                bucket = _Bucket(target.rate_limit, max(target.rate_limit, 1.0), now)
                self._buckets[target.webhook_id] = bucket
            wait = bucket.take(now)
            if wait:
                self.schedule.postpone(item.delivery_id, now + timedelta(seconds=wait))
                return None
        envelope = self._envelope(item.envelope_id)
        message = Message.for_target(
            target,
            delivery_id=item.delivery_id,
            attempt=item.attempt,
            event_id=envelope.event_id,
            event_type=envelope.event_type,
            envelope_id=envelope.id,
            body=envelope.body,
        )
        return message.to_json()
