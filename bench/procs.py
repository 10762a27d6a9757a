"""Processes under test: start, wait until ready, stop by PID; their memory (VmRSS,
VmHWM from /proc/<pid>/status) and CPU time (/proc/<pid>/stat), sampled in the
background. Only processes this suite started are ever signalled."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` line of /proc/<pid>/status (VmRSS, VmHWM), or None when gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (its threads included), or None."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, ValueError, IndexError):
        return None


def pids_named(*names: str) -> list[int]:
    """Processes whose command name (``comm``) is one of ``names``: the servers
    (postgres backends, redis-server, RabbitMQ's beam.smp), whose CPU we account too."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as comm:
                if comm.read().strip() in names:
                    found.append(int(entry))
        except OSError:
            continue
    return found


SERVERS = {"postgres": ("postgres",), "redis": ("redis-server",), "rabbitmq": ("beam.smp",)}


@dataclass
class Proc:
    """One process of ours: a role of the service, the receiver, a tool."""

    role: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    peak_rss_kb: int = 0  # the highest VmHWM seen
    cpu_at_exit: float = 0.0
    _log: object = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self, cwd: Path) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.popen = subprocess.Popen(
            list(self.argv), env=dict(self.env), cwd=cwd, stdout=log, stderr=subprocess.STDOUT
        )
        return self

    def sample(self) -> None:
        if self.alive:
            hwm = status_kb(self.pid, "VmHWM")
            if hwm:
                self.peak_rss_kb = max(self.peak_rss_kb, hwm)

    def cpu(self) -> float:
        if self.alive:
            return cpu_seconds(self.pid) or self.cpu_at_exit
        return self.cpu_at_exit

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return
            if not self.alive:
                raise RuntimeError(f"{self.role} exited:\n{self.log_tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.role}: no {text!r} within {timeout} s:\n{self.log_tail()}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (graceful: in-flight attempts are recorded), then SIGKILL."""
        if self.popen is None:
            return None
        if self.alive:
            self.sample()
            self.cpu_at_exit = cpu_seconds(self.pid) or self.cpu_at_exit
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        log = self._log
        if log is not None:
            with contextlib.suppress(OSError):
                log.close()  # type: ignore[attr-defined]
        return self.popen.returncode


@dataclass
class Sampler:
    """Samples the peak RSS of every registered process every ``every`` seconds."""

    every: float = 0.25
    procs: list[Proc] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, proc: Proc) -> None:
        with self._lock:
            self.procs.append(proc)

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            with self._lock:
                procs = list(self.procs)
            for proc in procs:
                proc.sample()

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, from /proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICKS


def _socket_ports(pid: int, remote_port: int) -> set[int]:
    """Local ports of ``pid``'s TCP connections to ``remote_port`` on this machine."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                parts = line.split()
                local, remote, inode = parts[1], parts[2], parts[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def postgres_backends(
    pids: list[int], dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
) -> set[int]:
    """The PostgreSQL backend PIDs serving connections of these processes (matched by
    client port in pg_stat_activity): their CPU is ours, other users' is not."""
    ports = set()
    for pid in pids:
        ports |= _socket_ports(pid, 5432)
    if not ports:
        return set()
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as connection:
            rows = connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s)", (list(ports),)
            ).fetchall()
        return {int(row[0]) for row in rows}
    except Exception:
        return set()


class CpuMeter:
    """CPU seconds used over an interval by each of our processes, by the PostgreSQL
    backends serving them, by the servers as a whole (other users included), and by the
    whole machine (so what others ran meanwhile shows)."""

    def __init__(self, procs: Callable[[], Mapping[str, Proc]]) -> None:
        self._procs = procs
        self._start: dict[str, float] = {}
        self._backends: dict[int, float] = {}
        self._began = 0.0

    def _snapshot(self) -> dict[str, float]:
        snap = {role: proc.cpu() for role, proc in self._procs().items()}
        for server, names in SERVERS.items():
            snap[f"{server} (all users)"] = sum(
                cpu_seconds(pid) or 0.0 for pid in pids_named(*names)
            )
        snap["bench"] = cpu_seconds(os.getpid()) or 0.0
        snap["machine"] = machine_busy_seconds()
        return snap

    def _ours(self) -> list[int]:
        return [p.pid for p in self._procs().values() if p.alive]

    def start(self) -> None:
        self._began = time.monotonic()
        self._start = self._snapshot()
        self._backends = {pid: cpu_seconds(pid) or 0.0 for pid in postgres_backends(self._ours())}

    def stop(self) -> dict[str, object]:
        wall = time.monotonic() - self._began
        backends = postgres_backends(self._ours()) | set(self._backends)
        postgres_ours = sum(
            max(
                (cpu_seconds(pid) or self._backends.get(pid, 0.0)) - self._backends.get(pid, 0.0),
                0.0,
            )
            for pid in backends
        )
        end = self._snapshot()
        used = {
            key: round(end[key] - self._start.get(key, 0.0), 2)
            for key in end
            if end[key] - self._start.get(key, 0.0) > 0.005
        }
        machine = used.pop("machine", 0.0)
        used["postgres (ours)"] = round(postgres_ours, 2)
        ours = sum(v for k, v in used.items() if "all users" not in k)
        return {
            "wall_seconds": round(wall, 2),
            "cpu_seconds": used,
            "cores_busy_ours": round(ours / wall, 2) if wall > 0 else None,
            "cores_busy_machine": round(machine / wall, 2) if wall > 0 else None,
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }
