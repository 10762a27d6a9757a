"""The scenarios of the suite, run against one installation (a `Mode`), each returning a
JSON-ready dict. Every scenario uses its own store (created with ``webround stores
create``), so no scenario's deliveries are counted in another's.

Times: ``occurredAt`` is stamped by the API process as it records the event (just
before the commit), arrivals by the receiver process, attempt records by the worker
process (the `DeliveryAttempted` event's timestamp, just before its group commit) —
all from the one machine clock.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import profiling
from bench.client import Api, Receiver, Sent, closed_loop, paced
from bench.modes import Mode
from bench.procs import CpuMeter
from bench.stats import parse_iso, rate, ratio, steady_rate, summarize
from bench.verify import DeliveryRecord, DispatchLog, check


@dataclass
class Config:
    quick: bool
    throughput_events: dict[int, int]  # endpoints -> events
    client_threads: int = 4
    latency_seconds: dict[int, float] = field(default_factory=lambda: {100: 10.0, 300: 5.0})
    paced_threads: int = 8
    fanout_endpoints: int = 100
    fanout_events: int = 6
    backlog_events: int = 2500
    backlog_webhooks: int = 20
    failing_rate: int = 100
    failing_seconds: float = 10.0
    profile_seconds: float = 15.0
    profile_rate: float = 25.0  # events/s to the 10 endpoints while profiling
    profile: bool = True
    http_seconds: float = 5.0
    http_threads: int = 16  # WEBROUND_WORKER_THREADS' default: the worker's concurrency
    persist_seconds: float = 3.0
    probe_rate: float = 20.0
    probe_idle_seconds: float = 4.0
    idle_seconds: float = 60.0  # nothing at all to do: what the installation costs
    scale_events: int = 100  # per store of each scale-out run (x 2 webhooks x 8 stores)
    settle_timeout: float = 180.0


FULL = Config(quick=False, throughput_events={1: 1000, 10: 500})
QUICK = Config(
    quick=True,
    throughput_events={1: 200, 10: 100},
    latency_seconds={100: 3.0, 300: 1.5},
    fanout_events=2,
    backlog_events=100,  # x 20 webhooks = 2,000 deliveries
    failing_seconds=2.5,
    profile=False,
    http_seconds=2.0,
    persist_seconds=1.0,
    probe_idle_seconds=1.0,
    idle_seconds=20.0,
    scale_events=25,
    settle_timeout=90.0,
)

SCALE_STORES = 8  # stores of each scale-out run: they fall into several partitions

STORES = (
    "warmup",
    "throughput-1",
    "throughput-10",
    "probe",
    "latency",
    "fanout",
    "backlog",
    "failing",
    *(f"scale-{run}-{n}" for run in ("one", "two") for n in range(SCALE_STORES)),
)


@dataclass
class Ctx:
    mode: Mode
    config: Config
    log: DispatchLog
    receiver: Receiver
    receiver_url: str
    stores: dict[str, dict[str, str]]
    results_dir: Path
    stamp: str
    baselines: dict[str, Any] = field(default_factory=dict)
    latency_reference: dict[str, Any] = field(default_factory=dict)

    def api(self, store: str) -> Api:
        return Api(self.mode.api_url, self.stores[store]["apiKey"])

    def key(self, store: str) -> str:
        return self.stores[store]["apiKey"]

    def store_id(self, store: str) -> str:
        return self.stores[store]["storeId"]

    def cpu(self) -> CpuMeter:
        procs = dict(self.mode.procs)
        return CpuMeter(lambda: procs)

    def http_rate(self) -> float | None:
        http = self.baselines.get("http") or {}
        return http.get("per_second")


# --- shared steps ----------------------------------------------------------------------


def create_webhooks(ctx: Ctx, store: str, paths: list[str]) -> list[str]:
    api = ctx.api(store)
    try:
        ids = [api.create_webhook(ctx.receiver_url + path) for path in paths]
    finally:
        api.close()
    time.sleep(0.01)  # events must come after the webhooks (creation timestamps)
    return ids


def settle(
    ctx: Ctx,
    since: int,
    stores: set[str],
    expected: int,
    arrivals: Callable[[], list[list[Any]]],
    healthy: set[str] | None = None,
    timeout: float | None = None,
    want: int | None = None,
) -> tuple[dict[str, DeliveryRecord], list[list[Any]], dict[str, Any]]:
    """Wait until every expected delivery has an attempt recorded (cheap polling), then
    decode and cross-check against the receiver; re-check until it holds or time runs
    out. A scenario whose check fails is reported as failed."""
    timeout = timeout or ctx.config.settle_timeout
    deadline = time.monotonic() + timeout
    ctx.log.wait_for_attempts(since, expected if want is None else want, timeout)
    while True:
        deliveries = ctx.log.deliveries(since, stores)
        seen = arrivals()
        checked = check(deliveries, seen, expected, healthy)
        if checked["ok"] or time.monotonic() > deadline:
            return deliveries, seen, checked
        time.sleep(1.0)


def first_arrivals(arrivals: list[list[Any]]) -> dict[str, list[Any]]:
    """Delivery id -> its first arrival row ``[t, path, occurredAt, webhookId, id]``."""
    first: dict[str, list[Any]] = {}
    for row in arrivals:
        if row[4] and row[4] not in first:
            first[row[4]] = row
    return first


def latency_breakdown(
    deliveries: dict[str, DeliveryRecord], arrivals: list[list[Any]]
) -> dict[str, Any]:
    """occurredAt -> arrival (end to end), split into: occurredAt -> delivery scheduled
    (the dispatcher's pick-up), scheduled -> arrival (schedule, claim, broker, worker,
    sign, POST), arrival -> attempt recorded (answer and group commit). Milliseconds."""
    first = first_arrivals(arrivals)
    total, pickup, send, record = [], [], [], []
    for delivery_id, row in first.items():
        if not row[2]:
            continue
        occurred = parse_iso(row[2])
        total.append((row[0] - occurred) * 1000)
        d = deliveries.get(delivery_id)
        if d is None:
            continue
        pickup.append((d.scheduled_at - occurred) * 1000)
        send.append((row[0] - d.scheduled_at) * 1000)
        if d.attempts:
            record.append((d.attempts[0]["recorded_at"] - row[0]) * 1000)
    return {
        "end_to_end_ms": summarize(total),
        "stages_ms": {
            "occurred_to_scheduled": summarize(pickup),
            "scheduled_to_received": summarize(send),
            "received_to_recorded": summarize(record),
        },
    }


def api_summary(sent: list[Sent]) -> dict[str, Any]:
    ok = [s for s in sent if 200 <= s.status < 300]
    span = (max(s.ended for s in sent) - min(s.began for s in sent)) if sent else 0.0
    return {
        "commands": len(sent),
        "failed": len(sent) - len(ok),
        "commands_per_second": rate(len(ok), span),
        "latency_ms": summarize([s.latency_ms for s in ok]),
    }


class Probe:
    """Commands at a fixed low rate on a store without webhooks, in a background thread:
    the API's command latency while something else loads the system."""

    def __init__(self, ctx: Ctx, rate_per_second: float) -> None:
        self.ctx = ctx
        self.rate = rate_per_second
        self.sent: list[Sent] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probe", daemon=True)

    def _run(self) -> None:
        api = self.ctx.api("probe")
        n, start = 0, time.time()
        try:
            while not self._stop.is_set():
                due = start + n / self.rate
                wait = due - time.time()
                if wait > 0 and self._stop.wait(wait):
                    return
                began = time.time()
                try:
                    status = api.record(n, f"probe-{self.ctx.stamp}")
                except Exception:
                    status = 0
                self.sent.append(Sent(due, began, time.time(), status))
                n += 1
        finally:
            api.close()

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


