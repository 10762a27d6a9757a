"""Read models: SQL tables projected from the event stores (CQRS read side, §7).

Each read model is pure data plus a pure function: its tables, the applications whose
logs it follows, and ``handle`` — which maps one event to row operations. The SQL engine
in ``infrastructure.readmodels`` applies those operations and the model's tracking
position in one transaction, rebuilds models aside and swaps them in, and checksums them.
Handlers compute rows from the event alone (and, for the entity model, the aggregate's
view at the event's version), never from the clock, so a rebuild gives identical rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from application import views
from domain.delivery import DeliveryAttempted, DeliveryScheduled, EnvelopeCreated, is_test_event
from domain.event_types import EVENT_TYPES
from domain.tenancy import Store
from domain.values import Actor

JSON = dict[str, Any]


# Row operations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Upsert:
    """Insert the row, or update the given columns of the row with the same key."""

    table: str
    row: JSON


@dataclass(frozen=True)
class Add:
    """Insert the row, or add its ``counters`` to the existing row's (and set the rest)."""

    table: str
    row: JSON
    counters: tuple[str, ...]


@dataclass(frozen=True)
class Update:
    """Update columns of an existing row (nothing when there is none)."""

    table: str
    key: JSON
    values: JSON


Operation = Upsert | Add | Update


# Schema ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, str]  # name -> "text" | "integer" | "real"
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Context:
    """What a handler may consult besides the event, all of it fixed by the event stores:
    an entity's view at a version, and the store an aggregate belongs to."""

    view_at: Callable[[UUID, int], JSON]
    store_of: Callable[[str, UUID], UUID]  # (application name, aggregate id) -> store id
    # Read many (entity id, version) views at once before a batch asks for them one by one.
    warm_views: Callable[[Sequence[tuple[UUID, int]]], None] = lambda wanted: None


@dataclass(frozen=True)
class ReadModel:
    name: str
    description: str
    sources: tuple[str, ...]  # application names whose logs this model follows
    tables: tuple[Table, ...]
    handle: Callable[[str, int, Any, Context], Sequence[Operation]] = field(repr=False)
    # The (entity id, version) view `handle` will ask the context for, if any: the engine
    # reads a batch's views in one go (`Context.warm_views`) before handling it.
    view_wanted: Callable[[Any], tuple[UUID, int] | None] | None = field(default=None, repr=False)


def _actor(actor: Actor) -> str | None:
    """Who did it, as stored: an email, "system", or None when unknown."""
    return actor.email if actor.kind == "person" else ("system" if actor.kind == "system" else None)


def _ts(moment: Any) -> str:
    return views.timestamp(moment)


# events: one row per envelope --------------------------------------------------------


EVENTS_TABLE = Table(
    "events",
    {
        "event_id": "text",
        "store_id": "text",
        "event_type": "text",
        "entity_id": "text",
        "occurred_at": "text",
        "position": "integer",
        "initiated_by": "text",
        "envelope": "text",
    },
    ("event_id",),
    (("store_id", "position"), ("store_id", "event_type", "position"), ("entity_id",)),
)


def _events(source: str, position: int, event: Any, context: Context) -> list[Operation]:
    if not isinstance(event, EnvelopeCreated):
        return []
    e: Any = event
    body = json.loads(e.body)
    return [
        Upsert(
            "events",
            {
                "event_id": e.event_id,
                "store_id": str(e.store_id),
                "event_type": e.event_type,
                "entity_id": str(e.entity_id),
                "occurred_at": _ts(e.occurred_at),
                "position": e.position,
                "initiated_by": body.get("initiatedBy"),
                "envelope": e.body,
            },
        )
    ]


# deliveries and their attempts ---------------------------------------------------------


DELIVERIES_TABLE = Table(
    "deliveries",
    {
        "delivery_id": "text",
        "store_id": "text",
        "webhook_id": "text",
        "event_id": "text",
        "event_type": "text",
        "status": "text",
        "attempts": "integer",
        "replay": "integer",
        "requested_by": "text",
        "created_at": "text",
        "last_attempt_at": "text",
        "last_status_code": "integer",
        "last_error": "text",
        "next_attempt_at": "text",
        "position": "integer",
    },
    ("delivery_id",),
    (("store_id", "position"), ("webhook_id", "position"), ("event_id",)),
)
ATTEMPTS_TABLE = Table(
    "attempts",
    {
        "delivery_id": "text",
        "number": "integer",
        "store_id": "text",
        "webhook_id": "text",
        "event_id": "text",
        "started_at": "text",
        "duration_ms": "real",
        "status_code": "integer",
        "error": "text",
        "detail": "text",
        "response_headers": "text",
        "response_body": "text",
        "next_attempt_at": "text",
        "outcome": "text",
        # NULL for text, "base64" for a body kept as base64 (domain.delivery): rows
        # written before the column existed need no change to mean the same.
        "response_body_encoding": "text",
    },
    ("delivery_id", "number"),
    (("webhook_id", "started_at"),),
)


