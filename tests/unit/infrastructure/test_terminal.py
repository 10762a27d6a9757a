"""What reaches a terminal: control characters escaped, columns aligned, times typed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from application.errors import InvalidRequest
from infrastructure.terminal import moment_or_ago, printable, table


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, ünïcödé ✓", "plain text, ünïcödé ✓"),
        ("\x1b[2Jcleared", "\\x1b[2Jcleared"),  # ANSI escape (C0)
        ("\x9b31m", "\\x9b31m"),  # CSI as one C1 character
        ("a\rb\nc\td\x7f", "a\\x0db\\x0ac\\x09d\\x7f"),  # line tricks and DEL
        ("\u202eevil", "\\u202eevil"),  # right-to-left override
        ("zero\u200bwidth", "zero\\u200bwidth"),  # zero-width space (a format character)
        ("\U000e0041tag", "\\U000e0041tag"),  # a tag character
    ],
)
def test_control_and_format_characters_are_shown_escaped(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_a_table_aligns_escaped_cells_and_leaves_the_last_column_unpadded() -> None:
    rendered = table(("ID", "NAME"), [("1", "a\x1bb"), ("22", "c")], "none")

    assert rendered.splitlines() == ["ID  NAME", "1   a\\x1bb", "22  c"]
    assert table(("ID",), [], "nothing here") == "nothing here"


def test_a_time_is_iso_8601_as_given_or_a_duration_back_from_now() -> None:
    now = datetime(2030, 1, 2, 12, 0, tzinfo=UTC)

    assert moment_or_ago("90m", now, "since") == "2030-01-02T10:30:00.000000Z"
    assert moment_or_ago("2030-01-01T00:00:00Z", now, "since") == "2030-01-01T00:00:00Z"
    with pytest.raises(InvalidRequest):
        moment_or_ago("999999999d", now, "since")
