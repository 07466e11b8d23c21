"""Bundle environments on a worker: locked wheels installed offline, shared, verified.

A bundle with dependencies carries ``lockstep.lock.json`` (``lockstep.core.bundle_lock``).
The worker turns it into an *environment*: a directory of installed wheels,
named by ``env_key(build id, lock digest)``, under ``LOCKSTEP_BUNDLE_DIR/envs``
(the worker's writable directory, never the image's root). Nothing is
downloaded here: the runner sends the wheels, plain bytes named by their
sha256 (``WHEEL_PUT_OP``), and only those the worker lacks
(``ENV_STATUS_OP``); they are kept under ``LOCKSTEP_BUNDLE_DIR/wheels``.

Making an environment (``EnvStore.ensure``):

- the lock must read clean and name this image's Python lock (the build
  manifest's ``inputs.python_lock``): a bundle never replaces the image's pins;
- one maker at a time per environment, across threads and worker processes
  (an ``flock`` on ``envs/<key>.lock``), in a temporary directory renamed into
  place only when complete; a leftover of a maker that died is removed;
- every wheel's sha256 is checked before it is opened; no pip runs: each wheel
  is unpacked here, and every member must be a plain relative path (no ``..``,
  no absolute path, no link or device), listed in the wheel's ``RECORD`` with
  the hash of its bytes, and every hashed ``RECORD`` row must be in the wheel;
  ``purelib`` and ``platlib`` go into ``site/``, scripts, headers and data are
  left out; no two wheels may write one file, none may shadow a standard
  module, and sizes are bounded;
- its ``.py`` files are compiled by this interpreter (unchecked-hash ``.pyc``,
  as in the image), then ``ENV.json`` records every file with its sha256.

An environment is used only if ``ENV.json`` is there and every file under it
is what ``ENV.json`` lists, with its size and modification time (checked once
per job, and by each worker process before its first task there; a write
changes them, and ``verify_deep`` compares the sha256 ``ENV.json`` records
too); anything else (a partial or edited environment) is removed and made
again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.core.atomic import remove_read_only, write_bytes
from lockstep.core.bundle_lock import LOCK_FILE, BundleLock, env_key, parse_lock
from lockstep.core.digests import canonical_json, hex_of, sha256_digest
from lockstep.core.wheels import WheelRejected, verified_members

log = logging.getLogger("lockstep.runtime.bundle_env")

ENV_STATUS_OP = "lockstep_env_status"
WHEEL_PUT_OP = "lockstep_wheel_put"
ENV_MAKE_OP = "lockstep_env_make"
MARKER = "ENV.json"
ENV_SCHEMA = "lockstep.env/v1"
MAX_WHEEL_BYTES = 1 << 30  # one wheel, as sent
MAX_ENV_BYTES = 4 << 30  # everything unpacked into one environment
MAX_MEMBERS = 200_000  # files in one environment
_CHUNK = 1 << 20


class EnvRefused(ValueError):
    """The lock or a wheel cannot make an environment here (a bad input: exit 2 on the runner)."""


class WheelRefused(EnvRefused):
    """A wheel's bytes are not what the lock says, or it is not a safe, honest wheel."""


class WheelsMissing(RuntimeError):
    """The worker lacks wheels the environment needs (the runner sends them first)."""

    def __init__(self, digests: Sequence[str]) -> None:
        self.digests = tuple(digests)
        super().__init__(
            f"{len(digests)} wheel(s) of the bundle's lock are not on this worker "
            f"({', '.join(d[7:19] for d in digests)}…); the runner sends them before the "
            "environment is made (lockstep run does)"
        )


@dataclass(frozen=True)
class Env:
    """A ready environment: its key, its site directory and the lock it was made from."""

    key: str
    site: Path
    lock: str  # the lock file's digest
    built: bool = False  # made by this call (not found ready)
    seconds: float = 0.0