def _asked(scheduled: Any) -> bool:
    """Whether someone asked for this delivery: a "Send again", or a test event."""
    return bool(scheduled.replay) or is_test_event(scheduled.event_id)


def _deliveries(source: str, position: int, event: Any, context: Context) -> list[Operation]:
    e: Any = event
    if isinstance(event, DeliveryScheduled):
        return [
            Upsert(
                "deliveries",
                {
                    "delivery_id": str(e.originator_id),
                    "store_id": str(e.store_id),
                    "webhook_id": str(e.webhook_id),
                    "event_id": e.event_id,
                    "event_type": e.event_type,
                    "status": "pending",
                    "attempts": 0,
                    "replay": int(e.replay),
                    "requested_by": _actor(e.actor) if _asked(e) else None,
                    "created_at": _ts(e.timestamp),
                    "last_attempt_at": None,
                    "last_status_code": None,
                    "last_error": None,
                    "next_attempt_at": _ts(e.due_at),
                    "position": position,
                },
            )
        ]
    if isinstance(event, DeliveryAttempted):
        key = {"delivery_id": str(e.originator_id)}
        status = "pending" if e.outcome == "retrying" else e.outcome
        return [
            Update(
                "deliveries",
                key,
                {
                    "status": status,
                    "attempts": e.number,
                    "last_attempt_at": _ts(e.started_at),
                    "last_status_code": e.status_code,
                    "last_error": e.error,
                    "next_attempt_at": _ts(e.next_attempt_at) if e.next_attempt_at else None,
                },
            ),
            Upsert(
                "attempts",
                {
                    "delivery_id": str(e.originator_id),
                    "number": e.number,
                    "store_id": str(e.store_id),
                    "webhook_id": str(e.webhook_id),
                    "event_id": e.event_id,
                    "started_at": _ts(e.started_at),
                    "duration_ms": e.duration_ms,
                    "status_code": e.status_code,
                    "error": e.error,
                    "detail": e.detail,
                    "response_headers": json.dumps(e.response_headers, sort_keys=True),
                    "response_body": e.response_body,
                    "next_attempt_at": _ts(e.next_attempt_at) if e.next_attempt_at else None,
                    "outcome": e.outcome,
                    "response_body_encoding": (
                        None if e.response_body_encoding == "text" else e.response_body_encoding
                    ),
                },
            ),
        ]
    return []


# webhook stats, overall and per hour -----------------------------------------------------


WEBHOOK_STATS_TABLE = Table(
    "webhook_stats",
    {
        "webhook_id": "text",
        "attempts": "integer",
        "succeeded": "integer",
        "failed": "integer",
        "total_ms": "real",
        "last_success_at": "text",
        "last_failure_at": "text",
    },
    ("webhook_id",),
)
WEBHOOK_HOURLY_TABLE = Table(
    "webhook_hourly",
    {"webhook_id": "text", "hour": "text", "succeeded": "integer", "failed": "integer"},
    ("webhook_id", "hour"),
)


def _stats(source: str, position: int, event: Any, context: Context) -> list[Operation]:
    if not isinstance(event, DeliveryAttempted):
        return []
    e: Any = event
    ok = e.status_code is not None and 200 <= e.status_code < 300
    webhook_id = str(e.webhook_id)
    at = _ts(e.started_at)
    return [
        Add(
            "webhook_stats",
            {
                "webhook_id": webhook_id,
                "attempts": 1,
                "succeeded": int(ok),
                "failed": int(not ok),
                "total_ms": e.duration_ms,
                **({"last_success_at": at} if ok else {"last_failure_at": at}),
            },
            ("attempts", "succeeded", "failed", "total_ms"),
        ),
        Add(
            "webhook_hourly",
            {
                "webhook_id": webhook_id,
                "hour": at[:13],
                "succeeded": int(ok),
                "failed": int(not ok),
            },
            ("succeeded", "failed"),
        ),
    ]


