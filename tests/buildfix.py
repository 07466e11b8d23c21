"""Building the real images once per test session, and helpers to run the CLI.

The session cache (``$LOCKSTEP_CACHE_DIR`` if set, else a fresh temporary
directory) holds the downloaded .debs and wheels and the cached layers, so
the tests after the first build reuse them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Built:
    root: Path
    out: Path
    cache: Path
    result: dict[str, Any]

    @property
    def build_id(self) -> str:
        return str(self.result["build_id"])

    def path(self, role: str) -> Path:
        return Path(self.result["images"][role]["path"])

    def digest(self, role: str) -> str:
        return str(self.result["images"][role]["digest"])

    def config(self, role: str) -> str:
        return str(self.result["images"][role]["config"])


def lockstep(
    args: list[str],
    *,
    cwd: Path,
    cache: Path,
    env: dict[str, str] | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess."""
    full_env = {**os.environ, "LOCKSTEP_CACHE_DIR": str(cache), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "lockstep", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def build(
    root: Path, out: Path, cache: Path, *extra: str, env: dict[str, str] | None = None
) -> Built:
    proc = lockstep(
        ["build", "all", "--out", str(out), "--json", *extra], cwd=root, cache=cache, env=env
    )
    assert proc.returncode == 0, f"build failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return Built(root, out, cache, json.loads(proc.stdout))


def clone(dest: Path) -> Path:
    """A fresh git clone of this repository's committed tree at ``dest``."""
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(dest)], check=True)
    return dest


def git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def make_repo(dest: Path) -> Path:
    """A clone to release from: its own identity, and an origin that is not this repo."""
    root = clone(dest / "lockstep")
    git(root, "config", "user.name", "Release Test")
    git(root, "config", "user.email", "release-test@example.invalid")
    git(dest, "init", "-q", "--bare", str(dest / "origin.git"))
    git(root, "remote", "set-url", "origin", str(dest / "origin.git"))
    return root
