"""The read-side queries (§7) over real read models, on SQLite and PostgreSQL.

No dispatcher, worker or receiver: each test records store events, turns them into
deliveries with `process_new_events`, records attempts as a worker would, sends again and
changes webhooks through the applications, then brings the read models up to date with
`catch_up_all` — and asks `Queries` what happened.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest

from application.dispatch import AttemptResult
from application.errors import InvalidRequest, NotFound
from domain.delivery import delivery_id_of, envelope_id_of, event_id_of
from domain.values import Actor
from infrastructure.bootstrap import Services, build
from infrastructure.queries import Queries
from infrastructure.settings import Settings

ANN = Actor.person("ann@shop.example")
CAROL = Actor.person("carol@shop.example")
BEN = Actor.person("ben@other.example")
SYSTEM = Actor.system()
URL = "https://93.184.215.14/h"  # a public address: no DNS, accepted by the SSRF guard


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build(settings, jitter=lambda: 0.5)  # jitter 0.5: the schedule exactly
    yield built
    built.close()


@pytest.fixture
def queries(services: Services) -> Queries:
    return Queries(services.read_models)


# A history to ask about ---------------------------------------------------------------------


@dataclass
class History:
    shop: UUID
    other: UUID
    everything: UUID  # the shop's webhook for every event
    customers: UUID  # the shop's webhook for customer.*
    foreign: UUID  # the other store's webhook
    bob: UUID
    mug: UUID
    registered: str  # customer.registered of Bob
    renamed: str  # customer.updated of Bob
    mug_created: str  # product.created of the mug
    foreign_event: str  # the other store's customer.registered
    replay: UUID  # the delivery of "send again" of `registered` to `customers`
    marks: list[str]  # times between the three shop events (and their deliveries)
    before_changes: str  # a time after the deliveries, before the webhook changes


def now() -> str:
    """The current time as a filter, strictly between what came before and after."""
    time.sleep(0.005)
    moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(0.005)
    return moment


def store(services: Services, name: str) -> UUID:
    return UUID(services.webhooks.create_store(name, SYSTEM)["storeId"])


def webhook(services: Services, store_id: UUID, event_types: list[str], actor: Actor) -> UUID:
    created = services.webhooks.create_webhook(store_id, actor, url=URL, event_types=event_types)
    return UUID(created["id"])


def delivery(event_id: str, webhook_id: UUID) -> UUID:
    """The id of an event's first delivery to a webhook."""
    return delivery_id_of(envelope_id_of(event_id), webhook_id)


def attempt(
    services: Services,
    delivery_id: UUID,
    number: int,
    status: int | None,
    *,
    final: bool = False,
) -> AttemptResult:
    return AttemptResult(
        delivery=services.dispatch.ref(delivery_id),
        number=number,
        started_at=datetime.now(UTC),
        duration_ms=10.0 * number + (5.0 if status == 200 else 0.0),
        status_code=status,
        error=None if status else "connection",
        detail=None if status else "connection refused",
        response_headers={"content-type": "text/plain"} if status else {},
        response_body=f"answer {status}" if status else "",
        final=final,
    )


def process(services: Services) -> None:
    while services.dispatch.process_new_events():
        pass


def catch_up(services: Services) -> None:
    while services.read_models.catch_up_all():
        pass


def product(services: Services, store_id: UUID, name: str = "Mug") -> str:
    created = services.commerce.create_product(store_id, name, None, ANN)
    return event_id_of(UUID(created["id"]), 1)


