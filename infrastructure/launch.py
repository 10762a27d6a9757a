"""The README's two commands, runnable on a fresh clone with nothing but Python 3.11+.

    python3 -m infrastructure.launch serve [webround serve options]
    python3 -m infrastructure.launch test  [pytest options]

Both create `.venv/` and install the project into it when missing or when pyproject.toml
changed since the last install; `test` then runs the whole suite: ruff, mypy, the
import-linter layer contracts and pytest. Standard library only: it runs before anything
is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".webround-installed"


def ensure_environment() -> None:
    """Create the virtualenv and install the project with its dev extras, when needed."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this file runs on whatever python3 is
        sys.exit("webround needs Python 3.11 or newer")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("launch: creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("launch: installing the project and its test tools into .venv", flush=True)
    _run([str(BIN / "python"), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    _run([str(BIN / "python"), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev]"])
    STAMP.write_text(wanted)


def run_tests(pytest_args: Sequence[str]) -> int:
    checks = [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
        ["lint-imports"],
    ]
    for check in checks:
        print(f"launch: {' '.join(check)}", flush=True)
        if subprocess.call([str(BIN / check[0]), *check[1:]], cwd=ROOT) != 0:  # noqa: S603
            print(f"launch: {check[0]} failed", file=sys.stderr)
            return 1
    print("launch: pytest", flush=True)
    return subprocess.call([str(BIN / "pytest"), *pytest_args], cwd=ROOT)  # noqa: S603


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in ("serve", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    ensure_environment()
    command, rest = argv[0], list(argv[1:])
    if command == "test":
        return run_tests(rest)
    os.execv(BIN / "webround", [str(BIN / "webround"), "serve", *rest])  # noqa: S606
    return 0  # not reached: execv replaces this process


def _run(command: list[str]) -> None:
    if subprocess.call(command, cwd=ROOT) != 0:  # noqa: S603
        sys.exit(f"launch: {' '.join(command)} failed")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
