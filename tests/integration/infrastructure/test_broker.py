"""`enqueue_many` on the real brokers: a dispatcher pass's messages, sent together.

On Redis they go in one pipeline of the calls `RedisBroker.enqueue` makes one by one;
a consumer reads every message back once, in order, stored exactly as `enqueue` stores
it. On RabbitMQ and the in-process broker they are enqueued one by one, in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name, xq_name

from infrastructure import broker as broker_module
from infrastructure.broker import ACTOR, Queue, enqueue, enqueue_many, make_broker
from infrastructure.settings import Settings


class Hooks(dramatiq.Middleware):
    """Records the enqueue hooks dramatiq's brokers emit, as a middleware would see them."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def before_enqueue(self, broker: dramatiq.Broker, message: Any, delay: Any) -> None:
        self.seen.append(("before", message.options["redis_message_id"]))

    def after_enqueue(self, broker: dramatiq.Broker, message: Any, delay: Any) -> None:
        self.seen.append(("after", message.options["redis_message_id"]))


def messages(count: int) -> list[dict[str, Any]]:
    return [{"deliveryId": f"d{n}", "attempt": 1, "body": "é" * n} for n in range(count)]


def read_all(queue: Queue, *, expected: int) -> list[dict[str, Any]]:
    """Consume (and acknowledge) everything on the queue; stops after one empty poll
    once ``expected`` messages arrived (or after a few empty polls)."""
    consumer = queue.broker.consume(queue.name, prefetch=100, timeout=200)
    got: list[dict[str, Any]] = []
    empty = 0
    try:
        while empty < (1 if len(got) >= expected else 10):
            proxy = next(consumer)
            if proxy is None:
                empty += 1
                continue
            assert proxy.actor_name == ACTOR
            got.append(proxy.args[0])
            consumer.ack(proxy)
    finally:
        consumer.close()
    return got


@pytest.fixture
def redis_queue(redis_url: str, tmp_path: Path) -> Iterator[Queue]:
    queue = make_broker(Settings(data_dir=tmp_path, broker_url=redis_url))
    yield queue
    broker: Any = queue.broker
    for key in broker.client.scan_iter(f"{broker.namespace}:*"):
        broker.client.delete(key)
    broker.close()


@pytest.mark.redis
def test_redis_delivers_every_message_once_in_order(redis_queue: Queue) -> None:
    # Given 120 messages and a middleware watching the enqueue hooks
    hooks = Hooks()
    redis_queue.broker.add_middleware(hooks)
    sent = messages(120)

    # When they are enqueued together
    enqueue_many(redis_queue, sent)

    # Then a consumer reads each of them once, in the order sent
    assert read_all(redis_queue, expected=len(sent)) == sent
    # And the middleware saw before_enqueue and after_enqueue for each message
    ids = [message_id for hook, message_id in hooks.seen if hook == "before"]
    assert len(set(ids)) == len(sent)
    assert [message_id for hook, message_id in hooks.seen if hook == "after"] == ids


