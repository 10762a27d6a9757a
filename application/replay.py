"""Aggregates rebuilt from many stored events at once (what `EventHistory.events_of`
returns: several aggregates' events, each aggregate's in version order)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from eventsourcing.persistence import Mapper, StoredEvent


def replay(mapper: Mapper[Any], stored: Iterable[StoredEvent]) -> Iterator[tuple[Any, Any]]:
    """(domain event, its aggregate just after it) for each stored event, in order."""
    aggregate: Any = None
    for item in stored:
        event: Any = mapper.to_domain_event(item)
        if aggregate is not None and aggregate.id != event.originator_id:
            aggregate = None  # the next aggregate's first event
        aggregate = event.mutate(aggregate)
        yield event, aggregate
