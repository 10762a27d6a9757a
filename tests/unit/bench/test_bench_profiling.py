"""Reading py-spy's raw (collapsed) profiles."""

from __future__ import annotations

from pathlib import Path

from bench.profiling import area_of, parse, summarize

RAW = """\
thread (0x1): worker-1;run (infrastructure/worker.py:10);send (httpx/_client.py:5) 30
thread (0x2): worker-2;run (infrastructure/worker.py:10);wait (psycopg/connection.py:9) 50
thread (0x3): MainThread;main (infrastructure/cli.py:3) 20
"""


def test_parse_groups_numbered_threads_and_splits_frames() -> None:
    stacks = parse(RAW.splitlines())
    assert [s[0] for s in stacks] == ["worker-*", "worker-*", "MainThread"]
    assert stacks[0][1] == [("run", "infrastructure/worker.py"), ("send", "httpx/_client.py")]
    assert [s[2] for s in stacks] == [30, 50, 20]


def test_areas_by_leaf_file() -> None:
    assert area_of("psycopg/connection.py") == "psycopg"
    assert area_of("infrastructure/worker.py") == "ours: infrastructure"
    assert area_of("httpcore/_sync/connection.py") == "httpx/httpcore/h11"
    assert area_of("") == "unknown"


def test_summarize_percentages(tmp_path: Path) -> None:
    path = tmp_path / "profile.txt"
    path.write_text(RAW)
    summary = summarize(path)
    assert summary["samples"] == 100
    assert dict(summary["areas_pct"]) == {
        "psycopg": 50.0,
        "httpx/httpcore/h11": 30.0,
        "ours: infrastructure": 20.0,
    }
    assert dict(summary["inclusive_pct"])["run (infrastructure/worker.py)"] == 80.0
    assert dict(summary["threads_pct"]) == {"worker-*": 80.0, "MainThread": 20.0}
