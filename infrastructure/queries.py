"""Read-only questions over the read models (§7): events, deliveries, the audit log, health.

Every query is asked for one store and never answers another store's rows. Answers are
dicts shaped as the API returns them (camelCase); lists are `{"data", "nextCursor"}`.

Lists page by keyset on a strictly increasing key — events and deliveries by their log
position, audit entries by (time, entry id) — so a page starts exactly after the last row
of the previous one: rows recorded between two page requests neither shift nor repeat
anything. Cursors are opaque to clients; inside, a prefix names the list and the rest is
the key of the row a page ends with (`CURSORS`): a cursor of another list is refused, one
used with the other order continues from its place the other way. Every string of a
cursor's published shape is a place in its list, so the API takes whatever its document
allows.

Filters are validated here, so the API and the CLI refuse the same input with the same
message (`InvalidRequest` naming the field). Times are ISO 8601 with `Z` or an offset;
`since` is inclusive, `until` exclusive.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from application.errors import InvalidRequest, NotFound
from application.views import timestamp
from domain.delivery import EVENT_ID_PATTERN, TEST_EVENT_PREFIX, is_test_event
from domain.event_types import EVENT_CLASSES
from domain.order import OrderStatus
from domain.subscription import SubscriptionStatus
from domain.webhook import EVENT_TYPE_PATTERNS, matches
from infrastructure.readmodels import ReadModelStore
from projections.readmodels import ENTITY_FILTERS

JSON = dict[str, Any]
MAX_LIMIT = 200
DELIVERY_STATUSES = ("pending", "succeeded", "failed")
EVENT_ID = re.compile(EVENT_ID_PATTERN)
# An RFC 3339 date-time (what JSON Schema's `date-time` is), published as this pattern.
MOMENT_PATTERN = (
    "^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\\.[0-9]+)?"
    "([Zz]|([+-])([0-9]{2}):([0-9]{2}))$"
)
_MOMENT = re.compile(MOMENT_PATTERN.removesuffix("$") + "\\Z", re.ASCII)
MOMENT_MESSAGE = "must be an ISO 8601 time with a time zone (RFC 3339), e.g. 2030-01-01T12:00:00Z"
_EARLIEST, _LATEST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
_KIND = re.compile(r"^[a-z_]+(\.[a-z_]*|\.\*)?$")
# The `kind` filter as the API publishes it: 1 to 20 kinds or prefixes, comma-separated.
KINDS_PATTERN = "^[a-z_]+([.][a-z_]*|[.][*])?(,[a-z_]+([.][a-z_]*|[.][*])?){0,19}$"
_ENTITIES = {name.split(".", 1)[0] for name in EVENT_CLASSES}
# Every value of the `eventType` filter: an exact type, or `entity.*`.
EVENT_TYPE_FILTERS = [pattern for pattern in EVENT_TYPE_PATTERNS if pattern != "*"]

# The filters of each entity list, by query parameter name (ids, text, or a status).
ENTITY_LISTS: dict[str, tuple[str, ...]] = {
    "customer": ("email",),
    "product": (),
    "sku": ("productId", "variantId", "code"),
    "order": ("customerId", "status"),
    "subscription": ("customerId", "skuId", "status"),
}
STATUSES: dict[str, tuple[str, ...]] = {
    "order": tuple(status.value for status in OrderStatus),
    "subscription": tuple(status.value for status in SubscriptionStatus),
}
# A filter is named by the view's key it matches (`customerId`), stored in its column.
_FILTER_COLUMNS = {key: column for column, key in ENTITY_FILTERS.items()}


class Queries:
    """What the API and the CLI ask of the read models, one store at a time."""

    def __init__(self, read_models: ReadModelStore) -> None:
        self._rm = read_models

    # Events ------------------------------------------------------------------------

    def list_events(
        self,
        store_id: UUID,
        *,
        event_type: str | None = None,
        entity_id: str | UUID | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = True,
        test: bool = False,
    ) -> JSON:
        """The store's events; with ``test``, its test events instead (ADR 0027). Test
        events come from no log position, so they page by time and id."""
        where = _Where("store_id = ?", str(store_id))
        if cursor and CURSORS["test-events"].pattern.match(cursor):
            test = True  # a cursor continues the list it came from
        elif cursor and CURSORS["events"].pattern.match(cursor):
            test = False
        if test:
            where.prefix("event_id", TEST_EVENT_PREFIX)
            where.add("position = 0")  # every test event's: the (store, position) index finds them
            keyset = _Keyset("test-events", ("occurred_at", "event_id"), newest_first)
        else:
            where.not_prefix("event_id", TEST_EVENT_PREFIX)
            keyset = _Keyset("events", ("position",), newest_first)
        if event_type is not None:
            exact, prefix = _event_type_filter(event_type)
            if prefix is not None:
                where.prefix("event_type", prefix)
            else:
                where.add("event_type = ?", exact)
        if entity_id is not None:
            where.add("entity_id = ?", str(_uuid(entity_id, "entityId")))
        where.time_range("occurred_at", since, until)
        rows, next_cursor = self._page(
            "rm_events",
            "event_id, event_type, entity_id, occurred_at, initiated_by, position",
            where,
            keyset,
            limit,
            cursor,
        )
        counts = self._delivery_counts(store_id, [r["event_id"] for r in rows])
        return {
            "data": [_event(r, counts.get(r["event_id"], {})) for r in rows],
            "nextCursor": next_cursor,
        }

    def get_event(self, store_id: UUID, event_id: str) -> JSON:
        """The event with its envelope, and its deliveries per webhook with every attempt."""
        if not EVENT_ID.match(event_id):
            raise NotFound("event", event_id)
        rows = self._rm.query(
            "SELECT event_id, event_type, entity_id, occurred_at, initiated_by, envelope "
            "FROM rm_events WHERE store_id = ? AND event_id = ?",
            (str(store_id), event_id),
        )
        if not rows:
            raise NotFound("event", event_id)
        deliveries = self._deliveries_with_attempts(
            "SELECT * FROM rm_deliveries WHERE store_id = ? AND event_id = ? ORDER BY position",
            (str(store_id), event_id),
        )
        counts = dict.fromkeys(DELIVERY_STATUSES, 0)
        by_webhook: dict[str, list[JSON]] = {}
        for delivery in deliveries:
            counts[delivery["status"]] += 1
            by_webhook.setdefault(delivery["webhookId"], []).append(delivery)
        return {
            **_event(rows[0], counts),
            "envelope": json.loads(rows[0]["envelope"]),
            "deliveriesByWebhook": [
                {"webhookId": webhook_id, "deliveries": items}
                for webhook_id, items in by_webhook.items()
            ],
        }

    def feed(
        self,
        store_id: UUID,
        *,
        cursor: str | None,
        event_types: Sequence[str] | None = None,
        limit: int = 100,
    ) -> JSON:
        """The store's envelopes after ``cursor``, oldest first, for `webround listen`
        (ADR 0028): ``{"data": [...], "cursor": ...}``, where the cursor always names the
        last event read — matching ``event_types`` or not — so following the cursors
        reads every event once. Without a cursor: none, and the cursor of the newest event
        (listening starts now). Test events are never in the feed."""
        keyset = _Keyset("feed", ("position",), newest_first=False)
        after = keyset.decode(cursor)
        if after is None:
            rows = self._rm.query(
                "SELECT MAX(position) AS position FROM rm_events WHERE store_id = ?",
                (str(store_id),),
            )
            head = int(rows[0]["position"] or 0) if rows else 0
            return {"data": [], "cursor": keyset.encode({"position": head})}
        if isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"must be a whole number from 1 to {MAX_LIMIT}", "limit")
        # Envelopes reach this table in log order, a store's at increasing positions
        # (one dispatcher turns a store's events into envelopes in order): a position
        # once passed never gains a row, so the cursor leaves nothing behind.
        where = _Where("store_id = ?", str(store_id))
        where.not_prefix("event_id", TEST_EVENT_PREFIX)
        where.add("position > ?", after[0])
        rows = self._rm.query(
            "SELECT event_id, event_type, position, envelope FROM rm_events "  # noqa: S608
            f"WHERE {where.sql} ORDER BY position LIMIT ?",
            (*where.params, limit),
        )
        wanted = list(event_types) if event_types else ["*"]
        return {
            "data": [
                {
                    "eventId": r["event_id"],
                    "eventType": r["event_type"],
                    "envelope": json.loads(r["envelope"]),
                }
                for r in rows
                if matches(wanted, r["event_type"])
            ],
            "cursor": keyset.encode(rows[-1]) if rows else cursor,
        }

    def _delivery_counts(self, store_id: UUID, event_ids: Sequence[str]) -> dict[str, JSON]:
        if not event_ids:
            return {}
        marks = ", ".join("?" * len(event_ids))
        rows = self._rm.query(
            "SELECT event_id, status, COUNT(*) AS n FROM rm_deliveries "  # noqa: S608 (marks only)
            f"WHERE store_id = ? AND event_id IN ({marks}) GROUP BY event_id, status",
            (str(store_id), *event_ids),
        )
        counts: dict[str, JSON] = {}
        for row in rows:
            counts.setdefault(row["event_id"], {})[row["status"]] = int(row["n"])
        return counts

    # Deliveries --------------------------------------------------------------------

    def list_deliveries(
        self,
        store_id: UUID,
        *,
        webhook_id: str | UUID | None = None,
        event_id: str | None = None,
        status: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = True,
    ) -> JSON:
        where = _Where("store_id = ?", str(store_id))
        if webhook_id is not None:
            where.add("webhook_id = ?", str(_uuid(webhook_id, "webhookId")))
        if event_id is not None:
            where.add("event_id = ?", _event_id(event_id))
        if status is not None:
            if status not in DELIVERY_STATUSES:
                raise InvalidRequest(f"must be one of {', '.join(DELIVERY_STATUSES)}", "status")
            where.add("status = ?", status)
        where.time_range("created_at", since, until)
        rows, next_cursor = self._page(
            "rm_deliveries",
            "*",
            where,
            _Keyset("deliveries", ("position",), newest_first),
            limit,
            cursor,
        )
        return {"data": [_delivery(r) for r in rows], "nextCursor": next_cursor}

    def get_delivery(self, store_id: UUID, delivery_id: str | UUID) -> JSON:
        try:
            key = str(_uuid(delivery_id, "id"))
        except InvalidRequest:
            raise NotFound("delivery", delivery_id) from None
        found = self._deliveries_with_attempts(
            "SELECT * FROM rm_deliveries WHERE store_id = ? AND delivery_id = ?",
            (str(store_id), key),
        )
        if not found:
            raise NotFound("delivery", delivery_id)
        return found[0]

    def _deliveries_with_attempts(self, sql: str, params: Sequence[Any]) -> list[JSON]:
        deliveries = [_delivery(r) for r in self._rm.query(sql, params)]
        if not deliveries:
            return []
        marks = ", ".join("?" * len(deliveries))
        attempts = self._rm.query(
            "SELECT * FROM rm_attempts "  # noqa: S608 (placeholders only)
            f"WHERE store_id = ? AND delivery_id IN ({marks}) ORDER BY delivery_id, number",
            (params[0], *(d["id"] for d in deliveries)),
        )
        by_delivery: dict[str, list[JSON]] = {}
        for row in attempts:
            by_delivery.setdefault(row["delivery_id"], []).append(_attempt(row))
        return [{**d, "attempts": by_delivery.get(d["id"], [])} for d in deliveries]

    # Audit -------------------------------------------------------------------------

    def list_audit(
        self,
        store_id: UUID,
        *,
        since: str | None = None,
        until: str | None = None,
        webhook_id: str | UUID | None = None,
        event_id: str | None = None,
        delivery_id: str | UUID | None = None,
        actor: str | None = None,
        kind: str | Sequence[str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = True,
    ) -> JSON:
        """What happened, when, and who did it. ``kind`` is exact (`delivery.failed`), a
        prefix (`webhook.` or `webhook.*`), or several of these (a list, or comma-separated):
        an entry matches any of them."""
        where = _Where("store_id = ?", str(store_id))
        if webhook_id is not None:
            where.add("webhook_id = ?", str(_uuid(webhook_id, "webhookId")))
        if event_id is not None:
            where.add("event_id = ?", _event_id(event_id))
        if delivery_id is not None:
            where.add("delivery_id = ?", str(_uuid(delivery_id, "deliveryId")))
        if actor is not None:
            where.add("actor = ?", _text(actor, "actor", 254))
        if kind is not None:
            where.any_of("kind", _kinds(kind))
        where.time_range("occurred_at", since, until)
        rows, next_cursor = self._page(
            "rm_audit",
            "*",
            where,
            _Keyset("audit", ("occurred_at", "entry_id"), newest_first),
            limit,
            cursor,
        )
        return {"data": [_audit(r) for r in rows], "nextCursor": next_cursor}

    # Store entities ----------------------------------------------------------------

    def list_entities(
        self,
        store_id: UUID,
        kind: str,
        *,
        filters: dict[str, str] | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = True,
    ) -> JSON:
        """The store's entities of one kind (``customer``, ``sku``, …) as `GET` of each
        answers them, newest (or oldest) created first. ``filters`` are exact matches, by
        query parameter name (`ENTITY_LISTS` says which each kind has); ``since`` and
        ``until`` bound the creation time."""
        where = _Where("store_id = ? AND kind = ?", str(store_id), kind)
        for name, value in (filters or {}).items():
            where.add(f"{_FILTER_COLUMNS[name]} = ?", _entity_filter(kind, name, value))
        where.time_range("created_at", since, until)
        rows, next_cursor = self._page(
            "rm_entities",
            "view, position",
            where,
            _Keyset(kind, ("position",), newest_first),
            limit,
            cursor,
        )
        return {"data": [json.loads(r["view"]) for r in rows], "nextCursor": next_cursor}

    # Webhook health ----------------------------------------------------------------

    def webhook_health(self, store_id: UUID, webhook_ids: Sequence[str | UUID]) -> dict[str, JSON]:
        """Attempts, success rate, average latency and last success and failure of each
        webhook (all zero and null for one without attempts, or of another store)."""
        ids = [str(_uuid(w, "webhookId")) for w in webhook_ids]
        health = {w: _health(None) for w in ids}
        if not ids:
            return health
        marks = ", ".join("?" * len(ids))
        rows = self._rm.query(
            "SELECT * FROM rm_webhook_stats s "  # noqa: S608 (placeholders only)
            f"WHERE s.webhook_id IN ({marks}) AND {_OWNED}",
            (*ids, str(store_id)),
        )
        health.update({r["webhook_id"]: _health(r) for r in rows})
        return health

    def webhook_hourly(
        self, store_id: UUID, webhook_id: str | UUID, since: str | None = None
    ) -> list[JSON]:
        """Succeeded and failed attempts per hour (UTC) from ``since``, oldest first; only
        hours with attempts."""
        params: list[Any] = [str(_uuid(webhook_id, "webhookId")), str(store_id)]
        sql = "SELECT hour, succeeded, failed FROM rm_webhook_hourly s WHERE s.webhook_id = ?"
        sql += " AND " + _OWNED
        start = _moment(since, "since")
        if start is not None:
            sql += " AND hour >= ?"
            params.append(start[:13])
        return [
            {"hour": f"{r['hour']}:00:00Z", "succeeded": r["succeeded"], "failed": r["failed"]}
            for r in self._rm.query(sql + " ORDER BY hour", params)
        ]

    # Recover and replay ------------------------------------------------------------

    def failed_event_ids(
        self, store_id: UUID, webhook_id: UUID, since: datetime, until: datetime | None = None
    ) -> list[str]:
        """The store events of the webhook's failed deliveries created in [since, until)
        (never a test event's)."""
        where = _Where("store_id = ?", str(store_id))
        where.add("webhook_id = ?", str(webhook_id))
        where.add("status = 'failed'")
        where.not_prefix("event_id", TEST_EVENT_PREFIX)
        where.time_range("created_at", *_times(since, until))
        rows = self._rm.query(
            f"SELECT event_id FROM rm_deliveries WHERE {where.sql} ORDER BY position",  # noqa: S608
            where.params,
        )
        return [r["event_id"] for r in rows]

    def events_between(
        self, store_id: UUID, since: datetime, until: datetime | None = None
    ) -> list[tuple[str, str]]:
        """(event id, event type) of the store's events in [since, until), oldest first
        (never a test event)."""
        where = _Where("store_id = ?", str(store_id))
        where.not_prefix("event_id", TEST_EVENT_PREFIX)
        where.time_range("occurred_at", *_times(since, until))
        rows = self._rm.query(
            "SELECT event_id, event_type FROM rm_events "  # noqa: S608 (placeholders only)
            f"WHERE {where.sql} ORDER BY position",
            where.params,
        )
        return [(r["event_id"], r["event_type"]) for r in rows]

    # Paging ------------------------------------------------------------------------

    def _page(
        self,
        table: str,
        columns: str,
        where: _Where,
        keyset: _Keyset,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[JSON], str | None]:
        if isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"must be a whole number from 1 to {MAX_LIMIT}", "limit")
        after = keyset.decode(cursor)
        if after is not None:
            where.add(keyset.after_clause(), *after)
        rows = self._rm.query(
            f"SELECT {columns} FROM {table} WHERE {where.sql} "  # noqa: S608 (ours, not input)
            f"ORDER BY {keyset.order_by()} LIMIT ?",
            (*where.params, limit + 1),
        )
        if len(rows) <= limit:
            return rows, None
        rows = rows[:limit]
        return rows, keyset.encode(rows[-1])


