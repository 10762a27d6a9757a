"""Following an application's notification log: the one way every follower is written.

A `Follower` reads a source application's new notifications in batches, decodes each
once and hands the batch to its `View`, which applies it — rows, aggregates or memory —
together with the batch's `Tracking` records (eventsourcing's record of a position in a
log), in one transaction where the view is stored. A tracking record moves only forward,
so a batch applied a second time is refused: each event is applied exactly once,
whatever crashes.

Views in this code: the dispatch fan-out (envelopes and deliveries, `application.dispatch`),
the webhook directory (in memory, `application.directory`), the webhook policies (410
Gone, days of failure: `application.policies`) and the read models
(`infrastructure.readmodels`). Running followers and waking them when their source commits
is infrastructure's (`infrastructure.followers`).

**Lanes.** A follower writes one tracking record per *lane*. Most have one lane, named
after the source. The read models have one per model (a model rebuilt aside rejoins at
its own position); the fan-out one per partition of the stores it owns (several
dispatchers share the work, SPEC §11). An item is applied in the lanes that are behind
it. A lane without items in a batch keeps its stored position — nothing of it was
applied, so whoever reads on from there applies nothing twice — and every lane is written
at least every `checkpoint_seconds`, so that little is read again after a restart.

**Poison events.** An event a view cannot apply (a bug, or data its database refuses)
must not stop the follower for every store: a failing batch is applied again in halves
down to the one event that fails alone, which is handed to `View.skip` (it records the
event and moves the tracking past it), logged without its content and reported through
``on_poison``; the follower goes on. Failures that say nothing about the events (the
database away, a lock timed out: ``transient``) are raised for the runner to retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import IntegrityError, Notification, Tracking

log = logging.getLogger("webround.follow")


@dataclass(frozen=True)
class Item:
    """One notification of a batch, decoded, and the lanes it is to be applied in."""

    notification: Notification
    event: Any
    lanes: tuple[str, ...]


@dataclass(frozen=True)
class Batch:
    """Items to apply, the last position of the source the batch covers, and the
    tracking records to write with them: each moves its lane from where the follower
    found it (``starts``) to its new position — compare and set, so that a batch read
    from a stale position is refused, never applied twice."""

    source: str
    items: Sequence[Item]
    last: int
    trackings: Sequence[Tracking]
    starts: Mapping[str, int]


class View(Protocol):
    """Where a follower's results go."""

    def position(self, lane: str) -> int:
        """The last position applied in this lane (0: none). A view may also offer
        ``positions(lanes) -> {lane: position}``, every lane in one read."""
        ...

    def apply(self, batch: Batch) -> None:
        """Apply the items and write the trackings, all in one transaction; raise
        `IntegrityError` (having applied nothing) when a lane's record is not at its
        ``starts`` position: another process moved it meanwhile."""
        ...

    def skip(self, batch: Batch, error: Exception) -> None:
        """Record that the batch's one item could not be applied (``error``), and write
        the trackings, in one transaction, applying nothing of the item."""
        ...


def _never(error: BaseException) -> bool:
    return False