def read_bundle_lock(bundle: Path) -> BundleLock | None:
    """The lock of the bundle stored at ``bundle``; None if it has none; ``EnvRefused`` if bad."""
    path = bundle / LOCK_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    lock, problems = parse_lock(raw, LOCK_FILE)
    if lock is None or problems:
        raise EnvRefused(f"{LOCK_FILE} of bundle {bundle.name[:12]}: {problems[0]}")
    return lock


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class EnvStore:
    """The wheels and environments of one worker, under ``root`` (``LOCKSTEP_BUNDLE_DIR``).

    ``build_id`` and ``python_lock`` are this worker's image's (its manifest).
    Thread-safe; several worker processes may share ``root``.
    """

    def __init__(self, root: Path, build_id: str, python_lock: str) -> None:
        self.root = root
        self.build_id = build_id
        self.python_lock = python_lock
        self.wheels = root / "wheels"
        self.envs = root / "envs"
        self._lock = threading.Lock()
        self._verified: dict[str, float] = {}  # env key -> ENV.json's mtime when verified
        self._key_locks: dict[str, threading.Lock] = {}
        self._by_bundle: dict[str, Env | None] = {}

    # --- wheels -------------------------------------------------------------------------

    def wheel_path(self, digest: str) -> Path:
        return self.wheels / hex_of(digest)

    def missing(self, digests: Sequence[str]) -> list[str]:
        """The wheels (``sha256:`` digests) not stored here (checked when they are used)."""
        return [d for d in digests if not self.wheel_path(d).is_file()]

    def put_wheel(self, digest: str, data: bytes) -> None:
        """Store a wheel sent as ``digest``; ``WheelRefused`` if its bytes have another sha256."""
        path = self.wheel_path(digest)
        if len(data) > MAX_WHEEL_BYTES:
            raise WheelRefused(f"wheel {digest} is {len(data)} bytes, over {MAX_WHEEL_BYTES}")
        found = sha256_digest(data)
        if found != digest:
            raise WheelRefused(
                f"wheel sent as {digest} has sha256 {found}: refused, nothing stored; "
                "the runner's copy or the lock was changed"
            )
        if path.is_file():
            return
        write_bytes(path, data, 0o444)

    # --- environments -------------------------------------------------------------------

    def check_lock(self, lock: BundleLock) -> None:
        if lock.python_lock != self.python_lock:
            raise EnvRefused(
                f"the bundle's lock was made for the image Python lock {lock.python_lock}, "
                f"this worker's image has {self.python_lock}; re-lock the bundle with "
                "`lockstep bundle lock` for this build"
            )

    def status(self, bundle: Path) -> dict[str, Any]:
        """``{"env": key or None, "ready": bool, "missing": [wheel digests]}`` for ``bundle``."""
        lock = read_bundle_lock(bundle)
        if lock is not None:
            self.check_lock(lock)
        if lock is None or not lock.wheels:  # nothing to install: no environment
            return {"env": None, "ready": True, "missing": []}
        key = env_key(self.build_id, lock.digest)
        if self._ready(key, verify=True):
            return {"env": key, "ready": True, "missing": []}
        return {
            "env": key,
            "ready": False,
            "missing": self.missing([w.digest for w in lock.wheels]),
        }

    def for_bundle(self, bundle: Path) -> Env | None:
        """The environment of the stored bundle at ``bundle`` for a task (None: it has no
        lock); made if need be from the wheels here, verified once per process."""
        name = str(bundle)
        with self._lock:
            known = self._by_bundle.get(name, False)
        if known is None:
            return None
        if isinstance(known, Env) and self._ready(known.key, verify=False):
            return known
        env = self.ensure(bundle, verify=False)
        with self._lock:
            self._by_bundle[name] = env
        return env

    def ensure(self, bundle: Path, verify: bool = True) -> Env | None:
        """The environment of the bundle at ``bundle``, made from stored wheels if it is
        not ready; None if the bundle has no lock. ``verify``: check every file now."""
        lock = read_bundle_lock(bundle)
        if lock is not None:
            self.check_lock(lock)
        if lock is None or not lock.wheels:  # nothing to install: no environment
            return None
        key = env_key(self.build_id, lock.digest)
        final = self._dir(key)
        with self._key_lock(key):
            if self._ready(key, verify):
                return Env(key, final / "site", lock.digest)
            with self._flock(key):
                if self._ready(key, verify=True, locked=True):  # made meanwhile elsewhere
                    return Env(key, final / "site", lock.digest)
                start = time.monotonic()
                self._make(key, lock)
                seconds = time.monotonic() - start
        log.info(
            "lockstep environment %s made for lock %s: %d wheel(s) in %.2f s",
            key,
            lock.digest,
            len(lock.wheels),
            seconds,
        )
        return Env(key, final / "site", lock.digest, built=True, seconds=seconds)

    def _dir(self, key: str) -> Path:
        return self.envs / hex_of(key)

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            yield

    @contextlib.contextmanager
    def _flock(self, key: str) -> Iterator[None]:
        self.envs.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.envs / f"{hex_of(key)}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _ready(self, key: str, verify: bool, locked: bool = False) -> bool:
        """Whether the environment ``key`` is complete and intact; a broken one is removed."""
        final = self._dir(key)
        marker = final / MARKER
        try:
            mtime = marker.stat().st_mtime
        except OSError:
            if final.exists():
                self._discard(key, "it has no ENV.json", locked)
            return False
        with self._lock:
            known = self._verified.get(key)
        if not verify and known == mtime:
            return True
        problem = self._verify(final, key)
        if problem:
            self._discard(key, problem, locked)
            return False
        with self._lock:
            self._verified[key] = mtime
        return True

    def verify_deep(self, key: str) -> str:
        """Compare every file of the environment ``key`` with the sha256 ``ENV.json`` lists."""
        return self._verify(self._dir(key), key, deep=True)

    def _discard(self, key: str, why: str, locked: bool = False) -> None:
        """Remove a broken environment, holding its flock (``locked``: held already)."""
        final = self._dir(key)
        log.warning("lockstep environment %s at %s is broken (%s); removing it", key, final, why)
        with self._lock:
            self._verified.pop(key, None)
            self._by_bundle = {k: v for k, v in self._by_bundle.items() if not v or v.key != key}
        with contextlib.nullcontext() if locked else self._flock(key):
            if final.exists() and self._verify(final, key):  # still broken
                remove_read_only(final)

    def _verify(self, final: Path, key: str, deep: bool = False) -> str:
        """Why ``final`` is not exactly the environment its ``ENV.json`` lists; ``""`` if it is.

        Every file must be listed, with its size and modification time (any write
        changes them); ``deep`` also compares every file's sha256 (``verify_deep``)."""
        try:
            marker = json.loads((final / MARKER).read_bytes())
            files = {str(p): (str(h), int(n), int(m)) for p, h, n, m in marker["files"]}
            if marker.get("schema") != ENV_SCHEMA or marker.get("key") != key:
                return "its ENV.json is for another environment"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"its ENV.json does not read ({exc})"
        seen = 0
        for dirpath, dirnames, filenames in os.walk(final, followlinks=False):
            here = Path(dirpath)
            for name in dirnames:
                if (here / name).is_symlink():
                    return f"{(here / name).relative_to(final)} is a symlink"
            for name in filenames:
                path = here / name
                rel = path.relative_to(final).as_posix()
                if rel == MARKER:
                    continue
                st = path.lstat()
                if not stat.S_ISREG(st.st_mode):
                    return f"{rel} is not a regular file"
                want = files.get(rel)
                if want is None:
                    return f"{rel} is not part of it"
                if st.st_size != want[1] or st.st_mtime_ns != want[2]:
                    return f"{rel} was changed"
                if deep and _file_sha256(path) != want[0]:
                    return f"{rel} was changed"
                seen += 1
        if seen != len(files):
            return f"{len(files) - seen} of its file(s) are missing"
        return ""

    def _make(self, key: str, lock: BundleLock) -> None:
        """Install ``lock``'s wheels into a fresh ``envs/<key>`` (holding its flock)."""
        final = self._dir(key)
        for stale in self.envs.glob(f".{final.name}.*.tmp"):  # a maker that died part-way
            log.warning("lockstep environment %s: removing %s left by a stopped maker", key, stale)
            remove_read_only(stale)
        if final.exists():
            remove_read_only(final)
        missing = self.missing([w.digest for w in lock.wheels])
        if missing:
            raise WheelsMissing(missing)
        tmp = Path(tempfile.mkdtemp(dir=self.envs, prefix=f".{final.name}.", suffix=".tmp"))
        try:
            site = tmp / "site"
            site.mkdir()
            budget = _Budget()
            for wheel in lock.wheels:
                path = self.wheel_path(wheel.digest)
                data = path.read_bytes()
                if sha256_digest(data) != wheel.digest:
                    remove_read_only(path)
                    raise WheelsMissing([wheel.digest])  # corrupt on disk: removed, send again
                install_wheel(data, wheel.filename, wheel.project, site, budget)
            shadowing = sorted(
                p.name
                for p in site.iterdir()
                if p.name.split(".")[0] in sys.stdlib_module_names
                and not p.name.endswith((".dist-info", ".pth"))
            )
            if shadowing:
                raise WheelRefused(
                    f"the lock's wheels install {', '.join(shadowing)}, which would shadow "
                    "the standard library; remove that requirement"
                )
            _compile(site)
            _read_only(tmp)
            files = []
            for dirpath, _dirs, filenames in os.walk(tmp):
                for name in filenames:
                    path = Path(dirpath) / name
                    rel = path.relative_to(tmp).as_posix()
                    st = path.stat()
                    files.append([rel, _file_sha256(path), st.st_size, st.st_mtime_ns])
            marker = {
                "schema": ENV_SCHEMA,
                "key": key,
                "build_id": self.build_id,
                "lock": lock.digest,
                "wheels": [w.filename for w in lock.wheels],
                "files": sorted(files),
            }
            (tmp / MARKER).write_bytes(canonical_json(marker))
            (tmp / MARKER).chmod(0o444)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                remove_read_only(tmp)