_OWNED = (
    "EXISTS (SELECT 1 FROM rm_deliveries d WHERE d.webhook_id = s.webhook_id AND d.store_id = ?)"
)


class _Where:
    """A conjunction of conditions with their parameters, all placeholders."""

    def __init__(self, condition: str, *params: Any) -> None:
        self._conditions = [condition]
        self.params: list[Any] = list(params)

    @property
    def sql(self) -> str:
        return " AND ".join(self._conditions)

    def add(self, condition: str, *params: Any) -> None:
        self._conditions.append(condition)
        self.params.extend(params)

    def prefix(self, column: str, prefix: str) -> None:
        # substr, not LIKE: `_` is a LIKE wildcard and SQLite's LIKE ignores case.
        self.add(f"substr({column}, 1, {len(prefix)}) = ?", prefix)

    def not_prefix(self, column: str, prefix: str) -> None:
        self.add(f"substr({column}, 1, {len(prefix)}) <> ?", prefix)

    def any_of(self, column: str, patterns: Sequence[tuple[str, bool]]) -> None:
        parts, params = [], []
        for value, is_prefix in patterns:
            parts.append(f"substr({column}, 1, {len(value)}) = ?" if is_prefix else f"{column} = ?")
            params.append(value)
        self.add("(" + " OR ".join(parts) + ")", *params)

    def time_range(self, column: str, since: str | None, until: str | None) -> None:
        # A range that ends where (or before) it begins holds nothing, and selects nothing:
        # JSON Schema cannot say "later than", so the API takes what its document allows.
        start, end = _moment(since, "since"), _moment(until, "until")
        if start is not None:
            self.add(f"{column} >= ?", start)
        if end is not None:
            self.add(f"{column} < ?", end)


