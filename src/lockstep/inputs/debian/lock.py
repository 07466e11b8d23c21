"""The Debian lock: the resolved ``.deb`` set of each architecture, as values and as
``images/debian.lock.json``.

Each package is pinned by pool path, size and sha256, and records which
archive (``debian`` or ``debian-security``) and suite it came from. One file
holds every architecture the project builds (``DebianLocks``), resolved in one
run from one snapshot of the mirror's indexes (``snapshot``: each suite's
``Release`` digest), so the platforms' packages are the same versions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.core.atomic import write_bytes
from lockstep.core.digests import canonical_json, of_hex, sha256_digest
from lockstep.core.errors import BadInput

LOCK_SCHEMA = "lockstep.debian-lock/v2"
DEFAULT_ARCH = "amd64"
DEFAULT_EXCLUDE: tuple[str, ...] = ("debconf", "dpkg")
RELOCK = "lockstep lock debian"
RELOCK_HINT = f"run `{RELOCK}`"


@dataclass(frozen=True)
class Suite:
    """One index to read: ``<archive base>/dists/<suite>/main/binary-<arch>/Packages.xz``."""

    archive: str  # "debian" or "debian-security": the URL base below the mirror host
    suite: str  # "bookworm", "bookworm-updates", "bookworm-security"


SUITES: tuple[Suite, ...] = (
    Suite("debian", "bookworm"),
    Suite("debian", "bookworm-updates"),
    Suite("debian-security", "bookworm-security"),
)


@dataclass(frozen=True)
class DebPackage:
    """One locked ``.deb``: where it lives on the mirror and what its bytes must be."""

    name: str
    version: str
    arch: str  # the lock's architecture ("amd64", "arm64") or "all"
    archive: str  # "debian" or "debian-security"
    suite: str
    filename: str  # pool path from Packages (no epoch), relative to the archive base
    size: int
    sha256: str  # hex

    @property
    def digest(self) -> str:
        return of_hex(self.sha256)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "arch": self.arch,
            "archive": self.archive,
            "suite": self.suite,
            "filename": self.filename,
            "size": self.size,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class DebianLock:
    """The resolved package set. ``packages`` is sorted by name."""

    packages: tuple[DebPackage, ...]
    roots: tuple[str, ...] = ()
    suites: tuple[Suite, ...] = SUITES
    arch: str = DEFAULT_ARCH
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE

    def __post_init__(self) -> None:  # one order, so equal locks compare equal
        object.__setattr__(self, "packages", tuple(sorted(self.packages, key=lambda p: p.name)))
        object.__setattr__(self, "roots", tuple(sorted(self.roots)))
        object.__setattr__(self, "exclude", tuple(sorted(self.exclude)))

    def names(self) -> list[str]:
        return [p.name for p in self.packages]

    def get(self, name: str) -> DebPackage:
        for pkg in self.packages:
            if pkg.name == name:
                return pkg
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": LOCK_SCHEMA,
            "arch": self.arch,
            "roots": sorted(self.roots),
            "exclude": sorted(self.exclude),
            "suites": [{"archive": s.archive, "suite": s.suite} for s in self.suites],
            "packages": [p.to_dict() for p in sorted(self.packages, key=lambda p: p.name)],
        }

    def to_json(self) -> bytes:
        """Stable pretty JSON: sorted keys, two-space indent, one package per object."""
        return (
            json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        ).encode()

    @property
    def digest(self) -> str:
        """``sha256:`` of the lock's canonical JSON (what the build inputs name)."""
        return sha256_digest(canonical_json(self.to_dict()))


