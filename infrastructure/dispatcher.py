"""The dispatcher loop: new store events → envelopes and deliveries → due attempts → queue.

Each step is a catch-up from durable state, so the loop can stop anywhere (even by
`kill -9`) and resume: envelopes from the dispatch tracking position, the schedule from
its own, and claimed-but-lost messages when their lease runs out.

It also keeps endpoints from hurting each other: per-webhook concurrency and rate limits
and the circuit breaker decide what is claimed, and a webhook that has failed for days
without a success is disabled (with the reason in its audit trail).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from uuid import UUID

from application.dispatch import AttemptResult, DeliveryRef, Dispatch
from application.webhooks import Webhooks
from domain.delivery import Envelope
from domain.values import Actor
from infrastructure.schedule import Claimed, Schedule
from infrastructure.worker import Message

log = logging.getLogger("webround.dispatcher")

# While a webhook is disabled its deliveries wait, looked at again this often.
HOLD = timedelta(seconds=60)
HEALTH_CHECK_EVERY = timedelta(seconds=60)
# How long an idle dispatcher waits before looking again, unless nudged: polling, when
# nothing tells it about other processes' commits (SQLite, embedded: saves made in its
# own process nudge it, see application/recorded.py) ...
IDLE_POLL = 0.1
# ... and with a commit listener (PostgreSQL LISTEN/NOTIFY: infrastructure.wakeup), where
# only time-driven work (retries falling due, leases running out, held webhooks, rate
# limits) waits for it — up to this much later than due.
IDLE_LISTENING = 0.25


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
        webhooks: Webhooks | None = None,
        lease_seconds: float = 60.0,
        per_webhook: int = 8,
        max_in_flight: int = 2000,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.dispatch = dispatch
        self.schedule = schedule
        # Sends one pass's messages together (infrastructure.broker.enqueue_many).
        self._enqueue_many = enqueue_many
        self._webhooks = webhooks
        self._lease = lease_seconds
        self._per_webhook = per_webhook
        self._max_in_flight = max_in_flight
        self._clock = clock or (lambda: datetime.now(UTC))
        self._envelope = lru_cache(maxsize=5_000)(self._load_envelope)
        self._buckets: dict[UUID, _Bucket] = {}
        self._wake = threading.Event()
        self._last_health_check: datetime | None = None

    def step(self) -> int:
        """One pass over all stages; returns how much work it found."""
        created = self.dispatch.process_new_events()
        sent = self.enqueue_due()
        self.check_health()
        return created + sent

    def enqueue_due(self) -> int:
        now = self._clock()
        claimed = self.schedule.claim(
            now, 500, self._lease, self._per_webhook, max_in_flight=self._max_in_flight
        )
        if not claimed:
            return 0
        self.dispatch.directory.refresh()
        messages: list[dict[str, Any]] = []
        try:
            for item in claimed:
                message = self._message_for(item, now)
                if message is not None:
                    messages.append(message)
        finally:
            # One send for the pass (one round trip on Redis). Also when a later item
            # failed (say the database went away while postponing one): what is ready
            # goes out now rather than after its lease. Whatever is not sent — here or
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

    def check_health(self, force: bool = False) -> list[UUID]:
        """Disable webhooks whose every delivery has failed for too long; returns them."""
        now = self._clock()
        due = self._last_health_check is None or now - self._last_health_check >= HEALTH_CHECK_EVERY
        if self._webhooks is None or not (due or force):
            return []
        self._last_health_check = now
        self.dispatch.directory.refresh()
        for webhook_id in self.dispatch.directory.take_reenabled():
            self.schedule.forgive(webhook_id)  # enabled again: start with a clean record
        disabled = []
        days = self.schedule.policy.disable_after / timedelta(days=1)
        for webhook_id in self.schedule.failing_for_too_long(now):
            target = self.dispatch.directory.get(webhook_id)
            if target is None or not target.enabled or target.deleted:
                continue
            self._webhooks.update_webhook(
                target.store_id,
                webhook_id,
                Actor.system(),
                enabled=False,
                disabled_reason=f"every delivery failed for {days:g} days",
            )
            disabled.append(webhook_id)
            log.warning("webhook %s disabled: failing for %g days", webhook_id, days)
        return disabled

    def _load_envelope(self, envelope_id: UUID) -> Envelope:
        envelope: Envelope = self.dispatch.repository.get(envelope_id)
        return envelope

    def nudge(self) -> None:
        """Something new was recorded: run the next pass now rather than after idling."""
        self._wake.set()

    def run(
        self, stop: threading.Event, idle_seconds: float | Callable[[], float] = IDLE_POLL
    ) -> None:
        """Loop until ``stop`` is set; a failing pass is logged and retried, never fatal.

        When a pass finds nothing to do it waits ``idle_seconds`` (a number, or asked
        before each wait) or until `nudge`: with a commit listener running
        (infrastructure.wakeup) new events nudge it, and the wait only bounds how late
        time-driven work is seen (a retry falling due, a lease running out)."""
        while not stop.is_set():
            # Cleared before the pass, not after the wait: a nudge arriving during the
            # pass (a commit the pass may have missed) makes the next wait return at once.
            self._wake.clear()
            try:
                busy = self.step()
            except Exception:
                log.exception("dispatcher pass failed; retrying")
                busy = 0
                stop.wait(1.0)
            if not busy:
                self._wake.wait(idle_seconds() if callable(idle_seconds) else idle_seconds)
