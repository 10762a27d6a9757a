"""Webhook policies as a follower of the recorded attempts (`application.policies`), on
SQLite and PostgreSQL: 410 Gone disables a webhook exactly once, whatever crashes, and an
answer from before a webhook was enabled again is not held against it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import OperationalError

from application.dispatch import AttemptResult
from application.follow import Follower
from application.policies import GONE_REASON, WebhookPolicies
from domain.delivery import delivery_id_of, envelope_id_of, event_id_of
from domain.values import Actor
from infrastructure.bootstrap import Services, build
from infrastructure.followers import transient
from infrastructure.settings import Settings

SYSTEM = Actor.system()
ANN = Actor.person("ann@shop.example")


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build(settings)
    yield built
    built.close()


def policies(services: Services) -> Follower:
    judge = WebhookPolicies(
        services.webhooks,
        lambda webhook_id: services.schedule().health(webhook_id).failing_since,
        timedelta(days=5),
    )
    follower = judge.follower(services.dispatch)
    follower.transient = transient
    return follower


def gone(services: Services) -> tuple[UUID, UUID]:
    """A store's webhook and the first delivery to it, answered 410 Gone."""
    store = UUID(services.webhooks.create_store("Shop", SYSTEM)["storeId"])
    webhook = UUID(
        services.webhooks.create_webhook(
            store, SYSTEM, url="https://93.184.215.14/hook", event_types=["*"]
        )["id"]
    )
    customer = services.commerce.register_customer(store, "a@x.example", "A", None, SYSTEM)
    services.dispatch.process_new_events()
    event_id = event_id_of(UUID(customer["id"]), 1)
    delivery = delivery_id_of(envelope_id_of(event_id), webhook)
    services.dispatch.record_attempts(
        [AttemptResult(services.dispatch.ref(delivery), 1, datetime.now(UTC), 5.0, 410)]
    )
    return store, webhook


def disabled_events(services: Services, webhook: UUID) -> int:
    events = services.webhooks.recorder.select_events(webhook)
    return sum(1 for e in events if e.topic.endswith("Webhook.Disabled"))


def test_a_410_disables_the_webhook_with_its_reason_exactly_once(services: Services) -> None:
    # Given a delivery its receiver answered 410 Gone
    store, webhook = gone(services)

    # When the policies follow the attempts
    follower = policies(services)
    while follower.pull():
        pass

    # Then the webhook is disabled by the system, with the reason
    read = services.webhooks.read_webhook(store, webhook)
    assert (read["enabled"], read["disabledReason"]) == (False, GONE_REASON)
    # And a restarted follower (another process) judges nothing again
    again = build(services.settings)
    try:
        assert policies(again).pull() == 0
    finally:
        again.close()
    assert disabled_events(services, webhook) == 1


def test_a_410_from_before_the_webhook_was_enabled_again_is_not_held_against_it(
    services: Services,
) -> None:
    # Given a 410 the policies have not looked at yet, and meanwhile the merchant
    # disabled and enabled the webhook again (as after fixing the endpoint)
    store, webhook = gone(services)
    services.webhooks.update_webhook(store, webhook, ANN, enabled=False)
    services.webhooks.update_webhook(store, webhook, ANN, enabled=True)

    # When the policies catch up with the old answer
    follower = policies(services)
    while follower.pull():
        pass

    # Then the webhook stays enabled
    assert services.webhooks.read_webhook(store, webhook)["enabled"] is True


def test_a_crash_while_disabling_leaves_the_decision_to_be_made_again(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a 410, and a webhooks store that fails the save of the decision (the
    # database went away, the process died: the transaction never committed)
    store, webhook = gone(services)
    recorder: Any = services.webhooks.recorder
    real = recorder.insert_events

    def away(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(recorder, "insert_events", away)
    follower = policies(services)
    with pytest.raises(OperationalError):
        follower.pull()
    assert services.webhooks.read_webhook(store, webhook)["enabled"] is True

    # When the store is back and the follower pulls again
    monkeypatch.setattr(recorder, "insert_events", real)
    while follower.pull():
        pass

    # Then the webhook is disabled, once
    assert services.webhooks.read_webhook(store, webhook)["enabled"] is False
    assert disabled_events(services, webhook) == 1
