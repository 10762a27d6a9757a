"""A real webhook receiver on 127.0.0.1 for tests: uvicorn in a background thread.

Usage::

    with Receiver() as receiver:
        receiver.enqueue(Reply(status=500, body=b"boom"))    # answers, in order, first
        receiver.behaviour = Reply(status=200)                # then this (or a callable)
        ...  # POST to receiver.url
        method, path, headers, body = receiver.requests[0]

``behaviour`` is a ``Reply`` or a callable ``RecordedRequest -> Reply`` (for instance one
that verifies a signature). A ``Reply`` can wait (``delay``), redirect (``headers``),
or stream a large body lazily (``stream_bytes``: filler produced as the client reads it,
stopped when the client goes away; ``streamed_bytes`` counts what was handed over).

``RawServer`` is the other half: a bare TCP server whose handler writes whatever bytes it
likes (malformed HTTP, a status line trickled one byte at a time...).

Every request is recorded on arrival, before any delay, with its raw body and its
lower-case headers; ``connections`` holds the client port of every TCP connection seen,
so a test can tell keep-alive from a connection per request. With ``ssl_certfile`` and
``ssl_keyfile`` it speaks HTTPS. Stopping it ends any delayed answer at once, so a slow
receiver never slows a test's teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import uvicorn

__all__ = ["RawServer", "Receiver", "RecordedRequest", "Reply", "free_port"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CHUNK = 64 * 1024


class RecordedRequest(NamedTuple):
    method: str
    path: str  # with the query string, as sent
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # seconds to wait before answering
    stream_bytes: int | None = None  # instead of body: this many filler bytes, lazily


Behaviour = Reply | Callable[[RecordedRequest], Reply]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Receiver:
    """An HTTP(S) server on 127.0.0.1 whose answers each test decides."""

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        ssl_certfile: Path | None = None,
        ssl_keyfile: Path | None = None,
    ) -> None:
        self.behaviour: Behaviour = behaviour if behaviour is not None else Reply()
        self._tls = ssl_certfile is not None
        self._lock = threading.Lock()
        self._queue: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._connections: set[int] = set()
        self._streamed = 0
        self._stopping = threading.Event()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            interface="asgi3",  # a bound method defeats uvicorn's guess
            log_level="warning",
            lifespan="off",
            proxy_headers=False,
            access_log=False,
            timeout_graceful_shutdown=2,
            # Tests set Date and Server themselves when they want them.
            server_header=False,
            date_header=False,
            ssl_certfile=str(ssl_certfile) if ssl_certfile is not None else None,
            ssl_keyfile=str(ssl_keyfile) if ssl_keyfile is not None else None,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    def start(self) -> Receiver:
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"receiver-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the test receiver did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                raise RuntimeError("the test receiver did not stop")
            self._thread = None
        self._socket.close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what tests look at ---

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}/"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> set[int]:
        with self._lock:
            return set(self._connections)

    @property
    def streamed_bytes(self) -> int:
        with self._lock:
            return self._streamed

    def enqueue(self, *replies: Reply) -> None:
        """Answer the next requests with these, in order, before ``behaviour`` again."""
        with self._lock:
            self._queue.extend(replies)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.requests

    # --- the ASGI app ---

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string") and "?" not in path:
            path += "?" + scope["query_string"].decode("latin-1")
        recorded = RecordedRequest(
            method=scope["method"],
            path=path,
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            body=bytes(body),
        )
        with self._lock:
            self._requests.append(recorded)
            if scope.get("client"):
                self._connections.add(scope["client"][1])
            reply = self._queue.popleft() if self._queue else None
        if reply is None:
            behaviour = self.behaviour
            reply = behaviour if isinstance(behaviour, Reply) else behaviour(recorded)

        waited_until = time.monotonic() + reply.delay
        while time.monotonic() < waited_until and not self._stopping.is_set():
            await asyncio.sleep(min(0.02, max(0.0, waited_until - time.monotonic())))
        if self._stopping.is_set():
            return

        headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()
        ]
        if reply.stream_bytes is None:
            if not any(name == b"content-length" for name, _ in headers):
                headers.append((b"content-length", str(len(reply.body)).encode()))
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            await send({"type": "http.response.body", "body": reply.body})
            return
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await self._stream(reply.stream_bytes, receive, send)

    async def _stream(self, total: int, receive: Receive, send: Send) -> None:
        # The request body is read, so the next message is the client going away.
        gone = asyncio.ensure_future(receive())
        try:
            remaining = total
            filler = b"x" * _CHUNK
            while remaining > 0 and not gone.done() and not self._stopping.is_set():
                chunk = filler[: min(_CHUNK, remaining)]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                remaining -= len(chunk)
                with self._lock:
                    self._streamed += len(chunk)
                await asyncio.sleep(0)
            if remaining <= 0:
                await send({"type": "http.response.body", "body": b""})
        finally:
            gone.cancel()


RawHandler = Callable[[socket.socket, threading.Event], None]


class RawServer:
    """A TCP server on 127.0.0.1 running ``handler(connection, stopping)`` per connection.

    The handler should return soon after ``stopping`` is set; the connection is closed
    after it returns.
    """

    def __init__(self, handler: RawHandler) -> None:
        self._handler = handler
        self._stopping = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> RawServer:
        thread = threading.Thread(target=self._accept, name=f"raw-{self.port}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        for thread in list(self._threads):
            thread.join(timeout=10)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(5)
            # OSError: the client went away, which is what many tests are about.
            with contextlib.suppress(OSError):
                self._handler(connection, self._stopping)
