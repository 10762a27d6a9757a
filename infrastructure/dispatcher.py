"""The dispatcher loop: new store events → envelopes and deliveries → due attempts → queue.

Each step is a catch-up from durable state, so the loop can stop anywhere (even by
`kill -9`) and resume: envelopes from the dispatch tracking position, the schedule from
its own, and claimed-but-lost messages when their lease runs out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from uuid import UUID

from application.dispatch import AttemptResult, Dispatch
from domain.delivery import Envelope
from infrastructure.schedule import Claimed, Schedule
from infrastructure.worker import Message

log = logging.getLogger("webround.dispatcher")

# While a webhook is disabled its deliveries wait, looked at again this often.
HOLD = timedelta(seconds=60)


class Dispatcher:
    def __init__(
        self,
        dispatch: Dispatch,
        schedule: Schedule,
        enqueue: Callable[[dict[str, Any]], None],
        *,
        lease_seconds: float = 60.0,
        max_in_flight: int = 2000,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.dispatch = dispatch
        self.schedule = schedule
        self._enqueue = enqueue
        self._lease = lease_seconds
        self._max_in_flight = max_in_flight
        self._clock = clock or (lambda: datetime.now(UTC))
        self._envelope = lru_cache(maxsize=5_000)(self._load_envelope)
        self._wake = threading.Event()

    def step(self) -> int:
        """One pass over all three stages; returns how much work it found."""
        created = self.dispatch.process_new_events()
        scheduled = self.schedule.catch_up(self.dispatch)
        sent = self.enqueue_due()
        return created + scheduled + sent

    def enqueue_due(self) -> int:
        now = self._clock()
        room = self._max_in_flight - self.schedule.in_flight(now)
        if room <= 0:
            return 0
        claimed = self.schedule.claim(now, min(room, 500), self._lease)
        if not claimed:
            return 0
        self.dispatch.directory.refresh()
        for item in claimed:
            self._send(item, now)
        return len(claimed)

    def _send(self, item: Claimed, now: datetime) -> None:
        target = self.dispatch.directory.get(item.webhook_id)
        if target is None or target.deleted:
            self.dispatch.record_attempts(
                [
                    AttemptResult(
                        item.delivery_id,
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
            return
        if not target.enabled:
            self.schedule.postpone(item.delivery_id, now + HOLD)
            return
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
        self._enqueue(message.to_json())

    def _load_envelope(self, envelope_id: UUID) -> Envelope:
        envelope: Envelope = self.dispatch.repository.get(envelope_id)
        return envelope

    def nudge(self) -> None:
        """Something new was recorded: run the next pass now rather than after idling."""
        self._wake.set()

    def run(self, stop: threading.Event, idle_seconds: float = 0.02) -> None:
        """Loop until ``stop`` is set; a failing pass is logged and retried, never fatal."""
        while not stop.is_set():
            try:
                busy = self.step()
            except Exception:
                log.exception("dispatcher pass failed; retrying")
                busy = 0
                stop.wait(1.0)
            if not busy:
                self._wake.wait(idle_seconds)
                self._wake.clear()
