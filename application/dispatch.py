"""The dispatch application: envelopes and deliveries, and the record of every attempt.

It follows the commerce notification log. For each store event it creates the event's
Envelope and one Delivery per webhook that wants it, and records them together with the
log position they came from, in one transaction: a restart resumes after the last
position and creates nothing twice (and the deterministic ids would refuse it anyway).

Snapshots are exact: the event's own entity is read at the event's version, and every
related entity at its version *as of the event's log position* (`EventHistory`).
"""

from __future__ import annotations

import json
import random as _random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, JSONTranscoder, ProcessRecorder, Tracking

from application import envelope_format, views
from application.commerce import Commerce
from application.directory import Target, WebhookDirectory
from application.errors import Conflict, NotFound
from application.ports import BuildEnvelope, EventHistory
from application.recorded import NotifiesOnRecord
from application.replay import replay
from application.samples import choose_test_event_type, sample_data, sample_entity_id
from application.transcodings import register_store_transcodings
from domain.base import StoreAggregate
from domain.delivery import (
    Delivery,
    Envelope,
    RetryPolicy,
    delivery_id_of,
    envelope_id_of,
    is_test_event,
    new_test_event_id,
)
from domain.values import Actor
from domain.webhook import matches

JSON = dict[str, Any]
UPSTREAM = Commerce.name