@dataclass(frozen=True)
class DebianLocks:
    """The lock file: one ``DebianLock`` per architecture (same roots, suites, exclusions),
    and the snapshot they were resolved from (``<archive>/<suite>`` → ``sha256:`` of its
    ``Release``; empty for a lock made from indexes given by hand)."""

    locks: tuple[DebianLock, ...]
    snapshot: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "locks", tuple(sorted(self.locks, key=lambda lk: lk.arch)))
        object.__setattr__(self, "snapshot", tuple(sorted(self.snapshot)))

    @property
    def arches(self) -> tuple[str, ...]:
        return tuple(lk.arch for lk in self.locks)

    def of(self, arch: str, where: str = "the Debian lock") -> DebianLock:
        """The lock of ``arch``; BadInput naming the relock if the file lacks it."""
        for lk in self.locks:
            if lk.arch == arch:
                return lk
        raise BadInput(
            f"{where}: no packages for {arch} (it has {', '.join(self.arches)}); {RELOCK_HINT}"
        )

    def to_dict(self) -> dict[str, Any]:
        first = self.locks[0]
        return {
            "schema": LOCK_SCHEMA,
            "roots": sorted(first.roots),
            "exclude": sorted(first.exclude),
            "suites": [{"archive": s.archive, "suite": s.suite} for s in first.suites],
            "snapshot": dict(self.snapshot),
            "packages": {lk.arch: lk.to_dict()["packages"] for lk in self.locks},
        }

    def to_json(self) -> bytes:
        """Stable pretty JSON: sorted keys, two-space indent, one package per object."""
        return (
            json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        ).encode()


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _lock_from_dict(data: Any, where: str) -> DebianLocks:
    def fail(what: str) -> BadInput:
        return BadInput(f"{where}: {what}; {RELOCK_HINT}")

    if not isinstance(data, dict):
        raise fail("not a JSON object")
    if data.get("schema") != LOCK_SCHEMA:
        raise fail(f"schema is {data.get('schema')!r}, expected {LOCK_SCHEMA!r}")
    snapshot = data.get("snapshot", {})
    if not isinstance(snapshot, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in snapshot.items()
    ):
        raise fail("snapshot must map each suite to its Release digest")
    by_arch = data.get("packages")
    if not isinstance(by_arch, dict) or not by_arch:
        raise fail("packages must map each architecture to its packages")
    locks = tuple(_arch_lock(data, arch, raw, fail) for arch, raw in sorted(by_arch.items()))
    return DebianLocks(locks, tuple(snapshot.items()))


def _arch_lock(
    data: dict[str, Any], arch: str, raw_packages: Any, fail: Callable[[str], BadInput]
) -> DebianLock:
    """One architecture's lock of the file ``data``."""
    roots = data.get("roots", [])
    exclude = data.get("exclude", [])
    for key, value in (("roots", roots), ("exclude", exclude)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(f"{key} must be a list of strings")
    raw_suites = data.get("suites")
    if not isinstance(raw_suites, list) or not raw_suites:
        raise fail("suites missing")
    suites: list[Suite] = []
    for s in raw_suites:
        if not (
            isinstance(s, dict)
            and isinstance(s.get("archive"), str)
            and isinstance(s.get("suite"), str)
        ):
            raise fail("each suite needs archive and suite")
        suites.append(Suite(s["archive"], s["suite"]))
    if not isinstance(raw_packages, list) or not raw_packages:
        raise fail(f"packages of {arch} missing or empty")
    packages: list[DebPackage] = []
    for i, p in enumerate(raw_packages):
        if not isinstance(p, dict):
            raise fail(f"packages[{i}] of {arch} is not an object")
        str_keys = ("name", "version", "arch", "archive", "suite", "filename", "sha256")
        if not all(isinstance(p.get(k), str) and p.get(k) for k in str_keys):
            raise fail(f"packages[{i}] needs {', '.join(str_keys)} as strings")
        size = p.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise fail(f"packages[{i}] ({p['name']}) size must be a positive integer")
        if not _HEX64.match(p["sha256"]):
            raise fail(f"packages[{i}] ({p['name']}) sha256 is not 64 hex digits")
        filename = p["filename"]
        if filename.startswith("/") or ".." in filename.split("/"):
            raise fail(f"packages[{i}] ({p['name']}) filename {filename!r} escapes the archive")
        packages.append(
            DebPackage(
                p["name"],
                p["version"],
                p["arch"],
                p["archive"],
                p["suite"],
                filename,
                size,
                p["sha256"],
            )
        )
        if p["arch"] not in (arch, "all"):
            raise fail(f"packages[{i}] ({p['name']}) is {p['arch']}, in the {arch} packages")
    names = [p.name for p in packages]
    if len(set(names)) != len(names):
        raise fail(f"a package of {arch} is listed twice")
    return DebianLock(
        packages=tuple(sorted(packages, key=lambda p: p.name)),
        roots=tuple(sorted(roots)),
        suites=tuple(suites),
        arch=arch,
        exclude=tuple(sorted(exclude)),
    )


def read_lock(path: Path) -> DebianLocks:
    """Read ``images/debian.lock.json``; BadInput naming the file if missing or malformed."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot read the Debian lock ({exc.strerror}); {RELOCK_HINT}"
        ) from exc
    return parse_lock(raw, str(path))


def parse_lock(raw: bytes, where: str) -> DebianLocks:
    """The lock in ``raw`` (the bytes of ``where``); BadInput naming ``where`` if malformed."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{where}: not valid JSON ({exc}); {RELOCK_HINT}") from exc
    return _lock_from_dict(data, where)


def write_lock(path: Path, lock: DebianLocks) -> None:
    """Write the lock atomically."""
    write_bytes(path, lock.to_json())
