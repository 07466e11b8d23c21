"""A bundle's dependencies: what it declares, and the lock that pins them (docs/design.md §4.8).

A bundle declares its requirements in its own directory, in one of the two
files users expect: ``pyproject.toml`` (``[project] dependencies``) or
``requirements.txt`` (one requirement a line; ``#`` comments). ``lockstep
bundle lock DIR`` resolves them for the worker image's interpreter and writes
``lockstep.lock.json`` next to them, so the lock is part of the bundle's tree
digest. One lock serves every platform the image is built for (one resolve each,
made in one pex run). It holds:

- ``requirements`` and ``declared_in``: what it was made from (a lock whose
  requirements differ from the declared ones is stale);
- ``image``: the image's Python lock (``sha256:`` of ``images/python.lock.json``,
  the build manifest's ``inputs.python_lock``, one for every platform of a build);
- ``platforms``: for each platform (``linux/amd64``, ``linux/arm64``), the
  image python's complete platform there, the image's pins on it (project ->
  version: those projects are the image's, never installed again), its wheel
  tags (``platform_tags``) and ``wheels``: every other artifact, a wheel by
  https URL and sha256, which a worker of that platform installs;
- ``content_digest``: ``sha256:`` of the canonical JSON of all of the above,
  so a lock edited by hand is seen as such.

Pure functions over bytes, standard library only (and ``core.platforms``): the build writes locks,
the runner checks them (preflight) and the worker reads them.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.core.bounded import LOCK_MAX, read_regular
from lockstep.core.digests import canonical_json, is_digest, sha256_digest
from lockstep.core.platforms import PLATFORMS
from lockstep.core.wheels import normalize_name, parse_wheel_name

if sys.version_info >= (3, 11):  # noqa: UP036 - tomli is the fallback for older Pythons
    import tomllib
else:  # pragma: no cover - Python < 3.11
    import tomli as tomllib

SCHEMA = "lockstep.bundle-lock/v2"
OLD_SCHEMA = "lockstep.bundle-lock/v1"  # one platform, top-level wheels: read to say so
LOCK_FILE = "lockstep.lock.json"
PYPROJECT = "pyproject.toml"
REQUIREMENTS = "requirements.txt"
RELOCK = "lockstep bundle lock"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_NAME_START = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def relock_hint(bundle: Path | str) -> str:
    return f"run `{RELOCK} {bundle}`"


@dataclass(frozen=True)
class Declared:
    """A bundle's declared requirements, as written, and the file they are in."""

    file: str  # ``pyproject.toml`` or ``requirements.txt``, relative to the bundle
    requirements: tuple[str, ...]


def requirement_problem(line: str) -> str:
    """Why a declared requirement cannot be locked; ``""`` if it names a project from the index."""
    if line.startswith("-"):
        return (
            "is a pip option; a bundle declares only requirements (name and versions), "
            "locked from the public index"
        )
    lowered = line.lower()
    if "://" in line or " @ " in line or "@" in line.split(";")[0] or lowered.startswith("git+"):
        return (
            "is a URL or VCS requirement (an sdist, a repository or a file is built, "
            "not locked): require a released version from the index instead"
        )
    if line.startswith((".", "/", "~")) or lowered.endswith((".tar.gz", ".zip", ".whl")):
        return "is a local path or archive; require a released version from the index instead"
    if not _NAME_START.match(line):
        return "is not a requirement (NAME[extras] [version specifiers] [; marker])"
    return ""


def requirement_name(line: str) -> str:
    """The normalised project name a requirement line starts with."""
    found = _NAME_START.match(line)
    return normalize_name(found.group(0)) if found else ""


