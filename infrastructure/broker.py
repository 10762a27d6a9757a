"""The Dramatiq broker, chosen by `WEBROUND_BROKER_URL`, and the deliveries queue.

Brokers are built explicitly and passed around; actors are declared on a given broker
(`declare_deliver_actor`), never on Dramatiq's global default, so importing a module can
never silently connect to a RabbitMQ on localhost. A `?namespace=NAME` on the URL keeps
several installations (or test runs) on one Redis or RabbitMQ apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from uuid import uuid4

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis

from infrastructure.settings import Settings

log = logging.getLogger("webround.broker")

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
            broker = _waking_redis_broker(
                url, namespace=f"webround-{namespace}" if namespace else "dramatiq"
            )
        else:
            from dramatiq.brokers.rabbitmq import RabbitmqBroker

            broker = RabbitmqBroker(url=url)
    broker.declare_queue(name)
    return Queue(broker, name)


def wake_channel(broker: Any, queue_name: str) -> str:
    """The Redis channel a queue's idle consumers wait on (one message per enqueue)."""
    return f"{broker.namespace}:{queue_name}.wake"


def _waking_redis_broker(url: str, namespace: str) -> dramatiq.Broker:
    """dramatiq's `RedisBroker`, whose consumers, when their queue is empty, wait for a
    message on the queue's wake channel (published with every enqueue of ours) instead
    of polling: an idle worker costs one fetch per ``worker_timeout``, and a new delivery
    is fetched the moment it is enqueued, not after a backoff of up to that timeout.

    The consumer is dramatiq 2.2's private ``_RedisConsumer`` with one step changed (see
    `_WakingConsumer`); a dramatiq without it gets the plain broker (polling, never
    stuck)."""
    from dramatiq.broker import MessageProxy
    from dramatiq.brokers import redis as dramatiq_redis
    from dramatiq.errors import ConnectionClosed
    from redis import exceptions as redis_errors

    base = getattr(dramatiq_redis, "_RedisConsumer", None)
    if base is None or not hasattr(dramatiq_redis.RedisBroker, "consumer_class"):
        log.warning("this dramatiq's RedisBroker differs from 2.2: consumers poll")
        return dramatiq_redis.RedisBroker(url=url, namespace=namespace)  # type: ignore[no-untyped-call]

    class _WakingConsumer(base):  # type: ignore[misc, valid-type]
        """`_RedisConsumer.__next__` of dramatiq 2.2.1, but for the wait when nothing
        was fetched: a blocking read of the wake channel rather than a sleep."""

        def __init__(self, broker: Any, queue_name: str, prefetch: int, timeout: int) -> None:
            super().__init__(broker, queue_name, prefetch, timeout)
            self._wakes = broker.client.pubsub(ignore_subscribe_messages=True)
            self._wakes.subscribe(wake_channel(broker, queue_name))

        def __next__(self) -> Any:
            try:
                while True:
                    try:
                        data = self.message_cache.pop(0)  # type: ignore[has-type]
                        if data is None:
                            continue
                        self.misses = 0
                        message = dramatiq.Message.decode(data)
                        self.queued_message_ids.add(message.message_id)
                        return MessageProxy(message)
                    except IndexError:
                        messages = []
                        if self.outstanding_message_count < self.prefetch:
                            self.message_cache = messages = self.broker.do_fetch(
                                self.queue_name,
                                self.prefetch - self.outstanding_message_count,
                            )
                        if not messages:
                            # Wakes on the next enqueue (or one since the fetch), at the
                            # latest after the timeout: dramatiq checks for a stop then.
                            if self._wakes.get_message(timeout=self.timeout / 1000):
                                while self._wakes.get_message(timeout=0):
                                    pass  # several wake-ups: one fetch serves them all
                            return None
            except redis_errors.ConnectionError as error:
                raise ConnectionClosed(error) from None  # type: ignore[no-untyped-call]

        def close(self) -> None:
            try:
                self._wakes.close()
            finally:
                super().close()

    class WakingRedisBroker(dramatiq_redis.RedisBroker):
        @property
        def consumer_class(self) -> Any:
            return _WakingConsumer

    return WakingRedisBroker(url=url, namespace=namespace)  # type: ignore[no-untyped-call]


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
    actor = decorate(deliver)
    # The actor's DEBUG line "Received args=…" is the whole message — the envelope with
    # its customer data, the sealed secrets and headers: never emitted, whatever the
    # root level (infrastructure/logs.py also withholds Dramatiq's arguments).
    actor.logger.setLevel(max(actor.logger.level, logging.INFO))
    return actor


def enqueue(queue: Queue, message: dict[str, Any]) -> None:
    """Send a delivery message without needing the actor in this process."""
    broker: Any = queue.broker
    broker.enqueue(_message(queue, message))
    client = getattr(broker, "client", None)
    if client is not None and hasattr(broker, "namespace"):  # Redis: wake the consumers
        client.publish(wake_channel(broker, queue.name), b"")


