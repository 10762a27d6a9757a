"""`webround webhooks …`: a store's webhooks over the API (§3), their test events, and
Recover and Replay (§6) with a progress bar of the deliveries they make."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

from application.errors import InvalidRequest
from infrastructure.client.commands import emit
from infrastructure.client.http import JSON, ApiClient, ApiError, segment
from infrastructure.terminal import ProgressBar, fields, moment_or_ago, printable, table

POLL_SECONDS = 0.5
TEST_WAIT_SECONDS = 30.0


def run(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return ACTIONS[args.action](client, args, out, err)


def _list(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    webhooks, more = client.collect("/v1/webhooks", {}, args.limit)
    emit(
        args,
        out,
        webhooks,
        lambda: table(
            ("ID", "STATE", "EVENT TYPES", "URL", "DESCRIPTION"),
            [
                (w["id"], _state(w), ",".join(w["eventTypes"]), w["url"], w["description"])
                for w in webhooks
            ],
            "no webhooks yet: add one with `webround webhooks create --url URL --events TYPES`",
        ),
    )
    if more and not args.json:
        print(f"(more webhooks follow: raise --limit above {args.limit})", file=err)
    return 0


def _show(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    webhook = client.get(f"/v1/webhooks/{segment(args.id)}")
    emit(args, out, webhook, lambda: describe(webhook))
    return 0


def describe(webhook: JSON) -> str:
    headers = ", ".join(webhook["headers"]) or "none"
    rate = webhook["rateLimit"]
    pairs: list[tuple[str, object]] = [
        ("id", webhook["id"]),
        ("url", webhook["url"]),
        ("event types", ", ".join(webhook["eventTypes"])),
        ("description", webhook["description"] or "-"),
        ("state", _state(webhook)),
        ("custom headers", headers + (" (values never shown)" if webhook["headers"] else "")),
        ("timeout", f"{webhook['timeoutSeconds']} s"),
        ("rate limit", f"{rate:g} deliveries/s" if rate else "none"),
        ("created", webhook["createdAt"]),
        ("updated", webhook["updatedAt"]),
    ]
    if webhook.get("disabledReason") and not webhook["enabled"]:
        pairs.insert(5, ("disabled because", webhook["disabledReason"]))
    if webhook.get("previousSecretExpiresAt"):
        pairs.append(("previous secret signs until", webhook["previousSecretExpiresAt"]))
    return fields(pairs)


def _state(webhook: JSON) -> str:
    state = "enabled" if webhook["enabled"] else "disabled"
    circuit = (webhook.get("circuit") or {}).get("state", "closed")
    return state if circuit == "closed" else f"{state}, circuit {circuit}"


def _create(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    body: JSON = {"url": args.url, "eventTypes": _types(args.events), **_settings(args)}
    if args.disabled:
        body["enabled"] = False
    created = client.post("/v1/webhooks", body)
    emit(args, out, created, lambda: _with_secret(created, "signing secret"))
    return 0


def _with_secret(webhook: JSON, what: str) -> str:
    return (
        describe(webhook) + f"\n\n{what} (shown once, keep it now): {printable(webhook['secret'])}"
    )


def _update(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.no_headers and args.header:
        raise InvalidRequest("goes with no --header", "no_headers")
    if args.no_rate_limit and args.rate_limit is not None:
        raise InvalidRequest("goes with no --rate-limit", "no_rate_limit")
    body = _settings(args)
    if args.url is not None:
        body["url"] = args.url
    if args.events is not None:
        body["eventTypes"] = _types(args.events)
    if args.no_headers:
        body["headers"] = {}
    if args.no_rate_limit:
        body["rateLimit"] = None
    if args.reason is not None and not args.disable:
        raise InvalidRequest("goes with --disable", "reason")
    if args.enable or args.disable:
        body["enabled"] = bool(args.enable)
    if args.reason:
        body["disabledReason"] = args.reason
    if not body:
        raise InvalidRequest("nothing to change: give --url, --events, --enable, --disable…")
    updated = client.patch(f"/v1/webhooks/{segment(args.id)}", body)
    emit(args, out, updated, lambda: describe(updated))
    return 0


def _settings(args: argparse.Namespace) -> JSON:
    body: JSON = {}
    if args.description is not None:
        body["description"] = args.description
    if args.header:
        body["headers"] = dict(_header(text) for text in args.header)
    if args.timeout is not None:
        body["timeoutSeconds"] = args.timeout
    if args.rate_limit is not None:
        body["rateLimit"] = args.rate_limit
    return body


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise InvalidRequest(f"write it as 'Name: value', not {text!r}", "header")
    return name.strip(), value.strip()


def _types(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _delete(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    client.delete(f"/v1/webhooks/{segment(args.id)}")
    emit(
        args, out, {"id": args.id, "deleted": True}, lambda: f"webhook {printable(args.id)} deleted"
    )
    return 0


def _rotate(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    body = {"gracePeriodSeconds": args.grace} if args.grace is not None else None
    rotated = client.post(f"/v1/webhooks/{segment(args.id)}/rotate-secret", body)
    emit(args, out, rotated, lambda: _with_secret(rotated, "new signing secret"))
    return 0


# Test events -----------------------------------------------------------------------------


def _test(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    body = {"eventType": args.event_type} if args.event_type else None
    sent = client.post(f"/v1/webhooks/{segment(args.id)}/test", body)
    delivery = _first_attempt(client, sent["deliveryId"]) if args.wait else None
    if args.json:
        emit(args, out, {**sent, "delivery": delivery} if args.wait else sent, str)
    else:
        print(
            f"test {printable(sent['eventType'])} {sent['eventId']} sent: "
            f"delivery {sent['deliveryId']}",
            file=out,
        )
        if args.wait:
            print(_attempt_line(delivery), file=out)
    if delivery is None:
        return 0 if not args.wait else 1
    return 0 if delivery["attempts"] and delivery["attempts"][0]["outcome"] == "succeeded" else 1


def _first_attempt(client: ApiClient, delivery_id: str) -> JSON | None:
    """The delivery once its first attempt is recorded (None if not within 30 s)."""
    deadline = time.monotonic() + TEST_WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            delivery = client.get(f"/v1/deliveries/{delivery_id}")
        except ApiError as error:
            if error.status != 404:  # not in the read side yet: a moment behind
                raise
        else:
            if delivery["attempts"]:
                return delivery
        time.sleep(POLL_SECONDS / 2)
    return None


def _attempt_line(delivery: JSON | None) -> str:
    if delivery is None:
        return (
            f"no answer recorded within {TEST_WAIT_SECONDS:.0f} s: see `webround deliveries show`"
        )
    first = delivery["attempts"][0]
    took = f"{first['durationMs']:.0f} ms"
    if first["statusCode"] is None:
        line = f"no answer from the endpoint ({first['error']}) after {took}"
    else:
        line = f"the endpoint answered HTTP {first['statusCode']} in {took}"
    if first["outcome"] != "succeeded" and first["nextAttemptAt"]:
        line += f"; next attempt at {first['nextAttemptAt']}"
    return printable(line)


def answer_of(attempt: JSON) -> str:
    """An attempt's answer in a few words: ``HTTP 503`` or the error class."""
    if attempt["statusCode"] is not None:
        return f"HTTP {attempt['statusCode']}"
    return str(attempt["error"] or "error")


