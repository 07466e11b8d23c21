"""The declared source files: which files count, read once, and their digest.

Only files matched by ``[tool.lockstep] sources`` count. The digest covers
each file's relative path, exec bit and content — not mtimes, absolute paths
or ownership (``lockstep.core.digests.tree_digest``). Git-ignored files and
stray build outputs never count.
"""

from __future__ import annotations

import logging
import stat
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from lockstep.core.digests import TreeFile
from lockstep.core.errors import BadInput

log = logging.getLogger(__name__)

# Build outputs that never enter an image, whatever the globs say.
EXCLUDED_DIRS = ("__pycache__", ".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache")
EXCLUDED_SUFFIXES = (".pyc", ".pyo")


def _excluded(rel: str) -> bool:
    parts = rel.split("/")
    return (
        any(p in EXCLUDED_DIRS or p.endswith(".egg-info") for p in parts[:-1])
        or parts[-1].endswith(EXCLUDED_SUFFIXES)
        or parts[-1].endswith(".egg-info")
    )


def _git_ignored(root: Path, rels: Sequence[str]) -> set[str]:
    """The subset of ``rels`` that git ignores; empty outside a git work tree.

    Asks ``git check-ignore`` directly: this runs on every build, and importing
    gitpython alone would cost more than the rest of a no-op rebuild.
    """
    if not rels or not _in_git_tree(root):
        return set()
    try:
        proc = subprocess.run(
            ["git", "check-ignore", "--stdin", "-z"],
            cwd=root,
            input="\0".join(rels) + "\0",
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("not filtering git-ignored files: %s", exc)
        return set()
    if proc.returncode not in (0, 1):  # 1: nothing is ignored
        log.debug("not filtering git-ignored files: %s", proc.stderr.strip())
        return set()
    return {name for name in proc.stdout.split("\0") if name}


def _in_git_tree(root: Path) -> bool:
    return any((p / ".git").exists() for p in (root.resolve(), *root.resolve().parents))


def select(
    root: Path, patterns: Iterable[str], where: str = "[tool.lockstep] sources"
) -> list[str]:
    """Relative posix paths of the declared files; BadInput if a pattern matches nothing."""
    chosen: set[str] = set()
    for pattern in patterns:
        matched = [p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file()]
        matched = [m for m in matched if not _excluded(m)]
        if not matched:
            raise BadInput(
                f"{root / 'pyproject.toml'}: {where} pattern {pattern!r} matches no "
                "file; create it or remove the pattern"
            )
        chosen.update(matched)
    ignored = _git_ignored(root, sorted(chosen))
    return sorted(chosen - ignored)


def read(root: Path, rels: Iterable[str]) -> tuple[TreeFile, ...]:
    files = []
    for rel in rels:
        path = root / rel
        try:
            st = path.stat()
            data = path.read_bytes()
        except OSError as exc:
            raise BadInput(f"{path}: cannot read declared input ({exc.strerror})") from exc
        files.append(TreeFile(rel, bool(st.st_mode & stat.S_IXUSR), data))
    return tuple(sorted(files, key=lambda f: f.path))


def load(root: Path, patterns: Iterable[str]) -> tuple[TreeFile, ...]:
    """The declared source files of the project at ``root``."""
    return read(root, select(root, patterns))
