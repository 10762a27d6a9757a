"""The bench's pure helpers: percentiles, rates, timestamps."""

from __future__ import annotations

import pytest

from bench.stats import parse_iso, percentile, rate, ratio, steady_rate, summarize


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 100.0


def test_percentile_of_nothing_or_one_value() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0


def test_summarize_counts_and_rounds() -> None:
    summary = summarize([1.0, 2.0, 3.0, 4.0])
    assert summary == {"count": 4, "mean": 2.5, "p50": 2.5, "p95": 3.85, "p99": 3.97, "max": 4.0}
    assert summarize([])["p50"] is None


def test_rate_and_ratio_guard_against_zero() -> None:
    assert rate(100, 2.0) == 50.0
    assert rate(100, 0.0) is None
    assert ratio(30.0, 60.0) == 0.5
    assert ratio(None, 60.0) is None
    assert ratio(30.0, 0.0) is None


def test_parse_iso_reads_the_api_timestamps_as_utc() -> None:
    assert parse_iso("1970-01-01T00:00:01.500000Z") == pytest.approx(1.5)


def test_steady_rate_leaves_out_ramp_up_and_tail() -> None:
    # 100 completions, one every 10 ms, after a 5 s ramp-up of 10 slow ones.
    times = [i * 0.5 for i in range(10)] + [5.0 + i * 0.01 for i in range(100)]
    assert steady_rate(times) == pytest.approx(100.0, rel=0.05)
    assert steady_rate(times[:5]) is None
