"""Standard Webhooks signatures for outgoing deliveries.

Lives here: ``sign`` (the ``webhook-signature`` header value) and ``signature_headers``
(the three ``webhook-*`` headers). Each signature is
``v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`` keyed by the
decoded bytes of a ``whsec_`` secret; during a secret rotation the old and the new
secret both sign, space-separated in the same header, so subscribers verifying with
either one keep working.

Only hmac/hashlib/base64 are used: the ``standardwebhooks`` package is a test
dependency that checks these signatures, not a runtime one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from infrastructure.secrets import SigningSecret

__all__ = ["sign", "signature_headers"]

SIGNATURE_VERSION = "v1"


def sign(
    *,
    secrets: Sequence[SigningSecret],
    msg_id: str,
    timestamp: int,
    body: bytes,
) -> str:
    """The ``webhook-signature`` value: one ``v1,<b64>`` per secret, in the given order.

    Raises ValueError for an empty ``secrets``, an empty ``msg_id`` or one containing
    ``.``, or a negative ``timestamp``: the signed content is dot-separated, so a dot
    in the id would make two different (id, timestamp) pairs sign the same bytes.
    """
    if not secrets:
        raise ValueError("at least one signing secret is required")
    if not msg_id:
        raise ValueError("webhook-id must not be empty")
    if "." in msg_id:
        raise ValueError("webhook-id must not contain '.'")
    # bool is an int subclass; True as a timestamp is certainly a bug.
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError("webhook-timestamp must be a non-negative integer of Unix seconds")
    signed_content = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(_signature(secret, signed_content) for secret in secrets)


def signature_headers(
    *,
    secrets: Sequence[SigningSecret],
    msg_id: str,
    timestamp: int,
    body: bytes,
) -> dict[str, str]:
    """The ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets=secrets, msg_id=msg_id, timestamp=timestamp, body=body),
    }


def _signature(secret: SigningSecret, signed_content: bytes) -> str:
    digest = hmac.new(secret.key(), signed_content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"