def _requirements_txt(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(" ".join(line.split()))
    return lines


def _present(path: Path) -> bool:
    """Whether anything (a file, a FIFO, a device, a link) is at ``path``."""
    return path.is_symlink() or path.exists()


def _why(exc: Exception) -> str:
    """An ``OSError``'s reason without its errno number; any other error as it reads."""
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def read_declared(root: Path) -> tuple[Declared | None, list[tuple[str, str]]]:
    """The requirements the bundle at ``root`` declares (None: it declares none), and
    ``(file, problem)`` for each thing wrong with them."""
    found: list[Declared] = []
    problems: list[tuple[str, str]] = []
    pyproject = root / PYPROJECT
    if _present(pyproject):  # a FIFO or a device there is refused, not skipped
        try:
            data = tomllib.loads(read_regular(pyproject, LOCK_MAX).decode())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            return None, [(str(pyproject), f"cannot read it ({_why(exc)}); fix the file")]
        project = data.get("project", {})
        deps = project.get("dependencies") if isinstance(project, dict) else None
        if deps is not None:
            if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
                problems.append(
                    (str(pyproject), "[project] dependencies must be a list of strings")
                )
            else:
                found.append(Declared(PYPROJECT, tuple(" ".join(d.split()) for d in deps)))
    requirements = root / REQUIREMENTS
    if _present(requirements):
        try:
            text = read_regular(requirements, LOCK_MAX).decode()
        except (OSError, UnicodeDecodeError) as exc:
            return None, [(str(requirements), f"cannot read it ({_why(exc)}); fix the file")]
        found.append(Declared(REQUIREMENTS, tuple(_requirements_txt(text))))
    if len(found) > 1:
        problems.append(
            (
                str(root),
                f"declares requirements in both {PYPROJECT} and {REQUIREMENTS}; keep one",
            )
        )
        return None, problems
    if not found or not found[0].requirements:
        return None, problems
    declared = found[0]
    for line in declared.requirements:
        problem = requirement_problem(line)
        if problem:
            problems.append((str(root / declared.file), f"requirement {line!r} {problem}"))
    return declared, problems


@dataclass(frozen=True)
class LockedWheel:
    """One locked artifact: a wheel the worker installs."""

    project: str  # normalised
    version: str
    filename: str
    url: str
    sha256: str  # hex

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha256

    def to_dict(self) -> dict[str, str]:
        return {
            "project": self.project,
            "version": self.version,
            "filename": self.filename,
            "url": self.url,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class PlatformLock:
    """One platform's part of a lock: the image python's complete platform, pins and wheel
    tags there, and the wheels a worker of that platform installs."""

    platform: str  # "linux/amd64"
    complete_platform: str  # sha256: of the image's complete-platform file for it
    pins: Mapping[str, str]  # the image's projects (normalised) -> version, on this platform
    platform_tags: tuple[str, ...]
    wheels: tuple[LockedWheel, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "complete_platform": self.complete_platform,
            "pins": dict(sorted(self.pins.items())),
            "platform_tags": list(self.platform_tags),
            "wheels": [w.to_dict() for w in sorted(self.wheels, key=lambda w: w.project)],
        }


@dataclass(frozen=True)
class BundleLock:
    """A parsed ``lockstep.lock.json``; ``digest`` is the sha256 of the file's bytes."""

    declared_in: str
    requirements: tuple[str, ...]
    python_lock: str  # the image's Python lock, sha256: (one for every platform of a build)
    platforms: Mapping[str, PlatformLock]  # by platform name, sorted
    digest: str

    @property
    def wheels(self) -> tuple[LockedWheel, ...]:
        """Every platform's wheels, each once (a pure wheel serves several platforms)."""
        found: dict[str, LockedWheel] = {}
        for part in self.platforms.values():
            for wheel in part.wheels:
                found.setdefault(wheel.digest, wheel)
        return tuple(sorted(found.values(), key=lambda w: (w.project, w.filename)))

    def on(self, platform: str) -> PlatformLock | None:
        """The part of the lock for ``platform``; None if it was not locked for it."""
        return self.platforms.get(platform)

    def counted(self) -> str:
        """``1 locked wheel(s) for linux/amd64 and linux/arm64``."""
        return per_platform(
            {p: len(x.wheels) for p, x in self.platforms.items()}, "locked wheel(s)"
        )

    def missing_platforms(self, platforms: Iterable[str]) -> list[str]:
        """Those of ``platforms`` (sorted, each once) the lock has no part for."""
        return sorted({p for p in platforms if p not in self.platforms})


def per_platform(counts: Mapping[str, int], what: str) -> str:
    """``2 wheel(s) for linux/amd64, 1 for linux/arm64``; ``1 wheel(s) for linux/amd64 and
    linux/arm64`` when every platform has as many."""
    if len(set(counts.values())) == 1:
        return f"{next(iter(counts.values()))} {what} for {' and '.join(counts)}"
    first, *rest = counts.items()
    return ", ".join([f"{first[1]} {what} for {first[0]}", *(f"{n} for {p}" for p, n in rest)])


def platforms_problem(
    lock: BundleLock, needed: Mapping[str, Sequence[str]], bundle: Path | str
) -> str:
    """Why the lock of the bundle at ``bundle`` cannot serve workers of the platforms
    ``needed`` (platform -> the workers on it); ``""`` if it has a part for each."""
    missing = lock.missing_platforms(needed)
    if not missing:
        return ""
    on = "; ".join(f"{p}: {', '.join(needed[p])}" for p in missing)
    return (
        f"locked for {', '.join(lock.platforms)} only, but the cluster has worker(s) on "
        f"{', '.join(missing)} ({on}); lock it for every platform of the image: "
        f"{relock_hint(bundle)} in a checkout of this build (or with --image of its index)"
    )


def lock_body(
    declared: Declared,
    python_lock: str,
    platforms: Sequence[PlatformLock],
    pex_version: str,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schema": SCHEMA,
        "declared_in": declared.file,
        "requirements": list(declared.requirements),
        "image": {"python_lock": python_lock},
        "platforms": {p.platform: p.to_dict() for p in sorted(platforms, key=lambda p: p.platform)},
        "locked_by": f"pex {pex_version}",
    }
    body["content_digest"] = sha256_digest(canonical_json(body))
    return body


def lock_bytes(body: Mapping[str, Any]) -> bytes:
    """The bytes of ``lockstep.lock.json`` (indented, sorted keys: it is read in diffs)."""
    return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()


def parse_lock(raw: bytes, where: str) -> tuple[BundleLock | None, list[str]]:
    """The lock in ``raw`` and every problem with it (one line each, no file name prefix).

    None if it cannot be read as a lock at all. A lock with problems is
    returned too (so preflight can say more), but must not be used.
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, [f"not valid JSON ({exc})"]
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else None
        if found == OLD_SCHEMA:
            return None, [
                f"schema is {found!r}, a lock of one platform by an older lockstep; "
                f"lock it again for every platform ({SCHEMA})"
            ]
        return None, [f"schema is {found!r}, not {SCHEMA!r}: not a bundle lock"]
    problems: list[str] = []
    body = {k: v for k, v in data.items() if k != "content_digest"}
    if data.get("content_digest") != sha256_digest(canonical_json(body)):
        problems.append(
            "its content_digest does not match its content: the lock was edited by hand"
        )
    image = data.get("image")
    reqs = data.get("requirements")
    parts = data.get("platforms")
    if (
        not isinstance(image, dict)
        or not is_digest(image.get("python_lock"))
        or not isinstance(reqs, list)
        or not all(isinstance(r, str) for r in reqs)
        or not isinstance(parts, dict)
        or not parts
        or not isinstance(data.get("declared_in"), str)
    ):
        return None, [
            *problems,
            "lacks declared_in, requirements, image (python_lock) or platforms",
        ]
    platforms: dict[str, PlatformLock] = {}
    for name, part in sorted(parts.items()):
        found_part = _parse_platform(str(name), part, problems)
        if found_part is None:
            return None, problems
        platforms[found_part.platform] = found_part
    lock = BundleLock(
        data["declared_in"],
        tuple(reqs),
        image["python_lock"],
        platforms,
        sha256_digest(raw),
    )
    return lock, problems


def _parse_platform(name: str, part: Any, problems: list[str]) -> PlatformLock | None:
    """One platform's part of a lock; its problems appended to ``problems`` (prefixed with
    the platform); None (and a problem) if it cannot be read at all."""
    if name not in PLATFORMS:
        problems.append(f"{name}: not a platform lockstep builds ({', '.join(PLATFORMS)})")
        return None
    if (
        not isinstance(part, dict)
        or not is_digest(part.get("complete_platform"))
        or not isinstance(part.get("pins"), dict)
        or not isinstance(part.get("platform_tags"), list)
        or not all(isinstance(t, str) for t in part["platform_tags"])
        or not isinstance(part.get("wheels"), list)
    ):
        problems.append(f"{name}: lacks complete_platform, pins, platform_tags or wheels")
        return None
    pins = {normalize_name(str(k)): str(v) for k, v in part["pins"].items()}
    tags = part["platform_tags"]
    wheels: list[LockedWheel] = []
    seen: set[str] = set()
    tag_set = set(tags)
    for row in part["wheels"]:
        if not isinstance(row, dict) or not all(
            isinstance(row.get(k), str) for k in ("project", "version", "filename", "url", "sha256")
        ):
            problems.append(
                f"{name}: wheel entry {row!r} lacks project, version, filename, url or sha256"
            )
            continue
        wheel = LockedWheel(
            normalize_name(row["project"]),
            row["version"],
            row["filename"],
            row["url"],
            row["sha256"],
        )
        problems += [f"{name}: {p}" for p in _wheel_problems(wheel, tag_set, pins)]
        if wheel.project in seen:
            problems.append(f"{name}: {wheel.project} {wheel.version}: locked twice")
        seen.add(wheel.project)
        wheels.append(wheel)
    return PlatformLock(name, part["complete_platform"], pins, tuple(tags), tuple(wheels))


def _wheel_problems(wheel: LockedWheel, tags: set[str], pins: Mapping[str, str]) -> list[str]:
    """What is wrong with one locked wheel of a platform whose image python has ``tags``
    and ``pins``."""
    what = f"{wheel.project} {wheel.version}"
    problems = []
    if not wheel.url.startswith("https://"):
        problems.append(
            f"{what}: artifact URL {wheel.url!r} is not https (VCS, file and local "
            "artifacts are never locked)"
        )
    if wheel.url.rsplit("/", 1)[-1].split("#")[0] != wheel.filename:
        problems.append(f"{what}: URL {wheel.url} does not end in its filename")
    if not _SHA256_HEX.match(wheel.sha256):
        problems.append(f"{what}: {wheel.sha256!r} is not a sha256 (64 lowercase hex)")
    name = parse_wheel_name(wheel.filename)
    if name is None:
        problems.append(
            f"{what}: {wheel.filename} is not a wheel (an sdist is built, never "
            "installed on a worker); require a version that has a wheel"
        )
    else:
        if name.project != wheel.project or name.version != wheel.version:
            problems.append(f"{what}: its file {wheel.filename} is {name.project} {name.version}")
        if not name.fits(tags):
            problems.append(
                f"{what}: {wheel.filename} is not for the image's platform (its tags "
                f"{', '.join(sorted(name.tags))} are none of the image interpreter's)"
            )
    if wheel.project in pins:
        problems.append(
            f"{what}: the image provides {wheel.project} {pins[wheel.project]}; a bundle "
            "cannot install it again"
        )
    return problems


def env_key(build_id: str, lock_digest: str) -> str:
    """The name of a bundle environment: ``sha256:`` of (image build id, lock digest)."""
    return sha256_digest(canonical_json({"build_id": build_id, "lock": lock_digest}))


def stale_problem(declared: Declared | None, lock: BundleLock) -> str:
    """Why ``lock`` was not made from ``declared``; ``""`` if it was."""
    now = list(declared.requirements) if declared else []
    if declared is not None and declared.file != lock.declared_in:
        return (
            f"the lock was made from {lock.declared_in}, the bundle now declares its "
            f"requirements in {declared.file}"
        )
    if now != list(lock.requirements):
        return (
            f"the lock is older than the requirements: it was made for "
            f"{list(lock.requirements)}, {lock.declared_in} now declares {now}"
        )
    return ""