@pytest.mark.redis
def test_a_dramatiq_without_the_internals_used_gets_them_one_by_one(
    redis_queue: Queue, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a dramatiq whose RedisBroker lacks one of the internals the pipeline uses (a
    # later version renaming it: simulated by asking for a name it has never had)
    monkeypatch.setattr(broker_module, "_warned", [])
    monkeypatch.setattr(
        broker_module, "_REDIS_INTERNALS", (*broker_module._REDIS_INTERNALS, "_renamed")
    )
    sent = messages(5)

    # When messages are enqueued together
    enqueue_many(redis_queue, sent)

    # Then they still arrive, each once, in order, sent one by one (and it says so once)
    assert read_all(redis_queue, expected=len(sent)) == sent
    enqueue_many(redis_queue, messages(2))
    warnings = [r for r in caplog.records if "enqueuing one by one" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.redis
def test_redis_stores_a_message_exactly_as_enqueue_does(redis_queue: Queue) -> None:
    # Given one message sent by `enqueue` and the same one by `enqueue_many`
    (payload,) = messages(1)
    enqueue(redis_queue, payload)
    enqueue_many(redis_queue, [payload])

    # When both are read back raw from Redis
    broker: Any = redis_queue.broker
    key = f"{broker.namespace}:{redis_queue.name}"
    order = [i.decode() for i in broker.client.lrange(key, 0, -1)]
    stored = broker.client.hgetall(f"{key}.msgs")
    single, batched = (json.loads(stored[i.encode()]) for i in order)

    # Then they are the same but for the ids and the time, which are each message's own
    assert single.pop("message_id") != batched.pop("message_id")
    single.pop("message_timestamp"), batched.pop("message_timestamp")
    assert single["options"].pop("redis_message_id") == order[0]
    assert batched["options"].pop("redis_message_id") == order[1]
    assert list(single) == list(batched)  # same fields in the same order: same encoding
    assert single == batched


@pytest.mark.redis
def test_redis_that_lost_its_scripts_still_gets_every_message_once(redis_queue: Queue) -> None:
    # Given a broker whose Lua script Redis does not know (as after a Redis restart)
    broker = redis_queue.broker
    assert isinstance(broker, RedisBroker)
    script: Any = broker.scripts["dispatch"]
    known = script.sha
    script.sha = "0" * 40
    sent = messages(5)

    # When messages are enqueued together
    enqueue_many(redis_queue, sent)

    # Then the script was loaded again and each message arrived once, in order
    assert script.sha == known
    assert read_all(redis_queue, expected=len(sent)) == sent


def test_the_in_process_broker_gets_them_in_order(tmp_path: Path) -> None:
    # Given the embedded (in-process) broker
    queue = make_broker(Settings(data_dir=tmp_path))
    sent = messages(3)

    # When messages are enqueued together, and nothing at all
    enqueue_many(queue, sent)
    enqueue_many(queue, [])

    # Then they wait on its queue in order
    waiting = queue.broker.queues[queue.name]
    got = [dramatiq.Message.decode(waiting.get_nowait()).args[0] for _ in range(waiting.qsize())]
    assert got == sent
    queue.broker.close()


@pytest.mark.rabbitmq
def test_rabbitmq_delivers_every_message_once_in_order(rabbitmq_url: str, tmp_path: Path) -> None:
    # Given RabbitMQ and a few messages
    queue = make_broker(Settings(data_dir=tmp_path, broker_url=rabbitmq_url))
    sent = messages(5)
    try:
        # When they are enqueued together
        enqueue_many(queue, sent)

        # Then a consumer reads each of them once, in order
        assert read_all(queue, expected=len(sent)) == sent
    finally:
        channel = queue.broker.channel  # type: ignore[attr-defined]
        for name in (queue.name, dq_name(queue.name), xq_name(queue.name)):
            channel.queue_delete(queue=name)
        queue.broker.close()


@pytest.mark.redis
def test_an_idle_redis_consumer_is_woken_by_an_enqueue_not_by_its_timeout(
    tmp_path: Path, redis_url: str
) -> None:
    import threading
    import time

    # Given a Redis queue whose consumer has been idle long enough to wait its whole
    # timeout (5 s) between fetches
    queue = make_broker(Settings(data_dir=tmp_path, broker_url=redis_url))
    consumer = queue.broker.consume(queue.name, prefetch=10, timeout=5000)
    arrived: list[float] = []

    def consume() -> None:
        deadline = time.monotonic() + 30
        while not arrived and time.monotonic() < deadline:
            proxy = next(consumer)
            if proxy is not None:
                arrived.append(time.monotonic())
                consumer.ack(proxy)

    try:
        thread = threading.Thread(target=consume)
        thread.start()
        time.sleep(3.0)  # idle: a polling consumer now sleeps a second or more between polls

        # When a dispatcher pass enqueues a message
        sent = time.monotonic()
        enqueue_many(queue, messages(1))
        thread.join(timeout=30)

        # Then the consumer fetches it at once, not after the rest of its timeout
        assert arrived, "the message never arrived"
        assert arrived[0] - sent < 0.5
    finally:
        consumer.close()
        queue.broker.flush_all()
        queue.broker.close()
