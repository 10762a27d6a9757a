"""`webround projections`: rebuild the read models, show how far behind they are, and
prove a rebuild identical (§7, §10).

webround projections rebuild NAME... | --all    rebuild aside, then swap in (progress on stderr)
webround projections status [--json]            each model's position, head and lag per source
webround projections checksum [--json]          one digest of every read model

A rebuild only reads the event stores and writes read-model tables: it starts no
dispatcher and no worker, so it never sends a webhook, and the live tables keep answering
until the swap.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from infrastructure.settings import Settings
from infrastructure.terminal import ProgressBar, rate
from projections.readmodels import BY_NAME, READ_MODELS

if TYPE_CHECKING:
    from infrastructure.readmodels import ReadModelStore


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `projections rebuild|status|checksum` to the `webround` parser."""
    names = ", ".join(BY_NAME)
    projections = commands.add_parser(
        "projections", help="rebuild and inspect the read models"
    ).add_subparsers(dest="action", required=True)
    rebuild = projections.add_parser(
        "rebuild",
        help="rebuild read models from the event stores (aside, then swapped in)",
        description=f"Read models: {names}.",
    )
    rebuild.add_argument("names", nargs="*", metavar="NAME", help=f"one of: {names}")
    rebuild.add_argument("--all", action="store_true", help="rebuild every read model")
    status = projections.add_parser("status", help="each read model's position and lag")
    status.add_argument("--json", action="store_true", help="as JSON")
    checksum = projections.add_parser("checksum", help="one digest of every read model")
    checksum.add_argument("--json", action="store_true", help="as JSON, with one per model")


def run(settings: Settings, args: argparse.Namespace) -> int:
    names: list[str] = []
    if args.action == "rebuild":
        chosen = _chosen(args.names, args.all)
        if chosen is None:
            return 2
        names = chosen

    from eventsourcing.persistence import IntegrityError

    from infrastructure.startup import open_services

    services = open_services(settings)
    try:
        store = services.read_models
        if args.action == "rebuild":
            return rebuild(store, names, sys.stdout, sys.stderr)
        if args.action == "status":
            return status(store, as_json=args.json, out=sys.stdout)
        return checksum(store, as_json=args.json, out=sys.stdout)
    except IntegrityError as error:
        print(
            f"\nwebround: the rebuild was overtaken ({error}): is another rebuild of the same "
            "read model running? The live read models are intact; run it again.",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        # A half-built `__next` table stays aside; the next rebuild starts it over.
        print("\nwebround: interrupted; the live read models are intact", file=sys.stderr)
        return 130
    finally:
        services.close()


def _chosen(names: Sequence[str], everything: bool) -> list[str] | None:
    """The models to rebuild, in registry order; None (after saying why) when unusable."""
    known = ", ".join(BY_NAME)
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        print(
            f"webround projections rebuild: unknown read model(s): {', '.join(unknown)}\n"
            f"read models: {known}",
            file=sys.stderr,
        )
        return None
    if everything == bool(names):
        print(
            "webround projections rebuild: name the read models to rebuild, or use --all "
            "(not both)\n"
            f"read models: {known}",
            file=sys.stderr,
        )
        return None
    return [m.name for m in READ_MODELS if everything or m.name in names]


# rebuild ------------------------------------------------------------------------------


def rebuild(
    store: ReadModelStore,
    names: Sequence[str],
    out: TextIO,
    err: TextIO,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Rebuild each model with a progress line on ``err``; one summary line each on ``out``."""
    heads: dict[str, int] = {}
    for row in store.status():
        heads[row.model] = heads.get(row.model, 0) + row.head
    width = max(len(name) for name in names)
    results: list[tuple[str, int, float]] = []
    for name in names:
        bar = ProgressBar(name.ljust(width), err, clock)
        bar.update(0, heads.get(name, 0))
        started = clock()
        read = store.rebuild(BY_NAME[name], bar.update)
        seconds = clock() - started
        bar.finish(read)
        results.append((name, read, seconds))
    for name, read, seconds in results:
        print(
            f"{name.ljust(width)}  {read:>9,} events  {seconds:8.2f} s  "
            f"{rate(read, seconds):>9,.0f} events/s",
            file=out,
        )
    out.flush()
    return 0


# status and checksum ----------------------------------------------------------------


def status(store: ReadModelStore, *, as_json: bool, out: TextIO) -> int:
    rows = store.status()
    if as_json:
        report = [
            {
                "model": r.model,
                "source": r.source,
                "position": r.position,
                "head": r.head,
                "lag": r.lag,
            }
            for r in rows
        ]
        print(json.dumps(report, indent=2), file=out)
        return 0
    table: list[tuple[Any, ...]] = [("MODEL", "SOURCE", "POSITION", "HEAD", "LAG")]
    table += [(r.model, r.source, r.position, r.head, r.lag) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(5)]
    for row in table:
        cells = [
            str(cell).ljust(width) if i < 2 else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip(), file=out)
    return 0


def checksum(store: ReadModelStore, *, as_json: bool, out: TextIO) -> int:
    digest = store.checksum()
    if as_json:
        models = {model.name: store.checksum([model.name]) for model in READ_MODELS}
        print(json.dumps({"checksum": digest, "models": models}, indent=2), file=out)
    else:
        print(digest, file=out)
    return 0
