"""`webround serve --demo`: a sample receiver and sample store activity, so a newcomer sees
signed webhooks arrive within seconds of the first start.

The receiver verifies every request's Standard Webhooks signature the way a merchant's
endpoint would (our own `signing.sign`, compared in constant time) and prints one line
per webhook. The store activity walks a customer through an order's whole life.

The demo webhook is made once per data directory (its id is kept in `demo-webhook`) and
reused on every later start: the receiver listens on the same port again where it can
(else the webhook's URL is changed to the new one), and — as a merchant who did not keep
the secret would — the demo rotates the signing secret to learn it.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import random
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from application.errors import NotFound
from domain.catalog import Sku
from domain.values import Actor
from infrastructure.bootstrap import Services
from infrastructure.secrets import SigningSecret
from infrastructure.signing import sign

DEMO_ACTOR = Actor.person("demo@webround.example")
DESCRIPTION = "demo receiver (webround serve --demo)"
MARKER = "demo-webhook"  # in the data directory: {"webhookId", "port"} of the last start


def _listening_socket(port: int | None) -> socket.socket:
    """A socket bound on 127.0.0.1, to ``port`` if it is free, else to any free port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if port is not None:
        with contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            return sock
    sock.bind(("127.0.0.1", 0))
    return sock


class DemoReceiver:
    """A merchant's endpoint on 127.0.0.1 that checks signatures and prints what it gets."""

    def __init__(self, port: int | None = None) -> None:
        self._socket = _listening_socket(port)
        self.port: int = self._socket.getsockname()[1]
        self.secret: SigningSecret | None = None
        self.received = 0
        app = Starlette(routes=[Route("/webhooks", self._receive, methods=["POST"])])
        # log_config=None: uvicorn's own logging setup would take over the loggers the
        # service's server shares (`uvicorn.error`) and print them in its format.
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            log_config=None,
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="demo-receiver",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks"

    def start(self) -> None:
        self._thread.start()
        while not self._server.started:
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._socket.close()

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        headers = request.headers
        valid = False
        if self.secret is not None:
            expected = sign(
                secrets=[self.secret],
                msg_id=headers.get("webhook-id", ""),
                timestamp=int(headers.get("webhook-timestamp", "0")),
                body=body,
            )
            offered = headers.get("webhook-signature", "").split()
            valid = any(hmac.compare_digest(expected, s) for s in offered)
        envelope = json.loads(body)
        self.received += 1
        test = " (test)" if envelope.get("test") else ""
        print(
            f"demo receiver: {envelope['eventType'] + test:<28} {envelope['eventId']}  "
            f"signature {'verified' if valid else 'INVALID'}",
            flush=True,
        )
        return Response(status_code=204 if valid else 401)


def start_demo(services: Services, store_id: UUID) -> DemoReceiver:
    marker = services.settings.data_dir / MARKER
    previous = _previous(marker)
    receiver = DemoReceiver(previous[1] if previous else None)
    receiver.start()
    found = _reuse(services, store_id, previous[0], receiver.url) if previous else None
    if found is None:
        created = services.webhooks.create_webhook(
            store_id, DEMO_ACTOR, url=receiver.url, event_types=["*"], description=DESCRIPTION
        )
        found = UUID(created["id"]), created["secret"]
    webhook_id, secret = found
    receiver.secret = SigningSecret.parse(secret)
    marker.write_text(json.dumps({"webhookId": str(webhook_id), "port": receiver.port}) + "\n")
    stop = threading.Event()
    thread = threading.Thread(
        target=_activity, args=(services, store_id, stop), name="demo-activity", daemon=True
    )
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(timeout=5)
        receiver.stop()

    services._closers.append(close)
    return receiver


def _previous(marker: Path) -> tuple[UUID, int] | None:
    """The demo webhook and receiver port of an earlier start, if any."""
    try:
        last = json.loads(marker.read_text())
        return UUID(last["webhookId"]), int(last["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _reuse(
    services: Services, store_id: UUID, webhook_id: UUID, url: str
) -> tuple[UUID, str] | None:
    """The earlier demo webhook pointed at ``url``, enabled, with a new secret (shown to the
    receiver only); None when it is gone."""
    webhooks = services.webhooks
    try:
        webhook = webhooks.read_webhook(store_id, webhook_id)
    except NotFound:
        return None
    if webhook["url"] != url:
        webhooks.update_webhook(store_id, webhook_id, DEMO_ACTOR, url=url)
    if not webhook["enabled"]:
        webhooks.update_webhook(store_id, webhook_id, DEMO_ACTOR, enabled=True)
    rotated = webhooks.rotate_secret(store_id, webhook_id, DEMO_ACTOR, timedelta(0))
    return webhook_id, rotated["secret"]


def _activity(services: Services, store: UUID, stop: threading.Event) -> None:
    """An order's whole life every few seconds, until stopped."""
    commerce = services.commerce
    product = commerce.create_product(store, "Demo mug", "Holds coffee", DEMO_ACTOR)
    variant = commerce.create_variant(store, UUID(product["id"]), {"color": "teal"}, DEMO_ACTOR)
    sku = commerce.create_sku(
        store, UUID(variant["id"]), "MUG-TEAL", "12.50", "EUR", 100, DEMO_ACTOR
    )
    n = 0
    while not stop.wait(2.0):
        n += 1
        customer = commerce.register_customer(
            store, f"customer{n}@demo.example", f"Customer {n}", None, DEMO_ACTOR
        )
        quantity = random.randint(1, 3)  # noqa: S311 - sample data, not security
        if commerce.read(Sku, store, UUID(sku["id"]))["stock"] < quantity:
            # Orders reserve stock: restock, as a shop would, before it runs out.
            commerce.change_sku_stock(store, UUID(sku["id"]), DEMO_ACTOR, quantity=100)
        order = commerce.place_order(
            store, UUID(customer["id"]), "EUR", [(UUID(sku["id"]), quantity)], DEMO_ACTOR
        )
        order_id = UUID(order["id"])
        commerce.pay_order(store, order_id, order["total"]["amount"], Actor.system())
        for status in ("processing", "shipped", "delivered"):
            if stop.wait(0.5):
                return
            commerce.update_order_status(store, order_id, status, DEMO_ACTOR)
