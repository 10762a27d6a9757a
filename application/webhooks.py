"""The webhooks application: stores (tenants), their API keys, and their webhooks.

Signing secrets and custom header values are sealed by a `SecretKeeper` before they reach
an event; a secret's text leaves this module only in the return value of the command
that created it (creation or rotation), once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import JSONTranscoder, ProcessRecorder

from application.contention import Contention
from application.errors import InvalidRequest, NotFound, Unauthenticated, WebhookLimitReached
from application.idempotency import KeyedSaves
from application.ports import SecretKeeper, TargetPolicy
from application.recorded import NotifiesOnRecord
from application.transcodings import register_store_transcodings
from application.views import timestamp
from domain.tenancy import ApiKey, DashboardSession, Store
from domain.values import Actor
from domain.webhook import Webhook, check_headers

JSON = dict[str, Any]
R = TypeVar("R")  # what a command on a webhook answers: its JSON, or None
REDACTED = "[redacted]"
DEFAULT_GRACE = timedelta(hours=24)
MAX_GRACE = timedelta(days=7)
_KEY_PREFIX = "wr_"


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: a store, through one of its keys, as a person or the system."""

    store_id: UUID
    key_id: str
    actor: Actor


def hash_api_key(api_key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(api_key.encode()).hexdigest()


class Webhooks(NotifiesOnRecord, KeyedSaves):
    name = "webhooks"

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        targets: TargetPolicy,
        keeper: SecretKeeper,
        clock: Callable[[], datetime] | None = None,
        contention: Contention | None = None,
        max_webhooks: int | None = None,
    ) -> None:
        super().__init__(env)
        self.targets = targets
        self.keeper = keeper
        self.clock = clock or (lambda: datetime.now(UTC))
        self.contention = contention or Contention()
        # Called with a webhook enabled again, after it is saved: its record of failures
        # (the circuit breaker's) starts afresh at once (set by the composition root).
        self.forgive: Callable[[UUID], None] = lambda webhook_id: None
        self.max_webhooks = max_webhooks  # per store; None: no limit

    def construct_recorder(self) -> ProcessRecorder:
        # A process application: the webhook policies follow the dispatch log into it
        # (application/policies.py), saving their decisions with their position.
        return self.factory.process_recorder()

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_store_transcodings(transcoder)

    # Stores and keys -----------------------------------------------------------------

    def create_store(self, name: str, actor: Actor) -> JSON:
        store = Store.open(name, actor)
        self.save(store)
        return {"storeId": str(store.id), "name": store.name}

    def create_api_key(self, store_id: UUID, principal: str | None, actor: Actor) -> JSON:
        """A new key for the store; its text is in this answer and nowhere else, ever."""
        self._store(store_id)
        key_id = secrets.token_hex(8)
        api_key = f"{_KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        key = ApiKey.issue(key_id, store_id, hash_api_key(api_key), principal, actor)
        self.save(key)
        return {
            "keyId": key_id,
            "apiKey": api_key,
            "storeId": str(store_id),
            "principal": principal,
        }

    def revoke_api_key(self, key_id: str, actor: Actor) -> None:
        try:
            key: ApiKey = self.repository.get(ApiKey.create_id(key_id))
        except AggregateNotFoundError:
            raise NotFound("API key", key_id) from None
        key.revoke(actor)
        self.save(key)

    def authenticate(self, api_key: str) -> Principal:
        key_id = api_key[len(_KEY_PREFIX) :].split("_", 1)[0]
        if not api_key.startswith(_KEY_PREFIX) or not key_id:
            raise Unauthenticated("the API key is malformed")
        try:
            key: ApiKey = self.repository.get(ApiKey.create_id(key_id))
        except AggregateNotFoundError:
            raise Unauthenticated("the API key is not valid") from None
        if not hmac.compare_digest(key.key_hash, hash_api_key(api_key)) or key.revoked:
            raise Unauthenticated("the API key is not valid or was revoked")
        return Principal(key.store_id, key.key_id, key.acts_as)

    # Dashboard sessions --------------------------------------------------------------

    def start_session(self, principal: Principal, expires_at: datetime) -> UUID:
        """A dashboard session of this key's person (or system), open until ``expires_at``."""
        session = DashboardSession(principal.store_id, principal.key_id, expires_at)
        self.save(session)
        return session.id

    def session_is_open(self, session_id: UUID, principal: Principal) -> bool:
        """Whether the session exists, belongs to this key, and was not ended."""
        try:
            session: object = self.repository.get(session_id)
        except AggregateNotFoundError:
            return False
        return (
            isinstance(session, DashboardSession)
            and session.key_id == principal.key_id
            and not session.ended
            and self.clock() < session.expires_at
        )

    def end_session(self, session_id: UUID, actor: Actor) -> None:
        try:
            session: object = self.repository.get(session_id)
        except AggregateNotFoundError:
            return
        if isinstance(session, DashboardSession):
            session.end(actor)
            self.save(session)

    # Webhooks ------------------------------------------------------------------------

    def create_webhook(
        self,
        store_id: UUID,
        actor: Actor,
        *,
        url: str,
        event_types: list[str],
        description: str = "",
        headers: dict[str, str] | None = None,
        timeout_seconds: int = 15,
        rate_limit: float | None = None,
        enabled: bool = True,
    ) -> JSON:
        """Register a webhook; the answer holds its signing ``secret``, shown this once."""
        self.targets.check_url(url)
        webhook_id = uuid4()
        secret, sealed_secret = self.keeper.new_secret(webhook_id)
        headers = check_headers(headers or {})
        sealed_headers = self.keeper.seal_headers(webhook_id, headers) if headers else None

        def register() -> JSON:
            # Registered anew on each attempt: a failed save has taken the events of the
            # webhook it was given, and would leave a store listing a webhook that is not.
            webhook = Webhook.register(
                webhook_id,
                store_id,
                url,
                event_types,
                description,
                list(headers),
                sealed_headers,
                timeout_seconds,
                rate_limit,
                enabled,
                sealed_secret,
                actor,
            )
            result = {**webhook_view(webhook), "secret": secret}
            store = self._store(store_id)
            # Counted on the store version this save will be checked against: two
            # creations at once cannot both take the last place.
            self._check_room(store)
            store.add_webhook(webhook.id)  # the store lists its webhooks: it is written too
            self.save_answering(store, webhook, result=result)
            return result

        return self.contention.run([store_id], register, f"store {store_id}")

    def list_webhooks(
        self, store_id: UUID, limit: int = 100, start: int = 0
    ) -> tuple[list[JSON], int | None]:
        """A page of the store's webhooks in creation order, from place ``start`` of its
        index (which only grows: a place never moves), and the place to continue from."""
        ids = self._store(store_id).webhook_ids
        page: list[Webhook] = []
        end = start
        for index in range(start, len(ids)):
            webhook: Webhook = self.repository.get(ids[index])
            if webhook.deleted:
                continue
            if len(page) == limit:
                # A live webhook after this page: the next page starts after the last one.
                return [webhook_view(w) for w in page], end
            page.append(webhook)
            end = index + 1
        return [webhook_view(w) for w in page], None

    def get_webhook(self, store_id: UUID, webhook_id: UUID) -> Webhook:
        try:
            webhook: object = self.repository.get(webhook_id)
        except AggregateNotFoundError:
            raise NotFound("webhook", webhook_id) from None
        if not isinstance(webhook, Webhook) or webhook.store_id != store_id or webhook.deleted:
            raise NotFound("webhook", webhook_id)
        return webhook

    def read_webhook(self, store_id: UUID, webhook_id: UUID) -> JSON:
        return webhook_view(self.get_webhook(store_id, webhook_id))

    def update_webhook(self, store_id: UUID, webhook_id: UUID, actor: Actor, **fields: Any) -> JSON:
        """Change any of url, event_types, description, headers, timeout_seconds, rate_limit,
        enabled (with an optional disabled_reason)."""
        self.get_webhook(store_id, webhook_id)  # another store's is not found, before all
        enabled = fields.pop("enabled", None)
        reason = fields.pop("disabled_reason", None)
        if reason is not None and enabled is not False:
            raise InvalidRequest(
                'a reason goes with disabling: send it with "enabled": false',
                field="disabledReason",
            )
        reason = reason or "disabled by the merchant"
        if "url" in fields:
            self.targets.check_url(fields["url"])
        if "headers" in fields:
            headers = check_headers(fields.pop("headers") or {})
            fields["header_names"] = list(headers)
            fields["sealed_headers"] = (
                self.keeper.seal_headers(webhook_id, headers) if headers else None
            )
        enabled_again: list[bool] = []

        def change(webhook: Webhook) -> JSON:
            webhook.update(actor, **fields)
            if enabled is True:
                enabled_again[:] = [not webhook.enabled]
                webhook.enable(actor)
            elif enabled is False:
                webhook.disable(reason, actor)
            return webhook_view(webhook)

        result = self._change(store_id, webhook_id, change)
        if enabled_again == [True]:
            self.forgive(webhook_id)
        return result

    def rotate_secret(
        self,
        store_id: UUID,
        webhook_id: UUID,
        actor: Actor,
        grace: timedelta = DEFAULT_GRACE,
    ) -> JSON:
        """A new signing secret, shown once; the old one keeps signing for ``grace``."""
        if not timedelta(0) <= grace <= MAX_GRACE:
            raise InvalidRequest("the grace period is 0 to 7 days", field="gracePeriodSeconds")
        self.get_webhook(store_id, webhook_id)
        secret, sealed = self.keeper.new_secret(webhook_id)
        expires = self.clock() + grace

        def rotate(webhook: Webhook) -> JSON:
            webhook.rotate_secret(sealed, expires, actor)
            return {**webhook_view(webhook), "secret": secret}

        return self._change(store_id, webhook_id, rotate)

    def record_resend(
        self,
        store_id: UUID,
        webhook_id: UUID,
        actor: Actor,
        *,
        mode: str,
        since: datetime,
        until: datetime | None,
        event_types: list[str] | None,
        count: int,
    ) -> None:
        """Audit a recover or replay on the webhook's own history. It answers no request
        on its own (the deliveries are in the dispatch store): no Idempotency-Key with it."""

        def audit(webhook: Webhook) -> None:
            webhook.record_resend(mode, since, until, event_types, count, actor)

        self._change(store_id, webhook_id, audit, answers=False)

    def record_secret_shown_again(
        self, store_id: UUID, webhook_id: UUID, key_id: str, idempotency_key: str, actor: Actor
    ) -> None:
        """Audit a replayed answer that showed the webhook's signing secret again."""

        def audit(webhook: Webhook) -> None:
            webhook.record_secret_shown_again(key_id, idempotency_key, actor)

        self._change(store_id, webhook_id, audit, answers=False)

    def delete_webhook(self, store_id: UUID, webhook_id: UUID, actor: Actor) -> None:
        self._change(store_id, webhook_id, lambda webhook: webhook.delete(actor))

    # Helpers -------------------------------------------------------------------------

    def _store(self, store_id: UUID) -> Store:
        try:
            store: object = self.repository.get(store_id)
        except AggregateNotFoundError:
            raise NotFound("store", store_id) from None
        if not isinstance(store, Store):
            raise NotFound("store", store_id)
        return store

    def _change(
        self,
        store_id: UUID,
        webhook_id: UUID,
        command: Callable[[Webhook], R],
        *,
        answers: bool = True,
    ) -> R:
        """Apply ``command`` to the webhook as it is now and save it, in turn with this
        process's other writers of it and again on fresh state when another process wrote
        it first (`Contention`); the save answers a keyed request with the command's
        result, unless it ``answers`` no request of its own."""

        def attempt() -> R:
            webhook = self.get_webhook(store_id, webhook_id)
            result = command(webhook)
            if answers:
                self.save_answering(webhook, result=result)
            else:
                self.save(webhook)
            return result

        return self.contention.run([webhook_id], attempt, f"webhook {webhook_id}")

    def _check_room(self, store: Store) -> None:
        if self.max_webhooks is None or len(store.webhook_ids) < self.max_webhooks:
            return  # fewer ids than the limit, deleted ones included: room for sure
        live = sum(1 for webhook_id in store.webhook_ids if not self._deleted(webhook_id))
        if live >= self.max_webhooks:
            raise WebhookLimitReached(
                f"store {store.id} has {live} webhooks, the most this installation allows "
                f"(WEBROUND_MAX_WEBHOOKS_PER_STORE={self.max_webhooks}); delete one first"
            )

    def _deleted(self, webhook_id: UUID) -> bool:
        webhook: Webhook = self.repository.get(webhook_id)
        return webhook.deleted


def webhook_view(webhook: Webhook) -> JSON:
    """A webhook as any read shows it: no secret, header values redacted."""
    previous = webhook.secrets[1].expires_at if len(webhook.secrets) > 1 else None
    return {
        "id": str(webhook.id),
        "storeId": str(webhook.store_id),
        "url": webhook.url,
        "eventTypes": list(webhook.event_types),
        "description": webhook.description,
        "headers": dict.fromkeys(webhook.header_names, REDACTED),
        "timeoutSeconds": webhook.timeout_seconds,
        "rateLimit": webhook.rate_limit,
        "enabled": webhook.enabled,
        "disabledReason": webhook.disabled_reason,
        "previousSecretExpiresAt": timestamp(previous) if previous else None,
        "createdAt": timestamp(webhook.created_on),
        "updatedAt": timestamp(webhook.modified_on),
        "version": webhook.version,
    }
