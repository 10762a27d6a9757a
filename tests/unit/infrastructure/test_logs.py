"""Structured logs (SPEC §10): JSON lines in production, text otherwise, never a secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import dramatiq
import dramatiq.worker
import pytest

from infrastructure.logs import REDACTED, configure_logging, error_summary, make_handler, redact
from infrastructure.settings import Settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw+/aB12=="
API_KEY = "wr_0123456789abcdef_Zx9-kQ_T3stK3yT3stK3yT3stK3yT3stK3yT3stK3y"


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger of its own, not propagating, with its handlers removed afterwards."""
    log = logging.getLogger("webround.tests.logs")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
    log.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_standard_fields_and_the_extras(logger: logging.Logger) -> None:
    # Given the JSON format
    stream = io.StringIO()
    logger.addHandler(make_handler("json", stream))

    # When an attempt is logged with its fields, and then a plain message
    logger.info(
        "delivery attempt",
        extra={
            "delivery_id": "3f1c…",
            "webhook_id": "9a2b…",
            "event_id": "evt_00",
            "attempt": 2,
            "status_code": 503,
            "duration_ms": 12.5,
        },
    )
    logger.warning("webhook %s disabled", "9a2b")

    # Then each record is one JSON object on one line
    first, second = lines(stream)
    assert first["message"] == "delivery attempt"
    assert first["level"] == "INFO"
    assert first["logger"] == "webround.tests.logs"
    assert str(first["time"]).endswith("Z")
    assert first["delivery_id"] == "3f1c…"
    assert first["webhook_id"] == "9a2b…"
    assert first["event_id"] == "evt_00"
    assert (first["attempt"], first["status_code"], first["duration_ms"]) == (2, 503, 12.5)
    assert second["message"] == "webhook 9a2b disabled"
    assert second["level"] == "WARNING"


def test_an_exception_is_one_json_line_too(logger: logging.Logger) -> None:
    # Given the JSON format
    stream = io.StringIO()
    logger.addHandler(make_handler("json", stream))

    # When an error is logged with its traceback
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("pass failed")

    # Then the traceback is a field of the one object
    (entry,) = lines(stream)
    assert entry["level"] == "ERROR"
    assert "RuntimeError: boom" in str(entry["exception"])


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_secrets_and_api_keys_are_redacted_wherever_they_appear(
    logger: logging.Logger, log_format: str
) -> None:
    # Given either format
    stream = io.StringIO()
    logger.addHandler(make_handler(log_format, stream))

    # When a signing secret and an API key reach a log call: in the message, its
    # arguments, an extra field and a traceback
    logger.info(f"created with secret {SECRET}")
    logger.info("key is %s", API_KEY, extra={"header": f"Bearer {API_KEY}", "n": 1})
    try:
        raise ValueError(f"bad secret {SECRET}")
    except ValueError:
        logger.exception("failed")

    # Then neither appears in the output, and the redaction marker does
    output = stream.getvalue()
    assert SECRET not in output
    assert "whsec_" not in output
    assert API_KEY not in output
    assert "Zx9-kQ" not in output
    assert output.count(REDACTED) >= 4
    if log_format == "json":
        entries = lines(stream)
        assert entries[0]["message"] == f"created with secret {REDACTED}"
        assert entries[1]["message"] == f"key is {REDACTED}"
        assert entries[1]["header"] == f"Bearer {REDACTED}"
        assert entries[1]["n"] == 1


def test_secrets_inside_structured_extras_are_redacted_and_other_values_kept(
    logger: logging.Logger,
) -> None:
    # Given the JSON format
    stream = io.StringIO()
    logger.addHandler(make_handler("json", stream))

    # When extras nest a secret in a dict, a list and a tuple, beside plain values
    logger.info(
        "rotated",
        extra={
            "old": {"secret": SECRET, "count": 2},
            "keys": [API_KEY, 7],
            "pair": ("plain", SECRET),
            "ratio": 0.5,
            "ok": True,
            "none": None,
            "text": "nothing to hide",
        },
    )

    # Then the secrets are gone wherever they were, and everything else is as given
    (entry,) = lines(stream)
    assert entry["old"] == {"secret": REDACTED, "count": 2}
    assert entry["keys"] == [REDACTED, 7]
    assert entry["pair"] == ["plain", REDACTED]
    assert (entry["ratio"], entry["ok"], entry["none"]) == (0.5, True, None)
    assert entry["text"] == "nothing to hide"


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        (1_767_225_599.9994, "2025-12-31T23:59:59.999Z"),
        (1_767_225_600.0004, "2026-01-01T00:00:00.000Z"),
        (1_767_225_600.25, "2026-01-01T00:00:00.250Z"),
        (1_767_225_599.1, "2025-12-31T23:59:59.100Z"),
    ],
)
def test_the_time_is_the_records_utc_time_to_the_millisecond(created: float, expected: str) -> None:
    # Given records made at known moments, in the same second and across one, in any order
    stream = io.StringIO()
    handler = make_handler("json", stream)
    record = logging.LogRecord("webround.tests.logs", logging.INFO, __file__, 1, "m", None, None)
    record.created = created

    # When it is written
    handler.handle(record)

    # Then its time is that moment in UTC, cut to the millisecond
    (entry,) = lines(stream)
    assert entry["time"] == expected