@dataclass
class Follower:
    """Follows ``source``'s log into ``view``.

    ``lanes``: the tracking names this follower writes (default: the source's name).
    ``lanes_of(notification)``: the lanes a notification belongs to (default: all; a
    partitioned follower answers the one of its partition, or none it owns).
    ``topics``: only these are read; ``decode``: False when the view needs only the
    notifications (ids and topics), not the events. ``transient(error)``: failures that are not the
    events' fault, raised rather than isolated. ``on_poison(follower, item, error)``:
    told of every event skipped.
    """

    name: str
    source: Application[Any]
    view: View
    lanes: Sequence[str] = ()
    lanes_of: Callable[[Notification], Sequence[str]] | None = None
    topics: Sequence[str] = ()
    transient: Callable[[BaseException], bool] = _never
    on_poison: Callable[[str, Item, Exception], None] | None = None
    batch_size: int = 500
    decode: bool = True  # False: items carry no event (a view that reads aggregates)
    checkpoint_seconds: float = 10.0
    clock: Callable[[], float] = time.monotonic
    # Each lane's tracking record as last read or written (None: read it), and how far
    # this follower has read the log (every lane handled up to there).
    _stored: dict[str, int] | None = field(default=None, repr=False)
    _scanned: int = field(default=0, repr=False)
    _checkpoint_at: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        if not self.lanes:
            self.lanes = (self.source.name,)

    def follow_lanes(self, lanes: Sequence[str]) -> None:
        """Write these lanes from now on (their positions are read afresh)."""
        self.lanes = tuple(lanes)
        self._stored = None

    def follow_partitions(self, owned: Collection[int], partitions: int) -> None:
        """Follow the log's events of these partitions only (by their originator), each
        in its own lane; the others are another follower's."""
        lanes, self.lanes_of = partitioned(self.source.name, owned, partitions)
        if tuple(lanes) != tuple(self.lanes):
            self.follow_lanes(lanes)

    def positions(self) -> dict[str, int]:
        """How far each lane has applied the log, as far as this follower knows."""
        stored = self._read()
        return {lane: max(position, self._scanned) for lane, position in stored.items()}

    def lag(self) -> int:
        """How many notifications of the source the slowest lane is behind."""
        head = self.source.recorder.max_notification_id() or 0
        return max(head - min(self.positions().values(), default=head), 0)

    def pull(self) -> int:
        """Apply the next batch; returns how many notifications it covered (0: nothing
        new). Raises transient failures, having applied nothing of the batch."""
        if not self.lanes:
            return 0
        try:
            for _ in range(_OVERTAKEN_TRIES):
                batch = self._next_batch()
                if batch is None:
                    return 0
                if not (batch.items or batch.trackings) or self._apply(batch):
                    break
                # Another process moved a lane meanwhile: read on from where it is.
            else:
                raise IntegrityError(f"{self.name}: overtaken {_OVERTAKEN_TRIES} times running")
        except BaseException:
            self._stored = None  # read them again: another writer may have moved on
            raise
        start, self._scanned = self._scanned, batch.last
        assert self._stored is not None
        for t in batch.trackings:
            self._stored[t.application_name] = t.notification_id
        return batch.last - start

    def _read(self) -> dict[str, int]:
        if self._stored is None:
            many = getattr(self.view, "positions", None)  # all lanes in one read
            if many is not None:
                self._stored = dict(many(list(self.lanes)))
            else:
                self._stored = {lane: self.view.position(lane) for lane in self.lanes}
            self._scanned = min(self._stored.values())
        return self._stored

    def _next_batch(self) -> Batch | None:
        stored = self._read()
        start = self._scanned
        recorder = self.source.recorder
        head = recorder.max_notification_id() or 0
        if head <= start:
            return None
        notifications = recorder.select_notifications(
            start=start + 1, limit=self.batch_size, stop=head, topics=self.topics
        )
        # Fewer than asked for: every notification up to ``head`` was seen.
        last = notifications[-1].id if len(notifications) == self.batch_size else head
        items = []
        for n in notifications:
            candidates = self.lanes if self.lanes_of is None else self.lanes_of(n)
            behind = tuple(lane for lane in candidates if stored.get(lane, n.id) < n.id)
            if behind:
                event = self.source.mapper.to_domain_event(n) if self.decode else None
                items.append(Item(n, event, behind))
        if self.clock() >= self._checkpoint_at:
            self._checkpoint_at = self.clock() + self.checkpoint_seconds
            written: Sequence[str] = [lane for lane in stored if stored[lane] < last]
        else:
            written = sorted({lane for item in items for lane in item.lanes})
        trackings = [Tracking(lane, last) for lane in written]
        return Batch(self.source.name, items, last, trackings, dict(stored))

    def _apply(self, batch: Batch) -> bool:
        """Apply ``batch`` (isolating poison events); False when another process had
        moved a lane meanwhile."""
        try:
            self.view.apply(batch)
        except IntegrityError:
            self._stored = None
            if self._read() != batch.starts:
                return False
            self._isolate(batch)
        except Exception as error:
            if self.transient(error):
                raise
            self._isolate(batch)
        return True

    def _isolate(self, batch: Batch) -> None:
        """Apply ``batch`` in halves until each failing item is alone; skip those."""
        items = list(batch.items)
        if len(items) <= 1:
            self._apply_or_skip(batch)
            return
        middle = len(items) // 2
        first, second = items[:middle], items[middle:]
        starts = dict(batch.starts)
        lanes = [t.application_name for t in batch.trackings]
        for part, until in ((first, first[-1].notification.id), (second, batch.last)):
            sub = Batch(batch.source, part, until, [Tracking(n, until) for n in lanes], starts)
            try:
                self.view.apply(sub)
            except Exception as error:
                if self.transient(error):
                    raise
                self._isolate(sub)
            starts = {**starts, **dict.fromkeys(lanes, until)}

    def _apply_or_skip(self, batch: Batch) -> None:
        try:
            self.view.apply(batch)
            return
        except Exception as error:
            if self.transient(error) or not batch.items:
                raise  # nothing to blame: a failure of the view itself
            failure = error
        [item] = batch.items
        self.view.skip(batch, failure)
        log.error(
            "%s skipped the event at position %d of %s (%s): %s",
            self.name,
            item.notification.id,
            batch.source,
            item.notification.topic,
            type(failure).__name__,
        )
        if self.on_poison is not None:
            self.on_poison(self.name, item, failure)


# How many times running a pull reads again after another process moved a lane first.
_OVERTAKEN_TRIES = 3


def partition_lane(source: str, partition: int) -> str:
    """The lane (tracking name) of one partition of a source's log."""
    return f"{source}#{partition:03d}"


def partition_of(entity_or_store: UUID, partitions: int) -> int:
    """The partition of an entity or a store: its id modulo the count (ids are random).
    A store event belongs to its entity's, a delivery to its store's (SPEC §11)."""
    return entity_or_store.int % partitions


def partitioned(
    source: str, owned: Collection[int], partitions: int
) -> tuple[list[str], Callable[[Notification], Sequence[str]]]:
    """The lanes of the ``owned`` partitions of a source's log, and which lane (if owned)
    a notification belongs to, by its originator's partition."""
    lanes = {p: partition_lane(source, p) for p in sorted(owned)}

    def lanes_of(notification: Notification) -> Sequence[str]:
        lane = lanes.get(partition_of(UUID(str(notification.originator_id)), partitions))
        return () if lane is None else (lane,)

    return list(lanes.values()), lanes_of
