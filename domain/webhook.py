"""The Webhook aggregate: a merchant's endpoint, what it listens to, and how to reach it.

The signing secret and custom header values are held only sealed (encrypted by the
infrastructure under the master key); the domain never sees them in clear.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidTransition, InvalidValue
from domain.event_types import EVENT_CLASSES
from domain.values import Actor, check_text

TIMEOUT_RANGE = (1, 30)
DEFAULT_TIMEOUT_SECONDS = 15
# Deliveries per second: at least one every 100 s (a slower rate spaces deliveries beyond
# what any schedule means — and 1/rate overflowed time arithmetic), at most 10,000.
RATE_LIMIT_RANGE = (0.01, 10_000.0)
# Headers a merchant may not set: transport framing and hop-by-hop headers (the sender
# sets or drops them), and the ones we sign or own. `accept-encoding` is ours: answers are
# asked for uncompressed, so no decompression bomb reaches a worker.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "user-agent",
        "accept-encoding",
        "te",
        "trailer",
        "upgrade",
        "keep-alive",
        "proxy-connection",
        "expect",
    }
)
RESERVED_HEADER_PREFIXES = ("webhook-", "webround-")
# What an HTTP/1.1 request can carry, exactly (RFC 9110 §5.1, §5.5): a name is a token;
# a value is visible ASCII, with spaces or tabs only between visible characters — no
# line break, NUL or other control character, no leading or trailing white space, no
# byte beyond ASCII (the sender writes headers as ASCII). Written in the syntax JSON
# Schema and Python share: the API publishes these very patterns.
HEADER_NAME_PATTERN = "^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$"
HEADER_VALUE_PATTERN = "^([!-~]+([ \\t]+[!-~]+)*)?$"
MAX_HEADER_VALUE = 2000
_HEADER_NAME = re.compile(HEADER_NAME_PATTERN.removesuffix("$") + "\\Z")
_HEADER_VALUE = re.compile(HEADER_VALUE_PATTERN.removesuffix("$") + "\\Z")


# What a webhook may listen to: every event type, each entity's `entity.*`, or `*`.
EVENT_TYPE_PATTERNS: tuple[str, ...] = (
    "*",
    *sorted(EVENT_CLASSES),
    *sorted({f"{name.split('.', 1)[0]}.*" for name in EVENT_CLASSES}),
)


def check_event_types(patterns: list[str]) -> list[str]:
    """Exact event type names, ``entity.*`` or ``*``; anything unknown is refused."""
    if not patterns:
        raise InvalidValue("eventTypes", "list at least one event type, `entity.*` or `*`")
    for pattern in patterns:
        if pattern not in EVENT_TYPE_PATTERNS:
            raise InvalidValue("eventTypes", f"{pattern!r} is not a known event type or pattern")
    return sorted(set(patterns))


def matches(patterns: list[str], event_type: str) -> bool:
    entity = event_type.split(".", 1)[0]
    return any(p in ("*", event_type, f"{entity}.*") for p in patterns)


def check_header_names(names: list[str]) -> list[str]:
    seen: set[str] = set()
    for name in names:
        lowered = name.lower()
        if not _HEADER_NAME.match(name):
            raise InvalidValue("headers", f"{name!r} is not an HTTP header name")
        if lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_HEADER_PREFIXES):
            raise InvalidValue(
                "headers", f"the header {name!r} is set by us and cannot be overridden"
            )
        if lowered in seen:
            raise InvalidValue("headers", f"the header {name!r} is given twice")
        seen.add(lowered)
    return sorted(names, key=str.lower)


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    """Custom headers exactly as the sender can send them (see above); checked before
    their values are sealed, so the aggregate never sees them."""
    check_header_names(list(headers))
    for name, value in headers.items():
        if len(value) > MAX_HEADER_VALUE or not _HEADER_VALUE.match(value):
            raise InvalidValue(
                f"headers.{name}",
                "a header value is visible ASCII characters, with spaces or tabs only "
                f"between them, at most {MAX_HEADER_VALUE} characters: no line break, no "
                "control character, no leading or trailing space, nothing beyond ASCII",
            )
    return headers


def check_description(text: str) -> str:
    check_text("description", text, multiline=True)
    if len(text) > 1000:
        raise InvalidValue("description", "must be at most 1000 characters")
    return text


def check_timeout(seconds: int) -> int:
    low, high = TIMEOUT_RANGE
    if not low <= seconds <= high:
        raise InvalidValue("timeoutSeconds", f"must be between {low} and {high} seconds")
    return seconds


def check_rate_limit(rate: float | None) -> float | None:
    low, high = RATE_LIMIT_RANGE
    if rate is not None and not (math.isfinite(rate) and low <= rate <= high):
        raise InvalidValue(
            "rateLimit", f"must be {low:g} to {high:g} deliveries per second (or null: no limit)"
        )
    return rate


@dataclass(frozen=True)
class SealedSecret:
    """A signing secret as stored: sealed text, and until when it signs (None: no end)."""

    sealed: str
    expires_at: datetime | None = None


class Webhook(Aggregate):
    @staticmethod
    def create_id(webhook_id: UUID) -> UUID:
        # The id is chosen before creation: the secret is sealed bound to it.
        return webhook_id

    @classmethod
    def register(
        cls,
        webhook_id: UUID,
        store_id: UUID,
        url: str,
        event_types: list[str],
        description: str,
        header_names: list[str],
        sealed_headers: str | None,
        timeout_seconds: int,
        rate_limit: float | None,
        enabled: bool,
        sealed_secret: str,
        actor: Actor,
    ) -> Webhook:
        return cls(
            webhook_id,
            store_id,
            url,
            check_event_types(event_types),
            check_description(description),
            check_header_names(header_names),
            sealed_headers,
            check_timeout(timeout_seconds),
            check_rate_limit(rate_limit),
            enabled,
            sealed_secret,
            actor,
        )

    @event("Created")
    def __init__(
        self,
        webhook_id: UUID,
        store_id: UUID,
        url: str,
        event_types: list[str],
        description: str,
        header_names: list[str],
        sealed_headers: str | None,
        timeout_seconds: int,
        rate_limit: float | None,
        enabled: bool,
        sealed_secret: str,
        actor: Actor,
    ) -> None:
        self.store_id = store_id
        self.url = url
        self.event_types = event_types
        self.description = description
        self.header_names = header_names
        self.sealed_headers = sealed_headers
        self.timeout_seconds = timeout_seconds
        self.rate_limit = rate_limit
        self.enabled = enabled
        self.disabled_reason: str | None = None if enabled else "disabled on creation"
        self.secrets = [SealedSecret(sealed_secret)]
        self.deleted = False
        self.enabled_at: datetime | None = None

    def update(self, actor: Actor, **changes: Any) -> None:
        """Change configuration fields (url, event_types, description, headers, timeout…)."""
        self._check_not_deleted()
        if "event_types" in changes:
            changes["event_types"] = check_event_types(changes["event_types"])
        if "header_names" in changes:
            changes["header_names"] = check_header_names(changes["header_names"])
        if "description" in changes:
            changes["description"] = check_description(changes["description"])
        if "timeout_seconds" in changes:
            changes["timeout_seconds"] = check_timeout(changes["timeout_seconds"])
        if "rate_limit" in changes:
            changes["rate_limit"] = check_rate_limit(changes["rate_limit"])
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise InvalidValue(sorted(unknown)[0], "cannot be changed")
        changed = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if changed:
            self._updated(changes=changed, actor=actor)

    @event("Updated")
    def _updated(self, changes: dict[str, Any], actor: Actor) -> None:
        for name, value in changes.items():
            setattr(self, name, value)

    def enable(self, actor: Actor) -> None:
        self._check_not_deleted()
        if not self.enabled:
            self.trigger_event(Webhook.Enabled, actor=actor)

    @dataclass(frozen=True)
    class Enabled(Aggregate.Event):
        actor: Actor

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Webhook)
            aggregate.enabled = True
            aggregate.disabled_reason = None
            # When it was last enabled: what happened before (a 410, days of failure)
            # is not held against it any more (application.policies).
            aggregate.enabled_at = self.timestamp

    @property
    def enabled_since(self) -> datetime:
        """When the webhook was created or last enabled again."""
        return self.enabled_at or self.created_on

    def disable(self, reason: str, actor: Actor) -> None:
        check_text("disabledReason", reason, multiline=True)
        self._check_not_deleted()
        if self.enabled:
            self._disabled(reason=reason, actor=actor)

    @event("Disabled")
    def _disabled(self, reason: str, actor: Actor) -> None:
        self.enabled = False
        self.disabled_reason = reason

    def rotate_secret(
        self, sealed_secret: str, previous_expires_at: datetime, actor: Actor
    ) -> None:
        """Sign with a new secret; the current one keeps signing until ``previous_expires_at``."""
        self._check_not_deleted()
        self._secret_rotated(
            sealed_secret=sealed_secret, previous_expires_at=previous_expires_at, actor=actor
        )

    @event("SecretRotated")
    def _secret_rotated(
        self, sealed_secret: str, previous_expires_at: datetime, actor: Actor
    ) -> None:
        current = self.secrets[0]
        # Only the newest previous secret stays: rotating twice ends the oldest at once.
        self.secrets = [
            SealedSecret(sealed_secret),
            SealedSecret(current.sealed, previous_expires_at),
        ]

    def record_resend(
        self,
        mode: str,
        since: datetime,
        until: datetime | None,
        event_types: list[str] | None,
        count: int,
        actor: Actor,
    ) -> None:
        """Record that a merchant recovered failed deliveries or replayed past events."""
        self._check_not_deleted()
        self._resent(
            mode=mode, since=since, until=until, event_types=event_types, count=count, actor=actor
        )

    @event("Resent")
    def _resent(
        self,
        mode: str,
        since: datetime,
        until: datetime | None,
        event_types: list[str] | None,
        count: int,
        actor: Actor,
    ) -> None:
        pass

    def record_secret_shown_again(self, key_id: str, idempotency_key: str, actor: Actor) -> None:
        """Record that an idempotent replay showed a signing secret again, to the API key
        that made the request which first showed it (ADR 0024)."""
        self._check_not_deleted()
        self._secret_shown_again(key_id=key_id, idempotency_key=idempotency_key, actor=actor)

    @event("SecretShownAgain")
    def _secret_shown_again(self, key_id: str, idempotency_key: str, actor: Actor) -> None:
        pass

    def delete(self, actor: Actor) -> None:
        self._check_not_deleted()
        self._deleted(actor=actor)

    @event("Deleted")
    def _deleted(self, actor: Actor) -> None:
        self.deleted = True
        self.enabled = False

    def _check_not_deleted(self) -> None:
        if self.deleted:
            raise InvalidTransition(f"webhook {self.id} was deleted")


_UPDATABLE = frozenset(
    {
        "url",
        "event_types",
        "description",
        "header_names",
        "sealed_headers",
        "timeout_seconds",
        "rate_limit",
    }
)
