"""The Customer aggregate: registration, profile changes, verification, deletion request."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID, uuid4

import pytest

from domain.customer import Customer
from domain.errors import CustomerDeletionRequested, InvalidTransition, InvalidValue
from domain.values import Actor, Address

STORE_ID = UUID("00000000-0000-4000-8000-000000000001")
ADMIN = Actor.person("admin@example.com")
SHOP = Actor.system()


def _customer(store_id: UUID = STORE_ID) -> Customer:
    """A registered customer whose creation event has already been collected."""
    customer = Customer.register(store_id, "jane@example.com", "Jane Doe", "+4930123456", SHOP)
    customer.collect_events()
    return customer


def _address() -> Address:
    return Address("Unter den Linden 1", "Berlin", "10117", "DE")


def test_register_starts_an_unverified_customer_of_the_store() -> None:
    # Given a store and a new customer's details
    store_id = uuid4()

    # When the customer registers
    customer = Customer.register(store_id, "jane@example.com", "Jane Doe", None, ADMIN)

    # Then the customer belongs to that store, unverified, without addresses
    assert customer.store_id == store_id
    assert (customer.email, customer.name, customer.phone) == ("jane@example.com", "Jane Doe", None)
    assert customer.verified is False
    assert customer.addresses == []
    assert customer.deletion_requested is False
    assert len(customer.collect_events()) == 1


@pytest.mark.parametrize(
    "email",
    [
        "",
        "jane",
        "jane@",
        "@example.com",
        "jane@localhost",
        " jane@example.com",
        "jane@example.com\n",
    ],
)
def test_register_refuses_an_invalid_email(email: str) -> None:
    # Given an invalid email address
    # When a customer registers with it
    with pytest.raises(InvalidValue) as refused:
        Customer.register(STORE_ID, email, "Jane Doe", None, SHOP)

    # Then registration is refused on the email field
    assert refused.value.field == "email"


def test_register_refuses_an_empty_name() -> None:
    # Given a blank name
    # When a customer registers with it
    with pytest.raises(InvalidValue) as refused:
        Customer.register(STORE_ID, "jane@example.com", "  ", None, SHOP)

    # Then registration is refused on the name field
    assert refused.value.field == "name"


def test_update_changes_only_the_given_fields() -> None:
    # Given a registered customer
    customer = _customer()

    # When only the name is updated
    customer.update(ADMIN, name="Jane Roe")

    # Then the name changed, the rest did not, and one event was recorded
    assert customer.name == "Jane Roe"
    assert customer.email == "jane@example.com"
    assert customer.phone == "+4930123456"
    assert len(customer.collect_events()) == 1


def test_update_refuses_an_invalid_email_and_records_nothing() -> None:
    # Given a registered customer
    customer = _customer()
    version = customer.version

    # When the email is updated to something that is not an email
    with pytest.raises(InvalidValue) as refused:
        customer.update(ADMIN, email="not-an-email")

    # Then the update is refused, the email is unchanged and nothing was recorded
    assert refused.value.field == "email"
    assert customer.email == "jane@example.com"
    assert customer.version == version
    assert customer.collect_events() == []


def test_update_refuses_an_empty_name_and_records_nothing() -> None:
    # Given a registered customer
    customer = _customer()

    # When the name is updated to blanks
    with pytest.raises(InvalidValue) as refused:
        customer.update(ADMIN, name=" ")

    # Then the update is refused and nothing was recorded
    assert refused.value.field == "name"
    assert customer.name == "Jane Doe"
    assert customer.collect_events() == []


def test_verify_marks_the_customer_verified() -> None:
    # Given an unverified customer
    customer = _customer()

    # When the customer is verified
    customer.verify(ADMIN)

    # Then the customer is verified and one event was recorded
    assert customer.verified is True
    assert len(customer.collect_events()) == 1


def test_verify_twice_is_refused() -> None:
    # Given a verified customer
    customer = _customer()
    customer.verify(ADMIN)
    customer.collect_events()
    version = customer.version

    # When the customer is verified again
    with pytest.raises(InvalidTransition):
        customer.verify(ADMIN)

    # Then nothing was recorded
    assert customer.version == version
    assert customer.collect_events() == []


def test_save_address_appends_it() -> None:
    # Given a customer with one saved address
    customer = _customer()
    first = _address()
    customer.save_address(first, ADMIN)
    second = Address("Rue de Rivoli 1", "Paris", "75001", "FR")

    # When a second address is saved
    customer.save_address(second, ADMIN)

    # Then both are kept in order
    assert customer.addresses == [first, second]


def test_request_deletion_marks_the_customer() -> None:
    # Given a registered customer
    customer = _customer()

    # When the customer asks to be deleted
    customer.request_deletion(ADMIN)

    # Then the request is recorded
    assert customer.deletion_requested is True
    assert len(customer.collect_events()) == 1


PROFILE_CHANGES: list[tuple[str, Callable[[Customer], None]]] = [
    ("update-name", lambda c: c.update(ADMIN, name="Jane Roe")),
    ("update-email", lambda c: c.update(ADMIN, email="roe@example.com")),
    ("update-phone", lambda c: c.update(ADMIN, phone="+4930999999")),
    ("verify", lambda c: c.verify(ADMIN)),
    ("save-address", lambda c: c.save_address(_address(), ADMIN)),
    ("request-deletion-again", lambda c: c.request_deletion(ADMIN)),
]


@pytest.mark.parametrize(
    "change", [pytest.param(change, id=name) for name, change in PROFILE_CHANGES]
)
def test_a_customer_who_asked_to_be_deleted_accepts_no_profile_change(
    change: Callable[[Customer], None],
) -> None:
    # Given a customer who asked to be deleted
    customer = _customer()
    customer.request_deletion(ADMIN)
    customer.collect_events()
    version = customer.version
    before = (customer.email, customer.name, customer.phone, customer.verified)

    # When any profile change is attempted
    with pytest.raises(CustomerDeletionRequested):
        change(customer)

    # Then it is refused, the profile is unchanged and nothing was recorded
    assert (customer.email, customer.name, customer.phone, customer.verified) == before
    assert customer.addresses == []
    assert customer.version == version
    assert customer.collect_events() == []
