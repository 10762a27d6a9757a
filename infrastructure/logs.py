"""Logging for every `webround` role: JSON lines in production, readable text otherwise.

`configure_logging(settings)` installs one handler on the root logger (standard error):

- ``WEBROUND_LOG_FORMAT=json``: one JSON object per record — ``time``, ``level``,
  ``logger``, ``message``, then every ``extra`` field given to the call (``delivery_id``,
  ``webhook_id``, ``event_id``, ``attempt``, ``status_code``, ``duration_ms``, …), and
  ``exception`` when there is a traceback.
- ``text`` (the default): ``time level logger: message key=value …``.

Every record passes `RedactingFilter` on the way out, whoever logged it:

- anything shaped like a signing secret (``whsec_…``) or an API key (``wr_<16 hex>_…``)
  becomes ``[redacted]`` in the message, the extras and the traceback;
- records made by Dramatiq's code never show a message's arguments (an envelope with
  customer data, sealed secrets and headers) — whatever the logger's name: an actor's
  logger is named after the actor's module —: a message is shown as
  ``deliver(message <id>)``, and arguments as ``[withheld]``;
- PostgreSQL's ``DETAIL:`` lines (``Failing row contains (…)`` quotes a row's values)
  become ``DETAIL: [withheld]`` in messages and tracebacks.

The API key shown on a first start is printed to the terminal, never logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from infrastructure.settings import Settings

REDACTED = "[redacted]"
SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+|wr_[0-9a-f]{16}_[A-Za-z0-9_-]+")

# The attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


# Every match of SECRET starts with one of these: text without them is left as it is
# without running the expression (most log lines, every delivery attempt's).
_MARKERS = ("whsec_", "wr_")
# Values that can hold no secret: returned as they are.
_PLAIN = frozenset({int, float, bool, type(None)})


def redact(text: str) -> str:
    if "DETAIL:" in text:
        text = _DETAIL.sub(r"\1DETAIL:  [withheld]", text)
    if _MARKERS[0] not in text and _MARKERS[1] not in text:
        return text
    return SECRET.sub(REDACTED, text)


# Where Dramatiq's modules live: records they make have their arguments withheld.
_DRAMATIQ = f"{os.sep}dramatiq{os.sep}"
# PostgreSQL's detail line of an error, which may quote the values of a row.
_DETAIL = re.compile(r"(^|\n)DETAIL:[^\n]*")
WITHHELD = "[withheld]"


def error_summary(error: BaseException) -> str:
    """An exception as one line that may be logged: its class and the first line of its
    message (a database's detail lines, which may quote stored values, are left out)."""
    text = str(error).strip().split("\n", 1)[0][:300]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _withhold_arguments(record: logging.LogRecord) -> None:
    """Dramatiq logs messages (``%s`` of a message is the actor call with every
    argument) and actor arguments: keep ids, withhold the rest."""
    args = record.args
    if not args:
        return
    if isinstance(args, dict):
        record.args = {key: _shown(value) for key, value in args.items()}
    else:
        record.args = tuple(_shown(value) for value in args)


def _shown(value: object) -> object:
    if type(value) in _PLAIN or isinstance(value, str | BaseException):
        return value
    message_id, actor = getattr(value, "message_id", None), getattr(value, "actor_name", None)
    if isinstance(message_id, str) and isinstance(actor, str):
        return f"{actor}(message {message_id})"
    return WITHHELD


def _redact_value(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    return value


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call passed with ``extra=``, in the order given."""
    fields = record.__dict__
    return {key: fields[key] for key in fields if key not in _STANDARD and key[:1] != "_"}


class RedactingFilter(logging.Filter):
    """Replaces secrets and API keys with ``[redacted]`` in the message and the extras."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _DRAMATIQ in record.pathname:
            _withhold_arguments(record)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: log what there is rather than nothing
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), None
        for key, value in extras(record).items():
            redacted = _redact_value(value)
            if redacted is not value:
                setattr(record, key, redacted)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


# The last second formatted, and its text: records come many to a second.
_second: tuple[datetime, str] = (datetime.min.replace(tzinfo=UTC), "")


def _time(record: logging.LogRecord) -> str:
    global _second
    moment = datetime.fromtimestamp(record.created, UTC)
    second = moment.replace(microsecond=0)
    last = _second
    if last[0] != second:
        last = _second = (second, second.strftime("%Y-%m-%dT%H:%M:%S."))
    return f"{last[1]}{moment.microsecond // 1000:03d}Z"


# What json.dumps(entry, default=str, ensure_ascii=False) builds on every call, once.
_JSON = json.JSONEncoder(default=str, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return _JSON.encode(entry)


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if not text or " " in text else text


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value …`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_time(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = " ".join(f"{key}={_text(value)}" for key, value in extras(record).items())
        if fields:
            line = f"{line} {fields}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{record.stack_info}"
        return line


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours, so that configuring again replaces it (and leaves other handlers alone)."""


def make_handler(log_format: str, stream: TextIO | None = None) -> logging.Handler:
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    return handler


def configure_logging(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Send every record at INFO and above to standard error, in the configured format.

    Replaces the handler an earlier call installed, so calling it twice does not log
    twice; the loggers of uvicorn, Dramatiq and the rest propagate to it.
    """
    handler = make_handler(settings.log_format, stream)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # One line per request of theirs would repeat each attempt's own record, with the
    # full target URL (which may carry a receiver's token in its query string).
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    return handler
