"""The human summary of a results file: one table (a row per figure, a column per mode)
and the targets of the issue, met or not. ``python -m bench.report RESULTS.json``
prints it again for a saved run."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = tuple[str, Callable[[dict[str, Any]], Any]]


def get(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def num(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}{suffix}"
    return str(value)


def _s(mode: dict[str, Any], path: str) -> Any:
    return get(mode.get("scenarios", {}), path)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _ms(mode: dict[str, Any], path: str) -> str:
    stats = _s(mode, path) or {}
    return f"{num(stats.get('p50'), 1)} / {num(stats.get('p95'), 1)} / {num(stats.get('p99'), 1)}"


def _check(mode: dict[str, Any], path: str) -> str:
    result = _s(mode, path)
    if not isinstance(result, dict):
        return "-"
    if "error" in result:
        return "ERROR"
    check = result.get("check") or {}
    if not check:
        return "-"
    return "ok" if check.get("ok") else "MISSING"


def _max_rss(mode: dict[str, Any]) -> Any:
    peaks = _s(mode, "backlog.peak_rss_mb") or {}
    return max(peaks.values()) if peaks else None


def _join(mode: dict[str, Any], *paths: str, digits: int = 0, root: bool = False) -> str:
    """Several figures as ``a / b / c``: scenario paths, or paths from the mode's root."""
    return " / ".join(num(get(mode, p) if root else _s(mode, p), digits) for p in paths)


def _and_pct(mode: dict[str, Any], value: str, share: str) -> str:
    return f"{num(_s(mode, value))} ({_pct(_s(mode, share))})"


