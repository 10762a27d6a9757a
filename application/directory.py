"""The webhooks the dispatcher sends to, kept current by following the webhooks log.

Reading every store's webhooks for every event would cost a read per webhook per event;
instead the directory holds each webhook's sending configuration in memory and reloads a
webhook only when the webhooks application records an event for it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from application.follow import Batch, Follower
from application.webhooks import Webhooks
from domain.webhook import Webhook, matches


@dataclass(frozen=True)
class Target:
    """What sending to one webhook needs: where, how, and the sealed secrets."""

    webhook_id: UUID
    store_id: UUID
    url: str
    event_types: tuple[str, ...]
    enabled: bool
    deleted: bool
    created_at: datetime
    timeout_seconds: int
    rate_limit: float | None
    sealed_headers: str | None
    secrets: tuple[tuple[str, datetime | None], ...]  # (sealed, expires at), newest first

    def wants(self, event_type: str, occurred_at: datetime) -> bool:
        """Enabled, listening to this type, and existing before the event happened."""
        return (
            self.enabled
            and not self.deleted
            and occurred_at > self.created_at
            and matches(list(self.event_types), event_type)
        )


def target_of(webhook: Webhook) -> Target:
    return Target(
        webhook_id=webhook.id,
        store_id=webhook.store_id,
        url=webhook.url,
        event_types=tuple(webhook.event_types),
        enabled=webhook.enabled,
        deleted=webhook.deleted,
        created_at=webhook.created_on,
        timeout_seconds=webhook.timeout_seconds,
        rate_limit=webhook.rate_limit,
        sealed_headers=webhook.sealed_headers,
        secrets=tuple((s.sealed, s.expires_at) for s in webhook.secrets),
    )


_WEBHOOK_TOPIC = f"{Webhook.__module__}:{Webhook.__qualname__}."


class WebhookDirectory:
    """The sending configuration of every webhook, in memory, following the webhooks log
    (a `Follower` whose view is this object; its position lives in memory too: a new
    process reads the log from the start)."""

    def __init__(self, webhooks: Webhooks) -> None:
        self._webhooks = webhooks
        self._position = 0
        self._targets: dict[UUID, Target] = {}
        self._by_store: dict[UUID, set[UUID]] = {}
        self._reenabled: list[UUID] = []
        self._lock = threading.Lock()
        self._follower = Follower("directory", webhooks, self, decode=False)

    def refresh(self) -> None:
        """Catch up with every webhook change recorded so far."""
        with self._lock:
            while self._follower.pull():
                pass

    # The follower's view ---------------------------------------------------------------

    def position(self, lane: str) -> int:
        return self._position

    def apply(self, batch: Batch) -> None:
        # Only webhook events matter here (not stores' or API keys').
        notifications = [i.notification for i in batch.items]
        changed = {
            UUID(str(n.originator_id)) for n in notifications if n.topic.startswith(_WEBHOOK_TOPIC)
        }
        for webhook_id in changed:
            aggregate: object = self._webhooks.repository.get(webhook_id)
            if isinstance(aggregate, Webhook):
                target = target_of(aggregate)
                self._targets[target.webhook_id] = target
                self._by_store.setdefault(target.store_id, set()).add(target.webhook_id)
        self._reenabled.extend(
            UUID(str(n.originator_id))
            for n in notifications
            if n.topic == _WEBHOOK_TOPIC + "Enabled"
        )
        self._position = batch.last

    def skip(self, batch: Batch, error: Exception) -> None:
        self._position = batch.last

    # Reads -------------------------------------------------------------------------------

    def take_reenabled(self) -> list[UUID]:
        """The webhooks enabled again (after being disabled) since the last call."""
        with self._lock:
            taken, self._reenabled = self._reenabled, []
        return taken

    def get(self, webhook_id: UUID) -> Target | None:
        return self._targets.get(webhook_id)

    def for_store(self, store_id: UUID) -> list[Target]:
        return [self._targets[i] for i in sorted(self._by_store.get(store_id, ()))]

    def matching(self, store_id: UUID, event_type: str, occurred_at: datetime) -> list[Target]:
        return [t for t in self.for_store(store_id) if t.wants(event_type, occurred_at)]
