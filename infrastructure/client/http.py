"""A small client of the JSON API: the key, the base URL, and errors as one line.

Every failure becomes an `ApiError` whose message fits one terminal line: a problem+json
answer (§8) as its detail and per-field errors, a network failure as what could not be
reached. Nothing here prints; the commands decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import version
from typing import Any

import httpx

from application.errors import InvalidRequest

JSON = dict[str, Any]
USER_AGENT = f"webround-cli/{version('webround-webhooks')}"
MAX_PAGE = 200  # the API's largest page
TIMEOUT = 60.0  # a replay of many events is answered once every delivery is created


class ApiError(Exception):
    """The API said no (``status`` set) or could not be reached (``status`` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def unreachable(self) -> bool:
        """No answer at all, or a server error: worth trying again later."""
        return self.status is None or self.status >= 500


class ApiClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        if not api_key:
            raise ApiError("set WEBROUND_API_KEY to an API key of your store")
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"authorization": f"Bearer {api_key}", "user-agent": USER_AGENT},
            timeout=timeout,
            transport=transport,
        )

    def get(self, path: str, params: Mapping[str, Any] | None = None, **options: Any) -> JSON:
        return self.request("GET", path, params=params, **options)

    def post(self, path: str, body: JSON | None = None) -> JSON:
        return self.request("POST", path, json=body)

    def patch(self, path: str, body: JSON) -> JSON:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> JSON:
        return self.request("DELETE", path)

    def request(self, method: str, path: str, **options: Any) -> JSON:
        if "params" in options and options["params"] is not None:
            options["params"] = {k: v for k, v in options["params"].items() if v is not None}
        try:
            response = self._http.request(method, path, **options)
        except httpx.TimeoutException:
            raise ApiError(f"the API at {self.base_url} did not answer in time") from None
        except httpx.HTTPError as error:
            raise ApiError(f"cannot reach the API at {self.base_url} ({error})") from None
        if response.status_code >= 400:
            raise ApiError(_problem_line(response), response.status_code)
        if response.status_code == 204 or not response.content:
            return {}
        try:
            body: JSON = response.json()
        except ValueError:
            raise ApiError(
                f"the answer from {self.base_url} is not JSON: is this a webround API?",
                response.status_code,
            ) from None
        return body

    def collect(self, path: str, params: Mapping[str, Any], limit: int) -> tuple[list[JSON], bool]:
        """Up to ``limit`` items of a list, page after page; and whether more follow."""
        if limit < 1:
            raise InvalidRequest("must be at least 1", "limit")
        items: list[JSON] = []
        cursor = None
        while len(items) < limit:
            page = self.get(
                path, {**params, "limit": min(limit - len(items), MAX_PAGE), "cursor": cursor}
            )
            items.extend(page["data"])
            cursor = page["nextCursor"]
            if cursor is None:
                return items, False
        return items, True

    def close(self) -> None:
        self._http.close()


def segment(value: str, field: str = "id") -> str:
    """An id typed by a person, for a path: refused if it could change the path."""
    if value in ("", ".", "..") or any(c in value for c in "/?#%\\") or not value.isprintable():
        raise InvalidRequest("is not an id", field)
    return value


def _problem_line(response: httpx.Response) -> str:
    """``HTTP 422: field: message; …`` from a problem+json answer (or its status)."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        return f"HTTP {response.status_code} {response.reason_phrase}".strip()
    detail = str(problem.get("detail") or problem.get("title") or "")
    errors = [e for e in problem.get("errors") or [] if isinstance(e, dict)]
    parts = [f"{e.get('field')}: {e.get('message')}" for e in errors]
    if parts and all(str(e.get("message")) in detail for e in errors):
        detail = "; ".join(parts)  # the detail only repeated the one field's message
    elif parts:
        detail = f"{detail} ({'; '.join(parts)})"
    return f"HTTP {response.status_code}: {detail}"
