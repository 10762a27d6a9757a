"""Pure helpers: percentiles and summaries of samples, rates, ratios, ISO timestamps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (0-100) by linear interpolation between closest ranks;
    None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float], digits: int = 2) -> dict[str, float | int | None]:
    """Count, mean, p50, p95, p99 and max of ``values``, rounded."""

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, digits)

    return {
        "count": len(values),
        "mean": r(sum(values) / len(values)) if values else None,
        "p50": r(percentile(values, 50)),
        "p95": r(percentile(values, 95)),
        "p99": r(percentile(values, 99)),
        "max": r(max(values)) if values else None,
    }


def ratio(value: float | None, baseline: float | None, digits: int = 3) -> float | None:
    if value is None or not baseline:
        return None
    return round(value / baseline, digits)


def rate(count: int, seconds: float, digits: int = 1) -> float | None:
    return round(count / seconds, digits) if seconds > 0 else None


def parse_iso(text: str) -> float:
    """``2025-01-02T03:04:05.123456Z`` (the API's timestamps) as Unix seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def steady_rate(times: Sequence[float], low: float = 0.1, high: float = 0.9) -> float | None:
    """Completions per second between the ``low`` and ``high`` fractions of the
    completions (ramp-up and tail left out); None with too few samples."""
    if len(times) < 20:
        return None
    ordered = sorted(times)
    i, j = int(len(ordered) * low), int(len(ordered) * high) - 1
    span = ordered[j] - ordered[i]
    return round((j - i) / span, 1) if span > 0 else None
