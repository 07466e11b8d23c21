"""`mypy --strict` and `ruff` stay clean on src/ (a style promise, checked like any other)."""

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
        ("ruff", ["check", "src"]),
        ("mypy", ["src"]),
    ],
)
def test_src_is_clean(tool: str, args: list[str]) -> None:
    exe = BIN / tool if (BIN / tool).exists() else shutil.which(tool)
    assert exe, f"{tool} is not installed; run `make test` (it installs lockstep[dev])"
    proc = subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
