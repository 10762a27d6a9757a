"""Errors the application layer raises.

Hierarchy (each maps to one HTTP status at the API edge):

    ApplicationError
    ├── Unauthenticated     a missing, unknown or revoked API key (401)
    ├── NotFound            an id that does not exist, or belongs to another store (404)
    ├── Conflict            a request that clashes with existing state (409)
    │   └── ConcurrentChange    other writers kept changing what it changes (409)
    │   └── WebhookLimitReached   one webhook more than a store may have (409)
    └── InvalidRequest      a request whose fields are wrong (422)
        └── UnsafeTarget    a webhook URL that points somewhere we must never send (422)

Domain rule violations (`domain.errors.DomainError`) pass through unchanged.
"""

from __future__ import annotations


class ApplicationError(Exception):
    """Base class of every error the application layer raises on purpose."""


class Unauthenticated(ApplicationError):
    """The request carries no valid API key; the message never repeats the key."""


class NotFound(ApplicationError):
    def __init__(self, kind: str, id: object) -> None:
        super().__init__(f"{kind} {id} was not found")
        self.kind = kind
        self.id = id


class Conflict(ApplicationError):
    """The request clashes with existing state."""


class ConcurrentChange(Conflict):
    """A command lost the race to save every time it ran (application.contention): rare,
    counted, and worth sending again — unlike a rule's refusal, it says nothing of state."""


class WebhookLimitReached(Conflict):
    """The store already has as many webhooks as the installation allows."""


class InvalidRequest(ApplicationError):
    """A request whose fields are wrong; `field` names the culprit where there is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnsafeTarget(InvalidRequest):
    """A webhook target we refuse to send to (SSRF protection); the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="url")
