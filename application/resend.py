"""Recover and Replay (§6): send a webhook again what it missed, as new deliveries.

**Recover** sends again every failed delivery of a webhook created in a time range;
**Replay** backfills every store event of a range that the webhook (and, optionally, a
narrower list of event types) selects. Both create deliveries marked as replays of who
asked, and record one audit entry on the webhook with the count. The JSON API and the
dashboard both call this; test events are never recovered or replayed (ADR 0027).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from application.dispatch import Dispatch
from application.ports import DeliveryRecords
from application.webhooks import Webhooks
from domain.values import Actor
from domain.webhook import Webhook, check_event_types, matches


@dataclass(frozen=True)
class Resent:
    """What a recover or replay did: how many deliveries it created, and when it began
    (every one of them was created at or after that moment)."""

    count: int
    requested_at: datetime


class Resend:
    def __init__(
        self,
        webhooks: Webhooks,
        dispatch: Dispatch,
        records: DeliveryRecords,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._webhooks = webhooks
        self._dispatch = dispatch
        self._records = records
        self._clock = clock or (lambda: datetime.now(UTC))

    def recover(
        self,
        store_id: UUID,
        webhook_id: UUID,
        actor: Actor,
        since: datetime,
        until: datetime | None = None,
    ) -> Resent:
        """Send again the webhook's failed deliveries created in [since, until)."""
        self._webhook(store_id, webhook_id, since, until)
        event_ids = self._records.failed_event_ids(store_id, webhook_id, since, until)
        return self._resend(store_id, webhook_id, actor, "recover", event_ids, since, until, None)

    def replay(
        self,
        store_id: UUID,
        webhook_id: UUID,
        actor: Actor,
        since: datetime,
        until: datetime | None = None,
        event_types: list[str] | None = None,
    ) -> Resent:
        """Send the webhook every store event of [since, until) it listens to (and that
        ``event_types`` selects)."""
        webhook = self._webhook(store_id, webhook_id, since, until)
        if event_types is not None:
            event_types = check_event_types(event_types)
        event_ids = [
            event_id
            for event_id, event_type in self._records.events_between(store_id, since, until)
            if matches(webhook.event_types, event_type)
            and (event_types is None or matches(event_types, event_type))
        ]
        return self._resend(
            store_id, webhook_id, actor, "replay", event_ids, since, until, event_types
        )

    def _webhook(
        self, store_id: UUID, webhook_id: UUID, since: datetime, until: datetime | None
    ) -> Webhook:
        """The store's webhook (else NotFound). A range that ends at or before its start
        holds nothing and sends nothing: the API's document (JSON Schema) cannot say
        "later than", so the API takes any two times (ADR 0020)."""
        return self._webhooks.get_webhook(store_id, webhook_id)

    def _resend(
        self,
        store_id: UUID,
        webhook_id: UUID,
        actor: Actor,
        mode: str,
        event_ids: list[str],
        since: datetime,
        until: datetime | None,
        event_types: list[str] | None,
    ) -> Resent:
        requested_at = self._clock()
        count = self._dispatch.resend(store_id, webhook_id, event_ids, actor)
        self._webhooks.record_resend(
            store_id,
            webhook_id,
            actor,
            mode=mode,
            since=since,
            until=until,
            event_types=event_types,
            count=count,
        )
        return Resent(count, requested_at)