@dataclass
class _Budget:
    """What one environment may unpack in all."""

    bytes: int = 0
    files: int = 0

    def take(self, size: int, what: str) -> None:
        self.bytes += size
        self.files += 1
        if self.bytes > MAX_ENV_BYTES or self.files > MAX_MEMBERS:
            raise WheelRefused(
                f"{what}: the environment would hold more than {MAX_ENV_BYTES} bytes or "
                f"{MAX_MEMBERS} files; refusing it"
            )


def install_wheel(data: bytes, filename: str, project: str, site: Path, budget: _Budget) -> int:
    """Unpack one wheel into ``site``, every member checked by ``core.wheels``; the number
    of files written. ``WheelRefused`` naming the wheel and the member."""

    def refuse(what: str) -> WheelRefused:
        return WheelRefused(f"wheel {filename}: {what}; refused, the environment is not made")

    written = 0
    members = verified_members(data, project, lambda size: budget.take(size, f"wheel {filename}"))
    while True:
        try:
            member = next(members, None)
        except WheelRejected as exc:
            raise refuse(str(exc)) from None
        if member is None:
            return written
        dest = site / member.target
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            raise refuse(f"{member.target} is installed already (by another wheel)") from None
        except (NotADirectoryError, FileNotFoundError):
            raise refuse(f"{member.target} is below a file of the same name") from None
        with os.fdopen(fd, "wb") as out:
            out.write(member.content)
        if member.executable:
            os.chmod(dest, 0o755)
        written += 1


