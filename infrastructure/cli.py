"""The `webround` command: serve the service, and operate it.

webround serve [--host H] [--port P]   the whole service in one process (embedded default)
webround settings [--markdown]         the configuration reference
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from infrastructure.settings import Settings, SettingsError, markdown_table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="webround", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the whole service in one process")
    serve.add_argument("--host", help="interface to listen on (default WEBROUND_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default WEBROUND_PORT)")

    show = commands.add_parser("settings", help="print the configuration reference")
    show.add_argument("--markdown", action="store_true", help="as the Markdown table of docs/")

    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as error:
        print(f"webround: configuration error: {error}", file=sys.stderr)
        return 2
    if args.command == "settings":
        print(markdown_table() if args.markdown else settings)
        return 0
    return _serve(settings, args.host or settings.host, args.port or settings.port)


def _serve(settings: Settings, host: str, port: int) -> int:
    import uvicorn

    from infrastructure.api.app import create_app
    from infrastructure.bootstrap import build

    services = build(settings)
    try:
        print(f"webround: serving on http://{host}:{port} (data in {settings.data_dir})")
        uvicorn.run(create_app(services), host=host, port=port, log_level="info")
    finally:
        services.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
