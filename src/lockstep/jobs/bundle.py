"""A job bundle on the runner: its files, its digest, and what makes it well-formed.

A bundle is a plain directory of Python code and data. Its digest is the tree
digest of the build's sources (``lockstep.build.sources.tree_digest``: path,
exec bit and content of every file; no mtimes), over every file but Python's
byte-code caches. Nothing here imports or runs the bundle's code: syntax is
checked with ``compile`` (which executes nothing); importing is the probe's
job, in another process.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from lockstep.build.sources import SourceFile, tree_digest
from lockstep.runtime.bundles import read_tree

MAX_BUNDLE_BYTES = 64 * 2**20  # code and small data; ship large inputs another way


@dataclass(frozen=True)
class Bundle:
    """A bundle directory as it was read: its files and their tree digest."""

    root: Path
    digest: str
    files: tuple[SourceFile, ...]

    @property
    def size(self) -> int:
        return sum(len(f.data) for f in self.files)

    def top_level_modules(self) -> dict[str, str]:
        """Importable top-level names the bundle defines -> the file or directory defining it."""
        names: dict[str, str] = {}
        for f in self.files:
            first, _, rest = f.path.partition("/")
            if not rest and first.endswith(".py"):
                names.setdefault(first.removesuffix(".py"), f.path)
            elif rest and first.isidentifier():
                names.setdefault(first, first + "/")
        return names


def load_bundle(root: Path) -> tuple[Bundle | None, list[tuple[str, str]]]:
    """The bundle at ``root`` and its problems as ``(name, message)``; None if unreadable."""
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        return None, [(str(root), f"the bundle directory {what}; fix `bundle` in the job spec")]
    try:
        files, odd = read_tree(root)
    except OSError as exc:
        return None, [(str(exc.filename or root), f"cannot read it ({exc.strerror})")]
    bundle = Bundle(root, tree_digest(files), tuple(files))
    problems = [
        (
            str(root / rel),
            f"is {what}; a bundle holds only regular files (its digest "
            "covers contents, not links): replace it with the file",
        )
        for rel, what in odd
    ]
    if not files:
        problems.append((str(root), "the bundle has no files"))
    if bundle.size > MAX_BUNDLE_BYTES:
        problems.append(
            (
                str(root),
                f"the bundle is {bundle.size} bytes, more than "
                f"{MAX_BUNDLE_BYTES}: keep code and small data in it and "
                "ship large inputs another way",
            )
        )
    return bundle, problems


def syntax_problems(bundle: Bundle) -> list[tuple[str, str]]:
    """``(file, message)`` for every ``.py`` file of the bundle that does not compile."""
    problems = []
    for f in bundle.files:
        if not f.path.endswith(".py"):
            continue
        path = bundle.root / f.path
        try:
            compile(f.data, str(path), "exec", dont_inherit=True)
        except SyntaxError as exc:
            problems.append((str(path), f"syntax error at line {exc.lineno}: {exc.msg}"))
        except ValueError as exc:  # null bytes and the like
            problems.append((str(path), f"not Python source ({exc})"))
    return problems


def shadowing_problems(bundle: Bundle) -> list[tuple[str, str]]:
    """Top-level names of the bundle that would hide a standard or installed module.

    The bundle goes first on the task's ``sys.path``: a ``json.py`` in it would
    replace the real ``json`` for the worker's own code under ``direct``.
    """
    problems = []
    for name, defined in sorted(bundle.top_level_modules().items()):
        if name in sys.stdlib_module_names:
            where = "the standard library"
        else:
            try:
                found = importlib.util.find_spec(name)  # finds, never imports a top-level name
            except (ImportError, ValueError):
                found = None
            if found is None:
                continue
            where = f"the installed {found.origin or name}"
        problems.append(
            (
                str(bundle.root / defined),
                f"module name {name!r} shadows {name} of {where}; rename it "
                "(for instance put it in a package of the job's own name)",
            )
        )
    return problems
