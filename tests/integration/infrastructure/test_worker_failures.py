"""Every way a delivery can fail inside a worker is recorded on the delivery, and no log
line holds an envelope, customer data or a header value (issue #12, item 5).

Each test runs the dispatcher and a worker on an in-process broker (SQLite and
PostgreSQL), with every log record of every logger — Dramatiq's at DEBUG included — going
through the service's own JSON log handler into a buffer. The failure paths: a worker
whose master key cannot open the webhook's sealed secret and headers, an unreachable
target, a receiver that answers 500 echoing what it got, and an attempt the database
refuses to record. After each, the buffer is searched for the customer's email and name,
the custom header's value, the envelope, the sealed secret — in clear and as hex.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
import pytest

from domain.values import Actor
from infrastructure.bootstrap import Services, build, open_queue, start_dispatcher, start_worker
from infrastructure.logs import configure_logging
from infrastructure.queries import Queries
from infrastructure.secrets import MasterKey
from infrastructure.settings import Settings
from infrastructure.ssrf import parse_allowed_targets
from tests.e2e.conftest import wait_until
from tests.support.receiver import Receiver, RecordedRequest, Reply, free_port

EMAIL = "annabel.quietly@private.example"
NAME = "Annabel Quietly-Private"
HEADER_VALUE = "hdr-value-7f3a9c-do-not-log"


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """Every record, DEBUG and up, as the service writes it (JSON lines), in a buffer."""
    buffer = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging(Settings(log_format="json"), buffer)
    root.setLevel(logging.DEBUG)
    yield buffer
    root.removeHandler(handler)
    root.setLevel(level)


@dataclass
class Shop:
    services: Services
    store_id: UUID
    receiver: Receiver

    def webhook(self, url: str | None = None) -> dict[str, Any]:
        created = self.services.webhooks.create_webhook(
            self.store_id,
            Actor.system(),
            url=url or self.receiver.url + "/hooks",
            event_types=["customer.registered"],
            headers={"X-Shop-Token": HEADER_VALUE},
        )
        time.sleep(0.002)  # the event comes after the webhook (timestamps)
        return created

    def customer(self) -> None:
        self.services.commerce.register_customer(self.store_id, EMAIL, NAME, None, Actor.system())

    def attempts(self, webhook_id: str) -> list[Any]:
        dispatch = self.services.dispatch
        found = []
        for notification in dispatch.recorder.select_notifications(start=None, limit=10_000):
            event: Any = dispatch.mapper.to_domain_event(notification)
            if type(event).__name__ == "Scheduled" and str(event.webhook_id) == webhook_id:
                found += dispatch.delivery(event.originator_id).attempts
        return found


def _settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        allowed_targets=parse_allowed_targets("127.0.0.0/8"),
        retry_schedule=(30.0,),  # one retry, much later: each test sees its first attempt
        worker_threads=2,
        master_key=MasterKey.generate().encode(),
    )


@pytest.fixture
def shop(settings: Settings, logs: io.StringIO) -> Iterator[Shop]:
    """The API side (commands, the dispatcher) of a store; each test adds its worker."""
    services = build(_settings(settings))
    with Receiver() as receiver:
        store = services.webhooks.create_store("Shop", Actor.system())
        yield Shop(services, UUID(store["storeId"]), receiver)
        services.close()


def run(shop: Shop, worker: Services | None = None) -> None:
    """The dispatcher of the shop's services, and a worker of ``worker`` (or of the shop)."""
    queue = open_queue(shop.services)
    start_worker(worker or shop.services, queue)
    start_dispatcher(shop.services, queue)


def assert_no_private_data(logs: io.StringIO, shop: Shop, *more: str) -> None:
    text = logs.getvalue()
    assert "delivery attempt" in text or "could not be recorded" in text  # logging worked
    private = [EMAIL, NAME, HEADER_VALUE, "whsec_", *more]
    private += [value.encode().hex() for value in (EMAIL, NAME, HEADER_VALUE)]
    for envelope in _envelopes(shop):
        private += [envelope, envelope[:40]]
    leaked = [value for value in private if value and value in text]
    assert leaked == [], text


def _envelopes(shop: Shop) -> list[str]:
    dispatch = shop.services.dispatch
    return [
        event.body
        for notification in dispatch.recorder.select_notifications(start=None, limit=10_000)
        if hasattr(event := dispatch.mapper.to_domain_event(notification), "body")
    ]


def _sealed(shop: Shop, webhook_id: str) -> list[str]:
    webhook = shop.services.webhooks.get_webhook(shop.store_id, UUID(webhook_id))
    return [s.sealed for s in webhook.secrets] + [webhook.sealed_headers or ""]


