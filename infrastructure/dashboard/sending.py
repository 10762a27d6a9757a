"""How a webhook is sent to, in the dashboard's create and edit forms (§3): custom headers,
timeout and rate limit.

The fields are checked against the JSON API's own schemas for them (`api.schemas`), so the
dashboard refuses exactly what the API refuses, with messages for people. Header values
are never shown again once saved: the edit form lists the names, leaves the values out,
and keeps the current headers unless new ones are typed or removal is asked for.
"""

from __future__ import annotations

from typing import Any

from infrastructure.api import schemas
from infrastructure.api.validation import Validator
from infrastructure.dashboard.forms import Form

JSON = dict[str, Any]
FIELDS = ("headers", "remove_headers", "timeout", "rate_limit")
# The form's field for each of the API's (and the domain's `InvalidValue`) field names.
FORM_FIELD = {"headers": "headers", "timeoutSeconds": "timeout", "rateLimit": "rate_limit"}

_SCHEMA = schemas.body(
    {
        "headers": schemas.HEADERS,
        "timeoutSeconds": schemas.TIMEOUT,
        "rateLimit": schemas.RATE_LIMIT,
    }
)
_VALIDATOR = Validator(_SCHEMA)
_MESSAGES = {
    "timeoutSeconds": "Enter a whole number of seconds from 1 to 30.",
    "rateLimit": "Enter a number of deliveries per second above 0 and at most 10,000, "
    "or leave it empty for no limit.",
}


def blank() -> JSON:
    """The fields of a new webhook's form."""
    return {"headers": "", "remove_headers": False, "timeout": "15", "rate_limit": ""}


def values_of(webhook: JSON) -> JSON:
    """The fields of an existing webhook's edit form (header values are never shown)."""
    rate = webhook["rateLimit"]
    return {
        "headers": "",
        "remove_headers": False,
        "timeout": str(webhook["timeoutSeconds"]),
        "rate_limit": f"{rate:g}" if rate is not None else "",
    }


def read(form: Form) -> JSON:
    """The fields as posted, for checking and for showing the form again (None: a field
    the post did not hold, which changes nothing)."""
    timeout, rate = form.get("timeout"), form.get("rate_limit")
    return {
        "headers": form.get("headers", ""),
        "remove_headers": form.get("remove_headers") == "yes",
        "timeout": timeout.strip() if timeout is not None else None,
        "rate_limit": rate.strip() if rate is not None else None,
    }


def check(values: JSON, *, creating: bool) -> tuple[JSON, dict[str, str]]:
    """The application's keyword arguments for these fields (only those to set), and the
    errors by form field. Editing, no header lines keep the current headers;
    ``remove_headers`` drops them."""
    errors: dict[str, str] = {}
    body: JSON = {}
    headers = _headers(values["headers"], errors)
    if values["remove_headers"] and headers:
        errors["headers"] = "Either type new headers or remove them all, not both."
    elif values["remove_headers"]:
        body["headers"] = {}
    elif headers or creating:
        body["headers"] = headers
    if values["timeout"] is not None:
        body["timeoutSeconds"] = _number(values["timeout"], int, "timeout", errors)
    if values["rate_limit"]:
        body["rateLimit"] = _number(values["rate_limit"], float, "rate_limit", errors)
    elif values["rate_limit"] == "" and not creating:
        body["rateLimit"] = None  # emptied: no limit any more
    if not errors:
        for error in _VALIDATOR.iter_errors(body):
            field = str(error.absolute_path[0]) if error.absolute_path else "headers"
            errors.setdefault(FORM_FIELD[field], _MESSAGES.get(field) or _header_message(error))
    names = {"headers": "headers", "timeoutSeconds": "timeout_seconds", "rateLimit": "rate_limit"}
    return {names[key]: value for key, value in body.items()}, errors


def _headers(text: str, errors: dict[str, str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            errors["headers"] = f"Line {number}: write each header as Name: value."
            return {}
        if name.strip() in headers:
            errors["headers"] = f"Line {number}: {name.strip()} is given twice."
            return {}
        headers[name.strip()] = value.strip()
    return headers


def _number(text: str, kind: type[int] | type[float], field: str, errors: dict[str, str]) -> Any:
    try:
        return kind(text)
    except ValueError:
        errors[field] = _MESSAGES["timeoutSeconds" if field == "timeout" else "rateLimit"]
        return None


def _header_message(error: Any) -> str:
    if error.validator == "maxProperties":
        return "At most 20 custom headers."
    if error.validator == "pattern" and len(error.absolute_path) == 1:
        return (
            f"{error.instance!r} is not a header name: use letters, digits and "
            "!#$%&'*+.^_`|~- (at most 100)."
        )
    if error.validator == "maxLength":
        return "A header value is at most 2,000 characters."
    return f"Custom headers: {error.message}"
