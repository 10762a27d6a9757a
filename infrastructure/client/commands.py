"""The API commands of `webround`: their arguments, and running one.

webround webhooks list|show|create|update|delete|rotate-secret|test|recover|replay
webround events list|show|send-again
webround deliveries list|show
webround listen --forward-to URL [--events TYPES]

Each talks to `--api-url` (or `WEBROUND_API_URL`; by default this machine's `serve`) with
the key in `WEBROUND_API_KEY`. People get tables; `--json` prints the API's own JSON for
scripts. A refusal of the API is one line on stderr and exit status 1; a wrong argument,
status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from application.errors import InvalidRequest
from infrastructure.client.http import ApiClient, ApiError
from infrastructure.settings import Settings
from infrastructure.terminal import printable

COMMANDS = ("webhooks", "events", "deliveries", "listen")
TIMES = "ISO 8601, e.g. 2030-01-01T12:00:00Z, or ago: 90s, 30m, 1h, 7d"

Handler = Callable[[ApiClient, argparse.Namespace, TextIO, TextIO], int]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the API commands to the `webround` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api-url",
        metavar="URL",
        help="the service to talk to (default WEBROUND_API_URL, else this machine's serve)",
    )
    common.add_argument("--json", action="store_true", help="print JSON, for scripts")
    _webhooks(commands, common)
    _events(commands, common)
    _deliveries(commands, common)
    listen = commands.add_parser(
        "listen",
        parents=[common],
        help="forward your store's events to a local URL, signed (for development)",
        description="Follow the store's events through the API and POST each, signed with "
        "a secret of this session (Standard Webhooks), to a URL on your machine. Nothing "
        "connects to your machine: this command asks the API. A restart of the service "
        "loses and repeats nothing.",
    )
    listen.add_argument(
        "--forward-to", required=True, metavar="URL", help="e.g. http://localhost:3000/hooks"
    )
    listen.add_argument(
        "--events", metavar="TYPES", help="only these, comma-separated: order.*,customer.registered"
    )
    listen.add_argument("--secret", help="sign with this whsec_ secret instead of a new one")


def _webhooks(commands: Any, common: argparse.ArgumentParser) -> None:
    actions = commands.add_parser(
        "webhooks", help="your store's webhooks, over the API"
    ).add_subparsers(dest="action", required=True)

    def action(name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name, parents=[common], help=text, description=text
        )
        return parser

    listed = action("list", "list the webhooks")
    listed.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    action("show", "show one webhook (never its secret)").add_argument("id")

    create = action("create", "register a webhook; its signing secret is shown once")
    create.add_argument("--url", required=True)
    create.add_argument(
        "--events",
        required=True,
        metavar="TYPES",
        help="comma-separated: order.*,customer.registered or *",
    )
    _settings(create, creating=True)

    update = action("update", "change a webhook, or enable or disable it")
    update.add_argument("id")
    update.add_argument("--url")
    update.add_argument(
        "--events", metavar="TYPES", help="comma-separated, replacing the current ones"
    )
    _settings(update, creating=False)
    update.add_argument("--no-headers", action="store_true", help="remove every custom header")
    update.add_argument("--no-rate-limit", action="store_true", help="remove the rate limit")
    state = update.add_mutually_exclusive_group()
    state.add_argument("--enable", action="store_true")
    state.add_argument("--disable", action="store_true")
    update.add_argument("--reason", help="why it is disabled (with --disable)")

    action("delete", "delete a webhook").add_argument("id")
    rotate = action("rotate-secret", "a new signing secret, shown once")
    rotate.add_argument("id")
    rotate.add_argument(
        "--grace",
        type=int,
        metavar="SECONDS",
        help="how long the old one keeps signing (default 86400)",
    )

    test = action("test", "send the webhook a test event (sample data, marked as a test)")
    test.add_argument("id")
    test.add_argument("--event-type", help="one of the webhook's event types (default: its first)")
    test.add_argument("--wait", action="store_true", help="wait for the endpoint's answer")

    for name, text in (
        ("recover", "send again the failed deliveries created in a time range"),
        ("replay", "send every event of a time range again (backfill)"),
    ):
        resend = action(name, text)
        resend.add_argument("id")
        resend.add_argument("--since", required=True, help=TIMES)
        resend.add_argument("--until", help=TIMES)
        if name == "replay":
            resend.add_argument(
                "--events", metavar="TYPES", help="only these event types, comma-separated"
            )
        resend.add_argument(
            "--wait",
            action="store_true",
            help="follow the deliveries until each has finished, with a progress bar",
        )


def _settings(parser: argparse.ArgumentParser, *, creating: bool) -> None:
    parser.add_argument("--description")
    parser.add_argument(
        "--header",
        action="append",
        metavar="'NAME: VALUE'",
        help="a custom header sent with every delivery (repeat for several; together they "
        "replace the current ones)",
    )
    parser.add_argument("--timeout", type=int, metavar="SECONDS", help="1 to 30 (default 15)")
    parser.add_argument(
        "--rate-limit",
        type=float,
        metavar="PER_SECOND",
        help="at most this many deliveries a second",
    )
    if creating:
        parser.add_argument("--disabled", action="store_true", help="create it disabled")


def _events(commands: Any, common: argparse.ArgumentParser) -> None:
    actions = commands.add_parser(
        "events", help="your store's events, over the API"
    ).add_subparsers(dest="action", required=True)
    listed = actions.add_parser("list", parents=[common], help="list events, newest first")
    listed.add_argument("--type", help="an event type, or entity.* (order.*)")
    listed.add_argument("--entity", metavar="ENTITY_ID", help="events of this order, customer…")
    _range_and_limit(listed)
    listed.add_argument(
        "--test", action="store_true", help="the test events instead of the store's"
    )
    actions.add_parser(
        "show", parents=[common], help="an event: its envelope and every delivery"
    ).add_argument("event_id")
    again = actions.add_parser(
        "send-again", parents=[common], help="send an event's envelope again"
    )
    again.add_argument("event_id")
    again.add_argument(
        "--webhook",
        metavar="WEBHOOK_ID",
        help="to this webhook only (default: every one listening)",
    )


def _deliveries(commands: Any, common: argparse.ArgumentParser) -> None:
    actions = commands.add_parser(
        "deliveries", help="deliveries and their attempts, over the API"
    ).add_subparsers(dest="action", required=True)
    listed = actions.add_parser("list", parents=[common], help="list deliveries, newest first")
    listed.add_argument("--webhook", metavar="WEBHOOK_ID")
    listed.add_argument("--event", metavar="EVENT_ID")
    listed.add_argument("--status", choices=["pending", "succeeded", "failed"])
    _range_and_limit(listed)
    actions.add_parser("show", parents=[common], help="a delivery with every attempt").add_argument(
        "id"
    )


def _range_and_limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", help=TIMES)
    parser.add_argument("--until", help=TIMES)
    parser.add_argument("--oldest-first", action="store_true")
    parser.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")


def run(
    settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    from infrastructure.client import listen, records, webhooks

    handlers: dict[str, Handler] = {
        "webhooks": webhooks.run,
        "events": records.run,
        "deliveries": records.run,
        "listen": listen.run,
    }
    try:
        client = ApiClient(args.api_url or settings.service_url, settings.api_key)
    except ApiError as error:
        print(f"webround: {printable(error)}", file=err)
        return 2
    try:
        return handlers[args.command](client, args, out, err)
    except ApiError as error:
        print(f"webround: {printable(error)}", file=err)
        return 1
    except InvalidRequest as error:
        flag = f"--{(error.field or '').replace('_', '-')}: " if error.field else ""
        print(f"webround: {flag}{printable(error)}", file=err)
        return 2
    except KeyboardInterrupt:
        print("", file=err)
        return 130
    finally:
        client.close()


def emit(args: argparse.Namespace, out: TextIO, data: Any, human: Callable[[], str]) -> None:
    """The API's JSON with ``--json`` (ASCII-escaped: no control or bidirectional character
    reaches the terminal raw), else the text for people."""
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=True), file=out)
    else:
        print(human(), file=out)
