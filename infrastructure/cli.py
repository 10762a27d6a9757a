"""The `webround` command: serve the service, and operate it.

webround serve [--host H] [--port P]          the whole service in one process
webround stores create --name NAME             a store and its first API key, as JSON
webround keys create --store ID [--email E]    another API key (shown once)
webround keys revoke KEY_ID                    revoke a key
webround settings [--markdown]                 the configuration reference
webround dispatchers [--json]                  who dispatches which partitions now
webround webhooks|events|deliveries ...        the JSON API from the command line
webround listen --forward-to URL               your store's events on a local URL

The commands over the API are in `infrastructure/client/`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from application.errors import ApplicationError
from domain.errors import DomainError
from domain.values import Actor
from infrastructure import projections_cli
from infrastructure.client import commands as client_commands
from infrastructure.logs import configure_logging
from infrastructure.settings import Settings, SettingsError, markdown_table
from infrastructure.startup import StartupError

if TYPE_CHECKING:
    from infrastructure.bootstrap import Services

CLI_ACTOR = Actor.system()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as error:
        print(f"webround: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings)
    # Every PostgreSQL connection of the process says which role it serves
    # (pg_stat_activity's application_name), unless the operator named it already.
    os.environ.setdefault("PGAPPNAME", f"webround {args.command}")
    if args.command == "settings":
        print(markdown_table() if args.markdown else settings)
        return 0
    try:
        return _run(settings, args)
    except StartupError as error:
        # An operator's error (a setting, the database): one line, no traceback.
        print(f"webround: {error}", file=sys.stderr)
        return error.exit_code


def _run(settings: Settings, args: argparse.Namespace) -> int:
    if args.command in ("serve", "api"):
        host, port = args.host or settings.host, args.port or settings.port
        return _serve(
            settings,
            host,
            port,
            whole=args.command == "serve",
            demo=args.command == "serve" and args.demo,
        )
    if args.command in ("dispatcher", "worker"):
        return _background_role(settings, args.command)
    if args.command == "projections":
        return projections_cli.run(settings, args)
    if args.command == "dispatchers":
        return _dispatchers(settings, as_json=args.json)
    if args.command in client_commands.COMMANDS:
        return client_commands.run(settings, args)
    if args.command == "audit":
        from infrastructure import audit_cli

        return audit_cli.run(settings, args)
    try:
        return _admin(settings, args)
    except (ApplicationError, DomainError) as error:
        print(f"webround: {error}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webround", description="Webround Webhooks")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the whole service in one process")
    serve.add_argument("--host", help="interface to listen on (default WEBROUND_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default WEBROUND_PORT)")
    serve.add_argument(
        "--demo", action="store_true", help="also run a sample receiver and store activity"
    )
    api = commands.add_parser("api", help="run the JSON API only")
    api.add_argument("--host", help="interface to listen on (default WEBROUND_HOST)")
    api.add_argument("--port", type=int, help="port to listen on (default WEBROUND_PORT)")
    commands.add_parser(
        "dispatcher", help="run a dispatcher (any number: they share the partitions)"
    )
    dispatchers = commands.add_parser(
        "dispatchers", help="which dispatcher holds which partitions and projector roles"
    )
    dispatchers.add_argument("--json", action="store_true", help="as JSON, for scripts")
    commands.add_parser("worker", help="run a delivery worker (any number)")

    stores = commands.add_parser("stores", help="manage stores").add_subparsers(
        dest="action", required=True
    )
    create_store = stores.add_parser("create", help="create a store and its first API key")
    create_store.add_argument("--name", required=True)
    create_store.add_argument("--email", help="the person the first key acts for (default: none)")

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    create_key = keys.add_parser("create", help="create an API key (shown once)")
    create_key.add_argument("--store", required=True, type=UUID)
    create_key.add_argument("--email", help="the person the key acts for (default: none)")
    revoke = keys.add_parser("revoke", help="revoke an API key")
    revoke.add_argument("key_id")

    show = commands.add_parser("settings", help="print the configuration reference")
    show.add_argument("--markdown", action="store_true", help="as the Markdown table of docs/")
    projections_cli.register(commands)
    from infrastructure import audit_cli

    audit_cli.register(commands)
    client_commands.register(commands)
    return parser


def _dispatchers(settings: Settings, *, as_json: bool) -> int:
    """The leases of the installation's partitions and roles: who holds what, how long."""
    if settings.embedded:
        print("webround: embedded: one process (`webround serve`) dispatches everything")
        return 0
    from infrastructure.leases import lease_table
    from infrastructure.startup import open_services

    services = open_services(settings)
    try:
        recorder: Any = services.dispatch.recorder
        rows = lease_table(recorder.datastore)
    finally:
        services.close()
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    by_owner: dict[str, list[str]] = {}
    for row in rows:
        by_owner.setdefault(row["owner"] or "(nobody)", []).append(row["name"])
    for owner, names in sorted(by_owner.items()):
        partitions = [n.removeprefix("partition:") for n in names if n.startswith("partition:")]
        roles = [n.removeprefix("role:") for n in names if n.startswith("role:")]
        print(f"{owner}: {len(partitions)} partitions {' '.join(partitions)}")
        if roles:
            print(f"  roles: {', '.join(roles)}")
    return 0


