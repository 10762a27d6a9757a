"""The API's uvicorn server (`infrastructure.api.app.Server`)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import uvicorn

from infrastructure.api.app import Server, create_app
from infrastructure.bootstrap import build
from infrastructure.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_a_stop_asked_during_start_up_stops_the_server_as_it_starts(tmp_path: Path) -> None:
    # Given a signal that came while the process was starting, before uvicorn listened
    # for signals (`webround serve` records it in `services.stopping`)
    services = build(Settings(data_dir=tmp_path / "data"))
    try:
        services.stopping.set()
        config = uvicorn.Config(
            create_app(services), host="127.0.0.1", port=free_port(), log_config=None
        )
        server = Server(config, services.stopping)

        # When the server runs
        runner = threading.Thread(target=server.run, daemon=True)
        runner.start()
        runner.join(timeout=20)

        # Then it stopped by itself, rather than serving until another signal
        assert not runner.is_alive()
    finally:
        services.close()