class _Keyset:
    """Order and cursor of one list: the key columns, ascending or descending."""

    def __init__(self, name: str, columns: tuple[str, ...], newest_first: bool) -> None:
        self.name = name
        self.columns = columns
        self.order = "newest" if newest_first else "oldest"

    def order_by(self) -> str:
        direction = "DESC" if self.order == "newest" else "ASC"
        return ", ".join(f"{c} {direction}" for c in self.columns)

    def after_clause(self) -> str:
        # Row values compare lexicographically on SQLite and PostgreSQL alike.
        sign = "<" if self.order == "newest" else ">"
        marks = ", ".join("?" * len(self.columns))
        return f"({', '.join(self.columns)}) {sign} ({marks})"

    def encode(self, row: JSON) -> str:
        return CURSORS[self.name].prefix + "_".join(str(row[c]) for c in self.columns)

    def decode(self, cursor: str | None) -> list[Any] | None:
        """The key a cursor starts after; refused unless it is a cursor of this list."""
        if not cursor:
            return None
        found = CURSORS[self.name].pattern.match(cursor)
        if found is None:
            raise InvalidRequest("is not a cursor this API gave out for this list", "cursor")
        return [
            int(v) if c == "position" else v
            for c, v in zip(self.columns, found.groups(), strict=True)
        ]