def test_a_worker_whose_master_key_cannot_open_the_secret_records_why(
    settings: Settings, shop: Shop, logs: io.StringIO
) -> None:
    # Given a webhook, and a worker started with another master key (another data
    # directory, a key not copied to this host)
    webhook = shop.webhook()
    stranger = build(_settings(settings))
    try:
        run(shop, worker=stranger)

        # When an event is to be delivered
        shop.customer()

        # Then the attempt is recorded on the delivery as `secret_unavailable`, saying why
        (attempt,) = wait_until(lambda: shop.attempts(webhook["id"]))
        assert (attempt.status_code, attempt.error) == (None, "secret_unavailable")
        assert "WEBROUND_MASTER_KEY" in attempt.detail
        # And nothing was sent
        assert shop.receiver.requests == []
    finally:
        stranger.close()
    # And the API shows it on the delivery
    delivery = _shown(shop, webhook["id"])
    assert delivery["lastError"] == "secret_unavailable"
    assert delivery["attempts"][0]["error"] == "secret_unavailable"
    # And no log line holds the envelope, the customer, the header value or the sealed data
    assert_no_private_data(logs, shop, *_sealed(shop, webhook["id"]))


def test_an_unreachable_target_is_logged_without_private_data(
    shop: Shop, logs: io.StringIO
) -> None:
    # Given a webhook whose target refuses connections
    webhook = shop.webhook(url=f"http://127.0.0.1:{free_port()}/hooks")
    run(shop)

    # When an event is delivered
    shop.customer()

    # Then the attempt is a connection error, and the logs hold nothing private
    (attempt,) = wait_until(lambda: shop.attempts(webhook["id"]))
    assert attempt.error == "connect_error"
    assert_no_private_data(logs, shop, *_sealed(shop, webhook["id"]))


def test_a_receiver_error_echoing_what_it_got_is_logged_without_private_data(
    shop: Shop, logs: io.StringIO
) -> None:
    # Given a receiver that answers 500 with the envelope it got, and the header value
    def echo(request: RecordedRequest) -> Reply:
        token = request.headers.get("x-shop-token", "")
        return Reply(status=500, headers={"x-request-id": token}, body=request.body)

    shop.receiver.behaviour = echo
    webhook = shop.webhook()
    run(shop)

    # When an event is delivered
    shop.customer()

    # Then the answer is recorded as it came (the merchant sees it) ...
    (attempt,) = wait_until(lambda: shop.attempts(webhook["id"]))
    assert attempt.status_code == 500
    assert EMAIL in attempt.response_body
    # ... and no log line holds any of it
    assert_no_private_data(logs, shop, *_sealed(shop, webhook["id"]))


def test_an_attempt_the_database_refuses_is_retried_and_logged_without_private_data(
    shop: Shop, logs: io.StringIO
) -> None:
    # Given a receiver that echoes the envelope, and a database refusing every attempt
    # with an error whose detail quotes the row (as PostgreSQL's "Failing row contains")
    shop.receiver.behaviour = lambda request: Reply(status=200, body=request.body)
    webhook = shop.webhook()
    refuse = _refuse_attempts(shop.services)
    run(shop)

    # When an event is delivered
    shop.customer()

    # Then the worker says the attempt could not be recorded, and tries again
    wait_until(lambda: "could not be recorded" in logs.getvalue(), timeout=30)
    assert shop.attempts(webhook["id"]) == []
    # And once the database takes attempts again, the retry is recorded
    refuse()
    (attempt, *_) = wait_until(lambda: shop.attempts(webhook["id"]), timeout=30)
    assert attempt.status_code == 200
    # And no log line of all this holds the envelope, the customer or the header value
    assert_no_private_data(logs, shop, *_sealed(shop, webhook["id"]))


def _refuse_attempts(services: Services) -> Any:
    """Make the dispatch store refuse `Attempted` events until the returned function is
    called: a trigger raising an error with a detail that quotes the row (PostgreSQL), or
    failing as it runs (SQLite)."""
    url = services.settings.database_url
    if url is None:
        database = services.settings.data_dir / "dispatch.sqlite"
        import sqlite3

        with sqlite3.connect(database) as connection:
            # json() of no JSON fails when it runs, as an operational error.
            connection.execute(
                "CREATE TRIGGER refuse_attempts BEFORE INSERT ON stored_events "
                "WHEN NEW.topic LIKE '%Attempted' BEGIN SELECT json('refused'); END"
            )

        def allow() -> None:
            with sqlite3.connect(database) as connection:
                connection.execute("DROP TRIGGER refuse_attempts")

        return allow
    dsn, schema = url.split("?", 1)[0], url.split("schema=", 1)[1]
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"SET search_path = {schema}")
        connection.execute(
            "CREATE FUNCTION refuse_attempts() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'attempts are refused' USING DETAIL = "
            "'Failing row contains (' || convert_from(NEW.state, 'UTF8') || ')'; END $$"
        )
        connection.execute(
            "CREATE TRIGGER refuse_attempts BEFORE INSERT ON dispatch_events FOR EACH ROW "
            "WHEN (NEW.topic LIKE '%Attempted') EXECUTE FUNCTION refuse_attempts()"
        )

    def allow_postgres() -> None:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f"SET search_path = {schema}")
            connection.execute("DROP TRIGGER refuse_attempts ON dispatch_events")

    return allow_postgres


def _shown(shop: Shop, webhook_id: str) -> dict[str, Any]:
    """The webhook's delivery as the API answers it, once the read models caught up."""
    while shop.services.read_models.catch_up_all():
        pass
    queries = Queries(shop.services.read_models)
    (listed,) = queries.list_deliveries(shop.store_id, webhook_id=webhook_id)["data"]
    return queries.get_delivery(shop.store_id, listed["id"])
