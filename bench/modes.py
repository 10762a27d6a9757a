"""The installations under test, each started as the operations guide runs them:

``embedded``           one ``webround serve`` process (SQLite, in-process broker and worker)
``postgres-redis``     ``webround api``, ``webround dispatcher``, ``webround worker`` as
                       separate processes on PostgreSQL and Redis
``postgres-rabbitmq``  the same on PostgreSQL and RabbitMQ

Production modes get a fresh ``?schema=bench_<random>`` on the ``test`` database and a
fresh ``?namespace=bench-<random>`` on the broker, both removed afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.procs import Proc, Sampler

ROOT = Path(__file__).resolve().parent.parent
WEBROUND = str(ROOT / ".venv" / "bin" / "webround")
PYTHON = str(ROOT / ".venv" / "bin" / "python")
POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = "redis://127.0.0.1:6379/0"
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/%2F"
# A fixed master key: the bench's own, never a real installation's.
MASTER_KEY = base64.b64encode(b"webround-bench-master-key-32byte").decode()
MODES = ("embedded", "postgres-redis", "postgres-rabbitmq")
ROLES = {"embedded": ("serve",), "production": ("api", "dispatcher", "worker")}
READY = {
    "serve": "dispatcher active",  # embedded: the file lock is held
    "dispatcher": "dispatcher running",
    "worker": "worker running",
}


@dataclass
class Mode:
    name: str
    workdir: Path
    port: int
    sampler: Sampler
    suffix: str = field(default_factory=lambda: secrets.token_hex(4))
    procs: dict[str, Proc] = field(default_factory=dict)
    retired: list[Proc] = field(default_factory=list)
    starts: dict[str, int] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        return self.name == "embedded"

    @property
    def roles(self) -> tuple[str, ...]:
        return ROLES["embedded" if self.embedded else "production"]

    @property
    def schema(self) -> str:
        return f"bench_{self.suffix}"

    @property
    def namespace(self) -> str:
        return f"bench-{self.suffix}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("WEBROUND_", "POSTGRES_", "PERSISTENCE_", "SQLITE_"))
        }
        env.update(
            {
                "WEBROUND_DATA_DIR": str(self.workdir / "data"),
                "WEBROUND_ALLOWED_TARGETS": "127.0.0.0/8",
                "WEBROUND_MASTER_KEY": MASTER_KEY,
                "WEBROUND_LOG_FORMAT": "json",
                "WEBROUND_HOST": "127.0.0.1",
                "WEBROUND_PORT": str(self.port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if not self.embedded:
            env["WEBROUND_DATABASE_URL"] = f"{POSTGRES}?schema={self.schema}"
            broker = REDIS if self.name == "postgres-redis" else RABBITMQ
            env["WEBROUND_BROKER_URL"] = f"{broker}?namespace={self.namespace}"
        env.update(self.overrides)
        return env

    # --- processes -------------------------------------------------------------------

    def start_role(self, role: str, wait: bool = True, name: str | None = None) -> Proc:
        """Start ``webround ROLE``; ``name`` tells a second process of a role apart
        (``dispatcher-2``): its CPU is accounted under that name."""
        key = name or role
        n = self.starts.get(key, 0) + 1
        self.starts[key] = n
        argv = [WEBROUND, role]
        proc = Proc(key, argv, self.env, self.workdir / "logs" / f"{key}-{n}.log")
        proc.start(ROOT)
        self.procs[key] = proc
        self.sampler.add(proc)
        if wait:
            self.wait_ready(key)
        return proc

    def wait_ready(self, role: str, timeout: float = 90.0) -> None:
        proc = self.procs[role]
        role = role.split("-")[0]  # dispatcher-2 is a dispatcher
        if role in ("api", "serve"):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not proc.alive:
                    raise RuntimeError(f"{role} exited:\n{proc.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(self.api_url + "/healthz", timeout=2).status_code == 200:
                        break
                time.sleep(0.1)
            else:
                raise RuntimeError(f"{role} not healthy within {timeout} s:\n{proc.log_tail()}")
        if role in READY:
            proc.wait_for_log(READY[role], timeout)

    def start(self) -> None:
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        # The API first: it creates the schema and the tables (serialised by a lock anyway).
        for role in self.roles:
            self.start_role(role, wait=False)
            if role in ("api", "serve"):
                self.wait_ready(role)
        for role in self.roles:
            self.wait_ready(role)

    def stop_role(self, role: str) -> Proc:
        proc = self.procs.pop(role)
        proc.stop()
        self.retired.append(proc)
        return proc

    def pids(self) -> dict[str, int]:
        return {role: proc.pid for role, proc in self.procs.items() if proc.alive}

    def stores_create(self, names: list[str]) -> dict[str, dict[str, str]]:
        """``webround stores create`` for each name (in parallel): name -> storeId, apiKey."""
        running = {
            name: subprocess.Popen(
                [WEBROUND, "stores", "create", "--name", name],
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for name in names
        }
        created = {}
        for name, popen in running.items():
            out, err = popen.communicate(timeout=120)
            if popen.returncode != 0:
                raise RuntimeError(f"webround stores create failed: {err.decode()[-2000:]}")
            created[name] = json.loads(out.decode().strip().splitlines()[-1])
        return created

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [WEBROUND, *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # --- teardown --------------------------------------------------------------------

    def close(self) -> dict[str, Any]:
        """Stop every process (SIGTERM, then SIGKILL); drop the schema and the broker's
        namespace. Returns the exit codes."""
        codes = {}
        for proc in self.procs.values():  # all at once: each finishes its in-flight work
            proc.sample()
            if proc.alive:
                proc.cpu_at_exit = proc.cpu()
                proc.popen.terminate()  # type: ignore[union-attr]
        for role in list(self.procs):
            codes[role] = self.stop_role(role).popen.returncode  # type: ignore[union-attr]
        if not self.embedded:
            with contextlib.suppress(Exception):
                _drop_schema(self.schema)
            with contextlib.suppress(Exception):
                if self.name == "postgres-redis":
                    _drop_redis_namespace(f"webround-{self.namespace}")
                else:
                    _drop_rabbitmq_queues(f"webround.deliveries.{self.namespace}")
        return codes

    def remove_files(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def _drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5) as connection:
        connection.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


def _drop_redis_namespace(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()


def _drop_rabbitmq_queues(name: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ))
    try:
        for queue in (name, f"{name}.DQ", f"{name}.XQ"):
            channel = connection.channel()
            with contextlib.suppress(Exception):
                channel.queue_delete(queue=queue)
            with contextlib.suppress(Exception):
                channel.close()
    finally:
        connection.close()
