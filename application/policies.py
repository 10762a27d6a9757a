"""Webhook policies that follow the recorded attempts: a receiver that answers 410 Gone,
or a webhook whose every delivery has failed for days (§6), is disabled, with the reason
in its audit trail.

`WebhookPolicies` is the view of a `Follower` of the dispatch log (its ``Attempted``
events) into the webhooks store: the webhooks it disables are saved with the follower's
tracking record in one transaction, so each attempt is judged exactly once whatever
crashes — never a final failed delivery behind a webhook left enabled, never a webhook
disabled twice for one answer.

An attempt made before the webhook was last enabled again is not held against it: a
merchant who re-enables a webhook after a 410 is not overruled by the policy catching up
with that old answer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.persistence import ProcessRecorder

from application.follow import Batch, Follower
from application.webhooks import Webhooks
from domain.delivery import DeliveryAttempted, succeeded
from domain.values import Actor
from domain.webhook import Webhook

GONE_REASON = "the endpoint answered 410 Gone"
ATTEMPTED_TOPIC = f"{DeliveryAttempted.__module__}:{DeliveryAttempted.__qualname__}"


def failing_reason(disable_after: timedelta) -> str:
    return f"every delivery failed for {disable_after / timedelta(days=1):g} days"


class WebhookPolicies:
    """Decides, attempt by attempt, which webhooks to disable, and saves that."""

    def __init__(
        self,
        webhooks: Webhooks,
        failing_since: Callable[[UUID], datetime | None],
        disable_after: timedelta,
    ) -> None:
        self._webhooks = webhooks
        # When the webhook's current run of failures began (its health record, which
        # the attempts' own transactions keep), None while it is not failing.
        self._failing_since = failing_since
        self._disable_after = disable_after

    def follower(self, dispatch: Any) -> Follower:
        """The follower of ``dispatch``'s attempts into this view, of every partition
        until a dispatcher says which are its own (`Follower.follow_partitions`)."""
        follower = Follower("webhook-policies", dispatch, self, topics=[ATTEMPTED_TOPIC])
        follower.follow_partitions(range(dispatch.partitions), dispatch.partitions)
        return follower

    # The follower's view ---------------------------------------------------------------

    def position(self, lane: str) -> int:
        recorder = self._webhooks.recorder
        assert isinstance(recorder, ProcessRecorder)
        found = recorder.max_tracking_id(lane)
        if found is None:  # a partition's lane new to an installation: the whole log's
            found = recorder.max_tracking_id(lane.partition("#")[0])
        return found or 0

    def positions(self, lanes: list[str]) -> dict[str, int]:
        read = getattr(self._webhooks.recorder, "tracking_positions", None)
        if read is None:
            return {lane: self.position(lane) for lane in lanes}
        wholes = {lane.partition("#")[0] for lane in lanes}
        found = read([*lanes, *wholes])
        return {lane: found.get(lane, found.get(lane.partition("#")[0], 0)) for lane in lanes}

    def apply(self, batch: Batch) -> None:
        reasons: dict[UUID, tuple[str, datetime]] = {}
        for item in batch.items:
            attempt = item.event
            if not isinstance(attempt, DeliveryAttempted):
                continue
            reason = self._reason(attempt)
            if reason is not None and attempt.webhook_id not in reasons:
                reasons[attempt.webhook_id] = (reason, attempt.started_at)
        disabled = [
            webhook
            for webhook_id, (reason, at) in reasons.items()
            if (webhook := self._disable(webhook_id, reason, at)) is not None
        ]
        self._save(batch, *disabled)

    def skip(self, batch: Batch, error: Exception) -> None:
        self._save(batch, skipped=("webhook-policies", batch, error))

    # Decisions -------------------------------------------------------------------------

    def _reason(self, attempt: DeliveryAttempted) -> str | None:
        if attempt.status_code == 410:
            return GONE_REASON
        if succeeded(attempt.status_code):
            return None
        since = self._failing_since(attempt.webhook_id)
        if since is not None and attempt.started_at - since >= self._disable_after:
            return failing_reason(self._disable_after)
        return None

    def _disable(self, webhook_id: UUID, reason: str, at: datetime) -> Webhook | None:
        try:
            webhook: object = self._webhooks.repository.get(webhook_id)
        except AggregateNotFoundError:
            return None
        if not isinstance(webhook, Webhook) or not webhook.enabled or webhook.deleted:
            return None
        if at < webhook.enabled_since:
            return None  # an answer from before it was enabled again
        webhook.disable(reason, Actor.system())
        return webhook

    def _save(self, batch: Batch, *webhooks: Webhook, **kwargs: Any) -> None:
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        processing_event.collect_events(
            *webhooks, trackings=batch.trackings, starts=batch.starts, **kwargs
        )
        recordings = self._webhooks._record(processing_event)
        self._webhooks._notify(recordings)
