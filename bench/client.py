"""Driving the API as a client would: httpx sync clients with keep-alive, one per
thread. Commands are ``POST /v1/customers`` (each records ``customer.registered``);
webhooks are created with ``POST /v1/webhooks``.

Two load shapes: ``closed_loop`` (N commands as fast as K threads get answers) and
``paced`` (an offered rate, open loop: command i is due at start + i/rate whatever the
answers before it did; a late start is recorded as lateness)."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Sent:
    due: float  # time.time() the command was due (paced) or started (closed loop)
    began: float
    ended: float
    status: int

    @property
    def latency_ms(self) -> float:
        return (self.ended - self.began) * 1000

    @property
    def lateness_ms(self) -> float:
        return max(self.began - self.due, 0.0) * 1000


class Api:
    def __init__(self, base_url: str, api_key: str) -> None:
        self.client = httpx.Client(
            base_url=base_url,
            headers={"authorization": f"Bearer {api_key}"},
            timeout=60.0,
        )

    def create_webhook(self, url: str, event_types: list[str] | None = None) -> str:
        response = self.client.post(
            "/v1/webhooks", json={"url": url, "eventTypes": event_types or ["*"]}
        )
        response.raise_for_status()
        return str(response.json()["id"])

    def delete_webhook(self, webhook_id: str) -> None:
        self.client.delete(f"/v1/webhooks/{webhook_id}").raise_for_status()

    def record(self, n: int, tag: str) -> int:
        response = self.client.post(
            "/v1/customers",
            json={"email": f"{tag}-{n}@bench.example", "name": f"Bench customer {n}"},
        )
        return response.status_code

    def close(self) -> None:
        self.client.close()


def closed_loop(base_url: str, api_key: str, count: int, threads: int, tag: str) -> list[Sent]:
    counter = itertools.count()
    results: list[Sent] = []
    lock = threading.Lock()

    def loop() -> None:
        api = Api(base_url, api_key)
        mine = []
        try:
            while (n := next(counter)) < count:
                began = time.time()
                status = _record(api, n, tag)
                mine.append(Sent(began, began, time.time(), status))
        finally:
            api.close()
            with lock:
                results.extend(mine)

    _run_threads(loop, threads)
    return results


def paced(
    base_url: str,
    api_key: str,
    rate: float,
    seconds: float,
    threads: int,
    tag: str,
    start_at: float | None = None,
) -> list[Sent]:
    total = int(rate * seconds)
    start = start_at or time.time() + 0.2
    counter = itertools.count()
    results: list[Sent] = []
    lock = threading.Lock()

    def loop() -> None:
        api = Api(base_url, api_key)
        mine = []
        try:
            while (n := next(counter)) < total:
                due = start + n / rate
                wait = due - time.time()
                if wait > 0:
                    time.sleep(wait)
                began = time.time()
                status = _record(api, n, tag)
                mine.append(Sent(due, began, time.time(), status))
        finally:
            api.close()
            with lock:
                results.extend(mine)

    _run_threads(loop, threads)
    return results


def _record(api: Api, n: int, tag: str) -> int:
    try:
        return api.record(n, tag)
    except httpx.HTTPError:
        return 0


def _run_threads(target: Any, threads: int) -> None:
    workers = [threading.Thread(target=target, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


class Receiver:
    """The orchestrator's side of the receiver's control routes."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.client = httpx.Client(base_url=base_url, timeout=60.0)

    def count(self) -> int:
        return int(self.client.get("/_count").json()["count"])

    def arrivals(self, since: int = 0) -> list[list[Any]]:
        rows: list[list[Any]] = self.client.get("/_arrivals", params={"since": since}).json()
        return rows

    def last(self) -> dict[str, Any]:
        last: dict[str, Any] = self.client.get("/_last").json()
        return last

    def reset(self) -> None:
        self.client.get("/_reset")

    def wait_for(self, count: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            seen = self.count()
            if seen >= count or time.monotonic() > deadline:
                return seen
            time.sleep(0.2)