def record_history(services: Services) -> History:
    # Two stores; the shop with a webhook for everything and one for customers
    shop, other = store(services, "Shop"), store(services, "Other")
    everything = webhook(services, shop, ["*"], ANN)
    customers = webhook(services, shop, ["customer.*"], ANN)
    foreign = webhook(services, other, ["*"], BEN)
    marks = []
    # Three shop events, each turned into deliveries at once
    bob = UUID(services.commerce.register_customer(shop, "bob@example.com", "Bob", None, ANN)["id"])
    process(services)
    marks.append(now())
    services.commerce.update_customer(shop, bob, CAROL, name="Robert")
    process(services)
    marks.append(now())
    mug = UUID(services.commerce.create_product(shop, "Mug", None, ANN)["id"])
    process(services)
    # and one of the other store
    stranger = services.commerce.register_customer(other, "eve@example.com", "Eve", None, BEN)
    process(services)
    registered, renamed = event_id_of(bob, 1), event_id_of(bob, 2)
    mug_created, foreign_event = event_id_of(mug, 1), event_id_of(UUID(stranger["id"]), 1)

    # Attempts: a success, a retry then a final failure, a retry still pending, a success
    services.dispatch.record_attempts(
        [
            attempt(services, delivery(registered, everything), 1, 200),
            attempt(services, delivery(registered, customers), 1, 500),
            attempt(services, delivery(renamed, everything), 1, None),
            attempt(services, delivery(mug_created, everything), 1, 200),
            attempt(services, delivery(foreign_event, foreign), 1, 500, final=True),
        ]
    )
    services.dispatch.record_attempts(
        [attempt(services, delivery(registered, customers), 2, 503, final=True)]
    )
    # Ann sends Bob's registration again to the customers webhook
    [sent] = services.dispatch.send_again(shop, registered, ANN, customers)
    before_changes = now()
    # The customers webhook is changed by Ann, its secret rotated by Carol, disabled by the
    # system, enabled again by Ann
    services.webhooks.update_webhook(shop, customers, ANN, description="CRM sync")
    services.webhooks.rotate_secret(shop, customers, CAROL)
    services.webhooks.update_webhook(
        shop, customers, SYSTEM, enabled=False, disabled_reason="failing for 5 days"
    )
    services.webhooks.update_webhook(shop, customers, ANN, enabled=True)
    catch_up(services)
    return History(
        shop,
        other,
        everything,
        customers,
        foreign,
        bob,
        mug,
        registered,
        renamed,
        mug_created,
        foreign_event,
        UUID(sent["id"]),
        marks,
        before_changes,
    )


@pytest.fixture
def history(services: Services) -> History:
    return record_history(services)


def every_page(
    ask: Any, limit: int = 2, cursor_start: str | None = None, **filters: Any
) -> list[dict[str, Any]]:
    """Every row of a list, page after page (from ``cursor_start`` when given)."""
    rows: list[dict[str, Any]] = []
    cursor = cursor_start
    while True:
        page = ask(limit=limit, cursor=cursor, **filters)
        assert len(page["data"]) <= limit
        rows.extend(page["data"])
        cursor = page["nextCursor"]
        if cursor is None:
            return rows


# Events ---------------------------------------------------------------------------------


def test_events_are_listed_newest_first_by_default_or_oldest_first(
    queries: Queries, history: History
) -> None:
    # When the shop's events are listed both ways
    newest = queries.list_events(history.shop)
    oldest = queries.list_events(history.shop, newest_first=False)

    # Then they are the shop's three events in log order, reversed by default
    in_order = [history.registered, history.renamed, history.mug_created]
    assert [e["eventId"] for e in oldest["data"]] == in_order
    assert [e["eventId"] for e in newest["data"]] == in_order[::-1]
    assert newest["nextCursor"] is None
    # And each says what, to which entity, when, by whom, and how its deliveries stand
    renamed = oldest["data"][1]
    assert renamed["eventType"] == "customer.updated"
    assert renamed["entityId"] == str(history.bob)
    assert renamed["initiatedBy"] == "carol@shop.example"
    assert renamed["deliveries"] == {"pending": 2, "succeeded": 0, "failed": 0}
    registered = oldest["data"][0]
    # (the first delivery to the customers webhook failed; its "send again" is pending)
    assert registered["deliveries"] == {"pending": 1, "succeeded": 1, "failed": 1}
    assert registered["occurredAt"] < history.marks[0] < renamed["occurredAt"]


def test_events_are_filtered_by_exact_type_or_entity(queries: Queries, history: History) -> None:
    # When the shop's events are filtered by an exact type, an entity pattern, and an entity
    updated = queries.list_events(history.shop, event_type="customer.updated")
    customers = queries.list_events(history.shop, event_type="customer.*", newest_first=False)
    products = queries.list_events(history.shop, event_type="product.*")
    of_bob = queries.list_events(history.shop, entity_id=str(history.bob), newest_first=False)
    of_mug = queries.list_events(history.shop, entity_id=history.mug)

    # Then each holds exactly the matching events
    assert [e["eventId"] for e in updated["data"]] == [history.renamed]
    assert [e["eventId"] for e in customers["data"]] == [history.registered, history.renamed]
    assert [e["eventId"] for e in products["data"]] == [history.mug_created]
    assert [e["eventId"] for e in of_bob["data"]] == [history.registered, history.renamed]
    assert [e["eventId"] for e in of_mug["data"]] == [history.mug_created]
    # And a type that matches nothing of the shop's answers an empty page
    assert queries.list_events(history.shop, event_type="order.*")["data"] == []


def test_events_are_filtered_by_time(queries: Queries, history: History) -> None:
    first, second = history.marks

    # When the events are asked from, until, and between the marks
    since = queries.list_events(history.shop, since=first, newest_first=False)
    until = queries.list_events(history.shop, until=first)
    between = queries.list_events(history.shop, since=first, until=second)

    # Then since is inclusive of what follows it, until excludes what follows it
    assert [e["eventId"] for e in since["data"]] == [history.renamed, history.mug_created]
    assert [e["eventId"] for e in until["data"]] == [history.registered]
    assert [e["eventId"] for e in between["data"]] == [history.renamed]


def test_an_event_answers_its_envelope_and_its_deliveries_per_webhook(
    queries: Queries, history: History, services: Services
) -> None:
    # When Bob's registration is read
    event = queries.get_event(history.shop, history.registered)

    # Then it holds the envelope exactly as receivers get it
    envelope = services.dispatch.envelope(history.shop, history.registered)
    assert event["envelope"]["eventId"] == history.registered
    assert event["envelope"]["envelopeId"] == str(envelope.id)
    assert event["envelope"]["data"]["customer"]["name"] == "Bob"
    assert event["eventType"] == "customer.registered"
    # And its deliveries grouped per webhook, each group in the order they were made
    groups = {g["webhookId"]: g["deliveries"] for g in event["deliveriesByWebhook"]}
    assert sorted(groups) == sorted([str(history.everything), str(history.customers)])
    [to_everything] = groups[str(history.everything)]
    assert to_everything["status"] == "succeeded"
    assert [a["outcome"] for a in to_everything["attempts"]] == ["succeeded"]
    first, again = groups[str(history.customers)]
    assert (first["id"], first["status"], first["replay"]) == (
        str(delivery(history.registered, history.customers)),
        "failed",
        False,
    )
    assert (again["id"], again["status"], again["replay"]) == (str(history.replay), "pending", True)
    assert again["requestedBy"] == "ann@shop.example"
    assert again["attempts"] == []
    # And every attempt with what the receiver answered and when the next one was due
    retry, final = first["attempts"]
    assert retry["number"] == 1
    assert retry["outcome"] == "retrying"
    assert retry["statusCode"] == 500
    assert retry["responseHeaders"] == {"content-type": "text/plain"}
    assert retry["responseBody"] == "answer 500"
    assert retry["durationMs"] == 10.0
    assert retry["nextAttemptAt"] is not None
    assert retry["nextAttemptAt"] > retry["startedAt"]
    assert (final["number"], final["outcome"], final["statusCode"]) == (2, "failed", 503)
    assert final["nextAttemptAt"] is None


def test_an_attempt_without_an_answer_records_its_error(queries: Queries, history: History) -> None:
    # When the delivery that could not connect is read
    found = queries.get_delivery(history.shop, delivery(history.renamed, history.everything))

    # Then its attempt has no status code but the error class and its detail
    [only] = found["attempts"]
    assert (only["statusCode"], only["error"], only["detail"]) == (
        None,
        "connection",
        "connection refused",
    )
    assert found["status"] == "pending"
    assert found["lastError"] == "connection"
    assert found["nextAttemptAt"] == only["nextAttemptAt"]


