"""`webround audit`: the audit log from the command line (§7), as a table or JSON.

webround audit --store STORE_ID [--since T] [--until T] [--webhook ID] [--event EVENT_ID]
               [--delivery ID] [--actor WHO] [--kind KIND ...] [--oldest-first]
               [--limit N] [--json]

The same filters and rows as `GET /v1/audit` (both ask `infrastructure.queries`). Times are
ISO 8601 (`2030-01-01T12:00:00Z`) or a duration back from now (`90s`, `30m`, `1h`, `7d`).
The read models are brought up to date first, so the answer includes everything recorded
until the command started.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from application.errors import InvalidRequest
from infrastructure import terminal
from infrastructure.queries import MAX_LIMIT, Queries
from infrastructure.terminal import moment_or_ago

if TYPE_CHECKING:
    from infrastructure.bootstrap import Services
    from infrastructure.settings import Settings

JSON = dict[str, Any]
_FLAGS = {
    "since": "--since",
    "until": "--until",
    "webhookId": "--webhook",
    "eventId": "--event",
    "deliveryId": "--delivery",
    "actor": "--actor",
    "kind": "--kind",
    "limit": "--limit",
}


def register(commands: Any) -> None:
    """Add the `audit` subcommand to the `webround` parser's subparsers."""
    audit = commands.add_parser(
        "audit",
        help="what happened, when, and who did it (webhooks and deliveries)",
        description="Query the audit log of a store, newest first.",
    )
    audit.add_argument(
        "--store", required=True, type=UUID, metavar="STORE_ID", help="the store whose log to read"
    )
    audit.add_argument("--since", help="from this time (ISO 8601, or ago: 30m, 1h, 7d)")
    audit.add_argument("--until", help="before this time (ISO 8601, or ago: 30m, 1h, 7d)")
    audit.add_argument("--webhook", metavar="WEBHOOK_ID", help="about this webhook")
    audit.add_argument("--event", metavar="EVENT_ID", help="about this event (evt_…)")
    audit.add_argument("--delivery", metavar="DELIVERY_ID", help="about this delivery")
    audit.add_argument("--actor", help="done by this person's email, or `system`")
    audit.add_argument(
        "--kind",
        action="append",
        help="of this kind (delivery.sent_again) or prefix (webhook.); repeat or "
        "separate with commas for several",
    )
    audit.add_argument("--oldest-first", action="store_true", help="oldest entries first")
    audit.add_argument(
        "--limit", type=int, default=50, help="at most this many entries (default 50)"
    )
    audit.add_argument("--json", action="store_true", help="print a JSON list of the entries")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from infrastructure.startup import open_services

    services = open_services(settings)
    try:
        catch_up(services)
        entries, more = entries_for(Queries(services.read_models), args)
    except InvalidRequest as error:
        flag = _FLAGS.get(error.field or "", error.field or "")
        print(f"webround audit: {flag}: {error}", file=sys.stderr)
        return 2
    finally:
        services.close()
    if args.json:
        # ASCII JSON, as the CLI's other commands print: no character of a merchant's
        # text reaches the terminal raw (C1 controls, bidirectional overrides).
        print(json.dumps(entries, indent=2, ensure_ascii=True))
    else:
        print(table(entries))
        if more:
            print(
                f"(more entries follow: raise --limit above {args.limit} or narrow the filters)",
                file=sys.stderr,
            )
    return 0


def catch_up(services: Services) -> None:
    while services.read_models.catch_up_all():
        pass


def entries_for(queries: Queries, args: argparse.Namespace) -> tuple[list[JSON], bool]:
    """Up to ``--limit`` entries, page after page; and whether more follow."""
    if args.limit < 1:
        raise InvalidRequest("must be at least 1", "limit")
    now = datetime.now(UTC)
    filters: JSON = {
        "since": moment_or_ago(args.since, now, "since"),
        "until": moment_or_ago(args.until, now, "until"),
        "webhook_id": args.webhook,
        "event_id": args.event,
        "delivery_id": args.delivery,
        "actor": args.actor,
        "kind": args.kind,
        "newest_first": not args.oldest_first,
    }
    entries: list[JSON] = []
    cursor = None
    while len(entries) < args.limit:
        page = queries.list_audit(
            args.store,
            limit=min(args.limit - len(entries), MAX_LIMIT),
            cursor=cursor,
            **filters,
        )
        entries.extend(page["data"])
        cursor = page["nextCursor"]
        if cursor is None:
            return entries, False
    return entries, True


def table(entries: list[JSON]) -> str:
    """Time, kind, actor and summary of each entry, in aligned columns, every cell
    `printable` (merchants' text never drives the operator's terminal)."""
    rows = [
        (entry["occurredAt"][:19] + "Z", entry["kind"], entry["actor"] or "-", entry["summary"])
        for entry in entries
    ]
    return terminal.table(("TIME", "KIND", "ACTOR", "SUMMARY"), rows, "no audit entries match")
