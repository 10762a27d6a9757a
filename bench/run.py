"""Run the benchmark suite: ``.venv/bin/python -m bench.run [--quick] [--modes ...]
[--out bench/results/<timestamp>.json]``.

For each mode (embedded, postgres-redis, postgres-rabbitmq): start the installation as
separate processes, measure the baselines (raw httpx POSTs/s to the receiver, raw event
store saves/s on the same database), run the scenarios, check every delivery and every
attempt against the stores, tear it all down. Writes the JSON results and a summary
(printed, and saved beside the JSON as ``.txt``). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.client import Receiver
from bench.modes import MODES, POSTGRES, PYTHON, RABBITMQ, REDIS, ROOT, Mode
from bench.procs import Proc, Sampler
from bench.report import summary
from bench.scenarios import FULL, QUICK, STORES, Config, Ctx

RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts (under 2 minutes)")
    parser.add_argument("--modes", help=f"comma-separated, from {','.join(MODES)}")
    parser.add_argument("--out", type=Path, help="the JSON result file")
    parser.add_argument(
        "--profile", action="store_true", default=None, help="py-spy pass (default: full runs)"
    )
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    parser.add_argument("--only", help="comma-separated scenario names (debugging)")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a count of the suite (bench/scenarios.py Config), e.g. backlog_events=300",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="WEBROUND_X=VALUE",
        help="a setting for every process of the installation (experiments), repeatable",
    )
    args = parser.parse_args(argv)

    config = QUICK if args.quick else FULL
    if args.profile is not None:
        config.profile = args.profile
    for item in args.config:
        key, _, value = item.partition("=")
        current = getattr(config, key)  # an unknown field raises AttributeError
        setattr(
            config, key, json.loads(value) if isinstance(current, dict) else type(current)(value)
        )
    for item in args.config:
        key, _, value = item.partition("=")
        current = getattr(config, key)  # AttributeError names an unknown field
        setattr(
            config,
            key,
            type(current)(value) if not isinstance(current, dict) else json.loads(value),
        )
    default_modes = "embedded,postgres-redis" if args.quick else ",".join(MODES)
    modes = [m.strip() for m in (args.modes or default_modes).split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s): {', '.join(unknown)}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    overrides = dict(item.split("=", 1) for item in args.set)

    began = time.monotonic()
    results: dict[str, Any] = {
        "suite": "webround-webhooks bench",
        "started": stamp,
        "quick": config.quick,
        "command": " ".join([".venv/bin/python -m bench.run", *(argv or sys.argv[1:])]),
        "machine": describe_machine(),
        "config": dict(vars(config)),
        "overrides": overrides,
        "modes": {},
    }
    print(
        f"bench: {'quick' if config.quick else 'full'} run of {', '.join(modes)}; results -> {out}",
        flush=True,
    )
    workroot = Path(tempfile.mkdtemp(prefix="webround-bench-"))
    sampler = Sampler().start()
    port = free_port()
    receiver_proc = Proc(
        "receiver",
        [PYTHON, "-m", "bench.receiver", "--port", str(port)],
        {**os.environ, "PYTHONPATH": str(ROOT)},
        workroot / "receiver.log",
    ).start(ROOT)
    sampler.add(receiver_proc)
    receiver = Receiver(f"http://127.0.0.1:{port}")
    try:
        _wait_receiver(receiver, receiver_proc)
        for name in modes:
            print(f"\n== {name} ==", flush=True)
            results["modes"][name] = run_mode(
                name,
                config,
                workroot / name,
                sampler,
                receiver,
                port,
                stamp,
                out.parent,
                only,
                args.keep,
                overrides,
            )
            results["receiver_peak_rss_mb"] = round(receiver_proc.peak_rss_kb / 1024, 1)
            _write(out, results)
    finally:
        receiver_proc.stop()
        sampler.close()
        if not args.keep:
            shutil.rmtree(workroot, ignore_errors=True)
        else:
            print(f"bench: work directory kept: {workroot}")
    results["receiver_peak_rss_mb"] = round(receiver_proc.peak_rss_kb / 1024, 1)
    results["total_seconds"] = round(time.monotonic() - began, 1)
    _write(out, results)
    text = summary(results)
    out.with_suffix(".txt").write_text(text)
    print("\n" + text)
    print(f"bench: results in {out} and {out.with_suffix('.txt')}")
    failed = [
        f"{mode}/{name}"
        for mode, mr in results["modes"].items()
        for name, sr in mr.get("scenarios", {}).items()
        if isinstance(sr, dict) and (sr.get("error") or not _checks_ok(sr))
    ]
    failed += [mode for mode, mr in results["modes"].items() if mr.get("error")]
    if failed:
        print(f"bench: FAILED scenarios: {', '.join(failed)}")
        return 1
    return 0


def _checks_ok(result: dict[str, Any]) -> bool:
    if "check" in result:
        return bool(result["check"].get("ok"))
    return all(_checks_ok(v) for v in result.values() if isinstance(v, dict) and "check" in v)


def _write(path: Path, results: dict[str, Any]) -> None:
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


def _wait_receiver(receiver: Receiver, proc: Proc) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            receiver.count()
            return
        if not proc.alive:
            raise RuntimeError(f"the receiver exited:\n{proc.log_tail()}")
        time.sleep(0.1)
    raise RuntimeError("the receiver did not start")


def run_mode(
    name: str,
    config: Config,
    workdir: Path,
    sampler: Sampler,
    receiver: Receiver,
    receiver_port: int,
    stamp: str,
    results_dir: Path,
    only: set[str] | None,
    keep: bool,
    overrides: dict[str, str],
) -> dict[str, Any]:
    from bench.verify import DispatchLog
    from infrastructure.bootstrap import build
    from infrastructure.settings import Settings

    mode = Mode(name, workdir, free_port(), sampler, overrides=overrides)
    result: dict[str, Any] = {"scenarios": {}}
    services = None
    t0 = time.monotonic()
    try:
        mode.start()
        result["env"] = {
            k: v
            for k, v in mode.env.items()
            if k.startswith("WEBROUND_") and k != "WEBROUND_MASTER_KEY"
        }
        result["started_in_seconds"] = round(time.monotonic() - t0, 2)
        # The first store the documented way (`webround stores create`, as an operator
        # would), the others with the same two calls in this process (a CLI start each
        # would cost seconds of both cores).
        stores = {"warmup": mode.stores_create(["bench-warmup"])["bench-warmup"]}
        services = build(Settings.from_env(mode.env))
        stores.update(_create_stores(services, [s for s in STORES if s != "warmup"]))
        ctx = Ctx(
            mode=mode,
            config=config,
            log=DispatchLog(services),
            receiver=receiver,
            receiver_url=f"http://127.0.0.1:{receiver_port}",
            stores=stores,
            results_dir=results_dir,
            stamp=stamp,
        )
        payload = warm_up(ctx)
        result["baselines"] = ctx.baselines = baselines(ctx, payload, workdir)
        _say(name, "baselines", ctx.baselines)
        plan: list[tuple[str, Any]] = [
            ("idle", lambda: scenarios.idle(ctx)),
            ("api_idle", lambda: scenarios.api_idle(ctx)),
            ("throughput_1", lambda: scenarios.throughput(ctx, 1)),
            ("throughput_10", lambda: scenarios.throughput(ctx, 10, probe_api=True)),
        ]
        if config.profile and (name != "postgres-rabbitmq" or only):
            # The broker changes little on the hot path: profiled on the other two modes.
            plan.append(("profile", lambda: scenarios.profile(ctx)))
        plan += [
            ("latency", lambda: scenarios.latency(ctx)),
            ("fanout", lambda: scenarios.fanout(ctx)),
            ("rebuild", lambda: scenarios.rebuild(ctx)),
            ("backlog", lambda: scenarios.backlog(ctx)),
            ("failing", lambda: scenarios.failing(ctx)),
            ("scale_out", lambda: scenarios.scale_out(ctx)),
        ]
        for scenario, run in plan:
            if only and scenario not in only:
                continue
            started = time.monotonic()
            try:
                outcome = run()
            except Exception as error:
                outcome = {
                    "error": f"{type(error).__name__}: {error}",
                    "trace": traceback.format_exc()[-3000:],
                }
            outcome["took_seconds"] = round(time.monotonic() - started, 1)
            result["scenarios"][scenario] = outcome
            _say(name, scenario, outcome)
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {error}"
        result["trace"] = traceback.format_exc()[-3000:]
        print(f"bench: {name} failed: {result['error']}", flush=True)
    finally:
        if services is not None:
            with contextlib.suppress(Exception):
                services.close()
        every = [*mode.retired, *mode.procs.values()]
        peaks: dict[str, float] = {}
        for proc in every:
            proc.sample()
            key = proc.role
            peaks[key] = max(peaks.get(key, 0.0), round(proc.peak_rss_kb / 1024, 1))
        result["peak_rss_mb"] = peaks
        logs = {p.role: p.log_path for p in every}
        errors = _log_errors(logs)
        if errors:
            result["log_errors"] = errors
        result["exit_codes"] = mode.close()
        result["took_seconds"] = round(time.monotonic() - t0, 1)
        if not keep:
            mode.remove_files()
    return result


def _create_stores(services: Any, names: list[str]) -> dict[str, dict[str, str]]:
    """What `webround stores create` does (infrastructure/cli.py `_admin`), per name."""
    from uuid import UUID

    from domain.values import Actor

    created = {}
    for name in names:
        store = services.webhooks.create_store(f"bench-{name}", Actor.system())
        key = services.webhooks.create_api_key(UUID(store["storeId"]), None, Actor.system())
        created[name] = {"storeId": store["storeId"], "apiKey": key["apiKey"]}
    return created


def warm_up(ctx: Ctx) -> dict[str, Any]:
    """One webhook, one event, one delivery: the pipeline works end to end, and the
    request the receiver got is the payload of the HTTP baseline."""
    hook = ctx.receiver_url + "/hooks/warmup/0"
    api = ctx.api("warmup")
    try:
        api.create_webhook(hook)
        time.sleep(0.01)
        ctx.receiver.reset()
        for n in range(3):
            status = api.record(n, f"warmup-{ctx.stamp}")
            if status >= 300:
                raise RuntimeError(f"recording an event failed: {status}")
    finally:
        api.close()
    if ctx.receiver.wait_for(3, 60) < 3:
        raise RuntimeError("the warm-up deliveries did not arrive")
    last = ctx.receiver.last()
    ctx.receiver.reset()
    return last


def baselines(ctx: Ctx, payload: dict[str, Any], workdir: Path) -> dict[str, Any]:
    cfg = ctx.config
    payload_file = workdir / "payload.json"
    payload_file.write_text(json.dumps(payload))
    env = {**ctx.mode.env, "PYTHONPATH": str(ROOT)}
    http_run = subprocess.run(
        [
            PYTHON,
            "-m",
            "bench.http_baseline",
            "--url",
            f"{ctx.receiver_url}/raw/0",
            "--threads",
            str(cfg.http_threads),
            "--seconds",
            str(cfg.http_seconds),
            "--payload",
            str(payload_file),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    persist_run = subprocess.run(
        [PYTHON, "-m", "bench.persist_baseline", "--seconds", str(cfg.persist_seconds)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    ctx.receiver.reset()
    out: dict[str, Any] = {"payload_bytes": len(payload.get("body", ""))}
    for key, run in (("http", http_run), ("persistence", persist_run)):
        try:
            out[key] = json.loads(run.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            out[key] = {"error": (run.stderr or run.stdout)[-2000:]}
    return out


def _say(mode: str, scenario: str, outcome: dict[str, Any]) -> None:
    brief = {
        k: v
        for k, v in outcome.items()
        if not isinstance(v, dict | list) and not k.startswith("_") and k != "trace"
    }
    check = outcome.get("check")
    if isinstance(check, dict):
        brief["check_ok"] = check.get("ok")
    if "error" in outcome:
        brief["error"] = outcome["error"]
    print(f"  {mode} {scenario}: {json.dumps(brief, default=str)[:400]}", flush=True)


def _log_errors(logs: dict[str, Path], most: int = 5) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for role, path in logs.items():
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                if '"level": "ERROR"' in line or "Traceback" in line:
                    found.setdefault(role, [])
                    if len(found[role]) < most:
                        found[role].append(line[:500])
    return found


# --- the machine -----------------------------------------------------------------------


def code_fingerprint() -> str:
    """SHA-256 (first 12 hex) of the production sources measured: other people edit them
    meanwhile, so a result says which code it belongs to (no git needed)."""
    import hashlib

    digest = hashlib.sha256()
    for package in ("domain", "application", "projections", "infrastructure"):
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def describe_machine() -> dict[str, Any]:
    def cpu_model() -> str:
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        return platform.processor()

    def mem_total_mb() -> int | None:
        with contextlib.suppress(OSError, ValueError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
        return None

    versions: dict[str, Any] = {"python": platform.python_version()}
    for package in (
        "eventsourcing",
        "dramatiq",
        "psycopg",
        "httpx",
        "uvicorn",
        "starlette",
        "redis",
        "pika",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(POSTGRES, connect_timeout=5) as c:
            versions["postgresql"] = c.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            versions["postgresql_settings"] = {
                s: c.execute(f"SHOW {s}").fetchone()[0]  # type: ignore[index]
                for s in ("synchronous_commit", "fsync", "shared_buffers", "max_connections")
            }
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(REDIS)
        versions["redis"] = client.info("server")["redis_version"]
        client.close()
    with contextlib.suppress(Exception):
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ))
        props = connection._impl.server_properties  # type: ignore[attr-defined]
        versions["rabbitmq"] = (
            props.get("version", b"").decode()
            if isinstance(props.get("version"), bytes)
            else props.get("version")
        )
        connection.close()
    return {
        "code_fingerprint": code_fingerprint(),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_mb": mem_total_mb(),
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
        "note": "all processes (installation, receiver, load generator, servers) share these cores",
        "run_id": secrets.token_hex(3),
    }


if __name__ == "__main__":
    raise SystemExit(main())