def test_another_stores_event_or_an_unknown_one_is_not_found(
    queries: Queries, history: History
) -> None:
    # When the shop asks for the other store's event, an unknown one, and a malformed id
    # Then none is found
    for event_id in (history.foreign_event, "evt_" + "0" * 32, "nonsense"):
        with pytest.raises(NotFound):
            queries.get_event(history.shop, event_id)
    # And the other store sees its own
    assert queries.get_event(history.other, history.foreign_event)["eventId"] == (
        history.foreign_event
    )


# Deliveries -----------------------------------------------------------------------------


def ids(page: dict[str, Any]) -> list[str]:
    return [row["id"] for row in page["data"]]


def test_deliveries_are_listed_newest_first_or_oldest_first(
    queries: Queries, history: History
) -> None:
    # When the shop's deliveries are listed both ways
    oldest = queries.list_deliveries(history.shop, newest_first=False)
    newest = queries.list_deliveries(history.shop)

    # Then they are in the order they were made: the first deliveries, then the replay
    made = [
        str(delivery(history.registered, history.everything)),
        str(delivery(history.registered, history.customers)),
        str(delivery(history.renamed, history.everything)),
        str(delivery(history.renamed, history.customers)),
        str(delivery(history.mug_created, history.everything)),
        str(history.replay),
    ]
    assert sorted(ids(oldest)[:2]) == sorted(made[:2])  # one event's fan-out: one batch
    assert sorted(ids(oldest)[2:4]) == sorted(made[2:4])
    assert ids(oldest)[4:] == made[4:]
    assert ids(newest) == ids(oldest)[::-1]
    # And list items carry the attempt count, not the attempts
    first = next(d for d in oldest["data"] if d["id"] == made[1])
    assert first["attemptCount"] == 2
    assert first["lastStatusCode"] == 503
    assert "attempts" not in first


def test_deliveries_are_filtered_by_webhook_event_and_status(
    queries: Queries, history: History
) -> None:
    shop = history.shop

    # When the deliveries are filtered by each field
    to_customers = queries.list_deliveries(shop, webhook_id=str(history.customers))
    of_registered = queries.list_deliveries(shop, event_id=history.registered)
    succeeded = queries.list_deliveries(shop, status="succeeded")
    failed = queries.list_deliveries(shop, status="failed")
    pending = queries.list_deliveries(shop, status="pending")
    combined = queries.list_deliveries(
        shop, webhook_id=history.customers, event_id=history.registered, status="pending"
    )

    # Then each holds exactly the matching ones
    assert set(ids(to_customers)) == {
        str(delivery(history.registered, history.customers)),
        str(delivery(history.renamed, history.customers)),
        str(history.replay),
    }
    assert set(ids(of_registered)) == {
        str(delivery(history.registered, history.everything)),
        str(delivery(history.registered, history.customers)),
        str(history.replay),
    }
    assert set(ids(succeeded)) == {
        str(delivery(history.registered, history.everything)),
        str(delivery(history.mug_created, history.everything)),
    }
    assert ids(failed) == [str(delivery(history.registered, history.customers))]
    assert set(ids(pending)) == {
        str(delivery(history.renamed, history.everything)),
        str(delivery(history.renamed, history.customers)),
        str(history.replay),
    }
    assert ids(combined) == [str(history.replay)]


def test_deliveries_are_filtered_by_creation_time(queries: Queries, history: History) -> None:
    first, second = history.marks

    # When the deliveries made before, between and after the marks are asked for
    before = queries.list_deliveries(history.shop, until=first)
    between = queries.list_deliveries(history.shop, since=first, until=second)
    replays = queries.list_deliveries(history.shop, since=history.before_changes)

    # Then each holds the deliveries made then
    assert set(ids(before)) == {
        str(delivery(history.registered, history.everything)),
        str(delivery(history.registered, history.customers)),
    }
    assert set(ids(between)) == {
        str(delivery(history.renamed, history.everything)),
        str(delivery(history.renamed, history.customers)),
    }
    assert ids(replays) == []  # the replay was made before the changes
    after_mug = queries.list_deliveries(history.shop, since=second, newest_first=False)
    assert ids(after_mug) == [
        str(delivery(history.mug_created, history.everything)),
        str(history.replay),
    ]