def test_text_lines_are_readable_with_their_fields(logger: logging.Logger) -> None:
    # Given the text format (the embedded default)
    stream = io.StringIO()
    logger.addHandler(make_handler("text", stream))

    # When an attempt is logged with its fields
    logger.info("delivery attempt", extra={"attempt": 1, "status_code": 200, "detail": "a b"})

    # Then one line says it all, fields as key=value
    (line,) = stream.getvalue().splitlines()
    assert "INFO" in line
    assert "webround.tests.logs: delivery attempt" in line
    assert 'attempt=1 status_code=200 detail="a b"' in line


def test_redact_leaves_other_text_alone() -> None:
    assert redact("wr_key_id is not a key; whsec_ alone is") == "wr_key_id is not a key; " + (
        "whsec_ alone is"
    )
    assert redact(f"x{API_KEY} y") == f"x{REDACTED} y"


def test_configure_logging_installs_one_root_handler_in_the_chosen_format() -> None:
    # Given the root logger as it is
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    chatty = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    stream = io.StringIO()
    try:
        # When logging is configured twice, the second time for JSON
        configure_logging(Settings(log_format="text"), stream)
        configure_logging(Settings(log_format="json"), stream)
        logging.getLogger("webround.worker").info("hello %s", API_KEY, extra={"attempt": 3})

        # Then one JSON line was written, at INFO, with the key redacted
        (entry,) = lines(stream)
        assert entry["message"] == f"hello {REDACTED}"
        assert entry["attempt"] == 3
        assert root.level == logging.INFO
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        for name, was in chatty.items():
            logging.getLogger(name).setLevel(was)


def test_the_log_format_setting_is_text_or_json() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"WEBROUND_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ValueError, match="WEBROUND_LOG_FORMAT"):
        Settings.from_env({"WEBROUND_LOG_FORMAT": "xml"})


# No customer data in logs (issue #12, item 5) ---------------------------------------------


def test_a_database_detail_quoting_a_row_is_withheld(logger: logging.Logger) -> None:
    # Given an error whose detail quotes a row, as PostgreSQL's does
    stream = io.StringIO()
    logger.addHandler(make_handler("json", stream))
    error = RuntimeError(
        'new row violates check constraint "c"\nDETAIL:  Failing row contains (ann@x.example).'
    )

    # When it is logged with its traceback, and as a message
    try:
        raise error
    except RuntimeError:
        logger.exception("could not record: %s", error)

    # Then neither the message nor the traceback holds the row; the error's first line stays
    [entry] = lines(stream)
    assert "ann@x.example" not in json.dumps(entry)
    assert 'violates check constraint "c"' in str(entry["message"])
    assert "DETAIL:  [withheld]" in str(entry["exception"])


def test_records_made_by_dramatiq_never_show_a_message_or_its_arguments() -> None:
    # Given a handler, and a record as Dramatiq's worker makes it for a failing message
    stream = io.StringIO()
    handler = make_handler("json", stream)
    message = dramatiq.Message(
        queue_name="q",
        actor_name="deliver",
        args=({"body": '{"email": "ann@x.example"}'},),
        kwargs={},
        options={},
    )
    for args in [(message,), (({"body": "ann@x.example"},), {})]:
        record = logging.LogRecord(
            "infrastructure.worker.deliver",  # an actor's logger: named after its module
            logging.ERROR,
            dramatiq.worker.__file__,
            1,
            "Failed to process message %s with %r.",
            args,
            None,
        )

        # When it is written
        handler.handle(record)

    # Then the message is shown by its id, and arguments are withheld
    text = stream.getvalue()
    assert "ann@x.example" not in text
    assert f"deliver(message {message.message_id})" in text
    assert "[withheld]" in text


def test_an_error_summary_is_its_class_and_first_line() -> None:
    error = ValueError("value refused\nDETAIL:  Failing row contains (ann@x.example).")
    assert error_summary(error) == "ValueError: value refused"
    assert error_summary(KeyError()) == "KeyError"
