"""`webround listen` (ADR 0028): the store's events on a local URL, signed with the
session's secret, with no connection from the service to the developer's machine — and a
restart of the service neither loses nor repeats an event."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from tests.e2e.conftest import wait_until
from tests.support.receiver import Receiver, RecordedRequest, Reply
from tests.support.served import WEBROUND, Served


class VerifyingReceiver:
    """A developer's local endpoint: it checks every signature with the Standard Webhooks
    library and answers 401 to anything that fails."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.secret = ""
        self.verified: list[dict[str, Any]] = []
        self.refused: list[RecordedRequest] = []
        receiver.behaviour = self._check

    def _check(self, request: RecordedRequest) -> Reply:
        try:
            self.verified.append(Verifier(self.secret).verify(request.body, request.headers))
        except WebhookVerificationError:
            self.refused.append(request)
            return Reply(status=401)
        return Reply(status=204)


@contextmanager
def listening(
    service: Served, url: str, *extra: str
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`webround listen --json` running; (the process, the session's secret)."""
    process = subprocess.Popen(
        [str(WEBROUND), "listen", "--forward-to", url, "--json", *extra],
        env=service.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready["forwardTo"] == url
        yield process, ready["secret"]
    finally:
        process.terminate()
        process.communicate(timeout=10)


def register(service: Served, *names: str) -> None:
    with service.api() as api:
        for name in names:
            response = api.post("/v1/customers", json={"email": f"{name}@x.example", "name": name})
            assert response.status_code == 201, response.text


def store_event_ids(service: Served) -> list[str]:
    with service.api() as api:
        page = api.get("/v1/events", params={"order": "oldest", "limit": 200}).json()
    return [e["eventId"] for e in page["data"]]


def test_listen_forwards_every_event_once_signed_across_a_restart(tmp_path: Path) -> None:
    with Served(tmp_path) as service, Receiver() as receiver:
        local = VerifyingReceiver(receiver)
        # Given `webround listen` forwarding to a local endpoint that checks signatures
        with listening(service, receiver.url + "hooks") as (process, secret):
            local.secret = secret
            assert secret.startswith("whsec_")

            # When the store records events
            register(service, "ann", "bob", "cid")
            wait_until(lambda: len(receiver.requests) >= 3, timeout=30)
            # And the service is stopped and started again while listen keeps running,
            # with events recorded before listen has reconnected
            service.restart()
            register(service, "dan", "eve", "fay")
            # And one more once everything before it has arrived: anything forwarded
            # twice would have come before it
            wait_until(lambda: len(receiver.requests) >= 6, timeout=60)
            register(service, "gus")
            wait_until(lambda: len(receiver.requests) >= 7, timeout=30)

            # Then every store event arrived exactly once, in order
            forwarded = [r.headers["webhook-id"] for r in receiver.requests]
            assert forwarded == store_event_ids(service)
            assert len(forwarded) == 7
            # And every request passed the Standard Webhooks signature check
            assert local.refused == []
            assert [e["eventId"] for e in local.verified] == forwarded
            assert {e["eventType"] for e in local.verified} == {"customer.registered"}
            # And the body is the envelope byte for byte as the service stored it
            with service.api() as api:
                stored = api.get(f"/v1/events/{forwarded[0]}").json()["envelope"]
            assert json.loads(receiver.requests[0].body) == stored
            assert process.poll() is None


def test_listen_forwards_only_the_event_types_asked_for(tmp_path: Path) -> None:
    with Served(tmp_path) as service, Receiver() as receiver:
        local = VerifyingReceiver(receiver)
        with listening(service, receiver.url + "hooks", "--events", "product.*") as (_, secret):
            local.secret = secret
            # When a customer and then a product are recorded
            register(service, "ann")
            with service.api() as api:
                api.post("/v1/products", json={"name": "Mug"}).raise_for_status()
            # Then only the product event is forwarded
            wait_until(lambda: receiver.requests, timeout=30)
            [request] = receiver.wait_for_requests(1)
            assert request.headers["webround-event-type"] == "product.created"
            assert [e["eventType"] for e in local.verified] == ["product.created"]


def test_listen_with_a_revoked_or_wrong_key_says_so_and_stops(tmp_path: Path) -> None:
    with Served(tmp_path) as service:
        env = {**service.env, "WEBROUND_API_KEY": "wr_0123456789abcdef_not-a-key"}
        result = subprocess.run(
            [str(WEBROUND), "listen", "--forward-to", "http://127.0.0.1:9/"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("webround: HTTP 401: ")
