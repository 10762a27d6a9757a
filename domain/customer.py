"""The Customer aggregate: a store's customer, their profile and saved addresses."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.base import StoreAggregate
from domain.errors import CustomerDeletionRequested, InvalidTransition
from domain.values import Actor, Address, check_email, check_text
from domain.values import check_name as check_text_name


class Customer(StoreAggregate):
    entity = "customer"

    @event("Registered")
    def __init__(
        self, store_id: UUID, email: str, name: str, phone: str | None, actor: Actor
    ) -> None:
        self.store_id = store_id
        self.email = email
        self.name = name
        self.phone = phone
        self.verified = False
        self.addresses: list[Address] = []
        self.deletion_requested = False

    @classmethod
    def register(
        cls, store_id: UUID, email: str, name: str, phone: str | None, actor: Actor
    ) -> Customer:
        return cls(store_id, check_email(email), check_name(name), _check_phone(phone), actor)

    def update(
        self,
        actor: Actor,
        email: str | None = None,
        name: str | None = None,
        phone: str | None = None,
    ) -> None:
        self._check_accepts_changes()
        changes = {
            "email": None if email in (None, self.email) else check_email(email),
            "name": None if name in (None, self.name) else check_name(name),
            # "" clears the phone; None leaves it as it is.
            "phone": None if phone is None or phone == (self.phone or "") else _check_phone(phone),
        }
        if any(value is not None for value in changes.values()):
            self._updated(**changes, actor=actor)

    @event("Updated")
    def _updated(
        self, email: str | None, name: str | None, phone: str | None, actor: Actor
    ) -> None:
        self.email = email or self.email
        self.name = name or self.name
        if phone is not None:
            self.phone = phone or None

    def verify(self, actor: Actor) -> None:
        self._check_accepts_changes()
        if self.verified:
            raise InvalidTransition(f"customer {self.id} is already verified")
        self._verified(actor=actor)

    @event("Verified")
    def _verified(self, actor: Actor) -> None:
        self.verified = True

    def save_address(self, address: Address, actor: Actor) -> None:
        self._check_accepts_changes()
        self._address_saved(address=address.check_text(), actor=actor)

    @event("AddressSaved")
    def _address_saved(self, address: Address, actor: Actor) -> None:
        self.addresses.append(address)

    def request_deletion(self, actor: Actor) -> None:
        self._check_accepts_changes()
        self._deletion_requested(actor=actor)

    @event("DeletionRequested")
    def _deletion_requested(self, actor: Actor) -> None:
        self.deletion_requested = True

    def check_can_buy(self) -> None:
        """A customer who asked to be deleted places no orders and starts no subscriptions."""
        if self.deletion_requested:
            raise CustomerDeletionRequested(
                f"customer {self.id} asked to be deleted: no new orders or subscriptions"
            )

    def _check_accepts_changes(self) -> None:
        if self.deletion_requested:
            raise CustomerDeletionRequested(
                f"customer {self.id} asked to be deleted and accepts no further changes"
            )


def check_name(name: str) -> str:
    return check_text_name("name", name)


def _check_phone(phone: str | None) -> str | None:
    return None if phone is None else check_text("phone", phone)
