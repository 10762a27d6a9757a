"""What the application needs from the outside world, as protocols infrastructure provides."""

from __future__ import annotations

from typing import Protocol
from uuid import UUID


class TargetPolicy(Protocol):
    """Decides whether a webhook URL may be sent to (SSRF protection)."""

    def check_url(self, url: str) -> object:
        """Return anything when the URL is acceptable; raise `UnsafeTarget` or
        `InvalidRequest` saying why when it is not."""
        ...


class SecretKeeper(Protocol):
    """Makes signing secrets and seals confidential values under the master key."""

    def new_secret(self, webhook_id: UUID) -> tuple[str, str]:
        """A fresh signing secret: (its text, shown once; its sealed form, stored)."""
        ...

    def seal_headers(self, webhook_id: UUID, headers: dict[str, str]) -> str:
        """The webhook's custom headers, sealed as one value."""
        ...