# --- (1) sustained throughput, (7) API latency under load, and the profile -------------


def throughput(ctx: Ctx, endpoints: int, probe_api: bool = False) -> dict[str, Any]:
    store = f"throughput-{endpoints}"
    events = ctx.config.throughput_events[endpoints]
    create_webhooks(ctx, store, [f"/hooks/t{endpoints}/{i}" for i in range(endpoints)])
    ctx.receiver.reset()
    since = ctx.log.head()
    cpu = ctx.cpu()
    cpu.start()
    started = time.time()
    probe = Probe(ctx, ctx.config.probe_rate) if probe_api else None
    if probe:
        probe.__enter__()
    try:
        sent = closed_loop(
            ctx.mode.api_url,
            ctx.key(store),
            events,
            ctx.config.client_threads,
            f"t{endpoints}-{ctx.stamp}",
        )
    finally:
        if probe:
            probe.__exit__()
    ok = sum(1 for s in sent if 200 <= s.status < 300)
    expected = ok * endpoints
    deliveries, arrivals, checked = settle(
        ctx, since, {ctx.store_id(store)}, expected, ctx.receiver.arrivals
    )
    usage = cpu.stop()
    recorded = [a["recorded_at"] for d in deliveries.values() for a in d.attempts]
    ended = max(recorded) if recorded else time.time()
    per_second = rate(len(deliveries), ended - started)
    steady = steady_rate(recorded)
    http = ctx.http_rate()
    out: dict[str, Any] = {
        "endpoints": endpoints,
        "events": events,
        "client_threads": ctx.config.client_threads,
        "check": checked,
        "seconds": round(ended - started, 2),
        "deliveries_per_second": per_second,
        "steady_deliveries_per_second": steady,
        "ratio_to_http": ratio(per_second, http),
        "steady_ratio_to_http": ratio(steady, http),
        "api": api_summary(sent),
        "latency": latency_breakdown(deliveries, arrivals),
        "cpu": usage,
        "cpu_ms_per_delivery": _cpu_per(usage, len(deliveries)),
        "cpu_per_delivery": cpu_yardstick(ctx, usage, len(deliveries)),
    }
    persist = (ctx.baselines.get("persistence") or {}).get("single") or {}
    out["api"]["ratio_to_single_saves"] = ratio(
        out["api"]["commands_per_second"], persist.get("saves_per_second")
    )
    if probe:
        out["api_probe_under_load"] = api_summary(probe.sent)
    return out


