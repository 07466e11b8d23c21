"""A bundle's dependencies: what it declares, and the lock that pins them (docs/design.md §4.8).

A bundle declares its requirements in its own directory, in one of the two
files users expect: ``pyproject.toml`` (``[project] dependencies``) or
``requirements.txt`` (one requirement a line; ``#`` comments). ``lockstep
bundle lock DIR`` resolves them for the worker image's interpreter and writes
``lockstep.lock.json`` next to them, so the lock is part of the bundle's tree
digest. The lock holds:

- ``requirements`` and ``declared_in``: what it was made from (a lock whose
  requirements differ from the declared ones is stale);
- ``image``: the image's Python lock (``sha256:`` of ``images/python.lock.json``,
  the build manifest's ``inputs.python_lock``), its complete platform and its
  pins (project -> version): those projects are the image's, never installed
  again;
- ``platform_tags``: the wheel tags of the image's interpreter;
- ``wheels``: every other artifact, a wheel by https URL and sha256;
- ``content_digest``: ``sha256:`` of the canonical JSON of all of the above,
  so a lock edited by hand is seen as such.

Pure functions over bytes, standard library only: the build writes locks,
the runner checks them (preflight) and the worker reads them.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.core.bounded import LOCK_MAX, read_regular
from lockstep.core.digests import canonical_json, is_digest, sha256_digest
from lockstep.core.wheels import normalize_name, parse_wheel_name

if sys.version_info >= (3, 11):  # noqa: UP036 - tomli is the fallback for older Pythons
    import tomllib
else:  # pragma: no cover - Python < 3.11
    import tomli as tomllib

SCHEMA = "lockstep.bundle-lock/v1"
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
class BundleLock:
    """A parsed ``lockstep.lock.json``; ``digest`` is the sha256 of the file's bytes."""

    declared_in: str
    requirements: tuple[str, ...]
    python_lock: str  # the image's Python lock, sha256:
    complete_platform: str  # sha256: of the image's complete-platform file
    pins: Mapping[str, str]  # the image's projects (normalised) -> version
    platform_tags: tuple[str, ...]
    wheels: tuple[LockedWheel, ...]
    digest: str

    def total_wheels(self) -> int:
        return len(self.wheels)


def lock_body(
    declared: Declared,
    python_lock: str,
    complete_platform: str,
    pins: Mapping[str, str],
    platform_tags: Sequence[str],
    wheels: Sequence[LockedWheel],
    pex_version: str,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schema": SCHEMA,
        "declared_in": declared.file,
        "requirements": list(declared.requirements),
        "image": {
            "python_lock": python_lock,
            "complete_platform": complete_platform,
            "pins": dict(sorted(pins.items())),
        },
        "platform_tags": list(platform_tags),
        "wheels": [w.to_dict() for w in sorted(wheels, key=lambda w: w.project)],
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
        return None, [f"schema is {found!r}, not {SCHEMA!r}: not a bundle lock"]
    problems: list[str] = []
    body = {k: v for k, v in data.items() if k != "content_digest"}
    if data.get("content_digest") != sha256_digest(canonical_json(body)):
        problems.append(
            "its content_digest does not match its content: the lock was edited by hand"
        )
    image = data.get("image")
    reqs = data.get("requirements")
    tags = data.get("platform_tags")
    rows = data.get("wheels")
    if (
        not isinstance(image, dict)
        or not is_digest(image.get("python_lock"))
        or not is_digest(image.get("complete_platform"))
        or not isinstance(image.get("pins"), dict)
        or not isinstance(reqs, list)
        or not all(isinstance(r, str) for r in reqs)
        or not isinstance(tags, list)
        or not all(isinstance(t, str) for t in tags)
        or not isinstance(rows, list)
        or not isinstance(data.get("declared_in"), str)
    ):
        return None, [
            *problems,
            "lacks declared_in, requirements, image (python_lock, complete_platform, pins), "
            "platform_tags or wheels",
        ]
    pins = {normalize_name(str(k)): str(v) for k, v in image["pins"].items()}
    wheels: list[LockedWheel] = []
    seen: set[str] = set()
    tag_set = set(tags)
    for row in rows:
        if not isinstance(row, dict) or not all(
            isinstance(row.get(k), str) for k in ("project", "version", "filename", "url", "sha256")
        ):
            problems.append(f"wheel entry {row!r} lacks project, version, filename, url or sha256")
            continue
        wheel = LockedWheel(
            normalize_name(row["project"]),
            row["version"],
            row["filename"],
            row["url"],
            row["sha256"],
        )
        what = f"{wheel.project} {wheel.version}"
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
                problems.append(
                    f"{what}: its file {wheel.filename} is {name.project} {name.version}"
                )
            if not name.fits(tag_set):
                problems.append(
                    f"{what}: {wheel.filename} is not for the image's platform (its tags "
                    f"{', '.join(sorted(name.tags))} are none of the image interpreter's)"
                )
        if wheel.project in pins:
            problems.append(
                f"{what}: the image provides {wheel.project} {pins[wheel.project]}; a bundle "
                "cannot install it again"
            )
        if wheel.project in seen:
            problems.append(f"{what}: locked twice")
        seen.add(wheel.project)
        wheels.append(wheel)
    lock = BundleLock(
        data["declared_in"],
        tuple(reqs),
        image["python_lock"],
        image["complete_platform"],
        pins,
        tuple(tags),
        tuple(wheels),
        sha256_digest(raw),
    )
    return lock, problems


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
