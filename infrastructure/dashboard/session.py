"""The dashboard's session and CSRF tokens, sealed with the master key.

A session is the merchant's API key, the id of its `DashboardSession` (recorded by the
webhooks application when they signed in), an expiry and a random CSRF token, sealed
together (AES-GCM, `SealingKeeper.seal_bytes`, context ``dashboard-session``) into the
cookie. Any API process with the same master key opens it, and the session's record is in
the shared event store, so a load balancer needs no stickiness. On every request the key
is authenticated again (a revoked key ends every session made with it) and the session
must still be open: signing out ends it for good, so a saved copy of the cookie opens
nothing (docs/adr/0022-dashboard-sessions-end-on-sign-out.md).

The cookie is `Secure` when the request came over https — or always, with
`WEBROUND_COOKIE_SECURE=always` — so a dashboard on plain http on a LAN keeps a session.

Every POST form carries the session's CSRF token in a hidden field, compared in constant
time with the one inside the sealed cookie (which a page of another site can neither read
nor forge). The sign-in form, before there is a session, gets a token of its own the same
way (a short-lived sealed cookie), so nobody can sign a visitor in to another store.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from starlette.responses import Response

from infrastructure.secrets import SealingKeeper, SecretUnsealError

SESSION_COOKIE = "webround_session"
SIGN_IN_COOKIE = "webround_sign_in"
SESSION_CONTEXT = "dashboard-session"
SIGN_IN_CONTEXT = "dashboard-sign-in"
SESSION_SECONDS = 8 * 3600
SIGN_IN_SECONDS = 3600
PATH = "/dashboard"


@dataclass(frozen=True)
class Session:
    api_key: str = field(repr=False)
    session_id: UUID
    expires_at: float
    csrf: str = field(repr=False)


def new_session(
    keeper: SealingKeeper, api_key: str, session_id: UUID, expires_at: float
) -> tuple[str, Session]:
    """The cookie of session ``session_id`` for ``api_key``: (its value, the session)."""
    session = Session(api_key, session_id, expires_at, secrets.token_urlsafe(32))
    payload = {
        "key": session.api_key,
        "sid": str(session.session_id),
        "exp": session.expires_at,
        "csrf": session.csrf,
    }
    return _seal(keeper, payload, SESSION_CONTEXT), session


def open_session(keeper: SealingKeeper, cookie: str | None, now: float) -> Session | None:
    """The session in the cookie, or None when it is missing, forged or expired (whether
    it is still open is the webhooks application's to say)."""
    payload = _open(keeper, cookie, SESSION_CONTEXT)
    try:
        session = Session(
            str(payload["key"]),
            UUID(str(payload["sid"])),
            float(payload["exp"]),
            str(payload["csrf"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    return session if now < session.expires_at else None


def new_sign_in_token(keeper: SealingKeeper, now: float) -> tuple[str, str]:
    """A CSRF token for the sign-in form: (the cookie value, the token)."""
    token = secrets.token_urlsafe(32)
    return _seal(keeper, {"csrf": token, "exp": now + SIGN_IN_SECONDS}, SIGN_IN_CONTEXT), token


def open_sign_in_token(keeper: SealingKeeper, cookie: str | None, now: float) -> str | None:
    payload = _open(keeper, cookie, SIGN_IN_CONTEXT)
    try:
        token, expires = str(payload["csrf"]), float(payload["exp"])
    except (KeyError, TypeError, ValueError):
        return None
    return token if now < expires else None


def same_token(expected: str, given: str | None) -> bool:
    """Whether a submitted CSRF token is the expected one (constant time)."""
    if not given or not expected:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def set_cookie(
    response: Response, name: str, value: str, max_age: int, path: str, *, secure: bool
) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=path, secure=secure, httponly=True, samesite="strict"
    )


def clear_cookie(response: Response, name: str, path: str, *, secure: bool) -> None:
    response.delete_cookie(name, path=path, secure=secure, httponly=True, samesite="strict")


def _seal(keeper: SealingKeeper, payload: dict[str, Any], context: str) -> str:
    sealed = keeper.seal_bytes(json.dumps(payload, separators=(",", ":")).encode(), context)
    # Base64url once more: the sealed text holds ':' and '=' padding, which cookie values
    # would have to quote; this alphabet needs no quoting anywhere.
    return base64.urlsafe_b64encode(sealed.encode()).decode().rstrip("=")


def _open(keeper: SealingKeeper, cookie: str | None, context: str) -> dict[str, Any]:
    if not cookie or len(cookie) > 4096:
        return {}
    try:
        sealed = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4)).decode()
        payload = json.loads(keeper.open_bytes(sealed, context))
    except (binascii.Error, ValueError, UnicodeError, SecretUnsealError):
        return {}
    return payload if isinstance(payload, dict) else {}
