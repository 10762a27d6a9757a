"""`webround serve` as a user runs it — a real process on a real port — for the tests of
the commands that talk to it over the API (`webround webhooks …`, `webround listen`).

    with Served(tmp_path) as service:
        service.env          # the environment a client command needs: URL and API key
        service.api(...)     # httpx.Client on its API, with the key
        service.restart()    # SIGTERM, wait for the exit, start again on the same port

Its data directory lives in the test's folder; loopback targets are allowed (receivers run
on 127.0.0.1) and retries are fast.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from tests.support.receiver import free_port

WEBROUND = Path(sys.executable).parent / "webround"
API_KEY = re.compile(r"API key:\s+(wr_\S+)")


class Served:
    def __init__(self, folder: Path, *args: str) -> None:
        self.args = args  # more arguments of `webround serve`, e.g. --demo
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = folder / "data"
        self.output: list[str] = []
        self.api_key = ""
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def env(self) -> dict[str, str]:
        """What `webround webhooks|events|deliveries|listen` need to reach this service."""
        return {**os.environ, "WEBROUND_API_URL": self.url, "WEBROUND_API_KEY": self.api_key}

    def start(self) -> Self:
        self.output.clear()
        env = {
            **os.environ,
            "WEBROUND_DATA_DIR": str(self.data_dir),
            "WEBROUND_ALLOWED_TARGETS": "127.0.0.0/8",
            "WEBROUND_RETRY_SCHEDULE": "0.2,0.2",
        }
        self._process = subprocess.Popen(
            [str(WEBROUND), "serve", "--port", str(self.port), *self.args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self._process,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self._process.poll() is None:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("webround serve did not start:\n" + "".join(self.output))
        while not self.api_key and time.monotonic() < deadline:
            found = API_KEY.search("".join(self.output))  # printed on the first start only
            if found:
                self.api_key = found.group(1)
            time.sleep(0.02)
        assert self.api_key, "".join(self.output)
        return self

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.output.append(line)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
            raise
        finally:
            if self._reader is not None:
                self._reader.join(timeout=10)
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {self.api_key}"}, timeout=10
        )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