def enqueue_many(queue: Queue, messages: Sequence[dict[str, Any]]) -> None:
    """Send a dispatcher pass's delivery messages, in order, in as few round trips as the
    broker allows: one pipeline on Redis, one `enqueue` each elsewhere (RabbitMQ
    publishes with confirms, message by message; the in-process broker costs nothing).

    If it fails midway, some messages may have been sent and the others not; it raises,
    and the dispatcher hands out again, when their leases run out, the deliveries whose
    attempt was not recorded (at least once, as with a lost message)."""
    if not messages:
        return
    from dramatiq.brokers.redis import RedisBroker

    if isinstance(queue.broker, RedisBroker) and _pipelinable(queue.broker):
        _redis_enqueue_many(queue.broker, [_message(queue, m) for m in messages])
        return
    for message in messages:
        enqueue(queue, message)


def _message(queue: Queue, message: dict[str, Any]) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=queue.name, actor_name=ACTOR, args=(message,), kwargs={}, options={}
    )


def _redis_enqueue_many(broker: Any, messages: Sequence[dramatiq.Message[Any]]) -> None:
    """What `RedisBroker.enqueue` (dramatiq 2.2.1) does for each message — a fresh
    ``redis_message_id``, the middleware's ``before_enqueue``/``after_enqueue``, one call
    of the broker's ``dispatch`` Lua script with the ``enqueue`` command — with the
    script calls sent in one non-transactional pipeline: one round trip for the pass
    instead of one per message. The bytes stored are exactly those `enqueue` stores.

    Redis-specific internals used here (``scripts``, ``broker_id``, ``heartbeat_timeout``,
    ``dead_message_ttl``, ``_should_do_maintenance``, ``_max_unpack_size``) are pinned by
    dramatiq's version; tests/integration/infrastructure/test_broker.py reads a message
    back and compares it with one sent by `enqueue`."""
    script = broker.scripts["dispatch"]
    sent = []
    for message in messages:
        # Each enqueued message needs a unique id in Redis (as in `RedisBroker.enqueue`).
        message = message.copy(options={"redis_message_id": str(uuid4())})
        broker.emit_before("enqueue", message, None)
        sent.append(message)
    pending = list(range(len(sent)))
    for _ in range(2):
        pipe = broker.client.pipeline(transaction=False)
        for index in pending:
            message = sent[index]
            pipe.evalsha(
                script.sha,
                1,
                broker.namespace,  # KEYS[1]
                "enqueue",
                current_millis(),
                message.queue_name,
                broker.broker_id,
                broker.heartbeat_timeout,
                broker.dead_message_ttl,
                broker._should_do_maintenance("enqueue"),
                broker._max_unpack_size(),
                message.options["redis_message_id"],
                message.encode(),
            )
        # Idle consumers of the queue wake at once (see `_waking_redis_broker`).
        pipe.publish(wake_channel(broker, sent[0].queue_name), b"")
        # EVALSHA, not redis-py's `Script` on a pipeline: that asks SCRIPT EXISTS first,
        # a second round trip on every pass. A server that does not know the script
        # (restarted, SCRIPT FLUSH) refuses each call with NOSCRIPT and runs nothing:
        # load it and send exactly those calls again.
        results = pipe.execute(raise_on_error=False)[:-1]
        missing = [i for i, r in zip(pending, results, strict=True) if _is_noscript(r)]
        errors = [r for r in results if isinstance(r, Exception) and not _is_noscript(r)]
        if errors:
            raise errors[0]
        if not missing:
            break
        script.sha = broker.client.script_load(script.script)
        pending = missing
    else:
        raise RuntimeError("Redis refused the dramatiq dispatch script twice (NOSCRIPT)")
    for message in sent:
        broker.emit_after("enqueue", message, None)


# The RedisBroker internals `_redis_enqueue_many` relies on (dramatiq 2.2).
_REDIS_INTERNALS = (
    "scripts",
    "client",
    "namespace",
    "broker_id",
    "heartbeat_timeout",
    "dead_message_ttl",
    "_should_do_maintenance",
    "_max_unpack_size",
)


def _pipelinable(broker: Any) -> bool:
    """Whether this dramatiq still has what the pipeline needs; if a later version
    renamed any of it, every pass falls back to one `enqueue` per message (slower, never
    stuck) and says so once."""
    ok = all(hasattr(broker, name) for name in _REDIS_INTERNALS) and "dispatch" in getattr(
        broker, "scripts", {}
    )
    if not ok and not _warned:
        _warned.append(True)
        log.warning("this dramatiq's RedisBroker differs from 2.2: enqueuing one by one")
    return ok


_warned: list[bool] = []


def _is_noscript(result: object) -> bool:
    from redis.exceptions import NoScriptError

    return isinstance(result, NoScriptError)
