"""The benchmark's webhook receiver: a minimal ASGI app under uvicorn (one worker),
run as its own process: ``python -m bench.receiver --port P``.

Every POST is answered at once — 204, or 500 when the path starts with ``/fail`` — and
recorded with its arrival time (``time.time()``, the machine clock that also stamps
``occurredAt`` in the API process), its path, the envelope's ``occurredAt`` (found in
the raw body, not parsed as JSON), and the ``webhook-id``, ``webround-delivery-id`` and
``webround-attempt`` headers. Control routes (GET) for the orchestrator:

``/_arrivals?since=N``  the arrivals from index N on, as JSON rows
                        ``[t, path, occurredAt, webhookId, deliveryId, attempt]``
``/_count``             how many arrivals so far (and per path prefix)
``/_last``              the last POST's body and headers (the baseline's payload)
``/_reset``             forget every arrival
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

_OCCURRED = b'"occurredAt":"'
_EMPTY_204 = {"type": "http.response.start", "status": 204, "headers": []}
_EMPTY_500 = {
    "type": "http.response.start",
    "status": 500,
    "headers": [(b"content-length", b"4"), (b"content-type", b"text/plain")],
}


class ReceiverApp:
    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str, str, str, str, str]] = []
        self.last: dict[str, Any] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        path: str = scope["path"]
        if scope["method"] == "GET":
            await self._control(path, scope.get("query_string", b""), send)
            return
        now = time.time()
        webhook_id = delivery_id = attempt = ""
        for name, value in scope["headers"]:
            if name == b"webhook-id":
                webhook_id = value.decode("latin-1")
            elif name == b"webround-delivery-id":
                delivery_id = value.decode("latin-1")
            elif name == b"webround-attempt":
                attempt = value.decode("latin-1")
        at = body.find(_OCCURRED)
        occurred = body[at + 14 : at + 41].decode("ascii", "replace") if at >= 0 else ""
        self.arrivals.append((now, path, occurred, webhook_id, delivery_id, attempt))
        self.last = {
            "path": path,
            "body": body.decode("utf-8", "replace"),
            "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
        }
        if path.startswith("/fail"):
            await send(_EMPTY_500)
            await send({"type": "http.response.body", "body": b"boom"})
        else:
            await send(_EMPTY_204)
            await send({"type": "http.response.body", "body": b""})

    async def _control(self, path: str, query: bytes, send: Any) -> None:
        if path == "/_arrivals":
            since = 0
            for part in query.decode().split("&"):
                if part.startswith("since="):
                    since = int(part[6:])
            payload: Any = self.arrivals[since:]
        elif path == "/_count":
            payload = {"count": len(self.arrivals)}
        elif path == "/_last":
            payload = self.last
        elif path == "/_reset":
            self.arrivals = []
            payload = {"count": 0}
        else:
            payload = {"ok": True}
        data = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        ReceiverApp(),
        host=args.host,
        port=args.port,
        workers=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        interface="asgi3",
        server_header=False,
        date_header=False,
    )


if __name__ == "__main__":
    main()
