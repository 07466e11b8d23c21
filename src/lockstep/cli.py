"""The ``lockstep`` command: parses arguments, calls one function, prints.

Each area adds its own subcommands through an ``add_commands(subparsers)``
function; a subcommand's handler takes the parsed namespace and returns an
exit code. Errors are ``LockstepError``s, printed here once, as one line.
Imports stay lazy so the images' entry points (``worker``, ``scheduler``,
``runner``) start without loading the build tooling.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from lockstep import __version__
from lockstep.errors import LockstepError

# Modules that contribute subcommands, each with add_commands(subparsers).
COMMAND_MODULES = (
    "lockstep.build.commands",
    "lockstep.runtime.commands",
    "lockstep.jobs.commands",
    "lockstep.release.commands",
)


def progress(message: str) -> None:
    """One progress line on stderr: what every command shows on long steps."""
    print(f"lockstep: {message}", file=sys.stderr, flush=True)


def add_project_arg(parser: argparse.ArgumentParser) -> None:
    """``--project``: the project root, for commands that read ``pyproject.toml``."""
    parser.add_argument("--project", type=Path, help="project root (default: found from the cwd)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lockstep",
        description="Hermetic runner and worker images for Dask, and a handshake "
        "that refuses to mix builds.",
    )
    parser.add_argument("--version", action="version", version=f"lockstep {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # that area is not part of this tree (yet)
            raise
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
    except LockstepError as exc:
        print(f"lockstep: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lockstep: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
