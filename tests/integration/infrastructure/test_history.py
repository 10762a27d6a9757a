"""`EventHistory` on both event stores: an aggregate's version as of a log position, the
basis of exact snapshots (§5). Positions are read back from the notification log, so the
tests hold whatever numbering each backend gives."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID, uuid4

import pytest

from application.commerce import Commerce
from domain.catalog import Product
from domain.customer import Customer
from domain.values import Actor
from infrastructure.bootstrap import build
from infrastructure.history import event_history
from infrastructure.settings import Settings

ANN = Actor.person("ann@shop.example")
STORE = uuid4()


@pytest.fixture
def commerce(settings: Settings) -> Iterator[Commerce]:
    services = build(settings)
    yield services.commerce
    services.close()


def positions(commerce: Commerce) -> dict[tuple[UUID, int], int]:
    """The log position of every (aggregate, version)."""
    notifications = commerce.recorder.select_notifications(start=None, limit=1000)
    return {(UUID(str(n.originator_id)), n.originator_version): n.id for n in notifications}


def test_the_version_as_of_each_position_of_an_interleaved_log(commerce: Commerce) -> None:
    # Given a customer's events interleaved with a product's, after an unrelated event
    c = commerce
    c.create_product(STORE, "Unrelated", None, ANN)
    customer = UUID(c.register_customer(STORE, "a@example.com", "A", None, ANN)["id"])
    product = UUID(c.create_product(STORE, "Mug", None, ANN)["id"])
    c.update_customer(STORE, customer, ANN, name="Anna")
    c.update_product(STORE, product, ANN, name="Big mug")
    c.update_product(STORE, product, ANN, description="Holds a lot")
    c.verify_customer(STORE, customer, ANN)
    at = positions(c)
    history = event_history(c.recorder)

    # When the customer's and the product's versions are asked at every position
    log = sorted(at.values())
    customer_versions = [history.version_at(customer, p) for p in log]
    product_versions = [history.version_at(product, p) for p in log]

    # Then each is the version after its last event at or before that position
    assert customer_versions == [None, 1, 1, 2, 2, 2, 3]
    assert product_versions == [None, None, 1, 1, 2, 3, 3]
    # And positions between or beyond the events answer the same
    assert history.version_at(customer, at[(customer, 1)] - 1) is None
    assert history.version_at(customer, at[(customer, 3)] + 1000) == 3
    assert history.version_at(product, at[(product, 3)]) == 3


def test_none_before_the_first_event_and_for_an_unknown_aggregate(commerce: Commerce) -> None:
    # Given a customer registered after another event
    commerce.create_product(STORE, "First", None, ANN)
    customer = UUID(commerce.register_customer(STORE, "b@example.com", "B", None, ANN)["id"])
    first = positions(commerce)[(customer, 1)]
    history = event_history(commerce.recorder)

    # When asked before its first event, at position 0, or about an id never recorded
    # Then there is no version
    assert history.version_at(customer, first - 1) is None
    assert history.version_at(customer, 0) is None
    assert history.version_at(uuid4(), first + 10) is None
    # And at its first event it is version 1
    assert history.version_at(customer, first) == 1


def test_events_saved_in_one_transaction_each_have_their_own_position(
    commerce: Commerce,
) -> None:
    # Given a customer with two pending events saved together with a new product
    customer = Customer.register(STORE, "c@example.com", "C", None, ANN)
    customer.update(ANN, name="Cee")
    product = Product.create(STORE, "Mug", None, ANN)
    commerce.save(customer, product)
    at = positions(commerce)
    history = event_history(commerce.recorder)

    # When the customer's version is asked at each of its events' positions
    # Then the first event's position sees version 1 and the second's version 2
    assert history.version_at(customer.id, at[(customer.id, 1)]) == 1
    assert history.version_at(customer.id, at[(customer.id, 2)]) == 2
    assert history.version_at(product.id, at[(product.id, 1)]) == 1


def test_another_application_on_the_same_storage_sees_the_same_history(
    commerce: Commerce, settings: Settings
) -> None:
    # Given a customer updated twice
    customer = UUID(commerce.register_customer(STORE, "d@example.com", "D", None, ANN)["id"])
    commerce.update_customer(STORE, customer, ANN, name="Dee")
    commerce.update_customer(STORE, customer, ANN, name="Deedee")
    at = positions(commerce)

    # When another process reads the history from the same storage
    other = build(settings)
    try:
        history = event_history(other.commerce.recorder)
        answers = [history.version_at(customer, at[(customer, v)]) for v in (1, 2, 3)]
    finally:
        other.close()

    # Then it answers the same versions
    assert answers == [1, 2, 3]


def test_a_recorder_without_a_history_is_refused() -> None:
    # Given something that is neither a SQLite nor a PostgreSQL application recorder
    # When a history is asked for it
    # Then it is refused, naming its type
    with pytest.raises(TypeError, match="object"):
        event_history(object())  # type: ignore[arg-type]