# entities: the current state of every store entity ---------------------------------------


ENTITIES_TABLE = Table(
    "entities",
    {
        "entity_id": "text",
        "store_id": "text",
        "kind": "text",
        "version": "integer",
        "view": "text",
        "updated_at": "text",
        # The log position of the entity's creation: the order and cursor key of the
        # lists (`GET /v1/customers`, …), strictly increasing, the same after a rebuild.
        "position": "integer",
        "created_at": "text",
        # What the lists filter on, copied from the view (null where a kind has none).
        "email": "text",
        "code": "text",
        "status": "text",
        "customer_id": "text",
        "product_id": "text",
        "variant_id": "text",
        "sku_id": "text",
    },
    ("entity_id",),
    (("store_id", "kind", "position"), ("customer_id",), ("product_id",), ("variant_id",)),
)
# The view's key of each filter column.
ENTITY_FILTERS = {
    "email": "email",
    "code": "code",
    "status": "status",
    "customer_id": "customerId",
    "product_id": "productId",
    "variant_id": "variantId",
    "sku_id": "skuId",
}


def _entity_view_wanted(event: Any) -> tuple[UUID, int] | None:
    if type(event) not in EVENT_TYPES:
        return None
    return event.originator_id, event.originator_version


def _entities(source: str, position: int, event: Any, context: Context) -> list[Operation]:
    event_type = EVENT_TYPES.get(type(event))
    if event_type is None:
        return []
    e: Any = event
    view = context.view_at(e.originator_id, e.originator_version)
    row: JSON = {
        "entity_id": str(e.originator_id),
        "store_id": view["storeId"],
        "kind": event_type.split(".", 1)[0],
        "version": e.originator_version,
        "view": json.dumps(view, sort_keys=True),
        "updated_at": _ts(e.timestamp),
        **{column: view.get(key) for column, key in ENTITY_FILTERS.items()},
    }
    if e.originator_version == 1:  # created: later events keep these
        row |= {"position": position, "created_at": view["createdAt"]}
    return [Upsert("entities", row)]


# audit: what happened, when, and who did it ----------------------------------------------


AUDIT_TABLE = Table(
    "audit",
    {
        "entry_id": "text",
        "occurred_at": "text",
        "store_id": "text",
        "kind": "text",
        "actor": "text",
        "webhook_id": "text",
        "event_id": "text",
        "delivery_id": "text",
        "summary": "text",
        "details": "text",
    },
    ("entry_id",),
    (
        ("store_id", "occurred_at"),
        ("store_id", "webhook_id", "occurred_at"),
        ("store_id", "kind", "occurred_at"),
        ("event_id",),
        ("delivery_id",),
    ),
)


def _entry(
    source: str,
    position: int,
    event: Any,
    *,
    store_id: UUID,
    kind: str,
    summary: str,
    actor: str | None,
    webhook_id: UUID | None = None,
    event_id: str | None = None,
    delivery_id: UUID | None = None,
    details: JSON | None = None,
) -> Upsert:
    return Upsert(
        "audit",
        {
            # Zero-padded so entry ids sort like positions, as a tie-breaker after time.
            "entry_id": f"{source}:{position:012d}",
            "occurred_at": _ts(event.timestamp),
            "store_id": str(store_id),
            "kind": kind,
            "actor": actor,
            "webhook_id": str(webhook_id) if webhook_id else None,
            "event_id": event_id,
            "delivery_id": str(delivery_id) if delivery_id else None,
            "summary": summary,
            "details": json.dumps(details or {}, sort_keys=True),
        },
    )


_WEBHOOK_CHANGES = {"sealed_headers"}  # never in the audit: sealed, and noise