def _admin(settings: Settings, args: argparse.Namespace) -> int:
    from infrastructure.startup import open_services

    services = open_services(settings)
    try:
        webhooks = services.webhooks
        if args.command == "stores":
            store = webhooks.create_store(args.name, CLI_ACTOR)
            key = webhooks.create_api_key(UUID(store["storeId"]), args.email, CLI_ACTOR)
            print(json.dumps({"storeId": store["storeId"], "apiKey": key["apiKey"]}))
        elif args.action == "create":
            key = webhooks.create_api_key(args.store, args.email, CLI_ACTOR)
            print(json.dumps({"keyId": key["keyId"], "apiKey": key["apiKey"]}))
        else:
            webhooks.revoke_api_key(args.key_id, CLI_ACTOR)
            print(json.dumps({"keyId": args.key_id, "revoked": True}))
    finally:
        services.close()
    return 0


def _serve(settings: Settings, host: str, port: int, *, whole: bool, demo: bool) -> int:
    """The API; with ``whole``, also the dispatcher and a worker in this process."""
    import dataclasses
    import ipaddress
    import signal

    import uvicorn

    from infrastructure.api.app import Server, create_app
    from infrastructure.bootstrap import open_queue, start_dispatching, start_worker
    from infrastructure.startup import open_services

    if demo:
        # The demo receiver listens on loopback, which is otherwise refused (SSRF): with
        # it allowed, any store's webhook may reach this machine's loopback services and
        # read 16 KiB of their answers. So the demo is for one person on one machine:
        # never served beyond loopback.
        if not _is_loopback(host):
            raise StartupError(
                f"--demo lets every store's webhooks reach 127.0.0.1 (for the demo "
                f"receiver), so it serves on loopback only: not on {host} (--host, "
                "WEBROUND_HOST); run without --demo to serve others"
            )
        loopback = ipaddress.ip_network("127.0.0.1/32")
        settings = dataclasses.replace(
            settings, allowed_targets=(*settings.allowed_targets, loopback)
        )
    services = open_services(settings)
    try:
        store_id = _first_start(services, host, port)
        if whole:
            queue = open_queue(services)
            start_worker(services, queue)
            # Embedded: on standby while another process holds the data directory.
            start_dispatching(services, queue)
        if demo:
            from infrastructure.demo import start_demo

            receiver = start_demo(services, store_id or _any_store(services))
            print(f"webround: demo receiver on {receiver.url}; store activity every 2 s")
            print(
                "webround: DEMO MODE IS SINGLE-USER: the webhooks of every store may target "
                "127.0.0.1 here (for the demo receiver) and read its services' answers; "
                "use it on your own machine only, never for other people's stores",
                flush=True,
            )
        print(f"webround: serving on http://{host}:{port} (data in {settings.data_dir})")
        # uvicorn re-raises the signal that stopped it; with the default handlers that
        # would end the process before `services.close()` records in-flight attempts.
        # One that comes before uvicorn listens (start-up) stops the server as it starts.
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda *_: services.stopping.set())
        app = create_app(services)
        config = uvicorn.Config(app, host=host, port=port, log_level="info", log_config=None)
        Server(config, services.stopping).run()
    finally:
        services.close()
    return 0


def _background_role(settings: Settings, role: str) -> int:
    """Run the dispatcher or a worker until SIGTERM or SIGINT."""
    import signal
    import threading

    from infrastructure.bootstrap import open_queue, start_dispatching, start_worker
    from infrastructure.startup import open_services

    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    _serve_metrics(settings)  # before any work: a taken port stops the process at once
    services = open_services(settings)
    try:
        queue = open_queue(services)
        if role == "dispatcher":
            # The partitions (and projector roles) it leases: any number run at once.
            start_dispatching(services, queue)
        else:
            start_worker(services, queue)
        print(f"webround: {role} running (stop with SIGTERM)", flush=True)
        stop.wait()
        print(f"webround: {role} stopping: finishing what is in flight", flush=True)
    finally:
        services.close()
    return 0


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _serve_metrics(settings: Settings) -> None:
    from infrastructure.metrics import serve_process_metrics

    try:
        serve_process_metrics(settings)
    except OSError as error:
        raise StartupError(
            f"cannot serve metrics on {settings.host}:{settings.metrics_port} "
            f"(WEBROUND_METRICS_PORT): {error.strerror or error}; every process on a host "
            "needs a port of its own (or leave it unset)"
        ) from None


def _any_store(services: Services) -> UUID:
    """The store of an earlier first start, or a new demo store (production mode)."""
    marker = services.settings.data_dir / "first-store"
    if marker.exists():
        return UUID(marker.read_text().strip())
    return UUID(services.webhooks.create_store("Demo store", CLI_ACTOR)["storeId"])


def _first_start(services: Services, host: str, port: int) -> UUID | None:
    """On the very first start of an embedded data directory, create a store and show its
    key once — so a newcomer can call the API right away."""
    marker = services.settings.data_dir / "first-store"
    if not services.settings.embedded or marker.exists():
        return None
    store = services.webhooks.create_store("My store", CLI_ACTOR)
    key = services.webhooks.create_api_key(UUID(store["storeId"]), None, CLI_ACTOR)
    marker.write_text(store["storeId"] + "\n")
    print(
        "webround: first start — created a store for you.\n"
        f"  store id: {store['storeId']}\n"
        f"  API key:  {key['apiKey']}   (shown once: keep it now)\n"
        f"  try:      curl -H 'Authorization: Bearer {key['apiKey']}' "
        f"http://{host}:{port}/v1/event-types\n"
        f"  dashboard: http://{host}:{port}/dashboard  (sign in with the API key)\n"
        f"  API description: http://{host}:{port}/openapi.json",
        flush=True,
    )
    return UUID(store["storeId"])


if __name__ == "__main__":
    raise SystemExit(main())
