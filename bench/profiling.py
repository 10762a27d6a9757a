"""Profiles of the hot path with py-spy (sampling, attached by PID, ``--nonblocking``
so the process is not paused), and a summary of its raw (collapsed-stack) output:
where the CPU went, by thread, by area (our code, eventsourcing, psycopg, httpx, ...),
by function (self and inclusive).

Samples are taken with ``--gil`` (only the thread holding the GIL: Python on the CPU)
at 50 Hz: without it py-spy counts every thread that is runnable or blocked in a C call
once per tick, and on two loaded cores with dozens of worker threads it falls seconds
behind and reports a few hundred samples that say little about CPU."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.modes import ROOT

PY_SPY = ROOT / ".venv" / "bin" / "py-spy"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")

# Leaf-frame file prefixes -> area, first match wins.
AREAS: tuple[tuple[str, str], ...] = (
    ("domain/", "ours: domain"),
    ("application/", "ours: application"),
    ("projections/", "ours: projections"),
    ("infrastructure/", "ours: infrastructure"),
    ("eventsourcing/", "eventsourcing"),
    ("psycopg_pool/", "psycopg (pool)"),
    ("psycopg/", "psycopg"),
    ("sqlite3/", "sqlite3"),
    ("httpx/", "httpx/httpcore/h11"),
    ("httpcore/", "httpx/httpcore/h11"),
    ("h11/", "httpx/httpcore/h11"),
    ("dramatiq/", "dramatiq"),
    ("redis/", "redis client"),
    ("pika/", "pika (RabbitMQ client)"),
    ("uvicorn/", "uvicorn/starlette/anyio"),
    ("starlette/", "uvicorn/starlette/anyio"),
    ("anyio/", "uvicorn/starlette/anyio"),
    ("asyncio/", "asyncio"),
    ("jsonschema", "jsonschema"),
    ("referencing/", "jsonschema"),
    ("json/", "json"),
    ("logging/", "logging"),
    ("cryptography/", "cryptography"),
    ("prometheus_client/", "prometheus_client"),
    ("ssl.py", "ssl"),
    ("socket.py", "socket"),
    ("selectors.py", "socket"),
    ("threading.py", "threading (locks, waits)"),
    ("queue.py", "threading (locks, waits)"),
    ("concurrent/", "threading (locks, waits)"),
    ("uuid.py", "uuid"),
    ("datetime", "datetime"),
    ("copy.py", "copy"),
    ("dataclasses.py", "dataclasses"),
    ("typing.py", "typing"),
)


def available() -> bool:
    return PY_SPY.exists() or shutil.which("py-spy") is not None


def record(pid: int, out: Path, seconds: float, rate: int = 50) -> subprocess.Popen[bytes]:
    """Start ``py-spy record`` on ``pid`` for ``seconds``; wait on the returned process."""
    program = str(PY_SPY) if PY_SPY.exists() else "py-spy"
    return subprocess.Popen(
        [
            program,
            "record",
            "--nonblocking",
            "--gil",
            "--threads",
            "--format",
            "raw",
            "-r",
            str(rate),
            "-d",
            str(int(seconds)),
            "-o",
            str(out),
            "--pid",
            str(pid),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def parse(lines: Iterable[str]) -> list[tuple[str, list[tuple[str, str]], int]]:
    """Raw py-spy lines -> (thread name, [(function, file)] root first, samples)."""
    stacks = []
    for line in lines:
        line = line.rstrip("\n")
        if not line or " " not in line:
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        parts = stack.split(";")
        thread = parts[0]
        if thread.startswith("thread (") and ": " in thread:
            thread = thread.split(": ", 1)[1]
        elif thread.startswith("thread ("):
            thread = "(unnamed)"
        frames = []
        for part in parts[1:]:
            match = _FRAME.match(part)
            frames.append((match["func"], match["file"]) if match else (part, ""))
        stacks.append((_thread_kind(thread), frames, int(count)))
    return stacks


def _thread_kind(name: str) -> str:
    """Group numbered threads: ``Thread-12 (_run)`` -> ``Thread-* (_run)``."""
    return re.sub(r"-\d+", "-*", name)


def area_of(file: str) -> str:
    for prefix, area in AREAS:
        if prefix in file:
            return area
    return "other (stdlib, C)" if file else "unknown"


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    stacks = parse(path.read_text(errors="replace").splitlines())
    total = sum(count for _, _, count in stacks)
    if not total:
        return {"samples": 0}
    threads: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    ours_inclusive: Counter[str] = Counter()
    for thread, frames, count in stacks:
        threads[thread] += count
        if frames:
            func, file = frames[-1]
            areas[area_of(file)] += count
            self_time[f"{func} ({file})"] += count
        seen = set()
        for func, file in frames:
            key = f"{func} ({file})"
            if key in seen:
                continue
            seen.add(key)
            inclusive[key] += count
            if area_of(file).startswith("ours"):
                ours_inclusive[key] += count

    def pct(counter: Counter[str], n: int) -> list[list[Any]]:
        return [[name, round(100 * c / total, 1)] for name, c in counter.most_common(n)]

    return {
        "samples": total,
        "threads_pct": pct(threads, 10),
        "areas_pct": pct(areas, 20),
        "self_pct": pct(self_time, top),
        "inclusive_pct": pct(inclusive, top * 2),
        "ours_inclusive_pct": pct(ours_inclusive, top * 2),
    }
