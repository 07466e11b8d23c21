"""Bundle environments on a worker: locked wheels installed offline, shared, verified.

A bundle with dependencies carries ``lockstep.lock.json`` (``lockstep.bundles.lockfile``).
The worker turns it into an *environment*: a directory of the wheels the lock has for
this worker's platform, installed, named by ``env_key(build id, lock digest)``, under
``LOCKSTEP_BUNDLE_DIR/envs`` (never the image's root). Nothing is downloaded here: the
runner sends the wheels, plain bytes named by their sha256 (``protocol.Op.WHEEL_PUT``),
and only those the worker lacks (``Op.ENV_STATUS``), kept under ``…/wheels``.

Making an environment (``EnvStore.ensure``):

- the lock must read clean, name this image's Python lock (the build manifest's
  ``inputs.python_lock``: a bundle never replaces the image's pins) and have a part
  for this worker's platform (``host_platform``);
- one maker at a time per environment, across threads and worker processes
  (an ``flock`` on ``envs/<key>.lock``), in a temporary directory renamed into
  place only when complete; a leftover of a process that died (named by
  ``core.atomic``'s rule: ``.<key>.<pid>.….tmp``) is removed by the next maker and
  by every worker when it starts;
- every wheel's sha256 is checked before it is opened; no pip runs: each wheel is
  unpacked here with every check of ``env_install`` (safe member paths, the
  ``RECORD``'s hashes both ways, purelib/platlib only, no two wheels writing one
  file, no standard module shadowed, bounded sizes);
- ``ENV.json`` records the platform and every file with its sha256 (the
  ``RECORD``'s, checked as it was written), size and mtime, and ``"compiled":
  false``: the environment is in use from here;
- then, in the background, its ``.py`` files are compiled by this interpreter
  (``env_compile``) and ``ENV.json`` is replaced by one that lists the ``.pyc``
  files too, ``"compiled": true``; one compiler at a time per environment (an
  ``flock`` on ``envs/<key>.compile.lock``), one that died followed by the next.

An environment is used only if ``ENV.json`` names this platform and every file under
it is what ``ENV.json`` lists, with its size and modification time (``env_check``;
``verify_deep`` compares the sha256 too; a worker walks its environments when it
starts, and between walks ``inotify`` tells it whether anything under one changed —
``env_watch``). Until it is compiled, ``.pyc`` files in ``__pycache__`` are the only
files it may hold beyond the list; anything else is removed and made again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.bundles.env_check import ENV_SCHEMA, MARKER, verify
from lockstep.bundles.env_compile import compile_site, is_pyc, seal
from lockstep.bundles.env_install import EnvRefused, WheelRefused, install_all, plan_all
from lockstep.bundles.env_layer import LayerRefused, LayerSink, host_platform
from lockstep.bundles.env_watch import TreeWatch
from lockstep.bundles.lockfile import BundleLock, LockedWheel, env_key
from lockstep.bundles.store import read_bundle_lock
from lockstep.core.atomic import (
    SUFFIX,
    remove_leftovers,
    remove_read_only,
    temp_dir,
    temp_prefix,
    write_bytes,
)
from lockstep.core.digests import canonical_json, hex_of, sha256_digest

log = logging.getLogger("lockstep.bundles.env")

MAX_WHEEL_BYTES = 1 << 30  # one wheel, as sent
MAX_WATCHED = 4  # environments watched (inotify instances and watches are per-user limits)

__all__ = ["Env", "EnvRefused", "EnvStore", "WheelRefused", "WheelsMissing", "read_bundle_lock"]


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


class EnvStore:
    """The wheels and environments of one worker, under ``root`` (``LOCKSTEP_BUNDLE_DIR``).

    ``build_id`` and ``python_lock`` are this worker's image's (its manifest).
    Thread-safe; several worker processes may share ``root``.
    """

    def __init__(
        self, root: Path, build_id: str, python_lock: str, platform: str | None = None
    ) -> None:
        self.root = root
        self.build_id = build_id
        self.python_lock = python_lock
        self.platform = platform or host_platform()  # whose wheels this worker installs
        self.wheels = root / "wheels"
        self.envs = root / "envs"
        self._lock = threading.Lock()
        self._verified: dict[str, float] = {}  # env key -> ENV.json's mtime when verified
        self._key_locks: dict[str, threading.Lock] = {}
        self._by_bundle: dict[str, Env | None] = {}
        self._compiling: set[str] = set()
        self._watches: dict[str, TreeWatch] = {}  # env key -> inotify since its last walk

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

    def check_lock(self, lock: BundleLock | None) -> tuple[LockedWheel, ...]:
        """The wheels ``lock`` has for this worker's platform (none without a lock);
        ``EnvRefused`` if it is for another image Python lock or lacks this platform."""
        if lock is None:
            return ()
        if lock.python_lock != self.python_lock:
            raise EnvRefused(
                f"the bundle's lock was made for the image Python lock {lock.python_lock}, "
                f"this worker's image has {self.python_lock}; re-lock the bundle with "
                "`lockstep bundle lock` for this build"
            )
        part = lock.on(self.platform)
        if part is None:
            raise EnvRefused(
                f"the bundle's lock is for {', '.join(lock.platforms)}, not this worker's "
                f"{self.platform}; lock it for every platform of the image with "
                "`lockstep bundle lock`"
            )
        return part.wheels

    def status(self, bundle: Path) -> dict[str, Any]:
        """``{"env": key or None, "ready": bool, "missing": [wheel digests]}`` for ``bundle``."""
        lock = read_bundle_lock(bundle)
        wheels = self.check_lock(lock)
        if lock is None or not wheels:  # nothing to install: no environment
            return {"env": None, "ready": True, "missing": []}
        key = env_key(self.build_id, lock.digest)
        if self._ready(key, verify=True):
            return {"env": key, "ready": True, "missing": []}
        return {"env": key, "ready": False, "missing": self.missing([w.digest for w in wheels])}

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
        wheels = self.check_lock(lock)
        if lock is None or not wheels:  # nothing to install: no environment
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
                self._make(key, lock, wheels)
                seconds = time.monotonic() - start
        self.compile_soon(key)
        log.info(
            "lockstep environment %s made for lock %s: %d wheel(s) in %.2f s",
            key,
            lock.digest,
            len(wheels),
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
        """Whether the environment ``key`` is complete and intact; a broken one is removed.
        One found not yet compiled is compiled (in the background) if nobody is at it."""
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
            watch = self._watches.get(key)
        if known == mtime and (not verify or (watch is not None and not watch.changed())):
            return True  # verified, and (per inotify) nothing under it changed since
        with self._lock:
            room = key in self._watches or len(self._watches) < MAX_WATCHED
        # first: a change during the walk is seen next time
        watch = TreeWatch.start(final) if room else None
        problem, compiled = self._verify(final, key)
        if problem:
            if watch is not None:
                watch.close()
            self._discard(key, problem, locked)
            return False
        with self._lock:
            self._verified[key] = mtime
            old = self._watches.pop(key, None)
            if watch is not None:
                self._watches[key] = watch
        if old is not None:
            old.close()
        if not compiled:
            self.compile_soon(key)
        return True

    def remove_leftovers(self) -> list[Path]:
        """Remove the temporary directories under ``envs/`` of processes that are gone (a
        maker, a layer's extraction or a removal killed part-way: ``core.atomic``'s
        naming rule tells whose each is); them."""
        removed = remove_leftovers(self.envs)
        for path in removed:
            log.warning("lockstep environment: removed %s, left by a stopped process", path)
        return removed

    def check_all(self) -> int:
        """Verify every environment of this build on disk (a worker does, in the background,
        when it starts: a job's first check then finds it verified and watched); how many
        are ready. A broken one is removed, and so are the leftovers of stopped processes."""
        self.remove_leftovers()
        ready = 0
        for marker in sorted(self.envs.glob("*/" + MARKER)):
            try:
                facts = json.loads(marker.read_bytes())
                key = str(facts["key"])
                if facts.get("build_id") != self.build_id or self._dir(key) != marker.parent:
                    continue
            except (OSError, ValueError, KeyError, TypeError):
                continue  # removed or made meanwhile, or another build's: not ours to judge
            with self._key_lock(key):
                ready += self._ready(key, verify=True)
        return ready

    def verify_deep(self, key: str) -> str:
        """Compare every file of the environment ``key`` with the sha256 ``ENV.json`` lists."""
        return self._verify(self._dir(key), key, deep=True)[0]

    def _discard(self, key: str, why: str, locked: bool = False) -> None:
        """Remove a broken environment, holding its flock (``locked``: held already)."""
        final = self._dir(key)
        log.warning("lockstep environment %s at %s is broken (%s); removing it", key, final, why)
        with self._lock:
            self._verified.pop(key, None)
            watch = self._watches.pop(key, None)
            self._by_bundle = {k: v for k, v in self._by_bundle.items() if not v or v.key != key}
        if watch is not None:
            watch.close()
        with contextlib.nullcontext() if locked else self._flock(key):
            if final.exists() and self._verify(final, key)[0]:  # still broken
                self._remove(final)

    def _remove(self, final: Path) -> None:
        """Remove an environment directory: first renamed out of the way (atomically, so no
        one finds it half removed), then deleted; what a compile still writing there
        keeps, the next maker removes (a ``.*.tmp`` leftover)."""
        gone = final.with_name(f"{temp_prefix(final.name)}{time.time_ns()}{SUFFIX}")
        try:
            os.rename(final, gone)
        except FileNotFoundError:
            return  # removed meanwhile
        _delete(gone)

    def _verify(self, final: Path, key: str, deep: bool = False) -> tuple[str, bool]:
        return verify(final, key, self.platform, deep)

    def _make(self, key: str, lock: BundleLock, wheels_: Sequence[LockedWheel]) -> None:
        """Install ``wheels_`` (``lock``'s for this platform) into a fresh ``envs/<key>``
        (holding its flock)."""
        final = self._dir(key)
        self.remove_leftovers()  # of makers, senders' transfers, removals that were killed
        if final.exists():
            self._remove(final)
        missing = self.missing([w.digest for w in wheels_])
        if missing:
            raise WheelsMissing(missing)
        wheels = []
        for wheel in wheels_:
            path = self.wheel_path(wheel.digest)
            data = path.read_bytes()
            if sha256_digest(data) != wheel.digest:
                remove_read_only(path)
                raise WheelsMissing([wheel.digest])  # corrupt on disk: removed, send again
            wheels.append((data, wheel.filename, wheel.project))
        plans = plan_all(wheels)  # every check a wheel's directory allows, before writing
        tmp = temp_dir(self.envs, final.name)
        try:
            site = tmp / "site"
            site.mkdir()
            written = install_all(plans, site)
            marker = {
                "schema": ENV_SCHEMA,
                "key": key,
                "build_id": self.build_id,
                "platform": self.platform,
                "lock": lock.digest,
                "wheels": [w.filename for w in wheels_],
                "made": f"{os.getpid()}-{time.time_ns()}",
                "compiled": False,
                "files": sorted(
                    [f"site/{w.target}", w.sha256, w.size, w.mtime_ns] for w in written
                ),
            }
            (tmp / MARKER).write_bytes(canonical_json(marker))
            (tmp / MARKER).chmod(0o444)
            tmp.chmod(0o755)  # the environment's own directory: renamed and removed as one
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                remove_read_only(tmp)

    def layer_sink(self, bundle: Path, digest: str, size: int) -> LayerSink:
        """A sink for the prebuilt environment layer ``digest`` of the bundle at ``bundle``
        (``env_layer``), extracting into a temporary directory; ``adopt`` puts it in place."""
        lock = read_bundle_lock(bundle)
        if lock is None or not self.check_lock(lock):
            raise EnvRefused(f"bundle {bundle.name[:12]} locks no wheels: it has no environment")
        self.envs.mkdir(parents=True, exist_ok=True)
        name = hex_of(env_key(self.build_id, lock.digest))
        self.remove_leftovers()
        tmp = temp_dir(self.envs, name, "layer-")
        try:
            return LayerSink(tmp, digest, size, lock.digest, self.platform)
        except LayerRefused:
            remove_read_only(tmp)
            raise

    def adopt(self, sink: LayerSink) -> Env:
        """The environment of a finished ``sink`` (verified, ``LayerRefused`` if not), renamed
        into place with an ``ENV.json`` listing its files, compiled; one found ready is kept."""
        done = sink.finish()
        key = env_key(self.build_id, sink.lock)
        final = self._dir(key)
        with self._key_lock(key), self._flock(key):
            if self._ready(key, verify=True, locked=True):
                remove_read_only(sink.tmp)
                return Env(key, final / "site", sink.lock)
            if final.exists():
                self._remove(final)
            marker = {"schema": ENV_SCHEMA, "key": key, "build_id": self.build_id,
                      "platform": self.platform, "lock": sink.lock, "layer": done.digest,
                      "made": f"{os.getpid()}-{time.time_ns()}", "compiled": True,
                      "files": sorted([list(r) for r in done.rows])}  # fmt: skip
            write_bytes(sink.tmp / MARKER, canonical_json(marker), 0o444)
            sink.tmp.chmod(0o755)
            os.replace(sink.tmp, final)
        return Env(key, final / "site", sink.lock, built=True)

    # --- compiling, after the environment is in use -------------------------------------

    def compile_soon(self, key: str) -> None:
        """Compile the environment ``key`` in a background thread, unless this process is
        at it already (another process at it is found by ``_compile``)."""
        with self._lock:
            if key in self._compiling:
                return
            self._compiling.add(key)
        threading.Thread(
            target=self._compile, args=(key,), name=f"lockstep-compile-{key[7:19]}", daemon=True
        ).start()

    def _compile(self, key: str) -> None:
        """Compile ``key``'s ``.py`` files, then seal: every new ``.pyc`` read-only and listed
        in a new ``ENV.json`` (``"compiled": true``), its directories read-only."""
        start = time.monotonic()
        final = self._dir(key)
        fd = -1
        try:
            self.envs.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.envs / f"{hex_of(key)}.compile.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another worker process compiles it
            before = json.loads((final / MARKER).read_bytes())
            if before.get("compiled") is not False:
                return
            site = final / "site"  # a .pyc there not listed is compiled again, or removed by seal
            installed = {str(r[0])[5:] for r in before["files"] if is_pyc(str(r[0]))}
            written = compile_site(site, installed)
            with self._flock(key):
                marker = json.loads((final / MARKER).read_bytes())
                if marker.get("made") != before.get("made") or marker.get("compiled"):
                    return  # made again meanwhile: its own maker compiles it
                sealed = seal(site, marker, {f"site/{k}": v for k, v in written.items()})
                if sealed is None:
                    return  # something else appeared: the next check removes it
                write_bytes(final / MARKER, canonical_json(sealed), 0o444)
            log.info(
                "lockstep environment %s compiled: %d file(s) in %.2f s",
                key,
                len(sealed["files"]) - len(marker["files"]),
                time.monotonic() - start,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("lockstep environment %s was not compiled (%s)", key, exc)
        finally:
            if fd >= 0:
                os.close(fd)  # releases the compile lock
            with self._lock:
                self._compiling.discard(key)

    def wait_compiled(self, key: str, timeout: float) -> bool:
        """Whether the environment ``key`` was compiled within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if json.loads((self._dir(key) / MARKER).read_bytes()).get("compiled") is True:
                    return True
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def _delete(path: Path) -> None:
    """Remove a renamed-away environment or a maker's leftover; what a compile still
    writing there keeps is the next maker's to remove (a ``.*.tmp`` leftover)."""
    try:
        remove_read_only(path)
    except OSError as exc:
        log.warning("lockstep environment: %s is left for the next maker (%s)", path, exc)
