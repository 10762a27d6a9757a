"""What the API checks a request against, read as its document publishes it (ADR 0020).

- `Validator`: JSON Schema 2020-12 as `/openapi.json` means it: a `pattern` is ECMA 262
  (a closing `$` is the end of the string — Python's also matches before a final line
  feed — and `\\d`, `\\w` are ASCII); an integer is a whole number and never a boolean;
  a value that misses one of the shared patterns (text, names, emails, URLs, times) or a
  long `enum` is told why in words.
- `check_query`: query parameters hold no control character, and each documented one
  fits its schema (an integer read from its digits, a boolean from `true`/`false`).
- `parse_json`: the body as JSON, where an integral number is an integer (JSON does not
  tell `2.0` from `2`) and a lone surrogate is refused naming its field.
- `IDEMPOTENCY_KEY_PATTERN`: what an `Idempotency-Key` header is.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from starlette.requests import Request

from domain.values import (
    EMAIL_PATTERN,
    MULTILINE_TEXT_PATTERN,
    NAME_PATTERN,
    TEXT_PATTERN,
    text_problem,
)
from domain.webhook import EVENT_TYPE_PATTERNS
from infrastructure.api.problems import ApiProblem
from infrastructure.queries import MOMENT_MESSAGE, MOMENT_PATTERN
from infrastructure.ssrf import URL_PATTERN, url_problem

FORMATS = Draft202012Validator.FORMAT_CHECKER
# What an Idempotency-Key header is (published in the document as this pattern): HTTP
# trims a value's outer spaces, so it starts and ends with a visible character.
IDEMPOTENCY_KEY_PATTERN = "^[!-~]([ -~]{0,253}[!-~])?$"

# JSON Schema counts 2.0 as an integer; our quantities, stock levels and timeouts are
# whole numbers, so a float is refused rather than stored as 2.0 or multiplied into money.
_STRICT_INTEGERS = Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
)
# What a value that does not fit one of the shared patterns is told, in words.
_EXPLAINED: dict[str, Callable[[str], str]] = {
    TEXT_PATTERN: lambda value: text_problem(value) or "must be text",
    MULTILINE_TEXT_PATTERN: lambda value: text_problem(value, multiline=True) or "must be text",
    NAME_PATTERN: lambda value: text_problem(value) or "must not be empty",
    EMAIL_PATTERN: lambda value: "is not an email address",
    URL_PATTERN: url_problem,
    MOMENT_PATTERN: lambda value: MOMENT_MESSAGE,
}
_SURROGATE = re.compile("[\\ud800-\\udfff]")


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if isinstance(instance, str) and not matches(pattern, instance):
        explain = _EXPLAINED.get(pattern)
        yield ValidationError(explain(instance) if explain else f"does not match {pattern!r}")


def matches(pattern: str, text: str) -> bool:
    """Whether ``text`` has ``pattern`` (a JSON Schema pattern, as ECMA 262 reads it)."""
    return _compiled(pattern).search(text) is not None


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + "\\Z"
    return re.compile(pattern, re.ASCII)


def _enum(validator: Any, enum: list[Any], instance: Any, schema: Any) -> Iterator[ValidationError]:
    """`enum`, saying what a long list is rather than listing it (event types, currencies)."""
    if instance in enum and not isinstance(instance, bool):
        return
    if len(enum) <= 8:
        yield ValidationError(f"{instance!r} is not one of {enum!r}")
    elif set(enum) <= set(EVENT_TYPE_PATTERNS):
        yield ValidationError(f"{instance!r} is not a known event type or pattern")
    else:
        yield ValidationError(f"{instance!r} is not one of the values the document lists")


Validator = validators.extend(
    Draft202012Validator,
    validators={"pattern": _pattern, "enum": _enum},
    type_checker=_STRICT_INTEGERS,
)


def check_query(request: Request, documented: Mapping[str, Any]) -> None:
    """Refuse (422, naming the parameter) a query parameter holding a control character
    (a NUL would reach PostgreSQL, which cannot compare text with it), or a documented one
    that does not fit its schema (``documented``: a `Validator` per parameter name)."""
    for name, text in request.query_params.multi_items():
        problem = text_problem(text)
        if problem is not None:
            raise _parameter_problem(name, problem)
    for name, validator in documented.items():
        raw = request.query_params.get(name)
        if raw is None:
            continue
        value: Any = raw
        if validator.schema.get("type") == "boolean":
            if raw not in ("true", "false"):
                raise _parameter_problem(name, "must be true or false")
            value = raw == "true"
        elif validator.schema.get("type") == "integer":
            if not (raw.isascii() and raw.isdigit()):
                raise _parameter_problem(name, "must be a whole number")
            digits = raw.lstrip("0") or "0"
            # More digits than any bound we set: too large, without int() of them all.
            value = int(digits) if len(digits) <= 18 else 10**18
        error = next(iter(validator.iter_errors(value)), None)
        if error is not None:
            raise _parameter_problem(name, error.message)


def _parameter_problem(name: str, message: str) -> ApiProblem:
    return ApiProblem(422, "a query parameter is invalid", [{"field": name, "message": message}])


def parse_json(raw: bytes) -> Any:
    """The body's JSON; a 400 when it is none, a 422 naming a field with a lone surrogate."""
    try:
        body = json.loads(raw, parse_constant=_refuse_constant, parse_float=_number)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiProblem(400, f"the request body is not valid JSON: {error}") from None
    except RecursionError:
        raise ApiProblem(400, "the request body is nested too deeply") from None
    # A lone surrogate ("\ud800") is valid JSON but no Unicode text: refuse it here,
    # naming where it is, rather than fail when the event is stored.
    where = _surrogate_in(body, "")
    if where is not None:
        message = "must not contain a lone surrogate (an unpaired \\ud800-\\udfff escape)"
        raise ApiProblem(
            422,
            "the request body has invalid fields",
            [{"field": where.lstrip(".") or "body", "message": message}],
        )
    return body


def _number(literal: str) -> int | float:
    """A JSON number with a fraction or exponent. JSON (and JSON Schema) do not tell 2.0
    from 2: an integral one is the integer, so `"stock": 16011.0` is the whole number
    the document's `integer` promises to accept; any other stays a float."""
    value = float(literal)
    return int(value) if value.is_integer() else value


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON and no valid number here.
    raise ValueError(f"{name} is not a JSON number")


def _surrogate_in(value: Any, path: str) -> str | None:
    """The path of the first string (or property name) holding a lone surrogate."""
    if isinstance(value, str):
        return path if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _SURROGATE.search(key):
                return f"{path}.{key.encode('utf-8', 'replace').decode()}"
            found = _surrogate_in(item, f"{path}.{key}")
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _surrogate_in(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None