def idle(ctx: Ctx) -> dict[str, Any]:
    """Nothing at all to do, for ``idle_seconds``: the CPU every process of the
    installation and its PostgreSQL backends use (the bench process only sleeps). The
    target: at most 0.02 cores in all."""
    time.sleep(2.0)  # whatever the warm-up left behind settles
    cpu = ctx.cpu()
    cpu.start()
    time.sleep(ctx.config.idle_seconds)
    usage = cpu.stop()
    seconds = usage["cpu_seconds"]
    assert isinstance(seconds, dict)
    ours = sum(v for k, v in seconds.items() if "all users" not in k and k != "bench")
    wall = float(usage["wall_seconds"])  # type: ignore[arg-type]
    return {
        "seconds": ctx.config.idle_seconds,
        "cores_ours": round(ours / wall, 4) if wall else None,
        "cpu": usage,
    }


def scale_out(ctx: Ctx) -> dict[str, Any]:
    """(8) One dispatcher vs two, with two workers, on the same machine: the same load
    (events to 8 stores with 2 webhooks each, in parallel) once with the mode's one
    dispatcher and once after a second has joined and the partitions are shared. CPU per
    delivery per role, and the ratio of the two runs' totals (production modes only)."""
    mode = ctx.mode
    if mode.embedded:
        return {"skipped": "embedded mode runs one process"}
    mode.start_role("worker", name="worker-2")
    try:
        one = _scale_run(ctx, "one")
        mode.start_role("dispatcher", name="dispatcher-2")
        _wait_for_owners(ctx, 2)
        two = _scale_run(ctx, "two")
    finally:
        for name in ("dispatcher-2", "worker-2"):
            if name in mode.procs:
                mode.stop_role(name)
    total_one = one["cpu_per_delivery"]["pipeline_ms"] if one.get("cpu_per_delivery") else None
    total_two = two["cpu_per_delivery"]["pipeline_ms"] if two.get("cpu_per_delivery") else None
    return {
        "one_dispatcher": one,
        "two_dispatchers": two,
        "cpu_per_delivery_ratio_two_to_one": ratio(total_two, total_one),
        "check": _merge_checks([one["check"], two["check"]]),
    }


