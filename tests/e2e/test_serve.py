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
