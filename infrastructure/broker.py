"""The Dramatiq broker, chosen by `WEBROUND_BROKER_URL`, and the deliveries queue.

Brokers are built explicitly and passed around; actors are declared on a given broker
(`declare_deliver_actor`), never on Dramatiq's global default, so importing a module can
never silently connect to a RabbitMQ on localhost. A `?namespace=NAME` on the URL keeps
several installations (or test runs) on one Redis or RabbitMQ apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
from dramatiq.brokers.stub import StubBroker

from infrastructure.settings import Settings

QUEUE = "webround.deliveries"
ACTOR = "deliver"


@dataclass(frozen=True)
class Queue:
    """A broker and the name of our deliveries queue on it."""

    broker: dramatiq.Broker
    name: str

    @property
    def in_process(self) -> bool:
        return isinstance(self.broker, StubBroker)


def make_broker(settings: Settings) -> Queue:
    if settings.broker_url is None:
        broker: dramatiq.Broker = StubBroker()
        name = QUEUE
    else:
        url, namespace = _split_namespace(settings.broker_url)
        name = f"{QUEUE}.{namespace}" if namespace else QUEUE
        if url.startswith(("redis://", "rediss://")):
            from dramatiq.brokers.redis import RedisBroker

            broker = RedisBroker(  # type: ignore[no-untyped-call]
                url=url, namespace=f"webround-{namespace}" if namespace else "dramatiq"
            )
        else:
            from dramatiq.brokers.rabbitmq import RabbitmqBroker

            broker = RabbitmqBroker(url=url)
    broker.declare_queue(name)
    return Queue(broker, name)


def _split_namespace(url: str) -> tuple[str, str | None]:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    namespace = query.pop("namespace", None)
    return urlunsplit(parts._replace(query=urlencode(query))), namespace


def declare_deliver_actor(
    queue: Queue, deliver: Callable[[dict[str, Any]], None]
) -> dramatiq.Actor[Any, Any]:
    """The actor that performs one delivery attempt. Dramatiq's own retries only cover
    a failure to *record* an attempt (database briefly away); delivery retries are
    durable facts in the event store, scheduled by the dispatcher."""
    decorate = dramatiq.actor(
        broker=queue.broker,
        actor_name=ACTOR,
        queue_name=queue.name,
        max_retries=3,
        min_backoff=1_000,
        max_backoff=10_000,
        time_limit=120_000,
    )
    return decorate(deliver)


def enqueue(queue: Queue, message: dict[str, Any]) -> None:
    """Send a delivery message without needing the actor in this process."""
    queue.broker.enqueue(
        dramatiq.Message(
            queue_name=queue.name, actor_name=ACTOR, args=(message,), kwargs={}, options={}
        )
    )
