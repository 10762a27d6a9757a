"""The dashboard's session and CSRF tokens: stateless, sealed with the master key.

A session is the merchant's API key, an expiry and a random CSRF token, sealed together
(AES-GCM, `SealingKeeper.seal_bytes`, context ``dashboard-session``) into the cookie. Any
API process with the same master key opens it, so nothing is stored on the server and a
load balancer needs no stickiness. The key is authenticated again on every request: a
revoked key ends every session made with it.

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
    expires_at: float
    csrf: str = field(repr=False)


def new_session(keeper: SealingKeeper, api_key: str, now: float) -> tuple[str, Session]:
    """A new session for ``api_key``: (the cookie value, the session)."""
    session = Session(api_key, now + SESSION_SECONDS, secrets.token_urlsafe(32))
    payload = {"key": session.api_key, "exp": session.expires_at, "csrf": session.csrf}
    return _seal(keeper, payload, SESSION_CONTEXT), session


def open_session(keeper: SealingKeeper, cookie: str | None, now: float) -> Session | None:
    """The session in the cookie, or None when it is missing, forged or expired."""
    payload = _open(keeper, cookie, SESSION_CONTEXT)
    try:
        session = Session(str(payload["key"]), float(payload["exp"]), str(payload["csrf"]))
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


def set_cookie(response: Response, name: str, value: str, max_age: int, path: str) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=path, secure=True, httponly=True, samesite="strict"
    )


def clear_cookie(response: Response, name: str, path: str) -> None:
    response.delete_cookie(name, path=path, secure=True, httponly=True, samesite="strict")


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
