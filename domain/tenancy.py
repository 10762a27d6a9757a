"""Tenancy: a Store (the tenant) and its API keys.

An API key is shown once and kept only as a hash. Its aggregate id is derived from the
key's public id (the part after ``wr_``), so a request's key is found in one read without
any index, and two keys can never share an id.
"""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidTransition, InvalidValue
from domain.values import Actor, check_email, check_text

_KEY_NAMESPACE = uuid5(NAMESPACE_URL, "https://webround.example/api-keys")


class Store(Aggregate):
    """A merchant's store; also the index of its webhooks, in creation order.

    The index only grows (a deleted webhook stays in it and is skipped when listing), so
    a list cursor pointing at a webhook deleted meanwhile still has its place.
    """

    @classmethod
    def open(cls, name: str, actor: Actor) -> Store:
        """A new store; its name is text for people (checked here, not when its event is
        applied, so stores recorded before the rule still load)."""
        return cls(check_text("name", name), actor)

    @event("Created")
    def __init__(self, name: str, actor: Actor) -> None:
        if not name.strip():
            raise InvalidValue("name", "a store needs a name")
        self.name = name
        self.webhook_ids: list[UUID] = []

    @event("WebhookAdded")
    def add_webhook(self, webhook_id: UUID) -> None:
        self.webhook_ids.append(webhook_id)


class DashboardSession(Aggregate):
    """One sign-in to the dashboard with an API key, open until it expires or its person
    signs out. The browser holds its id sealed in a cookie; signing out ends it here, so
    a copy of the cookie opens nothing afterwards (ADR 0022)."""

    @event("Started")
    def __init__(self, store_id: UUID, key_id: str, expires_at: datetime) -> None:
        self.store_id = store_id
        self.key_id = key_id
        self.expires_at = expires_at
        self.ended = False

    def end(self, actor: Actor) -> None:
        if not self.ended:
            self._ended(actor=actor)

    @event("Ended")
    def _ended(self, actor: Actor) -> None:
        self.ended = True


class MasterKeyCheck(Aggregate):
    """The installation's key check value: a known text sealed under its master key by
    the first process that started. Every later process opens it at start, and so knows
    whether its key is the one the stored secrets are sealed under (ADR 0021)."""

    @staticmethod
    def create_id(sealed: str) -> UUID:
        return MASTER_KEY_CHECK_ID  # one per installation

    @event("Created")
    def __init__(self, sealed: str) -> None:
        self.sealed = sealed


MASTER_KEY_CHECK_ID = uuid5(_KEY_NAMESPACE, "master-key-check")


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

    @classmethod
    def issue(
        cls, key_id: str, store_id: UUID, key_hash: str, principal: str | None, actor: Actor
    ) -> ApiKey:
        """A new key; the person it acts for, if any, is an email address."""
        if principal is not None:
            check_email(principal, "email")
        return cls(key_id, store_id, key_hash, principal, actor)

    @property
    def acts_as(self) -> Actor:
        """The actor of commands made with this key: its person, or the system."""
        # The constructor, not `Actor.person`: a stored key is not new input.
        return Actor("person", self.principal) if self.principal else Actor.system()

    def revoke(self, actor: Actor) -> None:
        if self.revoked:
            raise InvalidTransition(f"API key {self.key_id} is already revoked")
        self._revoked(actor=actor)

    @event("Revoked")
    def _revoked(self, actor: Actor) -> None:
        self.revoked = True