def test_a_delivery_answers_every_attempt_and_only_to_its_store(
    queries: Queries, history: History
) -> None:
    failed = delivery(history.registered, history.customers)

    # When the failed delivery is read by its store
    found = queries.get_delivery(history.shop, failed)

    # Then it has both attempts, in order
    assert found["id"] == str(failed)
    assert found["webhookId"] == str(history.customers)
    assert found["eventId"] == history.registered
    assert [a["number"] for a in found["attempts"]] == [1, 2]
    assert found["attemptCount"] == 2
    # And another store, an unknown id or a malformed one finds nothing
    with pytest.raises(NotFound):
        queries.get_delivery(history.other, failed)
    with pytest.raises(NotFound):
        queries.get_delivery(history.shop, uuid4())
    with pytest.raises(NotFound):
        queries.get_delivery(history.shop, "not-a-uuid")


# Audit ------------------------------------------------------------------------------------


def kinds(page: dict[str, Any]) -> list[str]:
    return [row["kind"] for row in page["data"]]


def test_who_sent_an_event_again_and_when(queries: Queries, history: History) -> None:
    # When the audit log is asked who sent Bob's registration again
    answer = queries.list_audit(
        history.shop, event_id=history.registered, kind="delivery.sent_again"
    )

    # Then it is Ann, at the time the replay was made, to the customers webhook
    [entry] = answer["data"]
    assert entry["actor"] == "ann@shop.example"
    assert entry["deliveryId"] == str(history.replay)
    assert entry["webhookId"] == str(history.customers)
    assert history.marks[1] < entry["occurredAt"] < history.before_changes
    assert entry["summary"] == "customer.registered sent again"


def test_every_failed_attempt_to_a_webhook_in_the_last_hour(
    queries: Queries, history: History, services: Services
) -> None:
    # Given one more failed attempt to the everything webhook, after a mark
    mark = now()
    services.dispatch.record_attempts(
        [attempt(services, delivery(history.renamed, history.everything), 2, 502)]
    )
    catch_up(services)
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    # When the failed attempts to that webhook in the last hour are asked for
    failures = queries.list_audit(
        history.shop,
        webhook_id=history.everything,
        kind="delivery.attempt_failed,delivery.failed",
        since=an_hour_ago,
        newest_first=False,
    )
    since_mark = queries.list_audit(
        history.shop,
        webhook_id=history.everything,
        kind=["delivery.attempt_failed", "delivery.failed"],
        since=mark,
    )

    # Then they are both failed attempts to it (not its successes, not other webhooks')
    assert [(e["kind"], e["details"]["attempt"]) for e in failures["data"]] == [
        ("delivery.attempt_failed", 1),
        ("delivery.attempt_failed", 2),
    ]
    assert all(
        e["deliveryId"] == str(delivery(history.renamed, history.everything))
        for e in failures["data"]
    )
    assert failures["data"][0]["details"] == {
        "attempt": 1,
        "statusCode": None,
        "error": "connection",
    }
    assert failures["data"][1]["summary"].startswith("attempt 2 failed: HTTP 502; next at ")
    assert all(e["actor"] == "system" for e in failures["data"])
    # And from the mark on, only the newer one
    assert [e["details"]["attempt"] for e in since_mark["data"]] == [2]
    # And for the customers webhook, the retry and the final failure
    to_customers = queries.list_audit(
        history.shop, webhook_id=history.customers, kind="delivery.attempt_failed,delivery.failed"
    )
    assert kinds(to_customers) == ["delivery.failed", "delivery.attempt_failed"]


