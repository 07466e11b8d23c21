"""Job bundles on a worker: received by digest, verified, cached, put on a task's ``sys.path``.

A bundle is a directory of task code, named by its tree digest — the same
digest as the build's declared sources (``lockstep.core.digests.tree_digest``:
path, exec bit and content of every file, never mtimes). The runner sends it
once per worker through pickle-free handlers (plain bytes in msgpack, never
through the image); the worker recomputes the digest from the bytes it got
and refuses a bundle whose digest differs (changed after its digest was
taken, or partial), then caches it under ``LOCKSTEP_BUNDLE_DIR/<hex>`` (a
writable directory: the images' root is read-only). A cached copy is
verified again whenever a runner asks for it (once per job), and a corrupt
one is removed and sent again.

Handlers (on every lockstep worker; see ``install``):

- ``lockstep_bundle_has(digest)`` → ``{"ok", "cached", "path"}``
- ``lockstep_bundle_put(digest, files=[[path, executable, data], …])`` →
  ``{"ok", "path"}`` or ``{"ok": False, "error"}``
- ``lockstep_bundle_check(digest, checks, timeout)`` → ``{"ok", "results"}``:
  the import check of ``lockstep.bundles.probe`` in a fresh interpreter of
  this worker's image, with the cached bundle on its path.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lockstep.bundles.env_install import EnvRefused
from lockstep.bundles.lockfile import LOCK_FILE, BundleLock, parse_lock
from lockstep.core.atomic import remove_leftovers, remove_read_only, temp_dir
from lockstep.core.bounded import LOCK_MAX, read_regular
from lockstep.core.digests import TreeFile, is_digest, tree_digest

log = logging.getLogger("lockstep.bundles.store")

# Written by Python when a bundle's modules are imported: never part of a bundle.
_SKIPPED_DIRS = ("__pycache__",)
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


class BundleRefused(ValueError):
    """A bundle whose bytes do not have the digest it was sent as, or a malformed one."""


class BundleMissing(RuntimeError):
    """A task names a bundle this worker does not have (the runner ships it first)."""


def check_digest(digest: object) -> str:
    if not isinstance(digest, str) or not is_digest(digest):
        raise BundleRefused(f"bundle digest {digest!r} is not sha256:<64 hex digits>")
    return digest


def skipped(rel: str) -> bool:
    """Files a bundle never contains: Python's byte-code caches."""
    parts = rel.split("/")
    return any(p in _SKIPPED_DIRS for p in parts[:-1]) or parts[-1].endswith(_SKIPPED_SUFFIXES)


def check_rel_path(path: object) -> str:
    """``path`` if it is a plain relative posix path inside a bundle; ``BundleRefused`` if not."""
    if (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or "\\" in path
        or "\0" in path
        or any(p in ("", ".", "..") for p in path.split("/"))
    ):
        raise BundleRefused(f"bundle file name {path!r} is not a relative path inside the bundle")
    return path


def read_tree(root: Path, limit: int | None = None) -> tuple[list[TreeFile], list[tuple[str, str]]]:
    """The files under ``root``, and ``(path, what it is)`` for the rest (symlinks, devices…).

    Byte-code caches are skipped; directories are implied by their files. With ``limit``,
    an ``OSError`` (``EFBIG``) as soon as the files' sizes add up to more than it, before
    they are read; each file is read only if regular, and within what is left.
    """
    files: list[TreeFile] = []
    left = limit
    odd: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames):
            if (here / name).is_symlink():
                odd.append(((here / name).relative_to(root).as_posix(), "a symlink"))
        dirnames[:] = sorted(
            d for d in dirnames if d not in _SKIPPED_DIRS and not (here / d).is_symlink()
        )
        for name in sorted(filenames):
            path = here / name
            rel = path.relative_to(root).as_posix()
            if skipped(rel):
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                odd.append((rel, "a symlink"))
            elif not stat.S_ISREG(st.st_mode):
                odd.append((rel, "not a regular file"))
            elif left is None:
                files.append(TreeFile(rel, bool(st.st_mode & stat.S_IXUSR), path.read_bytes()))
            else:
                if st.st_size > left:
                    raise OSError(errno.EFBIG, f"more than {limit} bytes", str(root))
                data = read_regular(path, left)
                left -= len(data)
                files.append(TreeFile(rel, bool(st.st_mode & stat.S_IXUSR), data))
    return sorted(files, key=lambda f: f.path), odd


def to_wire(files: Iterable[TreeFile]) -> list[list[Any]]:
    """Files as msgpack-friendly rows ``[path, executable, data]``."""
    return [[f.path, f.executable, f.data] for f in files]


