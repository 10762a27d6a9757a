"""What every store aggregate shares: its store, and the public name of each of its events.

The public event type of a domain event (``order.status_updated``) is derived from the
aggregate's ``entity`` name and the event class name (``Order.StatusUpdated``), so the
aggregates themselves are the one source of truth for the event type names of §2
(collected in ``domain.event_types``).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.values import Actor


class StoreAggregate(Aggregate):
    """An aggregate that belongs to one store; each of its events records its actor."""

    entity: ClassVar[str]
    store_id: UUID

    @classmethod
    def event_classes(cls) -> dict[str, type[Aggregate.Event]]:
        """The aggregate's own event classes by public event type name."""
        own = [
            value
            for value in vars(cls).values()
            if isinstance(value, type) and issubclass(value, Aggregate.Event)
        ]
        # The library also defines ``Event`` (the base of them all) and a default
        # ``Created`` even where the creation event has another name (``Registered``).
        creations = [c for c in own if issubclass(c, Aggregate.Created)]
        unused = {"Created"} if len(creations) > 1 else set()
        leaves = [
            c
            for c in own
            if c.__name__ not in unused and not any(o is not c and issubclass(o, c) for o in own)
        ]
        return {f"{cls.entity}.{_snake(c.__name__)}": c for c in leaves}


def actor_of(domain_event: Aggregate.Event) -> Actor:
    """The actor recorded on an event; events recorded without one have an unknown actor."""
    actor: Any = getattr(domain_event, "actor", None)
    return actor if isinstance(actor, Actor) else Actor.unknown()


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
