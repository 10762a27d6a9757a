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
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import CanInitAggregate
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    ProcessRecorder,
    Recording,
)

from application import envelope_format, views
from application.commerce import Commerce
from application.directory import Target, WebhookDirectory
from application.errors import Conflict, NotFound
from application.follow import Batch, Follower, Item
from application.ports import BuildEnvelope, EventHistory
from application.recorded import NotifiesOnRecord
from application.samples import choose_test_event_type, sample_data, sample_entity_id
from application.schedule import schedule_write
from application.transcodings import register_store_transcodings
from domain.base import StoreAggregate
from domain.delivery import (
    BodyEncoding,
    CircuitPolicy,
    Delivery,
    DeliveryAttempted,
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
class DeliveryRef:
    """Who a delivery is for, as a worker's message carries it: enough to record an
    attempt without reading the delivery."""

    delivery_id: UUID
    webhook_id: UUID
    store_id: UUID
    event_id: str


@dataclass(frozen=True)
class AttemptResult:
    """What a worker observed on one attempt, to be recorded on its delivery."""

    delivery: DeliveryRef
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
    response_body_encoding: BodyEncoding = "text"  # or "base64" (domain.delivery)

    @property
    def delivery_id(self) -> UUID:
        return self.delivery.delivery_id

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver says this endpoint no longer exists."""
        return self.status_code == 410


# How many entities the fan-out keeps as of their latest event, and how many envelopes
# are kept at hand for the dispatcher (bounded: a busy installation has far more).
_LATEST_ENTITIES = 5_000
_RECENT_ENVELOPES = 2_000


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
        circuit: CircuitPolicy | None = None,
        partitions: int = 1,
        clock: Callable[[], datetime] | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(env)
        # The stores' work is divided into this many partitions (SPEC §11): a store event
        # belongs to its entity's, a delivery to its store's.
        self.partitions = partitions
        self.commerce = commerce
        self.directory = directory
        # Reads beyond the repository: commerce's snapshots as of a position.
        self.history = history(commerce.recorder)
        self.build_envelope = build_envelope
        self.policy = policy or RetryPolicy()
        self.circuit = circuit or CircuitPolicy()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.random = random or _random.random
        # Views of an entity at a version never change: cache them across events.
        self._view_at = lru_cache(maxsize=20_000)(self._load_view)
        # Each entity as of the last of its events fanned out here: its next event is
        # applied to it rather than the entity read again (`_entity_at`).
        self._latest: OrderedDict[UUID, StoreAggregate] = OrderedDict()
        # Envelopes this instance made or read lately: the dispatcher sends most of them
        # moments after the fan-out made them (`envelope_by_id`).
        self._recent: OrderedDict[UUID, Envelope] = OrderedDict()
        self._recent_lock = threading.Lock()
        # Store events become envelopes and deliveries through this follower, of every
        # partition until a dispatcher says which are its own (`Follower.follow_partitions`).
        self.fan_out = Follower("fan-out", commerce, FanOut(self))
        self.fan_out.follow_partitions(range(partitions), partitions)

    def construct_recorder(self) -> ProcessRecorder:
        return self.factory.process_recorder()

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_store_transcodings(transcoder)

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        """Every save carries what its events change in the delivery schedule and the
        webhooks' health, for the event store to write in the same transaction
        (`application.schedule`; infrastructure's dispatch recorder writes it)."""
        processing_event.saved_kwargs["schedule"] = schedule_write(
            processing_event.events, self.circuit, self.partitions
        )
        return super()._record(processing_event)

    def _save_with(self, batch: Batch, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """`save`, with a follower's batch's tracking records (and anything else the
        recorder takes: ``skipped``) in the same transaction."""
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        processing_event.collect_events(
            *objs, trackings=batch.trackings, starts=batch.starts, **kwargs
        )
        recordings = self._record(processing_event)
        self._notify(recordings)
        return recordings

    # Envelopes and fan-out -----------------------------------------------------------

    @property
    def position(self) -> int:
        """How far in the commerce log every store event is an envelope (the slowest
        lane of the fan-out, as this instance last read or wrote it)."""
        return min(self.fan_out.positions().values())

    def process_new_events(self, limit: int = 100) -> int:
        """Turn up to ``limit`` new store events into envelopes and deliveries (one batch
        of the fan-out follower); returns how many notifications it covered."""
        self.fan_out.batch_size = limit
        return self.fan_out.pull()

    def _entity_at(self, event: Any) -> StoreAggregate:
        """The entity just after ``event``. Events of one entity come to one fan-out in
        log order, so the entity as of its previous event is usually at hand: the event
        is applied to it as a read from the store would, and nothing is read."""
        entity = self._latest.pop(event.originator_id, None)
        version = event.originator_version
        if entity is not None and entity.version == version:
            pass  # the same event again (its batch is applied again)
        elif (entity is None and isinstance(event, CanInitAggregate)) or (
            entity is not None and entity.version == version - 1
        ):
            entity = event.mutate(entity)
        else:  # not seen here from its start, or not its latest: read it as of the event
            entity = self.commerce.repository.get(event.originator_id, version=version)
        assert entity is not None
        self._latest[event.originator_id] = entity
        if len(self._latest) > _LATEST_ENTITIES:
            self._latest.popitem(last=False)
        return entity

    def _envelope_and_deliveries(self, domain_event: Any, position: int) -> list[Any]:
        entity = self._entity_at(domain_event)
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
                entity_id=built.entity_id,
                position=position,
            )
            for target in self.directory.matching(
                built.store_id, built.event_type, built.occurred_at
            )
        ]
        return [envelope, *deliveries]

    def _envelopes_and_deliveries(self, items: Sequence[Item]) -> list[Any]:
        self.directory.refresh()
        new: list[Any] = []
        for item in items:
            new.extend(self._envelope_and_deliveries(item.event, item.notification.id))
        return new

    def remember(self, envelopes: Sequence[Any]) -> None:
        """Keep these envelopes (saved) at hand for `envelope_by_id`."""
        with self._recent_lock:
            for envelope in envelopes:
                if isinstance(envelope, Envelope):
                    self._recent[envelope.id] = envelope
                    self._recent.move_to_end(envelope.id)
            while len(self._recent) > _RECENT_ENVELOPES:
                self._recent.popitem(last=False)

    def envelope_by_id(self, envelope_id: UUID) -> Envelope:
        """An envelope (they never change): from those at hand, else read and kept."""
        with self._recent_lock:
            found = self._recent.get(envelope_id)
        if found is not None:
            return found
        envelope: Envelope = self.repository.get(envelope_id)
        self.remember([envelope])
        return envelope

    def _load_view(self, entity_id: UUID, version: int) -> JSON:
        return views.view(self.commerce.repository.get(entity_id, version=version))

    # Attempts ------------------------------------------------------------------------

    def record_attempts(self, results: Sequence[AttemptResult]) -> list[DeliveryAttempted]:
        """Record many attempts in one transaction (group commit), without reading their
        deliveries: attempt N of a delivery is its version N + 1 (`Delivery.attempted`).
        An attempt recorded already (a redelivered message) is refused by the event
        store; the batch is then recorded one attempt at a time, skipping such ones.
        Returns the events of the attempts recorded now."""
        events = [self._attempted(result) for result in results]
        if not events:
            return []
        try:
            self.save(*events)
        except IntegrityError:
            return self._record_one_by_one(events)
        return events

    def _record_one_by_one(self, events: Sequence[DeliveryAttempted]) -> list[DeliveryAttempted]:
        recorded = []
        for event in events:  # the same attempt twice in one batch: the second is refused
            try:
                self.save(event)
            except IntegrityError:
                continue
            recorded.append(event)
        return recorded

    def _attempted(self, result: AttemptResult) -> DeliveryAttempted:
        ref = result.delivery
        return Delivery.attempted(
            ref.delivery_id,
            webhook_id=ref.webhook_id,
            store_id=ref.store_id,
            event_id=ref.event_id,
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
            response_body_encoding=result.response_body_encoding,
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

    def ref(self, delivery_id: UUID) -> DeliveryRef:
        """A delivery's `DeliveryRef`, read from the store (for tools and tests; workers
        get theirs from their message)."""
        d = self._delivery(delivery_id)
        return DeliveryRef(d.id, d.webhook_id, d.store_id, d.event_id)

    def _delivery(self, delivery_id: UUID) -> Delivery:
        try:
            delivery: object = self.repository.get(delivery_id)
        except AggregateNotFoundError:
            raise NotFound("delivery", delivery_id) from None
        if not isinstance(delivery, Delivery):
            raise NotFound("delivery", delivery_id)
        return delivery


class FanOut:
    """The fan-out's view of the commerce log: for each store event, its envelope and a
    delivery to every webhook that wants it, saved with the tracking records of the
    batch in one transaction of the dispatch store."""

    def __init__(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch

    def position(self, lane: str) -> int:
        recorder = self._dispatch.recorder
        assert isinstance(recorder, ProcessRecorder)
        found = recorder.max_tracking_id(lane)
        if found is None:  # a partition's lane new to an installation: the whole log's
            found = recorder.max_tracking_id(UPSTREAM)
        return found or 0

    def positions(self, lanes: list[str]) -> dict[str, int]:
        read = getattr(self._dispatch.recorder, "tracking_positions", None)
        if read is None:
            return {lane: self.position(lane) for lane in lanes}
        found = read([*lanes, UPSTREAM])
        whole = found.get(UPSTREAM, 0)  # the whole log's, before partitions
        return {lane: found.get(lane, whole) for lane in lanes}

    def apply(self, batch: Batch) -> None:
        new = self._dispatch._envelopes_and_deliveries(batch.items)
        self._dispatch._save_with(batch, *new)
        self._dispatch.remember(new)

    def skip(self, batch: Batch, error: Exception) -> None:
        self._dispatch._save_with(batch, skipped=("fan-out", batch, error))