@dataclass(frozen=True)
class Cursor:
    """What a list's cursors look like: a prefix naming the list, then the key of the row
    a page ends with. Every string of that shape names a place in the list — a cursor
    for the other order continues from it the other way, one made by hand is a place
    like any other — so the API's published pattern (`schema`) is the whole rule."""

    prefix: str
    key: str  # the regular expression of the key, in the syntax JSON Schema shares

    @property
    def schema_pattern(self) -> str:
        return f"^{self.prefix}{self.key}$"

    @functools.cached_property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(f"{self.prefix}{self.key}\\Z", re.ASCII)


_POSITION = "([0-9]{1,18})"
_TIME = "([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z)"
CURSORS = {
    "events": Cursor("ev_", _POSITION),
    "test-events": Cursor("te_", f"{_TIME}_(evt_test_[0-9a-f]{{32}})"),
    "feed": Cursor("fd_", _POSITION),
    "deliveries": Cursor("dl_", _POSITION),
    # The time and entry id of an audit entry, as the read model stores them.
    "audit": Cursor("au_", f"{_TIME}_([a-z]{{1,20}}:[0-9]{{12,19}})"),
    # The store entities' lists, by kind.
    "customer": Cursor("cu_", _POSITION),
    "product": Cursor("pr_", _POSITION),
    "sku": Cursor("sk_", _POSITION),
    "order": Cursor("or_", _POSITION),
    "subscription": Cursor("su_", _POSITION),
}


