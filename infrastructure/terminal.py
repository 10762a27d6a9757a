"""Writing to a terminal: text that cannot steer it, aligned tables, a progress line, and
times typed by people.

Anything a merchant, a receiver or a store's customer wrote (a description, a URL, a
response body, a name) may hold control characters — an ANSI escape that rewrites the
screen, a carriage return that hides what came before, a bidirectional override that
shows text reversed. `printable` writes those as visible escapes (``\\x1b``, ``\\u202e``),
so what a person sees is what the data holds.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TextIO

from application.errors import InvalidRequest

BAR_WIDTH = 24
REDRAW_SECONDS = 0.1  # a progress line is redrawn at most this often (and at the end)
_AGO = re.compile(r"^(\d{1,9})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def printable(value: object) -> str:
    """``value`` as text with every control, format or unassigned character escaped
    (C0 and C1 controls, DEL, bidirectional overrides, zero-width characters)."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char == " " or (char.isprintable() and unicodedata.category(char)[0] != "C"):
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


def table(header: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> str:
    """Aligned columns, every cell made `printable`; the last column is not padded."""
    if not rows:
        return empty
    cells = [[printable(cell) for cell in row] for row in (header, *rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        for row in cells
    )


def fields(pairs: Sequence[tuple[str, object]]) -> str:
    """``name  value`` lines, the values aligned and made `printable`."""
    width = max((len(name) for name, _ in pairs), default=0)
    return "\n".join(f"{name.ljust(width)}  {printable(value)}" for name, value in pairs)


def moment_or_ago(value: str | None, now: datetime, field: str) -> str | None:
    """An ISO 8601 time as given, or a duration back from ``now`` (`90s`, `30m`, `1h`,
    `7d`) as the time it names."""
    if value is None:
        return None
    ago = _AGO.match(value.strip())
    if not ago:
        return value
    try:
        moment = now - timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
    except OverflowError:
        raise InvalidRequest("reaches back before the year 1", field) from None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ProgressBar:
    """One ``\\r``-redrawn line: a label, a bar, done/total, percent, and a rate."""

    def __init__(
        self, label: str, stream: TextIO, clock: Callable[[], float], unit: str = "events"
    ) -> None:
        self.label = label
        self.stream = stream
        self.clock = clock
        self.unit = unit
        self.started = clock()
        self._drawn_at: float | None = None
        self._length = 0

    def update(self, done: int, total: int) -> None:
        now = self.clock()
        if self._drawn_at is not None and now - self._drawn_at < REDRAW_SECONDS:
            return
        self._draw(done, total, now)

    def finish(self, done: int, total: int | None = None) -> None:
        self._draw(done, done if total is None else total, self.clock())
        self.stream.write("\n")
        self.stream.flush()

    def _draw(self, done: int, total: int, now: float) -> None:
        self._drawn_at = now
        fraction = min(done / total, 1.0) if total else 1.0
        filled = round(fraction * BAR_WIDTH)
        line = (
            f"{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
            f"{done:,}/{total:,} {self.unit} {fraction:4.0%} "
            f"{rate(done, now - self.started):,.0f} {self.unit}/s"
        )
        # Blank out the rest of a longer previous line.
        self.stream.write("\r" + line.ljust(self._length))
        self._length = len(line)
        self.stream.flush()


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0