ROWS: list[Row] = [
    ("BASELINES", lambda m: ""),
    ("raw httpx POST/s (16 threads)", lambda m: num(get(m, "baselines.http.per_second"))),
    (
        "  its client CPU ms per POST",
        lambda m: num(get(m, "baselines.http.client_cpu_ms_per_post"), 3),
    ),
    (
        "  its latency p50 / p95 / p99 ms",
        lambda m: _join(
            m,
            *(f"baselines.http.latency_ms.{p}" for p in ("p50", "p95", "p99")),
            digits=1,
            root=True,
        ),
    ),
    (
        "raw saves/s, 1 aggregate per save",
        lambda m: num(get(m, "baselines.persistence.single.saves_per_second")),
    ),
    (
        "raw events/s, 100 per save",
        lambda m: num(get(m, "baselines.persistence.batched.events_per_second")),
    ),
    ("(1) SUSTAINED THROUGHPUT", lambda m: ""),
    ("1 endpoint: deliveries/s", lambda m: num(_s(m, "throughput_1.deliveries_per_second"))),
    ("  ratio to raw httpx (target >= 45%)", lambda m: _pct(_s(m, "throughput_1.ratio_to_http"))),
    ("  API commands/s (4 clients)", lambda m: num(_s(m, "throughput_1.api.commands_per_second"))),
    (
        "  API ratio to raw single saves",
        lambda m: _pct(_s(m, "throughput_1.api.ratio_to_single_saves")),
    ),
    ("  every attempt recorded", lambda m: _check(m, "throughput_1")),
    ("10 endpoints: deliveries/s", lambda m: num(_s(m, "throughput_10.deliveries_per_second"))),
    ("  ratio to raw httpx (target >= 60%)", lambda m: _pct(_s(m, "throughput_10.ratio_to_http"))),
    ("  steady state (10-90%) ratio", lambda m: _pct(_s(m, "throughput_10.steady_ratio_to_http"))),
    ("  every attempt recorded", lambda m: _check(m, "throughput_10")),
    (
        "  cores busy: ours / whole machine",
        lambda m: _join(
            m, "throughput_10.cpu.cores_busy_ours", "throughput_10.cpu.cores_busy_machine", digits=2
        ),
    ),
    (
        "  CPU ms per delivery: pipeline / with API",
        lambda m: _join(
            m,
            *(f"throughput_10.cpu_per_delivery.{k}" for k in ("pipeline_ms", "with_api_ms")),
            digits=2,
        ),
    ),
    (
        "  ... as multiples of the raw POST (target <= 2)",
        lambda m: _join(
            m,
            *(f"throughput_10.cpu_per_delivery.{k}" for k in ("pipeline_x_raw", "with_api_x_raw")),
            digits=2,
        ),
    ),
    ("(2) LATENCY occurredAt -> receipt", lambda m: ""),
    ("100/s: p50 / p95 / p99 ms", lambda m: _ms(m, "latency.100.latency.end_to_end_ms")),
    (
        "  pick-up (occurred -> scheduled) ms",
        lambda m: _ms(m, "latency.100.latency.stages_ms.occurred_to_scheduled"),
    ),
    (
        "  send (scheduled -> received) ms",
        lambda m: _ms(m, "latency.100.latency.stages_ms.scheduled_to_received"),
    ),
    ("  achieved commands/s", lambda m: num(_s(m, "latency.100.achieved_commands_per_second"))),
    ("  every attempt recorded", lambda m: _check(m, "latency.100")),
    ("300/s: p50 / p95 / p99 ms", lambda m: _ms(m, "latency.300.latency.end_to_end_ms")),
    (
        "  pick-up (occurred -> scheduled) ms",
        lambda m: _ms(m, "latency.300.latency.stages_ms.occurred_to_scheduled"),
    ),
    (
        "  send (scheduled -> received) ms",
        lambda m: _ms(m, "latency.300.latency.stages_ms.scheduled_to_received"),
    ),
    ("  achieved commands/s", lambda m: num(_s(m, "latency.300.achieved_commands_per_second"))),
    ("  every attempt recorded", lambda m: _check(m, "latency.300")),
    ("(3) FAN-OUT 1 event -> 100 endpoints", lambda m: ""),
    ("all received p50 ms", lambda m: num(_s(m, "fanout.all_received_ms.p50"))),
    ("all recorded p50 ms", lambda m: num(_s(m, "fanout.all_recorded_ms.p50"))),
    (
        "deliveries/s (p50), ratio to httpx",
        lambda m: _and_pct(m, "fanout.deliveries_per_second_p50", "fanout.ratio_to_http"),
    ),
    ("  every attempt recorded", lambda m: _check(m, "fanout")),
    ("(4) BACKLOG", lambda m: ""),
    ("pending deliveries", lambda m: num(_s(m, "backlog.deliveries"))),
    (
        "drain deliveries/s, ratio to httpx",
        lambda m: _and_pct(m, "backlog.drain_deliveries_per_second", "backlog.ratio_to_http"),
    ),
    ("highest peak RSS MB (target <= 300)", lambda m: num(_max_rss(m), 1)),
    ("  every attempt recorded", lambda m: _check(m, "backlog")),
    ("(5) FAILING ENDPOINT beside a healthy one", lambda m: ""),
    ("healthy p50 / p95 / p99 ms", lambda m: _ms(m, "failing.latency.end_to_end_ms")),
    (
        "  p99 vs latency scenario",
        lambda m: num(_s(m, "failing.healthy_vs_latency_scenario.p99_ratio"), 2, "x"),
    ),
    (
        "failing: POSTs / recorded / held",
        lambda m: _join(
            m,
            *(
                f"failing.failing_endpoint.{k}"
                for k in ("posts_received", "attempts_recorded", "held_by_circuit_breaker")
            ),
        ),
    ),
    ("  every attempt recorded", lambda m: _check(m, "failing")),
    ("(6) REBUILD (all read models)", lambda m: ""),
    ("events/s (target >= 5,000)", lambda m: num(_s(m, "rebuild.events_per_second"))),
    ("(8) SCALE-OUT: 1 vs 2 dispatchers, 2 workers", lambda m: ""),
    (
        "deliveries/s: 1 / 2 dispatchers",
        lambda m: _join(
            m,
            "scale_out.one_dispatcher.deliveries_per_second",
            "scale_out.two_dispatchers.deliveries_per_second",
        ),
    ),
    (
        "CPU ms per delivery: 1 / 2 dispatchers",
        lambda m: _join(
            m,
            "scale_out.one_dispatcher.cpu_per_delivery.pipeline_ms",
            "scale_out.two_dispatchers.cpu_per_delivery.pipeline_ms",
            digits=2,
        ),
    ),
    (
        "  ratio 2 / 1 (target <= 1)",
        lambda m: num(_s(m, "scale_out.cpu_per_delivery_ratio_two_to_one"), 2),
    ),
    ("  every attempt recorded", lambda m: _check(m, "scale_out")),
    ("(7) API COMMAND LATENCY p50 / p99 ms", lambda m: ""),
    ("  cores ours, nothing to do (target <= 0.02)", lambda m: num(_s(m, "idle.cores_ours"), 3)),
    (
        "  cores ours, probe of 20 commands/s",
        lambda m: num(_s(m, "api_idle.cpu.cores_busy_ours"), 2),
    ),
    (
        "idle (probe, 20/s)",
        lambda m: _join(m, "api_idle.latency_ms.p50", "api_idle.latency_ms.p99", digits=1),
    ),
    (
        "under 10-endpoint load (probe)",
        lambda m: _join(
            m,
            *(f"throughput_10.api_probe_under_load.latency_ms.{p}" for p in ("p50", "p99")),
            digits=1,
        ),
    ),
    (
        "at 300 events/s offered",
        lambda m: _join(
            m, "latency.300.api.latency_ms.p50", "latency.300.api.latency_ms.p99", digits=1
        ),
    ),
]