# Validation ------------------------------------------------------------------------------


def _moment(value: str | None, field: str) -> str | None:
    """A time filter as the read models store times: UTC, microseconds, `Z`."""
    if value is None:
        return None
    message = MOMENT_MESSAGE
    found = _MOMENT.match(value)
    if found is None:
        raise InvalidRequest(message, field)
    year, month, day, hour, minute, second = (int(g) for g in found.groups()[:6])
    fraction, sign, offset_hours, offset_minutes = found.group(7, 9, 10, 11)
    if hour > 23 or minute > 59 or second > 60:
        raise InvalidRequest(message, field)
    if offset_hours is not None and (int(offset_hours) > 23 or int(offset_minutes) > 59):
        raise InvalidRequest(message, field)
    # Any instant RFC 3339 can write is a bound: one before the year 1 or after 9999 is
    # the earliest or latest time there is; a leap second is the end of its minute.
    micro = int((fraction or ".0")[1:7].ljust(6, "0"))
    if second == 60:
        second, micro = 59, 999_999
    try:
        local = datetime(max(year, 1), month, day, hour, minute, second, micro)
    except ValueError:
        raise InvalidRequest(message, field) from None  # no such day (February 30)
    offset = timedelta(hours=int(offset_hours or 0), minutes=int(offset_minutes or 0))
    try:
        m = (local - offset if sign == "+" else local + offset).replace(tzinfo=UTC)
    except OverflowError:
        m = _EARLIEST if sign == "+" else _LATEST
    if year == 0:
        m = _EARLIEST
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T"
        f"{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}Z"
    )


