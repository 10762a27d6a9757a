"""What the application needs from the outside world, as protocols infrastructure provides."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import StoredEvent


class TargetPolicy(Protocol):
    """Decides whether a webhook URL may be sent to (SSRF protection)."""

    def check_url(self, url: str) -> object:
        """Return anything when the URL is acceptable; raise `UnsafeTarget` or
        `InvalidRequest` saying why when it is not."""
        ...


class SecretKeeper(Protocol):
    """Makes signing secrets and seals confidential values under the master key."""

    def new_secret(self, webhook_id: UUID) -> tuple[str, str]:
        """A fresh signing secret: (its text, shown once; its sealed form, stored)."""
        ...

    def seal_headers(self, webhook_id: UUID, headers: dict[str, str]) -> str:
        """The webhook's custom headers, sealed as one value."""
        ...


class EventHistory(Protocol):
    """Reads of an application's stored events beyond the repository's one-at-a-time."""

    def version_at(self, originator_id: UUID, position: int) -> int | None:
        """The aggregate's version after every event at or before log ``position``
        (None when it had no event yet)."""
        ...

    def events_of(self, originator_ids: Sequence[UUID]) -> Sequence[StoredEvent]:
        """Every stored event of these aggregates, in one read, by aggregate and version."""
        ...


@dataclass(frozen=True)
class BuiltEnvelope:
    """An envelope as the projection built it: its identity and its body, serialised once."""

    event_id: str
    envelope_id: UUID
    event_type: str
    store_id: UUID
    entity_id: UUID
    occurred_at: datetime
    body: str


# (entity kind, id) -> that entity's JSON view as it was at the event's log position.
Lookup = Callable[[str, UUID], dict[str, Any]]


class BuildEnvelope(Protocol):
    """Maps a store event to its envelope (implemented in `projections.envelopes`)."""

    def __call__(
        self, domain_event: Any, entity: dict[str, Any], lookup: Lookup, store_id: UUID
    ) -> BuiltEnvelope: ...


class DeliveryRecords(Protocol):
    """The read side's answers that Recover and Replay start from (`application.resend`)."""

    def failed_event_ids(
        self, store_id: UUID, webhook_id: UUID, since: datetime, until: datetime | None
    ) -> list[str]:
        """The store events of the webhook's failed deliveries created in [since, until),
        oldest first; never a test event's."""
        ...

    def events_between(
        self, store_id: UUID, since: datetime, until: datetime | None
    ) -> list[tuple[str, str]]:
        """(event id, event type) of the store's events in [since, until), oldest first;
        never a test event."""
        ...
