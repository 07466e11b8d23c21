"""The command line's promises: a bad option value is one line naming the option, exit 2;
``--help`` works everywhere, with nothing set up."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from lockstep import cli
from tests.fixtures.build import lockstep


def test_a_bad_option_value_is_one_line_naming_the_option(tmp_path: Path) -> None:
    for args in (
        ["run", "job.toml", "--timeout", "-5"],
        ["run", "job.toml", "--timeout", "nan"],
        ["run", "job.toml", "--timeout", "0"],
        ["run", "job.toml", "--deadline", "inf"],
        ["preflight", "job.toml", "--import-timeout", "1e400"],
        ["run", "job.toml", "--workers", "0"],
        ["runner", "tcp://127.0.0.1:1", "--workers", "two"],
        ["doctor", "--scheduler", "tcp://127.0.0.1:1", "--timeout", "-1"],
    ):
        proc = lockstep(args, cwd=tmp_path, cache=tmp_path / "cache", timeout=60)
        flag = next(a for a in args if a.startswith("--") and a != "--scheduler")
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith(f"lockstep: error: {flag} "), (args, proc.stderr)
        assert proc.stderr.count("\n") == 1, (args, proc.stderr)


def _command_paths(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """Every command line the parser knows, down to the leaves: ("build",), ("bundle", "lock")…"""
    found: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found.extend(_command_paths(sub, (*prefix, name)))
    return found


def test_help_works_for_every_command_without_a_manifest_or_any_environment(
    tmp_path: Path,
) -> None:
    """``--help`` needs nothing: no LOCKSTEP_MANIFEST (outside an image there is none at the
    default path), no other variable; it prints a usage and exits 0."""
    paths = _command_paths(cli.make_parser())
    assert ("scheduler",) in paths and ("bundle", "lock") in paths
    for path in [(), *paths]:
        proc = subprocess.run(
            [sys.executable, "-m", "lockstep", *path, "--help"],
            cwd=tmp_path,
            env={},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, (path, proc.stderr[-2000:])
        assert "usage:" in proc.stdout.lower(), (path, proc.stdout[-2000:])
