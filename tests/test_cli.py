"""The command line's promises: a bad option value is one line naming the option, exit 2."""

from __future__ import annotations

from pathlib import Path

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
