"""Rendering dashboard pages: the Jinja2 environment (autoescaping on), its filters, and the
security headers every dashboard response carries."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.responses import HTMLResponse, RedirectResponse, Response

TEMPLATES = Path(__file__).parent / "templates"
CSS = (Path(__file__).parent / "static" / "dashboard.css").read_bytes()


def _when(value: str | None) -> str:
    """An ISO 8601 UTC time as people read it: 2030-01-01 12:00:05 UTC."""
    if not value:
        return "—"
    return f"{value[:10]} {value[11:19]} UTC"


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.0f} %"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


ENV = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=True,  # every page is HTML: escape everything not marked safe by us
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(when=_when, percent=_percent, ms=_ms)
ENV.globals["once"] = lambda: secrets.token_urlsafe(18)


def headers(nonce: str | None = None) -> dict[str, str]:
    """No caching (pages hold a store's data, one a secret), no framing, no foreign
    scripts: the only script is the copy button's, allowed by its nonce."""
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'self'; img-src 'self'; script-src {script}; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        # Not no-referrer: with it browsers send `Origin: null` on same-origin form posts.
        "Referrer-Policy": "same-origin",
    }


def page(template: str, status: int = 200, **context: Any) -> Response:
    nonce = secrets.token_urlsafe(16)
    body = ENV.get_template(template).render(**context, nonce=nonce)
    return HTMLResponse(body, status_code=status, headers=headers(nonce))


def redirect(url: str) -> Response:
    """See other: after a form post the browser loads ``url`` with GET (reload-safe)."""
    return RedirectResponse(url, status_code=303, headers=headers())


def stylesheet() -> Response:
    return Response(
        CSS,
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
