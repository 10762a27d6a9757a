"""`webround serve` as a user runs it: a real process, a real port, a real SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.served import Served

WEBROUND = Path(sys.executable).parent / "webround"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_serve_answers_health_on_the_embedded_default_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    # Given an empty data directory and a free port
    port = free_port()
    env = {**os.environ, "WEBROUND_DATA_DIR": str(tmp_path / "data")}

    # When `webround serve` starts
    with subprocess.Popen(
        [str(WEBROUND), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        body = wait_for_health(port, process)

        # And is then sent SIGTERM
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)

    # Then /healthz answered ok in embedded mode, with its SQLite files in the data dir
    assert body is not None, output
    assert body["status"] == "ok"
    assert body["mode"] == "embedded"
    assert (tmp_path / "data" / "commerce.sqlite").exists()
    # And SIGTERM stopped it gracefully (uvicorn re-raises the signal once it is done)
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Finished server process" in output


def wait_for_health(port: int, process: subprocess.Popen[str]) -> dict[str, object] | None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            body: dict[str, object] = httpx.get(
                f"http://127.0.0.1:{port}/healthz", timeout=1
            ).json()
            return body
        except httpx.TransportError:
            time.sleep(0.2)
    return None


def test_serve_demo_reuses_its_webhook_across_restarts(tmp_path: Path) -> None:
    # Given `webround serve --demo` started, its receiver verifying a first delivery
    with Served(tmp_path, "--demo") as service:
        wait_for_output(service, "signature verified")
        with service.api() as api:
            [first] = api.get("/v1/webhooks").json()["data"]

        # When it is stopped and started again on the same data directory
        service.restart()

        # Then it still has one demo webhook, the same one, and deliveries to it verify
        wait_for_output(service, "signature verified")
        with service.api() as api:
            webhooks = api.get("/v1/webhooks").json()["data"]
        assert [w["id"] for w in webhooks] == [first["id"]]
        assert webhooks[0]["enabled"] is True
        assert "INVALID" not in "".join(service.output)


def wait_for_output(service: Served, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in "".join(service.output):
        assert time.monotonic() < deadline, "".join(service.output)
        time.sleep(0.1)
