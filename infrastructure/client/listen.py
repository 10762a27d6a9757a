"""`webround listen --forward-to URL`: the store's events on a developer's machine, with no
public URL (ADR 0028).

The command follows `GET /v1/events/feed` (a long poll, authenticated by the API key) and
POSTs each envelope to the local URL, signed with a secret of this session (Standard
Webhooks headers, as a real delivery is signed), which it prints at start. The server
never connects to the developer's machine.

It keeps the feed's cursor in memory and moves it past an answer only once every event
in it was forwarded; when the service restarts or the network drops, it asks again from
the same cursor — nothing is skipped, nothing forwarded twice. A local endpoint that
fails is reported and not retried (the next event follows); the service's real
deliveries and their retries are not affected by any of this.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import TextIO

import httpx

from application.envelope_format import serialise
from infrastructure.client.http import JSON, USER_AGENT, ApiClient, ApiError
from infrastructure.secrets import SigningSecret
from infrastructure.signing import signature_headers
from infrastructure.terminal import printable

WAIT_SECONDS = 20  # how long one feed request waits for an event (the API allows 25)
FORWARD_TIMEOUT = 15.0
BACKOFF = (0.5, 1.0, 2.0, 5.0)  # seconds between tries while the service is unreachable


def run(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.forward_to.startswith(("http://", "https://")):
        print("webround listen: --forward-to must be an http:// or https:// URL", file=err)
        return 2
    secret = SigningSecret.parse(args.secret) if args.secret else SigningSecret.generate()
    listener = Listener(client, args.forward_to, secret, args.events, out, err, args.json)
    try:
        listener.run()
    except KeyboardInterrupt:
        listener.summary()
    finally:
        listener.close()
    return 0


class Listener:
    def __init__(
        self,
        client: ApiClient,
        forward_to: str,
        secret: SigningSecret,
        event_types: str | None,
        out: TextIO,
        err: TextIO,
        as_json: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.forward_to = forward_to
        self.secret = secret
        self.event_types = event_types
        self.out = out
        self.err = err
        self.as_json = as_json
        self.sleep = sleep
        self.cursor: str | None = None
        self.forwarded = 0
        self.failed = 0
        # Local endpoints: no proxy from the environment, no redirects followed.
        self._local = httpx.Client(timeout=FORWARD_TIMEOUT, trust_env=False)

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        self.cursor = self._poll(wait=0)["cursor"]  # from now on
        self._ready()
        while not stop():
            page = self._poll(wait=WAIT_SECONDS)
            for item in page["data"]:
                self._forward(item)
            self.cursor = page["cursor"]

    def _ready(self) -> None:
        if self.as_json:
            ready = {"forwardTo": self.forward_to, "secret": self.secret.reveal()}
            self._print(json.dumps(ready))
            return
        only = f" ({printable(self.event_types)})" if self.event_types else ""
        self._print(
            f"Ready: forwarding your store's events{only} to {printable(self.forward_to)}\n"
            f"Signing secret of this session: {self.secret.reveal()}\n"
            "  (verify with any Standard Webhooks library; pass --secret to keep it next time)\n"
            "Press Ctrl-C to stop."
        )

    def _poll(self, wait: int) -> JSON:
        """The next answer of the feed after the cursor, asking again — from the same
        cursor — while the service cannot be reached."""
        params = {"cursor": self.cursor, "eventTypes": self.event_types, "wait": wait}
        failures = 0
        while True:
            try:
                page = self.client.get("/v1/events/feed", params, timeout=wait + FORWARD_TIMEOUT)
            except ApiError as error:
                if not error.unreachable:
                    raise
                if failures == 0:
                    print(f"webround listen: {printable(error)}; trying again", file=self.err)
                self.sleep(BACKOFF[min(failures, len(BACKOFF) - 1)])
                failures += 1
                continue
            if failures:
                print("webround listen: connected again", file=self.err, flush=True)
            return page

    def _forward(self, item: JSON) -> None:
        body = serialise(item["envelope"]).encode()
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webround-event-type": item["eventType"],
            "webround-envelope-id": str(item["envelope"]["envelopeId"]),
            **signature_headers(
                secrets=[self.secret],
                msg_id=item["eventId"],
                timestamp=int(time.time()),
                body=body,
            ),
        }
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            status = self._local.post(self.forward_to, content=body, headers=headers).status_code
        except httpx.HTTPError as failure:
            error = type(failure).__name__
        duration = (time.monotonic() - started) * 1000
        ok = status is not None and 200 <= status < 300
        self.forwarded += ok
        self.failed += not ok
        if self.as_json:
            line = {
                "eventId": item["eventId"],
                "eventType": item["eventType"],
                "statusCode": status,
                "error": error,
                "durationMs": round(duration, 1),
            }
            self._print(json.dumps(line, ensure_ascii=True))
        else:
            answer = f"HTTP {status}" if status is not None else f"failed: {error}"
            self._print(
                f"{printable(item['eventType']):<28} {printable(item['eventId'])}  -> {answer} "
                f"({duration:.0f} ms)"
            )

    def summary(self) -> None:
        print(
            f"\nwebround listen: {self.forwarded} forwarded, {self.failed} refused or failed",
            file=self.err,
        )

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def close(self) -> None:
        self._local.close()