def _wait_for_owners(ctx: Ctx, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = ctx.mode.cli("dispatchers", "--json", timeout=60)
        if done.returncode == 0:
            owners = {
                lease["owner"]
                for lease in json.loads(done.stdout)
                if lease["name"].startswith("partition:") and lease["owner"]
            }
            if len(owners) >= count:
                return
        time.sleep(1.0)
    raise RuntimeError(f"the partitions were not shared by {count} dispatchers in {timeout} s")


def _scale_run(ctx: Ctx, run: str) -> dict[str, Any]:
    stores = [f"scale-{run}-{n}" for n in range(SCALE_STORES)]
    for store in stores:
        create_webhooks(ctx, store, [f"/hooks/scale-{run}/{store}/{i}" for i in range(2)])
    ctx.receiver.reset()
    since = ctx.log.head()
    cpu = ctx.cpu()
    cpu.start()
    started = time.time()
    sent: list[Any] = []
    lock = threading.Lock()

    def load(store: str) -> None:
        got = closed_loop(
            ctx.mode.api_url, ctx.key(store), ctx.config.scale_events, 1, f"{store}-{ctx.stamp}"
        )
        with lock:
            sent.extend(got)

    threads = [threading.Thread(target=load, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ok = sum(1 for s in sent if 200 <= s.status < 300)
    deliveries, _, checked = settle(
        ctx, since, {ctx.store_id(s) for s in stores}, ok * 2, ctx.receiver.arrivals
    )
    usage = cpu.stop()
    recorded = [a["recorded_at"] for d in deliveries.values() for a in d.attempts]
    ended = max(recorded) if recorded else time.time()
    return {
        "deliveries": len(deliveries),
        "deliveries_per_second": rate(len(deliveries), ended - started),
        "ratio_to_http": ratio(rate(len(deliveries), ended - started), ctx.http_rate()),
        "check": checked,
        "cpu": usage,
        "cpu_ms_per_delivery": _cpu_per(usage, len(deliveries)),
        "cpu_per_delivery": cpu_yardstick(ctx, usage, len(deliveries)),
    }


def api_idle(ctx: Ctx) -> dict[str, Any]:
    """(7, reference) The probe alone on an otherwise idle system; its CPU use is also
    what the installation costs while (almost) nothing happens."""
    cpu = ctx.cpu()
    cpu.start()
    with Probe(ctx, ctx.config.probe_rate) as probe:
        time.sleep(ctx.config.probe_idle_seconds)
    return {**api_summary(probe.sent), "cpu": cpu.stop()}


def profile(ctx: Ctx) -> dict[str, Any]:
    """The 10-endpoint load again, for ``profile_seconds``, with py-spy attached to every
    process of the installation; the raw profiles go to the results directory."""
    if not profiling.available():
        return {"skipped": "py-spy is not installed (.venv/bin/pip install py-spy)"}
    store = "throughput-10"
    seconds = ctx.config.profile_seconds
    spies = {}
    files = {}
    for role, pid in ctx.mode.pids().items():
        path = ctx.results_dir / f"{ctx.stamp}-{ctx.mode.name}-{role}.pyspy.txt"
        files[role] = path
        spies[role] = profiling.record(pid, path, seconds + 2)
    # An offered rate near what the pipeline sustains, for the whole recording.
    since = ctx.log.head()
    cpu = ctx.cpu()
    cpu.start()
    sent = paced(
        ctx.mode.api_url,
        ctx.key(store),
        ctx.config.profile_rate,
        seconds + 1,
        ctx.config.paced_threads,
        f"prof-{ctx.stamp}",
    )
    for spy in spies.values():
        spy.wait(timeout=seconds + 60)
    ok = sum(1 for s in sent if 200 <= s.status < 300)
    ctx.log.wait_for_attempts(since, ok * 10, ctx.config.settle_timeout)
    out: dict[str, Any] = {
        "seconds": seconds,
        "offered_events_per_second": ctx.config.profile_rate,
        "events": ok,
        "cpu": cpu.stop(),
        "profiles": {},
    }
    for role, path in files.items():
        if path.exists():
            out["profiles"][role] = {"file": path.name, **profiling.summarize(path)}
        else:
            err = spies[role].stderr.read().decode()[-500:] if spies[role].stderr else ""
            out["profiles"][role] = {"error": err}
    return out


# --- (2) latency at a fixed offered rate ------------------------------------------------


def latency(ctx: Ctx) -> dict[str, Any]:
    store = "latency"
    create_webhooks(ctx, store, ["/hooks/lat/0"])
    out: dict[str, Any] = {}
    for offered, seconds in ctx.config.latency_seconds.items():
        run = _paced_run(ctx, store, offered, seconds, 1)
        run.pop("_deliveries")
        run.pop("_arrivals")
        out[str(offered)] = run
    ctx.latency_reference = out
    return out


def _paced_run(
    ctx: Ctx,
    store: str,
    offered: float,
    seconds: float,
    endpoints: int,
    healthy: set[str] | None = None,
) -> dict[str, Any]:
    ctx.receiver.reset()
    since = ctx.log.head()
    cpu = ctx.cpu()
    cpu.start()
    sent = paced(
        ctx.mode.api_url,
        ctx.key(store),
        offered,
        seconds,
        ctx.config.paced_threads,
        f"p{offered}-{store}-{ctx.stamp}",
    )
    ok = sum(1 for s in sent if 200 <= s.status < 300)
    deliveries, arrivals, checked = settle(
        ctx,
        since,
        {ctx.store_id(store)},
        ok * endpoints,
        ctx.receiver.arrivals,
        healthy,
        want=ok,  # with a failing endpoint, only the healthy deliveries all get attempts
    )
    usage = cpu.stop()
    if healthy is not None:
        ok_ids = {d for d, r in deliveries.items() if r.webhook_id in healthy}
        healthy_arrivals = [row for row in arrivals if row[4] in ok_ids]
    else:
        healthy_arrivals = arrivals
    api = api_summary(sent)
    span = max(s.due for s in sent) - min(s.due for s in sent) if sent else 0
    return {
        "offered_per_second": offered,
        "seconds": seconds,
        "check": checked,
        "achieved_commands_per_second": api["commands_per_second"],
        "generator_lateness_ms": summarize([s.lateness_ms for s in sent]),
        "offered_span_seconds": round(span, 2),
        "latency": latency_breakdown(deliveries, healthy_arrivals),
        "api": api,
        "cpu": usage,
        "cpu_ms_per_delivery": _cpu_per(usage, len(deliveries)),
        "_deliveries": deliveries,
        "_arrivals": arrivals,
    }


# --- (3) fan-out -----------------------------------------------------------------------


def fanout(ctx: Ctx) -> dict[str, Any]:
    store = "fanout"
    n = ctx.config.fanout_endpoints
    create_webhooks(ctx, store, [f"/hooks/fan/{i}" for i in range(n)])
    api = ctx.api(store)
    runs = []
    checks = []
    cpu = ctx.cpu()
    cpu.start()
    try:
        for k in range(ctx.config.fanout_events):
            ctx.receiver.reset()
            since = ctx.log.head()
            began = time.time()
            status = api.record(k, f"fan-{ctx.stamp}")
            if status >= 300:
                raise RuntimeError(f"the fan-out event was refused: {status}")
            deliveries, arrivals, checked = settle(
                ctx, since, {ctx.store_id(store)}, n, ctx.receiver.arrivals
            )
            checks.append(checked)
            first = first_arrivals(arrivals)
            occurred = parse_iso(next(iter(first.values()))[2]) if first else began
            received = sorted(row[0] for row in first.values())
            recorded = sorted(a["recorded_at"] for d in deliveries.values() for a in d.attempts)
            runs.append(
                {
                    "first_received_ms": (received[0] - occurred) * 1000 if received else None,
                    "all_received_ms": (received[-1] - occurred) * 1000 if received else None,
                    "all_recorded_ms": (recorded[-1] - occurred) * 1000 if recorded else None,
                }
            )
            time.sleep(0.3)
    finally:
        api.close()
    usage = cpu.stop()
    all_recorded = [r["all_recorded_ms"] for r in runs if r["all_recorded_ms"]]
    per_second = [n / (ms / 1000) for ms in all_recorded]
    median_rate = summarize(per_second)["p50"]
    return {
        "endpoints": n,
        "events": len(runs),
        "check": _merge_checks(checks),
        "first_received_ms": summarize(
            [r["first_received_ms"] for r in runs if r["first_received_ms"]]
        ),
        "all_received_ms": summarize([r["all_received_ms"] for r in runs if r["all_received_ms"]]),
        "all_recorded_ms": summarize(all_recorded),
        "deliveries_per_second_p50": median_rate,
        "ratio_to_http": ratio(median_rate, ctx.http_rate()),
        "cpu": usage,
    }


def _merge_checks(checks: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"ok": all(c["ok"] for c in checks)}
    for c in checks:
        for key, value in c.items():
            if key != "ok":
                merged[key] = merged.get(key, 0) + value
    return merged


# --- (4) backlog -----------------------------------------------------------------------


def backlog(ctx: Ctx) -> dict[str, Any]:
    """``backlog_events`` events x ``backlog_webhooks`` webhooks recorded while nothing
    delivers. Production: the dispatcher and the worker are stopped, the events recorded,
    the dispatcher started (it creates every delivery: that many *pending deliveries*),
    then the worker, which drains them. Embedded: ``webround serve`` is stopped, the events
    recorded through ``webround api`` on the same data, then ``serve`` started again: it
    fans out and drains at once (one process cannot hold deliveries without sending)."""
    cfg = ctx.config
    store = "backlog"
    webhooks = cfg.backlog_webhooks
    create_webhooks(ctx, store, [f"/hooks/bl/{i}" for i in range(webhooks)])
    mode = ctx.mode
    expected_events = cfg.backlog_events
    expected = expected_events * webhooks
    out: dict[str, Any] = {"events": expected_events, "webhooks": webhooks, "deliveries": expected}
    ctx.receiver.reset()
    since = ctx.log.head()
    if mode.embedded:
        mode.stop_role("serve")
        mode.start_role("api")
    else:
        mode.stop_role("worker")
        mode.stop_role("dispatcher")
    began = time.time()
    sent = closed_loop(
        mode.api_url, ctx.key(store), expected_events, cfg.client_threads, f"bl-{ctx.stamp}"
    )
    out["recording"] = api_summary(sent)
    out["recording"]["seconds"] = round(time.time() - began, 2)
    ok = sum(1 for s in sent if 200 <= s.status < 300)
    expected = ok * webhooks
    out["deliveries"] = expected
    cpu = ctx.cpu()
    if mode.embedded:
        mode.stop_role("api")
        start = time.time()
        mode.start_role("serve")
        cpu = ctx.cpu()
        cpu.start()
        out["note"] = "embedded: fan-out and drain run together in the one process"
    else:
        start = time.time()
        mode.start_role("dispatcher")
        scheduled = ctx.log.wait_for_scheduled(since, expected, cfg.settle_timeout)
        fanned = time.time()
        out["pending_before_worker"] = scheduled
        out["fanout_seconds"] = round(fanned - start, 2)
        out["fanout_deliveries_per_second"] = rate(scheduled, fanned - start)
        start = time.time()
        mode.start_role("worker")
        cpu = ctx.cpu()
        cpu.start()
    deliveries, _arrivals, checked = settle(
        ctx,
        since,
        {ctx.store_id(store)},
        expected,
        ctx.receiver.arrivals,
        timeout=max(cfg.settle_timeout, expected / 100),
    )
    usage = cpu.stop()
    recorded = [a["recorded_at"] for d in deliveries.values() for a in d.attempts]
    ended = max(recorded) if recorded else time.time()
    drain = rate(len([d for d in deliveries.values() if d.attempts]), ended - start)
    peak = {role: proc.peak_rss_kb for role, proc in mode.procs.items()}
    out.update(
        {
            "check": checked,
            "drain_seconds": round(ended - start, 2),
            "drain_deliveries_per_second": drain,
            "steady_deliveries_per_second": steady_rate(recorded),
            "ratio_to_http": ratio(drain, ctx.http_rate()),
            "peak_rss_mb": {role: round(kb / 1024, 1) for role, kb in peak.items()},
            "cpu": usage,
            "cpu_ms_per_delivery": _cpu_per(usage, len(deliveries)),
        }
    )
    return out


# --- (5) a failing endpoint beside a healthy one ---------------------------------------


def failing(ctx: Ctx) -> dict[str, Any]:
    store = "failing"
    good, bad = create_webhooks(ctx, store, ["/hooks/fh/0", "/fail/fb/0"])
    cfg = ctx.config
    run = _paced_run(ctx, store, cfg.failing_rate, cfg.failing_seconds, 2, healthy={good})
    deliveries: dict[str, DeliveryRecord] = run.pop("_deliveries")
    arrivals = run.pop("_arrivals")
    failing_deliveries = [d for d in deliveries.values() if d.webhook_id == bad]
    reference = ctx.latency_reference.get(str(cfg.failing_rate), {}).get("latency", {})
    ref = reference.get("end_to_end_ms", {})
    mine = run["latency"]["end_to_end_ms"]
    run.update(
        {
            "failing_endpoint": {
                "deliveries": len(failing_deliveries),
                "posts_received": sum(1 for row in arrivals if row[1].startswith("/fail")),
                "attempts_recorded": sum(len(d.attempts) for d in failing_deliveries),
                "held_by_circuit_breaker": sum(1 for d in failing_deliveries if not d.attempts),
            },
            "healthy_vs_latency_scenario": {
                "p50_ratio": ratio(mine.get("p50"), ref.get("p50")),
                "p99_ratio": ratio(mine.get("p99"), ref.get("p99")),
            },
        }
    )
    return run


# --- (6) projection rebuild ------------------------------------------------------------


def rebuild(ctx: Ctx) -> dict[str, Any]:
    cpu = ctx.cpu()
    cpu.start()
    began = time.monotonic()
    done = ctx.mode.cli("projections", "rebuild", "--all", timeout=900)
    wall = time.monotonic() - began
    usage = cpu.stop()
    if done.returncode != 0:
        return {"error": done.stderr[-2000:], "returncode": done.returncode}
    models = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        # "<name>  12,345 events  1.23 s  10,000 events/s"
        if len(parts) >= 6 and parts[2] == "events" and parts[4] == "s":
            models[parts[0]] = {
                "events": int(parts[1].replace(",", "")),
                "seconds": float(parts[3]),
            }
    events = sum(m["events"] for m in models.values())
    seconds = sum(m["seconds"] for m in models.values())
    for m in models.values():
        m["events_per_second"] = rate(m["events"], m["seconds"])
    per_second = rate(events, seconds)
    persist = (ctx.baselines.get("persistence") or {}).get("batched") or {}
    return {
        "models": models,
        "events": events,
        "seconds": round(seconds, 2),
        "wall_seconds_with_start": round(wall, 2),
        "events_per_second": per_second,
        "ratio_to_target_5000": ratio(per_second, 5000),
        "ratio_to_batched_saves": ratio(per_second, persist.get("events_per_second")),
        "cpu": usage,
    }


# Our processes that make deliveries happen (the API only records the store events).
_PIPELINE = (
    "dispatcher",
    "dispatcher-2",
    "worker",
    "worker-2",
    "serve",
    "postgres (ours)",
    "redis (all users)",
    "rabbitmq (all users)",
)


def cpu_yardstick(ctx: Ctx, usage: dict[str, Any], deliveries: int) -> dict[str, Any] | None:
    """CPU per delivery of every process of the pipeline (PostgreSQL and the broker
    included), without and with the API, in ms and as multiples of the raw POST's client
    CPU measured in the same run (issue #13: at most 2x)."""
    raw = ((ctx.baselines or {}).get("http") or {}).get("client_cpu_ms_per_post")
    seconds = usage.get("cpu_seconds") or {}
    if not deliveries or not seconds:
        return None
    pipeline = 1000 * sum(v for k, v in seconds.items() if k in _PIPELINE) / deliveries
    with_api = pipeline + 1000 * seconds.get("api", 0.0) / deliveries
    return {
        "pipeline_ms": round(pipeline, 3),
        "with_api_ms": round(with_api, 3),
        "raw_post_client_ms": raw,
        "pipeline_x_raw": round(pipeline / raw, 2) if raw else None,
        "with_api_x_raw": round(with_api / raw, 2) if raw else None,
    }


def _cpu_per(usage: dict[str, Any], deliveries: int) -> dict[str, float] | None:
    if not deliveries:
        return None
    return {
        key: round(1000 * seconds / deliveries, 3) for key, seconds in usage["cpu_seconds"].items()
    }
