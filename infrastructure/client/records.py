"""`webround events …` and `webround deliveries …`: what happened in the store and what
became of each delivery, over the API's read side (§7), and "Send again" (§6)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

from infrastructure.client.commands import emit
from infrastructure.client.http import JSON, ApiClient, segment
from infrastructure.client.webhooks import answer_of
from infrastructure.terminal import fields, moment_or_ago, printable, table


def run(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return ACTIONS[(args.command, args.action)](client, args, out, err)


# Events ----------------------------------------------------------------------------------


def _events(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    params = {
        "eventType": args.type,
        "entityId": args.entity,
        "test": "true" if args.test else None,
        **_range(args),
    }
    events, more = client.collect("/v1/events", params, args.limit)
    rows = [
        (
            e["occurredAt"],
            e["eventType"] + (" (test)" if e["test"] else ""),
            e["eventId"],
            _counts(e["deliveries"]),
            e["initiatedBy"] or "system",
        )
        for e in events
    ]
    header = ("OCCURRED", "EVENT TYPE", "EVENT ID", "DELIVERIES", "INITIATED BY")
    emit(args, out, events, lambda: table(header, rows, "no events match"))
    _more(args, err, more)
    return 0


def _counts(deliveries: JSON) -> str:
    shown = [f"{n} {status}" for status, n in deliveries.items() if n]
    return ", ".join(shown) or "none"


def _event(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    event = client.get(f"/v1/events/{segment(args.event_id, 'event_id')}")

    def human() -> str:
        parts = [
            fields(
                [
                    ("event id", event["eventId"]),
                    ("event type", event["eventType"] + (" (test)" if event["test"] else "")),
                    ("occurred", event["occurredAt"]),
                    ("initiated by", event["initiatedBy"] or "system"),
                    ("entity", event["entityId"]),
                ]
            ),
            "",
            "envelope:",
            printable_block(json.dumps(event["envelope"], indent=2, ensure_ascii=False)),
        ]
        for group in event["deliveriesByWebhook"]:
            for delivery in group["deliveries"]:
                parts += ["", _delivery_heading(delivery), _attempts(delivery)]
        if not event["deliveriesByWebhook"]:
            parts += ["", "no deliveries"]
        return "\n".join(parts)

    emit(args, out, event, human)
    return 0


def _send_again(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    body = {"webhookId": args.webhook} if args.webhook else None
    sent = client.post(f"/v1/events/{segment(args.event_id, 'event_id')}/send-again", body)

    def human() -> str:
        if not sent["deliveries"]:
            return "no enabled webhook listens to this event: nothing was sent"
        return table(
            ("DELIVERY ID", "WEBHOOK ID"),
            [(d["id"], d["webhookId"]) for d in sent["deliveries"]],
            "",
        )

    emit(args, out, sent, human)
    return 0


# Deliveries ------------------------------------------------------------------------------


def _deliveries(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    params = {
        "webhookId": args.webhook,
        "eventId": args.event,
        "status": args.status,
        **_range(args),
    }
    deliveries, more = client.collect("/v1/deliveries", params, args.limit)
    rows = [
        (
            d["createdAt"],
            d["status"],
            d["attemptCount"],
            _last_answer(d),
            d["eventType"] + _marks(d),
            d["id"],
        )
        for d in deliveries
    ]
    header = ("CREATED", "STATUS", "ATTEMPTS", "LAST ANSWER", "EVENT TYPE", "DELIVERY ID")
    emit(args, out, deliveries, lambda: table(header, rows, "no deliveries match"))
    _more(args, err, more)
    return 0


def _delivery(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    delivery = client.get(f"/v1/deliveries/{segment(args.id)}")
    emit(args, out, delivery, lambda: _delivery_heading(delivery) + "\n" + _attempts(delivery))
    return 0


def _delivery_heading(d: JSON) -> str:
    pairs: list[tuple[str, object]] = [
        ("delivery", d["id"] + _marks(d)),
        ("event", f"{d['eventType']} {d['eventId']}"),
        ("webhook", d["webhookId"]),
        ("status", d["status"]),
        ("created", d["createdAt"]),
    ]
    if d["requestedBy"]:
        pairs.append(("requested by", d["requestedBy"]))
    if d["status"] == "pending" and d["nextAttemptAt"]:
        pairs.append(("next attempt", d["nextAttemptAt"]))
    return fields(pairs)


def _attempts(d: JSON) -> str:
    rows = [
        (
            a["number"],
            a["startedAt"],
            f"{a['durationMs']:.0f} ms",
            answer_of(a),
            a["outcome"],
            _excerpt(a["responseBody"] or a["detail"] or ""),
        )
        for a in d["attempts"]
    ]
    header = ("#", "STARTED", "DURATION", "ANSWER", "OUTCOME", "RESPONSE")
    return table(header, rows, "no attempt yet")


def _marks(d: JSON) -> str:
    return (" (test)" if d["test"] else "") + (" (sent again)" if d["replay"] else "")


def _last_answer(d: JSON) -> str:
    if d["lastStatusCode"] is not None:
        return f"HTTP {d['lastStatusCode']}"
    return str(d["lastError"] or "-")


def _excerpt(text: str, length: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= length else flat[: length - 1] + "…"


# Shared ------------------------------------------------------------------------------------


def _range(args: argparse.Namespace) -> JSON:
    now = datetime.now(UTC)
    return {
        "since": moment_or_ago(args.since, now, "since"),
        "until": moment_or_ago(args.until, now, "until"),
        "order": "oldest" if args.oldest_first else None,
    }


def _more(args: argparse.Namespace, err: TextIO, more: bool) -> None:
    if more and not args.json:
        print(f"(more follow: raise --limit above {args.limit} or narrow the filters)", file=err)


def printable_block(text: str) -> str:
    """Several lines, each made `printable` (the line breaks kept)."""
    return "\n".join(printable(line) for line in text.split("\n"))


ACTIONS: dict[tuple[str, str], Callable[[ApiClient, argparse.Namespace, TextIO, TextIO], int]] = {
    ("events", "list"): _events,
    ("events", "show"): _event,
    ("events", "send-again"): _send_again,
    ("deliveries", "list"): _deliveries,
    ("deliveries", "show"): _delivery,
}