def _compile(site: Path) -> None:
    """Compile the ``.py`` files under ``site`` with this interpreter (unchecked-hash
    ``.pyc``: task processes import without compiling, and write nothing), but for the
    wheels' test directories."""
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            "-x",  # a wheel's own test suites: never imported by a task, many files
            f"^{re.escape(str(site))}/(.*/)?tests?/",
            str(site),
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode not in (0, 1):  # 1: a file that does not compile (a wheel's test data)
        raise OSError(f"compileall failed with code {proc.returncode}: {proc.stderr[-500:]}")


def _read_only(tree: Path) -> None:
    """Files 0444 (0555 if executable), then directories 0555, bottom up."""
    for dirpath, dirnames, filenames in os.walk(tree, topdown=False):
        for name in filenames:
            path = Path(dirpath) / name
            path.chmod(0o555 if path.stat().st_mode & 0o100 else 0o444)
        for name in dirnames:
            (Path(dirpath) / name).chmod(0o555)
    tree.chmod(0o755)  # the environment's own directory: renamed and removed as one


def install(worker: Any, bundles: Any, envs: EnvStore) -> None:
    """Register the environment handlers on a Dask ``worker`` (pickle-free: plain data).

    - ``lockstep_env_status(digest)`` → ``{"ok", "env", "ready", "missing"}``: for the
      stored bundle ``digest``, whether its environment is ready here and, if not,
      which of its wheels (``sha256:`` digests) this worker lacks;
    - ``lockstep_wheel_put(digest, data)`` → ``{"ok"}``: one wheel, as bytes;
    - ``lockstep_env_make(digest)`` → ``{"ok", "env", "built", "seconds"}``.

    A failure answers ``{"ok": False, "error", "code"}`` (``code``: the exit code
    it means for the runner: 2 for a lock this worker cannot use or a bundle
    directory it cannot write; 1 for a wheel whose bytes or files are not what they
    claim, and otherwise), with ``missing`` if wheels are lacking.
    """
    import asyncio

    from lockstep.core.settings import BUNDLE_DIR

    where = f"worker {worker.address}"

    def failure(exc: Exception) -> dict[str, Any]:
        if isinstance(exc, WheelsMissing):
            return {"ok": False, "error": f"{where}: {exc}", "code": 1, "missing": exc.digests}
        if isinstance(exc, WheelRefused):  # bytes or files not what they claim: a failed check
            return {"ok": False, "error": f"{where}: {exc}", "code": 1}
        if isinstance(exc, EnvRefused):  # a lock this worker cannot use: bad input
            return {"ok": False, "error": f"{where}: {exc}", "code": 2}
        if isinstance(exc, OSError):
            return {
                "ok": False,
                "error": f"{where} cannot make the environment under {BUNDLE_DIR}="
                f"{envs.root} ({exc.strerror or exc}); give the worker a writable "
                f"{BUNDLE_DIR}",
                "code": 2,
            }
        return {"ok": False, "error": f"{where}: {exc}", "code": 1}

    async def status(digest: str) -> dict[str, Any]:
        try:
            path = await asyncio.to_thread(bundles.path, digest, where)
            found = await asyncio.to_thread(envs.status, path)
        except (ValueError, RuntimeError, OSError) as exc:
            return failure(exc)
        return {"ok": True, **found}

    async def put(digest: str, data: Any) -> dict[str, Any]:
        if not isinstance(digest, str) or not isinstance(data, bytes | bytearray | memoryview):
            return {
                "ok": False,
                "error": f"{where}: a wheel is sent as digest and bytes",
                "code": 2,
            }
        try:
            await asyncio.to_thread(envs.put_wheel, hex_of(digest) and digest, bytes(data))
        except (ValueError, OSError) as exc:
            log.error("lockstep refused a wheel on %s: %s", worker.address, exc)
            return failure(exc)
        return {"ok": True}

    async def make(digest: str) -> dict[str, Any]:
        try:
            path = await asyncio.to_thread(bundles.path, digest, where)
            env = await asyncio.to_thread(envs.ensure, path)
        except (ValueError, RuntimeError, OSError) as exc:
            if not isinstance(exc, WheelsMissing):
                log.error("lockstep environment for bundle %s on %s: %s", digest, where, exc)
            return failure(exc)
        if env is None:
            return {"ok": True, "env": None, "built": False, "seconds": 0.0}
        return {"ok": True, "env": env.key, "built": env.built, "seconds": round(env.seconds, 3)}

    worker.handlers[ENV_STATUS_OP] = status
    worker.handlers[WHEEL_PUT_OP] = put
    worker.handlers[ENV_MAKE_OP] = make