def targets(mode: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """Issue #13's targets (bench/README.md), each met, not met, or not measured."""
    ratio10 = _s(mode, "throughput_10.ratio_to_http")
    recorded = _s(mode, "throughput_10.check.ok")
    ratio1 = _s(mode, "throughput_1.ratio_to_http")
    p50 = _s(mode, "latency.100.latency.end_to_end_ms.p50")
    p99 = _s(mode, "latency.100.latency.end_to_end_ms.p99")
    p99_300 = _s(mode, "latency.300.latency.end_to_end_ms.p99")
    idle = _s(mode, "idle.cores_ours")
    cpu = _s(mode, "throughput_10.cpu_per_delivery.pipeline_x_raw")
    rss = _max_rss(mode)
    drained = _s(mode, "backlog.check.ok")
    rebuild = _s(mode, "rebuild.events_per_second")

    def at_most(value: float | None, bound: float) -> bool | None:
        return None if value is None else value <= bound

    def at_least(value: float | None, bound: float) -> bool | None:
        return None if value is None else value >= bound

    return [
        (
            "10 endpoints >= 60% of raw httpx, every attempt recorded",
            None if ratio10 is None else ratio10 >= 0.6 and bool(recorded),
            f"{_pct(ratio10)}, recorded: {num(recorded)}",
        ),
        ("1 endpoint >= 45% of raw httpx", at_least(ratio1, 0.45), _pct(ratio1)),
        ("latency at 100/s p50 <= 20 ms", at_most(p50, 20), f"{num(p50, 1)} ms"),
        ("latency at 100/s p99 <= 100 ms", at_most(p99, 100), f"{num(p99, 1)} ms"),
        ("latency at 300/s p99 <= 250 ms", at_most(p99_300, 250), f"{num(p99_300, 1)} ms"),
        ("idle <= 0.02 cores", at_most(idle, 0.02), f"{num(idle, 3)} cores"),
        ("CPU per delivery <= 2x the raw POST", at_most(cpu, 2.0), f"{num(cpu, 2)}x"),
        (
            "backlog drains, no process above 300 MB",
            None if rss is None else rss <= 300 and bool(drained),
            f"{num(rss, 1)} MB, drained: {num(drained)}",
        ),
        ("rebuild >= 10,000 events/s", at_least(rebuild, 10000), f"{num(rebuild)} events/s"),
    ]


def summary(results: dict[str, Any]) -> str:
    modes = results.get("modes", {})
    names = list(modes)
    machine = results.get("machine", {})
    versions = machine.get("versions", {})
    lines = [
        f"Webround Webhooks bench - {'quick' if results.get('quick') else 'full'} run "
        f"{results.get('started')} ({results.get('total_seconds', '?')} s), "
        f"code {machine.get('code_fingerprint')}",
        f"machine: {machine.get('nproc')} cores ({machine.get('cpu_model')}), "
        f"{machine.get('memory_mb')} MB, Python {versions.get('python')}, "
        f"PostgreSQL {versions.get('postgresql')}, Redis {versions.get('redis')}, "
        f"RabbitMQ {versions.get('rabbitmq')}; load at start {machine.get('loadavg_at_start')}",
        "",
    ]
    width = max(len(label) for label, _ in ROWS) + 2
    col = 28
    lines.append("".ljust(width) + "".join(n.rjust(col) for n in names))
    for label, cell in ROWS:
        values = []
        for n in names:
            try:
                values.append(str(cell(modes[n])))
            except Exception:
                values.append("?")
        if all(v == "" for v in values):
            lines.append(label)
        else:
            lines.append(label.ljust(width) + "".join(v.rjust(col) for v in values))
    peaks = {n: modes[n].get("peak_rss_mb", {}) for n in names}
    lines.append(
        "peak RSS MB per process (whole mode run): "
        + "; ".join(
            f"{n}: " + ", ".join(f"{role} {mb:.0f}" for role, mb in p.items())
            for n, p in peaks.items()
        )
    )
    lines.append(f"receiver peak RSS MB: {results.get('receiver_peak_rss_mb')}")
    lines.append("")
    lines.append("TARGETS")
    for n in names:
        for label, ok, detail in targets(modes[n]):
            mark = "-" if ok is None else ("met" if ok else "NOT MET")
            lines.append(f"  {n:<18} {label:<55} {mark:<8} {detail}")
    errors = [
        f"  {n}/{s}: {r.get('error')}"
        for n in names
        for s, r in modes[n].get("scenarios", {}).items()
        if isinstance(r, dict) and r.get("error")
    ] + [f"  {n}: {modes[n]['error']}" for n in names if modes[n].get("error")]
    if errors:
        lines.append("")
        lines.append("ERRORS")
        lines.extend(errors)
    profiles = []
    for n in names:
        prof = _s(modes[n], "profile.profiles") or {}
        for role, p in prof.items():
            if not p.get("samples"):
                continue
            areas = ", ".join(f"{a} {v}%" for a, v in p.get("areas_pct", [])[:6])
            profiles.append(f"  {n}/{role} ({p['samples']} samples): {areas}")
    if profiles:
        lines.append("")
        lines.append("PROFILE (py-spy, on-CPU samples by area of the leaf frame)")
        lines.extend(profiles)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(summary(json.loads(Path(sys.argv[1]).read_text())))