def from_wire(rows: object) -> list[TreeFile]:
    if not isinstance(rows, list | tuple):
        raise BundleRefused("bundle files must be a list of [path, executable, data]")
    files = []
    for row in rows:
        if (
            not isinstance(row, list | tuple)
            or len(row) != 3
            or not isinstance(row[2], bytes | bytearray | memoryview)
        ):
            raise BundleRefused("bundle files must be a list of [path, executable, data]")
        files.append(TreeFile(check_rel_path(row[0]), bool(row[1]), bytes(row[2])))
    return files


class BundleStore:
    """The bundles a worker holds, one directory per digest under ``root``; thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._verified: set[str] = set()
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Create the cache directory; ``BadInput`` naming the setting if it is not writable."""
        from lockstep.core.errors import BadInput
        from lockstep.core.settings import BUNDLE_DIR as BUNDLE_DIR_ENV

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            remove_leftovers(self.root)  # of a worker killed while it stored a bundle
            writable = os.access(self.root, os.W_OK | os.X_OK)
            problem = "" if writable else "not writable"
        except OSError as exc:
            problem = exc.strerror or str(exc)
        if problem:
            raise BadInput(
                f"{BUNDLE_DIR_ENV}={self.root}: cannot cache job bundles there "
                f"({problem}); set it to a writable directory"
            )

    def _dir(self, digest: str) -> Path:
        return self.root / check_digest(digest).removeprefix("sha256:")

    def has(self, digest: str) -> Path | None:
        """The directory of ``digest``, verified now from its files; None if absent.

        A copy whose files no longer have the digest is removed (the runner,
        which asks before every job, then sends it again).
        """
        final = self._dir(digest)
        if not final.is_dir():
            return None
        files, odd = read_tree(final)
        found = tree_digest(files)
        if odd or found != digest:
            log.warning(
                "lockstep bundle cache: %s holds %s%s, not %s; removing it",
                final,
                found,
                f" and {len(odd)} link(s) or special file(s)" if odd else "",
                digest,
            )
            with self._lock:
                self._verified.discard(digest)
            remove_read_only(final)
            return None
        with self._lock:
            self._verified.add(digest)
        return final

    def put(self, digest: str, files: Sequence[TreeFile]) -> Path:
        """Verify ``files`` against ``digest`` and cache them; ``BundleRefused`` on a mismatch."""
        check_digest(digest)
        found = tree_digest(files)
        if found != digest:
            raise BundleRefused(
                f"bundle sent as {digest} arrived as {found} ({len(files)} file(s)): its files "
                "changed after its digest was taken, or it is partial; refusing it. Run the "
                "job again from an unchanged bundle"
            )
        if not files:
            raise BundleRefused(f"bundle {digest} has no files; refusing it")
        existing = self.has(digest)
        if existing is not None:
            return existing
        final = self._dir(digest)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir(self.root, final.name[:12])
        try:
            for f in files:
                path = tmp / f.path
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(f.data)
                path.chmod(0o555 if f.executable else 0o444)
            try:
                os.replace(tmp, final)
            except OSError:  # another put of the same digest won the race: use its copy
                if self.has(digest) is None:
                    raise
        finally:
            if tmp.exists():
                remove_read_only(tmp)
        with self._lock:
            self._verified.add(digest)
        log.info("lockstep bundle %s cached at %s (%d file(s))", digest, final, len(files))
        return final

    def path(self, digest: str, where: str = "this worker") -> Path:
        """The directory of ``digest`` for a task; ``BundleMissing`` if it is not here.

        Verified once per worker process (``has``/``put`` verify on every job).
        """
        final = self._dir(digest)
        with self._lock:
            if digest in self._verified and final.is_dir():
                return final
        found = self.has(digest)
        if found is None:
            raise BundleMissing(
                f"bundle {digest} is not on {where}: the runner ships a bundle "
                "to each worker before its tasks (lockstep run does)"
            )
        return found


def read_bundle_lock(bundle: Path) -> BundleLock | None:
    """The lock of the bundle stored at ``bundle``; None if it has none; ``EnvRefused`` if bad."""
    path = bundle / LOCK_FILE
    try:
        raw = read_regular(path, LOCK_MAX)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise EnvRefused(f"{LOCK_FILE} of bundle {bundle.name[:12]}: {exc.strerror}") from exc
    lock, problems = parse_lock(raw, LOCK_FILE)
    if lock is None or problems:
        raise EnvRefused(f"{LOCK_FILE} of bundle {bundle.name[:12]}: {problems[0]}")
    return lock
