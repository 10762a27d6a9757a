"""Tenancy: a Store (the tenant) and its API keys.

An API key is shown once and kept only as a hash. Its aggregate id is derived from the
key's public id (the part after ``wr_``), so a request's key is found in one read without
any index, and two keys can never share an id.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidTransition, InvalidValue
from domain.values import Actor

_KEY_NAMESPACE = uuid5(NAMESPACE_URL, "https://webround.example/api-keys")


class Store(Aggregate):
    """A merchant's store; also the index of its webhooks, in creation order.

    The index only grows (a deleted webhook stays in it and is skipped when listing), so
    a list cursor pointing at a webhook deleted meanwhile still has its place.
    """

    @event("Created")
    def __init__(self, name: str, actor: Actor) -> None:
        if not name.strip():
            raise InvalidValue("name", "a store needs a name")
        self.name = name
        self.webhook_ids: list[UUID] = []

    @event("WebhookAdded")
    def add_webhook(self, webhook_id: UUID) -> None:
        self.webhook_ids.append(webhook_id)


class ApiKey(Aggregate):
    """One API key of a store: its hash, and the person it acts for (or none: a system)."""

    @staticmethod
    def create_id(key_id: str) -> UUID:
        return uuid5(_KEY_NAMESPACE, key_id)

    @event("Created")
    def __init__(
        self, key_id: str, store_id: UUID, key_hash: str, principal: str | None, actor: Actor
    ) -> None:
        self.key_id = key_id
        self.store_id = store_id
        self.key_hash = key_hash
        self.principal = principal
        self.revoked = False

    @property
    def acts_as(self) -> Actor:
        """The actor of commands made with this key: its person, or the system."""
        return Actor.person(self.principal) if self.principal else Actor.system()

    def revoke(self, actor: Actor) -> None:
        if self.revoked:
            raise InvalidTransition(f"API key {self.key_id} is already revoked")
        self._revoked(actor=actor)

    @event("Revoked")
    def _revoked(self, actor: Actor) -> None:
        self.revoked = True