def test_what_changed_on_a_webhook_and_who_did_it(queries: Queries, history: History) -> None:
    # When the audit log is asked for the webhook changes of the customers webhook
    for prefix in ("webhook.", "webhook.*", "webhook"):
        answer = queries.list_audit(
            history.shop, webhook_id=history.customers, kind=prefix, newest_first=False
        )

        # Then it lists each change, in order, with who made it — and nothing else
        assert [(e["kind"], e["actor"]) for e in answer["data"]] == [
            ("webhook.created", "ann@shop.example"),
            ("webhook.updated", "ann@shop.example"),
            ("webhook.secret_rotated", "carol@shop.example"),
            ("webhook.disabled", "system"),
            ("webhook.enabled", "ann@shop.example"),
        ], prefix
    updated, disabled = answer["data"][1], answer["data"][3]
    assert updated["details"] == {"description": "CRM sync"}
    assert disabled["summary"] == "webhook disabled: failing for 5 days"


def test_the_audit_log_is_filtered_by_actor_delivery_and_time(
    queries: Queries, history: History
) -> None:
    # When the audit log is filtered by each remaining field
    by_carol = queries.list_audit(history.shop, actor="carol@shop.example")
    of_failed = queries.list_audit(
        history.shop,
        delivery_id=delivery(history.registered, history.customers),
        newest_first=False,
    )
    changes = queries.list_audit(history.shop, since=history.before_changes, newest_first=False)
    before = queries.list_audit(history.shop, until=history.before_changes)

    # Then each holds exactly the matching entries
    assert kinds(by_carol) == ["webhook.secret_rotated"]
    assert kinds(of_failed) == [
        "delivery.created",
        "delivery.attempt_failed",
        "delivery.failed",
    ]
    assert kinds(changes) == [
        "webhook.updated",
        "webhook.secret_rotated",
        "webhook.disabled",
        "webhook.enabled",
    ]
    assert not set(kinds(before)) & {"webhook.updated", "webhook.enabled"}
    assert kinds(before)[-1] == "store.created"  # newest first: the store came first
    # And exact kinds match only themselves
    assert kinds(queries.list_audit(history.shop, kind="webhook.created")) == [
        "webhook.created",
        "webhook.created",
    ]


def test_audit_entries_are_ordered_by_time_both_ways(queries: Queries, history: History) -> None:
    # When the whole audit log is read both ways, page by page
    newest = every_page(lambda **k: queries.list_audit(history.shop, **k), limit=3)
    oldest = every_page(
        lambda **k: queries.list_audit(history.shop, **k), limit=3, newest_first=False
    )

    # Then one is the other reversed, and times never go backwards
    assert [e["id"] for e in newest] == [e["id"] for e in oldest][::-1]
    times = [e["occurredAt"] for e in oldest]
    assert times == sorted(times)
    assert len(oldest) == len({e["id"] for e in oldest}) == 18


# Pagination while new rows arrive ------------------------------------------------------------


def event_ids(rows: list[dict[str, Any]]) -> list[str]:
    return [row["eventId"] for row in rows]


@pytest.mark.parametrize("newest_first", [True, False], ids=["newest", "oldest"])
def test_event_pages_skip_and_repeat_nothing_while_events_arrive(
    services: Services, queries: Queries, newest_first: bool
) -> None:
    # Given five events of a store
    shop = store(services, "Shop")
    webhook(services, shop, ["*"], ANN)
    before = [product(services, shop, f"P{i}") for i in range(5)]
    process(services)
    catch_up(services)

    # When the first page is read, then two more events arrive, then the rest is read
    first = queries.list_events(shop, limit=2, newest_first=newest_first)
    later = [product(services, shop, f"Q{i}") for i in range(2)]
    process(services)
    catch_up(services)
    rest = every_page(
        lambda **k: queries.list_events(shop, **k),
        limit=2,
        cursor_start=first["nextCursor"],
        newest_first=newest_first,
    )

    # Then nothing was skipped or repeated: newest first, the pages hold exactly the events
    # there were at the first page; oldest first, they go on into the new ones
    pages = event_ids(first["data"]) + event_ids(rest)
    if newest_first:
        assert pages == before[::-1]
    else:
        assert pages == before + later