# Recover and replay --------------------------------------------------------------------------


def _recover(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return _resend(client, args, out, err, "recover", {})


def _replay(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    extra = {"eventTypes": _types(args.events)} if args.events else {}
    return _resend(client, args, out, err, "replay", extra)


def _resend(
    client: ApiClient,
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    mode: str,
    extra: JSON,
) -> int:
    now = datetime.now(UTC)
    body: JSON = {"since": moment_or_ago(args.since, now, "since"), **extra}
    if args.until:
        body["until"] = moment_or_ago(args.until, now, "until")
    webhook_id = segment(args.id)
    resent = client.post(f"/v1/webhooks/{webhook_id}/{mode}", body)
    count = resent["count"]
    what = ("failed delivery", "failed deliveries") if mode == "recover" else ("event", "events")
    if not args.json:
        print(f"{count:,} {what[count != 1]} sent again", file=out)
    outcome: Counter[str] | None = None
    if args.wait and count:
        print("following them (Ctrl-C stops following; they go on)", file=err)
        outcome = follow(client, webhook_id, resent["requestedAt"], count, err)
        if not args.json:
            print(f"{outcome['succeeded']:,} succeeded, {outcome['failed']:,} failed", file=out)
    if args.json:
        summary = {**resent, **({"outcome": dict(outcome)} if outcome is not None else {})}
        emit(args, out, summary, str)
    return 1 if outcome and outcome["failed"] else 0


def follow(
    client: ApiClient,
    webhook_id: str,
    since: str,
    count: int,
    err: TextIO,
    clock: Callable[[], float] = time.monotonic,
) -> Counter[str]:
    """Poll the webhook's deliveries sent again since ``since`` until ``count`` have
    finished (succeeded, or failed with every retry used), drawing a progress bar; their
    statuses. Pages whose deliveries have all finished are not read again."""
    bar = ProgressBar("sending", err, clock, unit="deliveries")
    settled: Counter[str] = Counter()
    settled_cursor: str | None = None
    while True:
        counts, cursor, advancing = Counter(settled), settled_cursor, True
        while True:
            page = client.get(
                "/v1/deliveries",
                {
                    "webhookId": webhook_id,
                    "since": since,
                    "order": "oldest",
                    "limit": 200,
                    "cursor": cursor,
                },
            )
            mine = [d for d in page["data"] if d["replay"]]
            counts.update(d["status"] for d in mine)
            cursor = page["nextCursor"]
            advancing = advancing and cursor is not None
            if advancing and all(d["status"] != "pending" for d in mine):
                settled, settled_cursor = Counter(counts), cursor
            else:
                advancing = False
            if cursor is None:
                break
        done = counts["succeeded"] + counts["failed"]
        if done >= count:
            bar.finish(done, count)
            return counts
        bar.update(done, count)
        time.sleep(POLL_SECONDS)


ACTIONS: dict[str, Callable[[ApiClient, argparse.Namespace, TextIO, TextIO], int]] = {
    "list": _list,
    "show": _show,
    "create": _create,
    "update": _update,
    "delete": _delete,
    "rotate-secret": _rotate,
    "test": _test,
    "recover": _recover,
    "replay": _replay,
}