@dataclass(frozen=True)
class AttemptResult:
    """What a worker observed on one attempt, to be recorded on its delivery."""

    delivery_id: UUID
    number: int
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None = None
    detail: str | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str = ""
    retry_after: float | None = None
    final: bool = False  # no retry whatever the outcome (e.g. the webhook was deleted)

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver says this endpoint no longer exists."""
        return self.status_code == 410


class Dispatch(NotifiesOnRecord, Application[UUID]):
    name = "dispatch"

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        commerce: Commerce,
        directory: WebhookDirectory,
        history: Callable[[Any], EventHistory],
        build_envelope: BuildEnvelope,
        policy: RetryPolicy | None = None,
        clock: Callable[[], datetime] | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(env)
        self.commerce = commerce
        self.directory = directory
        # Reads beyond the repository: commerce's (snapshots as of a position) and our
        # own (many deliveries at once).
        self.history = history(commerce.recorder)
        self._own_events = history(self.recorder)
        self.build_envelope = build_envelope
        self.policy = policy or RetryPolicy()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.random = random or _random.random
        # Views of an entity at a version never change: cache them across events.
        self._view_at = lru_cache(maxsize=20_000)(self._load_view)

    def construct_recorder(self) -> ProcessRecorder:
        return self.factory.process_recorder()

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_store_transcodings(transcoder)

    # Envelopes and fan-out -----------------------------------------------------------

    # The position as this instance last read or committed it, so that a pass of
    # `process_new_events` costs one query (the select) rather than two; None: read it
    # from the tracking table. It is forgotten on any failure of a pass.
    _position: int | None = None

    @property
    def position(self) -> int:
        """The last commerce log position turned into envelopes (as this instance last
        read or committed it, once it has processed events)."""
        if self._position is not None:
            return self._position
        recorder = self.recorder
        assert isinstance(recorder, ProcessRecorder)
        return recorder.max_tracking_id(UPSTREAM) or 0

    def process_new_events(self, limit: int = 100) -> int:
        """Turn up to ``limit`` new store events into envelopes and deliveries; all of
        them and the new position commit together. Returns how many were processed.

        Another dispatch on the same storage (a standby that was active meanwhile) may
        have moved the position on since this one remembered it: its events are then
        refused (IntegrityError: the tracking record and the deterministic ids), and the
        pass is done again once, from the position read afresh."""
        remembered = self._position is not None
        try:
            return self._process_new_events(limit)
        except IntegrityError:
            if not remembered:
                raise
            return self._process_new_events(limit)

    def _process_new_events(self, limit: int) -> int:
        try:
            start = self.position
            notifications = self.commerce.recorder.select_notifications(
                start=start + 1, limit=limit
            )
            if not notifications:
                self._position = start
                return 0
            self.directory.refresh()
            new: list[Any] = []
            for notification in notifications:
                domain_event = self.commerce.mapper.to_domain_event(notification)
                new.extend(self._envelope_and_deliveries(domain_event, notification.id))
            pending = [e for aggregate in new for e in aggregate.collect_events()]
            self.events.put(pending, tracking=Tracking(UPSTREAM, notifications[-1].id))
        except BaseException:
            self._position = None  # whatever failed, read the position again next time
            raise
        self._position = notifications[-1].id
        return len(notifications)

    def _envelope_and_deliveries(self, domain_event: Any, position: int) -> list[Any]:
        entity: StoreAggregate = self.commerce.repository.get(
            domain_event.originator_id, version=domain_event.originator_version
        )
        entity_view = views.view(entity)

        def lookup(kind: str, entity_id: UUID) -> JSON:
            version = self.history.version_at(entity_id, position)
            if version is None:  # cannot happen for a valid log; say so loudly
                raise LookupError(f"{kind} {entity_id} had no event before position {position}")
            return self._view_at(entity_id, version)

        built = self.build_envelope(domain_event, entity_view, lookup, entity.store_id)
        envelope = Envelope(
            built.event_id,
            built.event_type,
            built.store_id,
            built.entity_id,
            built.occurred_at,
            position,
            built.body,
        )
        deliveries = [
            Delivery(
                delivery_id_of(envelope.id, target.webhook_id),
                envelope.id,
                built.event_id,
                built.event_type,
                built.store_id,
                target.webhook_id,
                built.occurred_at,
                False,
                Actor.system(),
            )
            for target in self.directory.matching(
                built.store_id, built.event_type, built.occurred_at
            )
        ]
        return [envelope, *deliveries]

    def _load_view(self, entity_id: UUID, version: int) -> JSON:
        return views.view(self.commerce.repository.get(entity_id, version=version))

    # Attempts ------------------------------------------------------------------------

    def record_attempts(self, results: Sequence[AttemptResult]) -> list[Delivery]:
        """Record many attempts in one transaction (group commit); duplicates of an
        attempt already recorded are ignored. Returns the deliveries that changed."""
        changed: dict[UUID, Delivery] = {}
        loaded = self._deliveries({r.delivery_id for r in results})
        for result in results:
            delivery = loaded.get(result.delivery_id) or self._delivery(result.delivery_id)
            if self._apply_attempt(delivery, result):
                changed[delivery.id] = delivery
        if not changed:
            return []
        try:
            self.save(*changed.values())
        except IntegrityError:
            # Another worker recorded on one of these meanwhile (a redelivered message):
            # fall back to one transaction per attempt, each on fresh state.
            return self._record_one_by_one(results)
        return list(changed.values())

    def _record_one_by_one(self, results: Sequence[AttemptResult]) -> list[Delivery]:
        changed = []
        for result in results:
            delivery = self._delivery(result.delivery_id)
            if self._apply_attempt(delivery, result):
                try:
                    self.save(delivery)
                except IntegrityError:
                    continue
                changed.append(delivery)
        return changed

    def _apply_attempt(self, delivery: Delivery, result: AttemptResult) -> bool:
        if delivery.finished:
            return False
        return delivery.record_attempt(
            number=result.number,
            started_at=result.started_at,
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            error=result.error,
            detail=result.detail,
            response_headers=result.response_headers,
            response_body=result.response_body,
            policy=self.policy,
            random=self.random,
            retry_after=result.retry_after if result.status_code in (429, 503) else None,
            final=result.gone or result.final,
        )

    # Send again ----------------------------------------------------------------------

    def send_again(
        self, store_id: UUID, event_id: str, actor: Actor, webhook_id: UUID | None = None
    ) -> list[JSON]:
        """New deliveries of the same envelope, marked as a replay requested by ``actor``:
        to one webhook, or to every enabled webhook that listens to the event's type.
        A test event goes again only to a webhook named."""
        envelope = self.envelope(store_id, event_id)
        if webhook_id is None and is_test_event(event_id):
            raise Conflict("a test event is sent again to one webhook: name it (webhookId)")
        self.directory.refresh()
        if webhook_id is not None:
            targets = [self._enabled_target(store_id, webhook_id, "to send again")]
        else:
            targets = [
                t
                for t in self.directory.for_store(store_id)
                if t.enabled and not t.deleted and matches(list(t.event_types), envelope.event_type)
            ]
        now = self.clock()
        deliveries = [
            Delivery(
                uuid4(),
                envelope.id,
                envelope.event_id,
                envelope.event_type,
                store_id,
                target.webhook_id,
                now,
                True,
                actor,
            )
            for target in targets
        ]
        if deliveries:
            self.save(*deliveries)
        return [{"id": str(d.id), "webhookId": str(d.webhook_id)} for d in deliveries]

    def resend(
        self, store_id: UUID, webhook_id: UUID, event_ids: Sequence[str], actor: Actor
    ) -> int:
        """New deliveries of these events' envelopes to one webhook, marked as replays
        requested by ``actor`` (Recover and Replay); returns how many were created."""
        self.directory.refresh()
        self._enabled_target(store_id, webhook_id, "first")
        now = self.clock()
        created = 0
        for start in range(0, len(event_ids), 500):
            deliveries = []
            for event_id in event_ids[start : start + 500]:
                envelope = self.envelope(store_id, event_id)
                deliveries.append(
                    Delivery(
                        uuid4(),
                        envelope.id,
                        envelope.event_id,
                        envelope.event_type,
                        store_id,
                        webhook_id,
                        now,
                        True,
                        actor,
                    )
                )
            self.save(*deliveries)
            created += len(deliveries)
        return created

    # Test events ---------------------------------------------------------------------

    def send_test(
        self, store_id: UUID, webhook_id: UUID, actor: Actor, event_type: str | None = None
    ) -> JSON:
        """A sample envelope of ``event_type`` (by default the first type the webhook
        listens to), marked as a test, and its delivery to the webhook: sent, retried
        and recorded like any other (ADR 0027)."""
        self.directory.refresh()
        target = self._enabled_target(store_id, webhook_id, "to send a test event")
        event_type = choose_test_event_type(list(target.event_types), event_type)
        event_id = new_test_event_id()
        seed = envelope_id_of(event_id)
        now = self.clock()
        built = envelope_format.assemble(
            event_id=event_id,
            event_type=event_type,
            actor=actor,
            store_id=store_id,
            entity_id=sample_entity_id(event_type, seed),
            occurred_at=now,
            data=sample_data(event_type, seed, store_id, now),
            test=True,
        )
        # Position 0: a test event comes from no position of the store's log.
        envelope = Envelope(
            built.event_id,
            built.event_type,
            built.store_id,
            built.entity_id,
            built.occurred_at,
            0,
            built.body,
        )
        delivery = Delivery(
            delivery_id_of(envelope.id, webhook_id),
            envelope.id,
            event_id,
            event_type,
            store_id,
            webhook_id,
            now,
            False,
            actor,
        )
        self.save(envelope, delivery)
        return {
            "eventId": event_id,
            "eventType": event_type,
            "webhookId": str(webhook_id),
            "deliveryId": str(delivery.id),
            "envelope": json.loads(built.body),
        }

    def _enabled_target(self, store_id: UUID, webhook_id: UUID, to_do: str) -> Target:
        """The store's webhook, if it exists and is enabled (the directory refreshed)."""
        target = self.directory.get(webhook_id)
        if target is None or target.store_id != store_id or target.deleted:
            raise NotFound("webhook", webhook_id)
        if not target.enabled:
            raise Conflict(f"webhook {webhook_id} is disabled; enable it {to_do}")
        return target

    # Reads ---------------------------------------------------------------------------

    def envelope(self, store_id: UUID, event_id: str) -> Envelope:
        try:
            envelope: object = self.repository.get(envelope_id_of(event_id))
        except (AggregateNotFoundError, ValueError):
            raise NotFound("event", event_id) from None
        if not isinstance(envelope, Envelope) or envelope.store_id != store_id:
            raise NotFound("event", event_id)
        return envelope

    def delivery(self, delivery_id: UUID) -> Delivery:
        return self._delivery(delivery_id)

    def _deliveries(self, delivery_ids: set[UUID]) -> dict[UUID, Delivery]:
        """Many deliveries in one read of the event store (a worker's group commit would
        otherwise read them one query at a time)."""
        deliveries: dict[UUID, Delivery] = {}
        stored = self._own_events.events_of(sorted(delivery_ids))
        for _, aggregate in replay(self.mapper, stored):
            if isinstance(aggregate, Delivery):
                deliveries[aggregate.id] = aggregate
        return deliveries

    def _delivery(self, delivery_id: UUID) -> Delivery:
        try:
            delivery: object = self.repository.get(delivery_id)
        except AggregateNotFoundError:
            raise NotFound("delivery", delivery_id) from None
        if not isinstance(delivery, Delivery):
            raise NotFound("delivery", delivery_id)
        return delivery
