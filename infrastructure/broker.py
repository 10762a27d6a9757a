"""The Dramatiq broker, chosen by `WEBROUND_BROKER_URL`, and the deliveries queue.

Brokers are built explicitly and passed around; actors are declared on a given broker
(`declare_deliver_actor`), never on Dramatiq's global default, so importing a module can
never silently connect to a RabbitMQ on localhost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker

from infrastructure.settings import Settings

QUEUE = "webround.deliveries"
ACTOR = "deliver"


def make_broker(settings: Settings) -> dramatiq.Broker:
    url = settings.broker_url
    broker: dramatiq.Broker
    if url is None:
        broker = StubBroker()
    elif url.startswith(("redis://", "rediss://")):
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=url)  # type: ignore[no-untyped-call]
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=url)
    broker.declare_queue(QUEUE)
    return broker


def declare_deliver_actor(
    broker: dramatiq.Broker, deliver: Callable[[dict[str, Any]], None]
) -> dramatiq.Actor[Any, Any]:
    """The actor that performs one delivery attempt. Dramatiq's own retries only cover
    a failure to *record* an attempt (database briefly away); delivery retries are
    durable facts in the event store, scheduled by the dispatcher."""
    decorate = dramatiq.actor(
        broker=broker,
        actor_name=ACTOR,
        queue_name=QUEUE,
        max_retries=3,
        min_backoff=1_000,
        max_backoff=10_000,
        time_limit=120_000,
    )
    return decorate(deliver)


def enqueue(broker: dramatiq.Broker, message: dict[str, Any]) -> None:
    """Send a delivery message without needing the actor in this process."""
    broker.enqueue(
        dramatiq.Message(queue_name=QUEUE, actor_name=ACTOR, args=(message,), kwargs={}, options={})
    )
