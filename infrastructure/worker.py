"""The worker side of dispatch: sign, send, and record each attempt — in group commits.

A delivery message carries everything an attempt needs (the body, the target, the sealed
secrets and headers), so sending reads nothing from the database. Secrets are unsealed
here, at signing time, and nowhere else (and not kept: every message unseals its own;
that costs about 7 µs a secret). Attempts are recorded by one `AttemptRecorder` per
process that commits many attempts in one transaction; the actor returns — and the
broker message is acknowledged — only once its attempt is durable.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import dramatiq

from application.directory import Target
from application.dispatch import AttemptResult, DeliveryRef, Dispatch
from infrastructure.logs import error_summary
from infrastructure.metrics import observe_attempts
from infrastructure.secrets import SealingKeeper, SecretUnsealError
from infrastructure.sender import Request, Sender
from infrastructure.signing import signature_headers

log = logging.getLogger("webround.worker")

USER_AGENT = "webround-webhooks/0.1.0"
_BATCH = 200


@dataclass(frozen=True)
class Message:
    """A delivery attempt as it travels through the broker (plain JSON)."""

    delivery_id: UUID
    attempt: int
    webhook_id: UUID
    store_id: UUID
    event_id: str
    event_type: str
    envelope_id: UUID
    url: str
    timeout_seconds: float
    secrets: list[tuple[str, float | None]]  # sealed, expires at (Unix seconds)
    sealed_headers: str | None
    body: str

    def to_json(self) -> dict[str, Any]:
        return {
            "deliveryId": str(self.delivery_id),
            "attempt": self.attempt,
            "webhookId": str(self.webhook_id),
            "storeId": str(self.store_id),
            "eventId": self.event_id,
            "eventType": self.event_type,
            "envelopeId": str(self.envelope_id),
            "url": self.url,
            "timeoutSeconds": self.timeout_seconds,
            "secrets": [list(s) for s in self.secrets],
            "sealedHeaders": self.sealed_headers,
            "body": self.body,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        return cls(
            delivery_id=UUID(data["deliveryId"]),
            attempt=int(data["attempt"]),
            webhook_id=UUID(data["webhookId"]),
            store_id=UUID(data["storeId"]),
            event_id=data["eventId"],
            event_type=data["eventType"],
            envelope_id=UUID(data["envelopeId"]),
            url=data["url"],
            timeout_seconds=float(data["timeoutSeconds"]),
            secrets=[(s[0], s[1]) for s in data["secrets"]],
            sealed_headers=data["sealedHeaders"],
            body=data["body"],
        )

    @classmethod
    def for_target(
        cls,
        target: Target,
        *,
        delivery_id: UUID,
        attempt: int,
        event_id: str,
        event_type: str,
        envelope_id: UUID,
        body: str,
    ) -> Message:
        return cls(
            delivery_id=delivery_id,
            attempt=attempt,
            webhook_id=target.webhook_id,
            store_id=target.store_id,
            event_id=event_id,
            event_type=event_type,
            envelope_id=envelope_id,
            url=target.url,
            timeout_seconds=float(target.timeout_seconds),
            secrets=[(s, u.timestamp() if u else None) for s, u in target.secrets],
            sealed_headers=target.sealed_headers,
            body=body,
        )


class _Pending:
    """One attempt waiting for its group commit: ``done`` is held until it is over.

    A bare lock rather than a ``concurrent.futures.Future`` (a condition, an RLock and
    callbacks): the hand-over between a worker thread and the recorder is on the path of
    every attempt."""

    __slots__ = ("done", "error", "result")

    def __init__(self, result: AttemptResult) -> None:
        self.result = result
        self.error: Exception | None = None
        self.done = threading.Lock()
        self.done.acquire()

    def finish(self, error: Exception | None = None) -> None:
        self.error = error
        self.done.release()


class AttemptRecorder:
    """Commits attempt results in batches from a single thread (group commit)."""

    def __init__(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="attempt-recorder", daemon=True)
        self._thread.start()

    def record(self, result: AttemptResult, timeout: float = 60.0) -> None:
        """Record ``result``; returns once it is durable, raises if it could not be
        (``TimeoutError`` when it is not done within ``timeout`` seconds)."""
        pending = _Pending(result)
        self._queue.put(pending)
        if not pending.done.acquire(timeout=timeout):
            raise TimeoutError(f"attempt not recorded within {timeout:g} s")
        if pending.error is not None:
            raise pending.error

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < _BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        results = [pending.result for pending in batch]
        try:
            changed = self._dispatch.record_attempts(results)
        except Exception as error:
            log.exception("could not record %d attempts", len(batch))
            for pending in batch:
                pending.finish(error)
            return
        observe_attempts(changed)
        for pending in batch:
            pending.finish()


class DeliveryWorker:
    """Performs one attempt per message: unseal, sign, send, record."""

    def __init__(
        self,
        sender: Sender,
        keeper: SealingKeeper,
        recorder: AttemptRecorder,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._sender = sender
        self._keeper = keeper
        self._recorder = recorder
        self._clock = clock or (lambda: datetime.now(UTC))

    def __call__(self, data: dict[str, Any]) -> None:
        """One attempt, recorded. Never raises with the message in hand: Dramatiq logs
        the whole message (envelope, sealed secrets) of an actor that raises, so a
        failure is logged here by ids and error class, and recording is retried through
        `dramatiq.Retry`, which Dramatiq does not log."""
        try:
            message = Message.from_json(data)
        except (KeyError, IndexError, TypeError, ValueError) as error:
            # Nothing to record it on; the dispatcher hands the delivery out again when
            # its lease runs out.
            log.error(
                "a delivery message that is no delivery was dropped (%s)", type(error).__name__
            )
            return
        result = self._attempt(message)
        try:
            self._recorder.record(result)
        except Exception as error:
            log.error(
                "attempt %d of delivery %s could not be recorded (%s); trying again",
                message.attempt,
                message.delivery_id,
                error_summary(error),
                extra=_ids(message),
            )
            raise dramatiq.Retry("the attempt could not be recorded") from None
        _log_outcome(message, result)

    def _attempt(self, message: Message) -> AttemptResult:
        """Sign and send; an attempt that cannot even be prepared is a failed attempt too
        (recorded on the delivery, visible and retried like any other)."""
        try:
            request = self.request(message)
        except SecretUnsealError as error:
            return self._not_sent(
                message,
                "secret_unavailable",
                "the webhook's signing secret or custom headers cannot be opened with this "
                f"worker's master key ({error}); check WEBROUND_MASTER_KEY on every process",
            )
        except Exception as error:
            return self._not_sent(
                message,
                "invalid_request",
                f"the attempt could not be prepared ({type(error).__name__})",
            )
        outcome = self._sender.send(request)
        return AttemptResult(
            delivery=_ref(message),
            number=message.attempt,
            started_at=outcome.started_at,
            duration_ms=outcome.duration_ms,
            status_code=outcome.status_code,
            error=outcome.error,
            detail=outcome.detail,
            response_headers=outcome.response_headers,
            response_body=outcome.response_body,
            retry_after=outcome.retry_after_seconds,
            response_body_encoding=outcome.response_body_encoding,
        )

    def _not_sent(self, message: Message, error: str, detail: str) -> AttemptResult:
        return AttemptResult(
            delivery=_ref(message),
            number=message.attempt,
            started_at=self._clock(),
            duration_ms=0.0,
            status_code=None,
            error=error,
            detail=detail,
        )

    def request(self, message: Message) -> Request:
        now = self._clock()
        secrets = [
            self._keeper.open_secret(message.webhook_id, sealed)
            for sealed, until in message.secrets
            if until is None or now.timestamp() < until
        ]
        body = message.body.encode()
        headers: dict[str, str] = {}
        if message.sealed_headers:
            headers.update(self._keeper.open_headers(message.webhook_id, message.sealed_headers))
        headers.update(
            {
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                "webround-event-type": message.event_type,
                "webround-envelope-id": str(message.envelope_id),
                "webround-delivery-id": str(message.delivery_id),
                "webround-attempt": str(message.attempt),
                **signature_headers(
                    secrets=secrets,
                    msg_id=message.event_id,
                    timestamp=int(now.timestamp()),
                    body=body,
                ),
            }
        )
        return Request(message.url, body, headers, message.timeout_seconds)


def _ref(message: Message) -> DeliveryRef:
    return DeliveryRef(message.delivery_id, message.webhook_id, message.store_id, message.event_id)


def _ids(message: Message) -> dict[str, Any]:
    return {
        "delivery_id": str(message.delivery_id),
        "webhook_id": str(message.webhook_id),
        "event_id": message.event_id,
        "attempt": message.attempt,
    }


def _log_outcome(message: Message, result: AttemptResult) -> None:
    log.info(
        "delivery attempt",
        extra={
            **_ids(message),
            "status_code": result.status_code,
            "error": result.error,
            "duration_ms": round(result.duration_ms, 1),
        },
    )
