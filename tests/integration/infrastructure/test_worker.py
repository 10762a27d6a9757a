"""The worker's side of one attempt on real storage and a real receiver: unseal, sign,
send, record in a group commit, log. The broker is left out: messages are the ones the
dispatcher enqueues, handed to `DeliveryWorker` as Dramatiq would."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
import standardwebhooks

from application.dispatch import AttemptResult, DeliveryRef
from application.errors import NotFound
from domain.values import Actor
from infrastructure.bootstrap import Services, build
from infrastructure.dispatcher import Dispatcher
from infrastructure.schedule import Schedule
from infrastructure.sender import Sender
from infrastructure.settings import Settings
from infrastructure.ssrf import parse_allowed_targets
from infrastructure.worker import USER_AGENT, AttemptRecorder, DeliveryWorker
from tests.support.receiver import Receiver, Reply

LOOPBACK = parse_allowed_targets("127.0.0.0/8")


@dataclass
class Worker:
    services: Services
    schedule: Schedule
    receiver: Receiver
    recorder: AttemptRecorder
    deliver: DeliveryWorker
    store_id: UUID
    secret: str  # the webhook's signing secret, as shown once
    webhook_id: str

    def messages(self, events: int) -> list[dict[str, Any]]:
        """The delivery messages the dispatcher enqueues for ``events`` new events."""
        for n in range(events):
            self.services.commerce.register_customer(
                self.store_id, f"c{n}-{uuid4().hex[:6]}@x.example", "C", None, Actor.system()
            )
        sent: list[dict[str, Any]] = []
        dispatcher = Dispatcher(
            self.services.dispatch, self.schedule, sent.extend, per_webhook=1000
        )
        deadline = time.monotonic() + 10
        while len(sent) < events and time.monotonic() < deadline:
            dispatcher.step()
        assert len(sent) == events
        return sent

    def attempts(self, message: dict[str, Any]) -> list[Any]:
        return list(self.services.dispatch.delivery(UUID(message["deliveryId"])).attempts)


@pytest.fixture
def worker(settings: Settings) -> Iterator[Worker]:
    services = build(replace(settings, allowed_targets=LOOPBACK))
    schedule = services.schedule()
    sender = Sender(services.guard, USER_AGENT, max_connections=32)
    recorder = AttemptRecorder(services.dispatch)
    with Receiver() as receiver:
        store_id = UUID(services.webhooks.create_store("Shop", Actor.system())["storeId"])
        created = services.webhooks.create_webhook(
            store_id,
            Actor.system(),
            url=receiver.url + "/hooks",
            event_types=["*"],
            headers={"X-Token": "t0ken"},
        )
        time.sleep(0.002)  # events must happen after the webhook exists (timestamps)
        yield Worker(
            services,
            schedule,
            receiver,
            recorder,
            DeliveryWorker(sender, services.keeper, recorder),
            store_id,
            created["secret"],
            created["id"],
        )
    recorder.stop()
    sender.close()
    services.close()


def test_an_attempt_is_signed_sent_and_durable_when_the_call_returns(worker: Worker) -> None:
    # Given the message of one delivery
    [message] = worker.messages(1)

    # When the worker performs it
    worker.deliver(message)

    # Then the receiver got the envelope, signed so that the webhook's secret verifies it,
    # with our headers and the webhook's custom header
    [request] = worker.receiver.requests
    assert request.body == message["body"].encode()
    standardwebhooks.Webhook(worker.secret).verify(request.body, request.headers)
    assert request.headers["webhook-id"] == message["eventId"]
    assert request.headers["webround-delivery-id"] == message["deliveryId"]
    assert request.headers["webround-envelope-id"] == message["envelopeId"]
    assert request.headers["webround-event-type"] == message["eventType"]
    assert request.headers["webround-attempt"] == "1"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers["x-token"] == "t0ken"
    # And the attempt was already recorded when the call returned
    [attempt] = worker.attempts(message)
    assert (attempt.number, attempt.status_code) == (1, 200)


def test_concurrent_attempts_are_each_durable_when_their_call_returns(worker: Worker) -> None:
    # Given twenty deliveries and eight threads sharing one worker (one recorder)
    messages = worker.messages(20)
    recorded_on_return: list[bool] = []
    lock = threading.Lock()

    def work(mine: list[dict[str, Any]]) -> None:
        for message in mine:
            worker.deliver(message)
            durable = len(worker.attempts(message)) == 1
            with lock:
                recorded_on_return.append(durable)

    # When the threads perform them at once
    threads = [threading.Thread(target=work, args=(messages[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    # Then every attempt was sent once and recorded by the time its call returned
    assert recorded_on_return == [True] * 20
    assert len(worker.receiver.requests) == 20


def test_an_attempt_the_store_refuses_is_dropped_and_the_recorder_carries_on(
    worker: Worker,
) -> None:
    # Given an attempt on a delivery that does not exist (a forged or corrupt message)
    unknown = AttemptResult(
        DeliveryRef(uuid4(), uuid4(), uuid4(), "evt_x"), 1, datetime.now(UTC), 5.0, 200
    )

    # When it is recorded, nothing is written for it
    worker.recorder.record(unknown)
    with pytest.raises(NotFound):
        worker.services.dispatch.delivery(unknown.delivery_id)

    # Then the recorder carries on: the next attempt is recorded as usual
    [message] = worker.messages(1)
    worker.deliver(message)
    assert len(worker.attempts(message)) == 1


def test_recording_gives_up_after_its_timeout_when_nothing_commits(worker: Worker) -> None:
    # Given a recorder that was stopped
    worker.recorder.stop()
    [message] = worker.messages(1)
    result = AttemptResult(
        worker.services.dispatch.ref(UUID(message["deliveryId"])), 1, datetime.now(UTC), 5.0, 200
    )

    # When / Then an attempt waits no longer than its timeout, and says so
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        worker.recorder.record(result, timeout=0.2)
    assert time.monotonic() - started < 5


def test_each_attempt_is_logged_with_its_fields(
    worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a receiver that answers 503
    worker.receiver.behaviour = Reply(status=503)
    [message] = worker.messages(1)

    # When the worker performs the attempt
    with caplog.at_level(logging.INFO, logger="webround.worker"):
        worker.deliver(message)

    # Then one record names the delivery, the webhook, the event and the outcome
    [record] = [r for r in caplog.records if r.getMessage() == "delivery attempt"]
    fields: dict[str, Any] = record.__dict__
    assert fields["delivery_id"] == message["deliveryId"]
    assert fields["webhook_id"] == worker.webhook_id
    assert fields["event_id"] == message["eventId"]
    assert (fields["attempt"], fields["status_code"], fields["error"]) == (1, 503, None)
    assert fields["duration_ms"] >= 0
