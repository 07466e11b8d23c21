"""Style promises, checked like any other: no module in src/ over 500 lines; `ruff check`
and `ruff format` (the layout the project adopted) on src/, tests/ and bench/, and `mypy
--strict` on src/ and bench/ (a benchmark that no longer imports is caught here, not on the
day someone runs it). The same commands are `make lint`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "tool, args",
    [
        ("ruff", ["check", "src", "tests", "bench"]),
        ("ruff", ["format", "--check", "src", "tests", "bench"]),
        ("mypy", ["src", "bench"]),
    ],
)
def test_code_is_clean(tool: str, args: list[str]) -> None:
    exe = BIN / tool if (BIN / tool).exists() else shutil.which(tool)
    assert exe, f"{tool} is not installed; run `make test` (it installs lockstep[dev])"
    proc = subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


MAX_MODULE_LINES = 500


def test_no_module_is_over_500_lines() -> None:
    """One idea per module: a module that grows past this is doing several things."""
    long = {
        str(path.relative_to(ROOT)): n
        for path in sorted((ROOT / "src").rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these by idea (lines): {long}"
