"""The HTTP limit: raw httpx POSTs per second to the benchmark receiver, run as its own
process (as the worker is): ``python -m bench.http_baseline --url U --threads 16
--seconds 5 --payload payload.json``. Prints one JSON object.

The threads share one ``httpx.Client`` with a keep-alive pool, as the worker's sender
does (`infrastructure.sender.Sender`: one client, ``max_connections = 2 x threads``),
and send the same body and headers a real delivery carried.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import httpx

from bench.stats import summarize


def run(url: str, body: bytes, headers: dict[str, str], threads: int, seconds: float) -> dict:
    client = httpx.Client(
        limits=httpx.Limits(
            max_connections=max(threads * 2, 10), max_keepalive_connections=threads * 2
        ),
        timeout=15.0,
    )
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    start_line = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def loop(i: int) -> None:
        mine = latencies[i]
        start_line.wait()
        while True:
            began = time.perf_counter()
            if began >= stop_at[0]:
                return
            try:
                response = client.post(url, content=body, headers=headers)
                if response.status_code >= 300:
                    errors[i] += 1
            except httpx.HTTPError:
                errors[i] += 1
            mine.append(time.perf_counter() - began)

    workers = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    # Warm the pool for a moment, then count.
    began = time.perf_counter()
    cpu_began = time.process_time()  # every thread of this process: the client side
    stop_at[0] = began + seconds
    start_line.wait()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    client.close()
    every = [x for chunk in latencies for x in chunk]
    return {
        "threads": threads,
        "seconds": round(elapsed, 3),
        "requests": len(every),
        "errors": sum(errors),
        "per_second": round(len(every) / elapsed, 1),
        # The client's CPU per POST: what one delivery's HTTP costs at the least, the
        # yardstick of the pipeline's CPU per delivery (bench/README.md).
        "client_cpu_ms_per_post": round(1000 * cpu / max(len(every), 1), 3),
        "latency_ms": summarize([x * 1000 for x in every]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--payload", type=Path, help="JSON: {body, headers}")
    args = parser.parse_args()
    body, headers = b'{"hello":"world"}', {"content-type": "application/json"}
    if args.payload:
        payload = json.loads(args.payload.read_text())
        body = payload["body"].encode()
        headers = {
            k: v
            for k, v in payload["headers"].items()
            if k not in ("host", "content-length", "connection", "accept-encoding")
        }
    print(json.dumps(run(args.url, body, headers, args.threads, args.seconds)))


if __name__ == "__main__":
    main()
