"""A webhook's delivery attempts per hour as an inline SVG bar chart, drawn on the server.

No charting library and no script: the chart is a few rectangles, each hour with a
``<title>`` (a tooltip, and what a screen reader announces), and the page shows the same
numbers as a table next to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from markupsafe import Markup

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 12, 30
SUCCEEDED, FAILED = "#2e7d32", "#c62828"


@dataclass(frozen=True)
class Hour:
    start: datetime
    succeeded: int
    failed: int

    @property
    def label(self) -> str:
        return self.start.strftime("%Y-%m-%d %H:00 UTC")


def hours(rows: Sequence[dict[str, Any]], now: datetime, count: int = 48) -> list[Hour]:
    """The last ``count`` hours up to the current one, oldest first, zero where no row is."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    by_hour = {str(r["hour"])[:13]: r for r in rows}
    found = []
    for back in range(count - 1, -1, -1):
        start = current - timedelta(hours=back)
        row = by_hour.get(start.strftime("%Y-%m-%dT%H"), {})
        found.append(Hour(start, int(row.get("succeeded", 0)), int(row.get("failed", 0))))
    return found


def _scale_top(highest: int) -> int:
    """A round top for the y axis at or above ``highest``: 1, 2, 5, 10, 20, 50, …"""
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= highest:
                return step * magnitude
        magnitude *= 10


def svg(series: Sequence[Hour], title: str) -> Markup:
    """The stacked bar chart of ``series`` (succeeded below, failed above)."""
    top = _scale_top(max((h.succeeded + h.failed for h in series), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(series), 1)
    bar = max(slot * 0.7, 1.0)

    def y(value: float) -> float:
        return TOP + plot_h - plot_h * value / top

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-title">{escape(title)}</title>',
    ]
    for value in (0, top // 2, top) if top % 2 == 0 else (0, top):
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" '
            f'y2="{y(value):.1f}" stroke="#ccc" stroke-width="1"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end" '
            f'font-size="11">{value:g}</text>'
        )
    for index, hour in enumerate(series):
        x = LEFT + index * slot + (slot - bar) / 2
        tip = f"{hour.label}: {hour.succeeded} succeeded, {hour.failed} failed"
        parts.append(f"<g><title>{escape(tip)}</title>")
        # An empty hour still gets a transparent bar, so its tooltip can be found.
        parts.append(
            f'<rect x="{x:.1f}" y="{TOP}" width="{bar:.1f}" height="{plot_h}" fill="transparent"/>'
        )
        if hour.succeeded:
            parts.append(
                f'<rect class="ok" x="{x:.1f}" y="{y(hour.succeeded):.1f}" width="{bar:.1f}" '
                f'height="{y(0) - y(hour.succeeded):.1f}" fill="{SUCCEEDED}"/>'
            )
        if hour.failed:
            total = hour.succeeded + hour.failed
            parts.append(
                f'<rect class="bad" x="{x:.1f}" y="{y(total):.1f}" width="{bar:.1f}" '
                f'height="{y(hour.succeeded) - y(total):.1f}" fill="{FAILED}"/>'
            )
        parts.append("</g>")
        if hour.start.hour % 6 == 0:
            parts.append(
                f'<text class="axis" x="{x + bar / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" '
                f'text-anchor="middle" font-size="11">{hour.start:%H}:00</text>'
            )
    parts.append("</svg>")
    # Every value above is a number we formatted or text we escaped.
    return Markup("".join(parts))  # noqa: S704
