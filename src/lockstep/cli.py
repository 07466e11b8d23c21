"""The ``lockstep`` command: parses arguments, calls one function, prints.

Each area adds its own subcommands through an ``add_commands(subparsers)``
function; a subcommand's handler takes the parsed namespace and returns an
exit code. Errors are ``LockstepError``s, printed here once, as one line.
Imports stay lazy so the images' entry points (``worker``, ``scheduler``,
``runner``) start without loading the build tooling. Progress lines come from
``lockstep.core.progress``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from lockstep import __version__
from lockstep.core.errors import LockstepError

# Which module adds which subcommands (each module has add_commands(subparsers)). A
# command line names one, so only its module is imported: ``lockstep worker`` in an
# image loads nothing of the build. A test checks this table against the modules.
COMMANDS = {
    "lockstep.assembly.commands": ("build", "load", "lock"),
    "lockstep.bundles.commands": ("bundle",),
    "lockstep.runtime.commands": ("scheduler", "worker", "runner", "doctor", "self-check"),
    "lockstep.jobs.commands": ("preflight", "run"),
    "lockstep.results.commands": ("results",),
    "lockstep.release.commands": ("release", "check-pins", "verify", "inspect"),
    "lockstep.local.commands": ("up", "down"),
}
# Commands made here, whose actions each owning module adds with add_<command>_actions(actions)
# (so that actions of several stages never make one command module import another's; today
# every ``bundle`` action is lockstep.bundles.commands').
GROUPS = {
    "bundle": "job bundles: `bundle lock DIR` locks its requirements for the worker image "
    "(wheels only, constrained to the image's pins); `bundle push|pull|inspect` keep "
    "bundles in an OCI registry, by digest",
}


def modules_for(argv: Sequence[str]) -> list[str]:
    """The command modules to load for ``argv``: the one owning its command, else all."""
    command = next((a for a in argv if not a.startswith("-")), None)
    owner = [m for m, names in COMMANDS.items() if command in names]
    return owner or list(COMMANDS)


def make_parser(modules: Sequence[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lockstep",
        description="Hermetic runner and worker images for Dask, and a handshake "
        "that refuses to mix builds.",
    )
    parser.add_argument("--version", action="version", version=f"lockstep {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, Any] = {}
    for name in modules:  # a module that fails to import is a broken install: it raises
        module = importlib.import_module(name)
        if hasattr(module, "add_commands"):
            module.add_commands(sub)
        for group in (g for g in GROUPS if g in COMMANDS[name]):
            if group not in groups:
                groups[group] = sub.add_parser(group, help=GROUPS[group]).add_subparsers(
                    dest=f"{group}_command", metavar="ACTION", required=True
                )
            getattr(module, f"add_{group}_actions")(groups[group])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser(modules_for(argv))
    try:
        args = parser.parse_args(argv)  # a bad option value is a LockstepError (one line)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        code: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
    except LockstepError as exc:
        print(f"lockstep: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lockstep: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went (`lockstep inspect … | head`): as a shell reports SIGPIPE, with no
        # traceback; stdout is pointed at /dev/null so the interpreter's final flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return code


if __name__ == "__main__":
    raise SystemExit(main())