def _audit(source: str, position: int, event: Any, context: Context) -> list[Operation]:
    e: Any = event
    kind = type(event).__qualname__
    entry: Upsert | None = None
    if isinstance(event, Store.Created):
        entry = _entry(
            source,
            position,
            e,
            store_id=e.originator_id,
            kind="store.created",
            summary=f"store {e.name!r} created",
            actor=_actor(e.actor),
        )
    elif kind == "ApiKey.Created":
        entry = _entry(
            source,
            position,
            e,
            store_id=e.store_id,
            kind="api_key.created",
            summary=f"API key {e.key_id} created"
            + (f" acting for {e.principal}" if e.principal else " for a system integration"),
            actor=_actor(e.actor),
            details={"keyId": e.key_id, "principal": e.principal},
        )
    elif kind == "ApiKey.Revoked":
        entry = _entry(
            source,
            position,
            e,
            store_id=context.store_of(source, e.originator_id),
            kind="api_key.revoked",
            summary="API key revoked",
            actor=_actor(e.actor),
        )
    elif kind.startswith("Webhook."):
        entry = _webhook_entry(source, position, e, kind.split(".", 1)[1], context)
    elif isinstance(event, DeliveryScheduled):
        if e.replay:
            kind, summary = "delivery.sent_again", f"{e.event_type} sent again"
        elif is_test_event(e.event_id):
            kind, summary = "delivery.test", f"test {e.event_type} to deliver"
        else:
            kind, summary = "delivery.created", f"{e.event_type} to deliver"
        entry = _entry(
            source,
            position,
            e,
            store_id=e.store_id,
            kind=kind,
            summary=summary,
            actor=_actor(e.actor),
            webhook_id=e.webhook_id,
            event_id=e.event_id,
            delivery_id=e.originator_id,
        )
    elif isinstance(event, DeliveryAttempted):
        entry = _attempt_entry(source, position, e)
    return [entry] if entry else []


def _webhook_entry(
    source: str, position: int, e: Any, name: str, context: Context
) -> Upsert | None:
    store_id = context.store_of(source, e.originator_id)
    common: JSON = {"store_id": store_id, "actor": _actor(e.actor), "webhook_id": e.originator_id}
    if name == "Created":
        return _entry(
            source,
            position,
            e,
            kind="webhook.created",
            summary=f"webhook created for {e.url} ({', '.join(e.event_types)})",
            details={"url": e.url, "eventTypes": e.event_types, "enabled": e.enabled},
            **common,
        )
    if name == "Updated":
        changes = {k: v for k, v in e.changes.items() if k not in _WEBHOOK_CHANGES}
        if not changes and "sealed_headers" in e.changes:
            changes = {"header_names": "(custom header values changed)"}
        return _entry(
            source,
            position,
            e,
            kind="webhook.updated",
            summary="webhook changed: " + ", ".join(sorted(changes)),
            details=changes,
            **common,
        )
    if name == "Enabled":
        return _entry(
            source, position, e, kind="webhook.enabled", summary="webhook enabled", **common
        )
    if name == "Disabled":
        return _entry(
            source,
            position,
            e,
            kind="webhook.disabled",
            summary=f"webhook disabled: {e.reason}",
            details={"reason": e.reason},
            **common,
        )
    if name == "SecretRotated":
        until = _ts(e.previous_expires_at)
        return _entry(
            source,
            position,
            e,
            kind="webhook.secret_rotated",
            summary=f"signing secret rotated; the previous one signs until {until}",
            details={"previousSecretExpiresAt": until},
            **common,
        )
    if name == "SecretShownAgain":
        return _entry(
            source,
            position,
            e,
            kind="webhook.secret_shown_again",
            summary=f"signing secret shown again to API key {e.key_id} (a repeated request)",
            details={"keyId": e.key_id, "idempotencyKey": e.idempotency_key},
            **common,
        )
    if name == "Deleted":
        return _entry(
            source, position, e, kind="webhook.deleted", summary="webhook deleted", **common
        )
    if name == "Resent":
        end = _ts(e.until) if e.until else None
        verb = "recovered" if e.mode == "recover" else "replayed"
        what = "failed deliveries" if e.mode == "recover" else "events"
        return _entry(
            source,
            position,
            e,
            kind=f"webhook.{verb}",
            summary=f"{e.count} {what} since {_ts(e.since)} {verb}",
            details={
                "since": _ts(e.since),
                "until": end,
                "eventTypes": e.event_types,
                "count": e.count,
            },
            **common,
        )
    return None