def _times(since: datetime, until: datetime | None) -> tuple[str, str | None]:
    return timestamp(since), timestamp(until) if until is not None else None


def newest_first(order: str | None) -> bool:
    """The `order` of a list: `newest` (the default) or `oldest` first."""
    if order is None or order == "newest":
        return True
    if order == "oldest":
        return False
    raise InvalidRequest("must be newest or oldest", "order")


def parse_moment(value: str, field: str) -> datetime:
    """A time given by a client, validated as the filters validate it."""
    moment = _moment(value, field)
    assert moment is not None
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def _uuid(value: str | UUID, field: str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except (ValueError, TypeError):
        raise InvalidRequest("must be a UUID", field) from None


def _event_id(value: str) -> str:
    if not EVENT_ID.match(value):
        raise InvalidRequest("must be an event id: evt_ and 32 hexadecimal digits", "eventId")
    return value


def _text(value: str, field: str, max_length: int) -> str:
    if not value or len(value) > max_length or "\x00" in value:
        raise InvalidRequest(f"must be 1 to {max_length} characters", field)
    return value


def _entity_filter(kind: str, name: str, value: str) -> str:
    """A filter of an entity list, checked as the column holds it."""
    if name not in ENTITY_LISTS[kind]:
        raise InvalidRequest(f"is not a filter of the {kind} list", name)
    if name == "status":
        if value not in STATUSES[kind]:
            raise InvalidRequest(f"must be one of {', '.join(STATUSES[kind])}", name)
        return value
    if name.endswith("Id"):
        return str(_uuid(value, name))
    return _text(value, name, 254)


def _event_type_filter(value: str) -> tuple[str, str | None]:
    """An exact event type, or `entity.*`: (the name, the prefix to match or None)."""
    if value in EVENT_CLASSES:
        return value, None
    entity, _, rest = value.partition(".")
    if rest == "*" and entity in _ENTITIES:
        return value, entity + "."
    raise InvalidRequest(
        "must be an event type of GET /v1/event-types, or entity.* (e.g. order.*)",
        "eventType",
    )


def _kinds(kind: str | Sequence[str]) -> list[tuple[str, bool]]:
    """Each kind as (value, is a prefix): `webhook.` and `webhook.*` are prefixes."""
    raw = (
        kind.split(",") if isinstance(kind, str) else [k for item in kind for k in item.split(",")]
    )
    values = [k.strip() for k in raw if k.strip()]
    if not values or len(values) > 20 or not all(_KIND.match(k) for k in values):
        raise InvalidRequest(
            "must be audit kinds like delivery.failed, or prefixes like webhook. "
            "(several separated by commas)",
            "kind",
        )
    patterns = []
    for value in values:
        if value.endswith(".*"):
            patterns.append((value[:-1], True))
        elif value.endswith(".") or "." not in value:
            patterns.append((value.rstrip(".") + ".", True))
        else:
            patterns.append((value, False))
    return patterns


# Shapes ----------------------------------------------------------------------------------


def _event(row: JSON, counts: JSON) -> JSON:
    return {
        "eventId": row["event_id"],
        "eventType": row["event_type"],
        "entityId": row["entity_id"],
        "occurredAt": row["occurred_at"],
        "initiatedBy": row["initiated_by"],
        "test": is_test_event(row["event_id"]),
        "deliveries": {status: int(counts.get(status, 0)) for status in DELIVERY_STATUSES},
    }


def _delivery(row: JSON) -> JSON:
    return {
        "id": row["delivery_id"],
        "eventId": row["event_id"],
        "eventType": row["event_type"],
        "webhookId": row["webhook_id"],
        "status": row["status"],
        "attemptCount": int(row["attempts"]),
        "replay": bool(row["replay"]),
        "test": is_test_event(row["event_id"]),
        "requestedBy": row["requested_by"],
        "createdAt": row["created_at"],
        "lastAttemptAt": row["last_attempt_at"],
        "lastStatusCode": row["last_status_code"],
        "lastError": row["last_error"],
        "nextAttemptAt": row["next_attempt_at"],
    }


def _attempt(row: JSON) -> JSON:
    return {
        "number": int(row["number"]),
        "startedAt": row["started_at"],
        "durationMs": float(row["duration_ms"]),
        "statusCode": row["status_code"],
        "error": row["error"],
        "detail": row["detail"],
        "responseHeaders": json.loads(row["response_headers"] or "{}"),
        "responseBody": row["response_body"] or "",
        "responseBodyEncoding": row["response_body_encoding"] or "text",
        "nextAttemptAt": row["next_attempt_at"],
        "outcome": row["outcome"],
    }


def _audit(row: JSON) -> JSON:
    return {
        "id": row["entry_id"],
        "occurredAt": row["occurred_at"],
        "kind": row["kind"],
        "actor": row["actor"],
        "webhookId": row["webhook_id"],
        "eventId": row["event_id"],
        "deliveryId": row["delivery_id"],
        "summary": row["summary"],
        "details": json.loads(row["details"] or "{}"),
    }


def _health(row: JSON | None) -> JSON:
    attempts = int(row["attempts"]) if row else 0
    succeeded = int(row["succeeded"]) if row else 0
    return {
        "attempts": attempts,
        "succeeded": succeeded,
        "failed": int(row["failed"]) if row else 0,
        "successRate": succeeded / attempts if attempts else None,
        "averageLatencyMs": float(row["total_ms"]) / attempts if row and attempts else None,
        "lastSuccessAt": row["last_success_at"] if row else None,
        "lastFailureAt": row["last_failure_at"] if row else None,
    }