@pytest.mark.parametrize("newest_first", [True, False], ids=["newest", "oldest"])
def test_delivery_and_audit_pages_skip_and_repeat_nothing_while_rows_arrive(
    services: Services, queries: Queries, newest_first: bool
) -> None:
    # Given a store whose webhook got three deliveries
    shop = store(services, "Shop")
    webhook(services, shop, ["*"], ANN)
    for i in range(3):
        product(services, shop, f"P{i}")
    process(services)
    catch_up(services)
    deliveries_before = ids(queries.list_deliveries(shop, newest_first=newest_first))
    audit_before = [e["id"] for e in queries.list_audit(shop, newest_first=newest_first)["data"]]

    # When a first page of each is read, then more arrive, then the rest is read
    first_deliveries = queries.list_deliveries(shop, limit=2, newest_first=newest_first)
    first_audit = queries.list_audit(shop, limit=2, newest_first=newest_first)
    for i in range(2):
        product(services, shop, f"Q{i}")
    process(services)
    catch_up(services)
    deliveries = ids(first_deliveries) + [
        d["id"]
        for d in every_page(
            lambda **k: queries.list_deliveries(shop, **k),
            cursor_start=first_deliveries["nextCursor"],
            newest_first=newest_first,
        )
    ]
    audit = [e["id"] for e in first_audit["data"]] + [
        e["id"]
        for e in every_page(
            lambda **k: queries.list_audit(shop, **k),
            cursor_start=first_audit["nextCursor"],
            newest_first=newest_first,
        )
    ]

    # Then nothing was skipped or repeated
    assert len(deliveries) == len(set(deliveries))
    assert len(audit) == len(set(audit))
    if newest_first:
        assert deliveries == deliveries_before
        assert audit == audit_before
    else:
        assert deliveries[:3] == deliveries_before
        assert len(deliveries) == 5
        assert audit[: len(audit_before)] == audit_before
        assert len(audit) == len(audit_before) + 2  # two more deliveries created


# Tenant isolation ----------------------------------------------------------------------------


def test_no_list_answers_another_stores_rows(queries: Queries, history: History) -> None:
    # When the other store lists its events, deliveries and audit entries
    events = queries.list_events(history.other)
    deliveries = queries.list_deliveries(history.other)
    audit = queries.list_audit(history.other, newest_first=False)

    # Then it sees only its own
    assert event_ids(events["data"]) == [history.foreign_event]
    assert ids(deliveries) == [str(delivery(history.foreign_event, history.foreign))]
    assert kinds(audit) == [
        "store.created",
        "webhook.created",
        "delivery.created",
        "delivery.failed",
    ]
    # And filters naming the shop's things find nothing for it
    assert queries.list_deliveries(history.other, webhook_id=history.customers)["data"] == []
    assert queries.list_audit(history.other, event_id=history.registered)["data"] == []
    assert queries.list_events(history.other, entity_id=history.bob)["data"] == []
    # And the shop never sees the other store's rows
    assert history.foreign_event not in event_ids(queries.list_events(history.shop)["data"])
    assert queries.list_audit(history.shop, webhook_id=history.foreign)["data"] == []


def test_a_cursor_continues_its_own_list_from_its_place(queries: Queries, history: History) -> None:
    # Given a cursor of the shop's events, newest first, after the newest one
    first = queries.list_events(history.shop, limit=1)
    cursor = first["nextCursor"]
    assert cursor

    # Then it continues that list after the newest, and — in the other order — goes on
    # from the same place the other way (to nothing newer)
    older = queries.list_events(history.shop, limit=100, cursor=cursor)["data"]
    newer = queries.list_events(history.shop, cursor=cursor, newest_first=False)["data"]
    all_events = queries.list_events(history.shop, limit=100)["data"]
    assert older == all_events[1:]
    assert newer == []
    # But it is no cursor of another list
    with pytest.raises(InvalidRequest) as other_list:
        queries.list_deliveries(history.shop, cursor=cursor)
    assert other_list.value.field == "cursor"
    # And it reveals nothing of another store: the other store's page is its own
    other = queries.list_events(history.other, cursor=cursor)
    assert all(e["eventId"] == history.foreign_event for e in other["data"])


# Validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ask", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"since": "2030-01-01T12:00:00"}, "since"),  # no time zone
        ({"since": "2030-01-01"}, "since"),
        ({"until": "2030-13-01T00:00:00Z"}, "until"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"cursor": "!!!"}, "cursor"),
        ({"cursor": "WzEsMl0"}, "cursor"),  # base64 JSON, but not ours
        ({"event_type": "order.shipped"}, "eventType"),
        ({"event_type": "nothing.*"}, "eventType"),
        ({"entity_id": "bob"}, "entityId"),
    ],
)
def test_bad_event_filters_are_refused_naming_the_field(
    queries: Queries, ask: dict[str, Any], field: str
) -> None:
    # When events are asked with a bad filter
    # Then the request is refused, naming the field
    with pytest.raises(InvalidRequest) as refused:
        queries.list_events(uuid4(), **ask)
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("ask", "field"),
    [
        ({"webhook_id": "w1"}, "webhookId"),
        ({"event_id": "evt_1"}, "eventId"),
        ({"delivery_id": "d1"}, "deliveryId"),
        ({"kind": "Webhook.Created"}, "kind"),
        ({"kind": ","}, "kind"),
        ({"actor": "a\x00b"}, "actor"),
        ({"since": "2030-01-01T12:00:00+25:00"}, "since"),
    ],
)
def test_bad_audit_filters_are_refused_naming_the_field(
    queries: Queries, ask: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        queries.list_audit(uuid4(), **ask)
    assert refused.value.field == field


def test_bad_delivery_status_is_refused(queries: Queries) -> None:
    with pytest.raises(InvalidRequest) as refused:
        queries.list_deliveries(uuid4(), status="done")
    assert refused.value.field == "status"


def test_times_with_an_offset_or_more_digits_are_read_as_utc(
    queries: Queries, history: History
) -> None:
    # Given the first mark written with a +02:00 offset and nanoseconds
    moment = datetime.strptime(history.marks[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    shifted = moment.astimezone(timezone(timedelta(hours=2)))
    text = shifted.strftime("%Y-%m-%dT%H:%M:%S.%f") + "999+02:00"

    # When events are asked from it
    answer = queries.list_events(history.shop, since=text, newest_first=False)

    # Then it is the same instant as the mark
    assert event_ids(answer["data"]) == [history.renamed, history.mug_created]


# Webhook health ---------------------------------------------------------------------------------


def test_webhook_health_counts_attempts_and_latency(queries: Queries, history: History) -> None:
    # When the health of the shop's webhooks (and the other store's) is asked by the shop
    health = queries.webhook_health(
        history.shop, [history.everything, history.customers, history.foreign]
    )

    # Then each of its webhooks has its attempts, success rate, latency and last times
    everything = health[str(history.everything)]
    assert (everything["attempts"], everything["succeeded"], everything["failed"]) == (3, 2, 1)
    assert everything["successRate"] == pytest.approx(2 / 3)
    assert everything["averageLatencyMs"] == pytest.approx((15 + 10 + 15) / 3)
    assert everything["lastSuccessAt"] is not None
    assert everything["lastFailureAt"] is not None
    customers = health[str(history.customers)]
    assert (customers["attempts"], customers["succeeded"], customers["successRate"]) == (2, 0, 0)
    assert customers["lastSuccessAt"] is None
    # And the other store's webhook reads as if it had no attempts
    assert health[str(history.foreign)] == {
        "attempts": 0,
        "succeeded": 0,
        "failed": 0,
        "successRate": None,
        "averageLatencyMs": None,
        "lastSuccessAt": None,
        "lastFailureAt": None,
    }


def test_webhook_hourly_counts_per_hour(queries: Queries, history: History) -> None:
    # When the hourly chart of the everything webhook is asked for the last day
    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    hours = queries.webhook_hourly(history.shop, history.everything, since)

    # Then the hours of its attempts add up to them (the test may straddle an hour)
    assert sum(h["succeeded"] for h in hours) == 2
    assert sum(h["failed"] for h in hours) == 1
    assert all(h["hour"].endswith(":00:00Z") for h in hours)
    # And a later start, or another store, sees nothing
    assert queries.webhook_hourly(history.shop, history.everything, "2999-01-01T00:00:00Z") == []
    assert queries.webhook_hourly(history.other, history.everything, since) == []