def _attempt_entry(source: str, position: int, e: Any) -> Upsert:
    answer = f"HTTP {e.status_code}" if e.status_code is not None else (e.error or "error")
    if e.outcome == "succeeded":
        kind, summary = "delivery.succeeded", f"attempt {e.number} succeeded: {answer}"
    elif e.outcome == "retrying":
        kind = "delivery.attempt_failed"
        summary = f"attempt {e.number} failed: {answer}; next at {_ts(e.next_attempt_at)}"
    else:
        kind, summary = "delivery.failed", f"attempt {e.number} failed: {answer}; no more retries"
    return _entry(
        source,
        position,
        e,
        store_id=e.store_id,
        kind=kind,
        summary=f"{summary} ({e.duration_ms:.0f} ms)",
        actor="system",
        webhook_id=e.webhook_id,
        event_id=e.event_id,
        delivery_id=e.originator_id,
        details={"attempt": e.number, "statusCode": e.status_code, "error": e.error},
    )


# The registry ------------------------------------------------------------------------------

READ_MODELS: tuple[ReadModel, ...] = (
    ReadModel("events", "every event with its envelope", ("dispatch",), (EVENTS_TABLE,), _events),
    ReadModel(
        "deliveries",
        "every delivery with its attempts",
        ("dispatch",),
        (DELIVERIES_TABLE, ATTEMPTS_TABLE),
        _deliveries,
    ),
    ReadModel(
        "webhook_stats",
        "per-webhook attempt counts, latency, last success and failure, per hour",
        ("dispatch",),
        (WEBHOOK_STATS_TABLE, WEBHOOK_HOURLY_TABLE),
        _stats,
    ),
    ReadModel(
        "entities",
        "the current state of every store entity",
        ("commerce",),
        (ENTITIES_TABLE,),
        _entities,
        _entity_view_wanted,
    ),
    ReadModel(
        "audit",
        "what happened, when and who did it",
        ("webhooks", "dispatch"),
        (AUDIT_TABLE,),
        _audit,
    ),
)
BY_NAME = {model.name: model for model in READ_MODELS}
TABLES = {table.name: table for model in READ_MODELS for table in model.tables}


# Folding a batch -----------------------------------------------------------------------------


def _key(op: Operation) -> tuple[str, tuple[Any, ...]]:
    if isinstance(op, Update):
        return op.table, tuple(op.key[k] for k in TABLES[op.table].key)
    return op.table, tuple(op.row[k] for k in TABLES[op.table].key)


def _merge(earlier: Operation, later: Operation) -> Operation | None:
    """One operation with the effect of ``earlier`` then ``later`` on the same row, or
    None when no single operation has it."""
    if isinstance(earlier, Upsert) and isinstance(later, Upsert):
        return Upsert(earlier.table, {**earlier.row, **later.row})
    if isinstance(earlier, Upsert) and isinstance(later, Update):
        # Inserted or updated by the first; the second sets some of its columns.
        return Upsert(earlier.table, {**earlier.row, **later.values})
    if isinstance(earlier, Update) and isinstance(later, Update):
        return Update(earlier.table, earlier.key, {**earlier.values, **later.values})
    if (
        isinstance(earlier, Add)
        and isinstance(later, Add)
        and earlier.counters == later.counters
        # Integers only: summing floats here rather than in the database would change
        # the order of the additions, and so (in the last bits) the stored totals, which
        # would then depend on how the log was cut into batches.
        and all(type(earlier.row[c]) is int and type(later.row[c]) is int for c in earlier.counters)
    ):
        row = {**earlier.row, **later.row}
        for counter in earlier.counters:
            row[counter] = earlier.row[counter] + later.row[counter]
        return Add(earlier.table, row, earlier.counters)
    return None


def fold(operations: Sequence[Operation]) -> list[list[Operation]]:
    """The same effect as applying ``operations`` one by one, in fewer operations: those
    on one row are merged where a single operation does the same (an insert then an
    update of the delivery, counters added up). Returned as *generations*: each touches
    a row at most once, so its operations may be applied in any order (grouped into one
    statement per shape); generation n+1 must follow generation n."""
    generations: list[list[Operation]] = []
    last: dict[tuple[str, tuple[Any, ...]], tuple[int, int]] = {}  # row -> (gen, index)
    for op in operations:
        key = _key(op)
        if key in last:
            generation, index = last[key]
            merged = _merge(generations[generation][index], op)
            if merged is not None:
                generations[generation][index] = merged
                continue
            generation += 1
        else:
            generation = 0
        if generation == len(generations):
            generations.append([])
        generations[generation].append(op)
        last[key] = (generation, len(generations[generation]) - 1)
    return generations
