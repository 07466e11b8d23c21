"""A job bundle on the runner: its files, its digest, and what makes it well-formed.

A bundle is a plain directory of Python code and data. Its digest is the tree
digest of the build's sources (``lockstep.core.digests.tree_digest``: path,
exec bit and content of every file; no mtimes), over every file but Python's
byte-code caches. Nothing here imports or runs the bundle's code: syntax is
checked with ``compile`` (which executes nothing); importing is the probe's
job, in another process.
"""

from __future__ import annotations

import errno
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from lockstep.bundles.lockfile import (
    LOCK_FILE,
    BundleLock,
    parse_lock,
    read_declared,
    relock_hint,
    stale_problem,
)
from lockstep.bundles.store import read_tree
from lockstep.core.digests import TreeFile, tree_digest
from lockstep.runtime.executors import no_environment

MAX_BUNDLE_BYTES = 64 * 2**20  # code and small data; ship large inputs another way


@dataclass(frozen=True)
class Bundle:
    """A bundle directory as it was read: its files and their tree digest."""

    root: Path
    digest: str
    files: tuple[TreeFile, ...]
    reference: str | None = None  # HOST/REPO@sha256:… when the job names it in a registry
    prebuilt: bool = False  # ship its environment as one prebuilt layer (bundles/prebuilt.py)

    @property
    def size(self) -> int:
        return sum(len(f.data) for f in self.files)

    def lock_data(self) -> bytes | None:
        """The bytes of the bundle's ``lockstep.lock.json`` as read (None: it locks nothing)."""
        for f in self.files:
            if f.path == LOCK_FILE:
                return f.data
        return None

    def lock(self) -> BundleLock | None:
        """The bundle's lock, if it has one that reads clean (preflight reports the rest)."""
        raw = self.lock_data()
        if raw is None:
            return None
        lock, problems = parse_lock(raw, LOCK_FILE)
        return lock if not problems else None

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
        files, odd = read_tree(root, MAX_BUNDLE_BYTES)
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            return None, [
                (
                    str(root),
                    f"the bundle is more than {MAX_BUNDLE_BYTES} bytes (found while reading "
                    "it): keep code and small data in it and ship large inputs another way",
                )
            ]
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


def dependency_problems(
    bundle: Bundle, executor: str | None, python_lock: str | None
) -> list[tuple[str, str, int]]:
    """``(file, message, exit code)`` for everything wrong with the bundle's dependencies.

    The lock must exist if the bundle declares requirements, have been made from
    the requirements it declares now, read clean (https wheels with a sha256, for
    the image's platform, none of the image's own projects, not edited by hand),
    and name the image's Python lock ``python_lock`` (the cluster's build, when
    known). ``direct`` cannot run a bundle with dependencies.
    """
    declared, found = read_declared(bundle.root)
    problems = [(file, message, 2) for file, message in found]
    raw = bundle.lock_data()
    lock_path = str(bundle.root / LOCK_FILE)
    hint = relock_hint(bundle.root)
    if raw is None:
        if declared is not None:
            problems.append(
                (
                    str(bundle.root / declared.file),
                    f"declares {len(declared.requirements)} requirement(s) but the bundle has "
                    f"no {LOCK_FILE}; {hint}",
                    2,
                )
            )
        return problems
    lock, bad = parse_lock(raw, lock_path)
    problems += [(lock_path, f"{message}; {hint}", 2) for message in bad]
    if lock is None:
        return problems
    stale = stale_problem(declared, lock)
    if stale:
        problems.append((lock_path, f"{stale}; {hint}", 2))
    if python_lock is not None and lock.python_lock != python_lock:
        problems.append(
            (
                lock_path,
                f"made for the image Python lock {lock.python_lock}, but the cluster's build "
                f"has {python_lock}: its versions may conflict with the image's; {hint} "
                "with this build's images/python.lock.json",
                2,
            )
        )
    refused = no_environment(executor) if executor and lock.wheels else None
    if refused:
        problems.append(
            (
                lock_path,
                f"the bundle has dependencies ({lock.counted()}) and "
                f"{refused}; use executor isolated_warm or cold",
                2,
            )
        )
    return problems
