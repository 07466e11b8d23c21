"""The image's third-party Python packages, pinned by a pex lock (``images/python.lock.json``).

``lock`` runs ``pex3 lock create`` for the image's complete platform: strict,
wheels only, sha256 for every artifact, packages from the public index only
(the host's pip configuration and pexrc files are ignored). ``read_lock``
validates a lock: one resolve, https wheels only, a sha256 for each.

A role may need packages the other does not (the runner: pyarrow, for
``lockstep results``): they are locked into a lock of the role's own, with
the shared lock's pins as constraints, and ``role_only`` is what that role's
image adds on top of the shared wheels.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lockstep.core.atomic import write_bytes
from lockstep.core.errors import BadInput, ServiceFailed
from lockstep.core.progress import Progress, quiet
from lockstep.core.wheels import normalize_name
from lockstep.inputs.python.pex import LOCK_HINT, common_args, run_pex
from lockstep.inputs.python.platform import read_platform
from lockstep.project import Project

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class LockedWheel:
    """One artifact of the lock: the wheel installed for one locked project."""

    project: str
    version: str
    url: str
    sha256: str  # hex

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def parse_lock(raw: bytes, where: str) -> list[LockedWheel]:
    """Validate a pex lock: strict, one resolve, https wheels only, sha256 for every artifact."""

    def fail(what: str) -> BadInput:
        return BadInput(f"{where}: {what}; {LOCK_HINT}")

    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise fail(f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "locked_resolves" not in data:
        raise fail("not a pex lock (no locked_resolves)")
    if data.get("style") != "strict":
        raise fail(f"lock style is {data.get('style')!r}, expected 'strict'")
    resolves = data["locked_resolves"]
    if not isinstance(resolves, list) or len(resolves) != 1 or not isinstance(resolves[0], dict):
        raise fail("expected exactly one locked resolve (the image's platform)")
    requirements = resolves[0].get("locked_requirements")
    if not isinstance(requirements, list) or not requirements:
        raise fail("no locked requirements")
    wheels: list[LockedWheel] = []
    for req in requirements:
        if (
            not isinstance(req, dict)
            or not isinstance(req.get("project_name"), str)
            or not isinstance(req.get("version"), str)
            or not isinstance(req.get("artifacts"), list)
            or not req["artifacts"]
        ):
            raise fail("a locked requirement lacks project_name, version or artifacts")
        name = req["project_name"]
        for art in req["artifacts"]:
            if not isinstance(art, dict):
                raise fail(f"{name}: an artifact is not an object")
            url, algo, digest = art.get("url"), art.get("algorithm"), art.get("hash")
            if not isinstance(url, str) or not url.startswith("https://"):
                raise fail(
                    f"{name}: artifact URL {url!r} is not https (a local path or "
                    "file:// URL must never be locked)"
                )
            if algo != "sha256" or not isinstance(digest, str) or not _SHA256_HEX.match(digest):
                raise fail(f"{name}: artifact {url} has no sha256 hash")
        chosen = [a for a in req["artifacts"] if a["url"].endswith(".whl")]
        if len(chosen) != 1:
            raise fail(
                f"{name} {req['version']}: expected exactly one wheel, found "
                f"{len(chosen)} (the image installs wheels only)"
            )
        wheels.append(LockedWheel(name, req["version"], chosen[0]["url"], chosen[0]["hash"]))
    return wheels


def read_lock(path: Path) -> list[LockedWheel]:
    """Read and validate the lock; ``BadInput`` naming the file if it is absent or bad."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot read the Python lock ({exc.strerror}); {LOCK_HINT}"
        ) from exc
    return parse_lock(raw, str(path))


def role_only(
    shared: Sequence[LockedWheel], own: Sequence[LockedWheel], where: str
) -> tuple[LockedWheel, ...]:
    """The wheels of a role's lock (``own``, read from ``where``) that the shared lock
    lacks; ``BadInput`` if a project both locks hold is another wheel in each (the role's lock
    was made against another shared lock)."""
    by_name = {normalize_name(w.project): w for w in shared}
    extra = []
    for wheel in own:
        same = by_name.get(normalize_name(wheel.project))
        if same is None:
            extra.append(wheel)
        elif same.sha256 != wheel.sha256:
            raise BadInput(
                f"{where}: {wheel.project} {wheel.version} is not the shared lock's "
                f"{same.project} {same.version} (another wheel); {LOCK_HINT} to lock both again"
            )
    return tuple(extra)


def lock(
    project: Project, cache_dir: Path, progress: Progress = quiet, *, into: Path | None = None
) -> list[Path]:
    """``lockstep lock python``: lock ``[tool.lockstep] requirements`` for the image's
    platform into the project's ``python_lock``, then each role's own requirements
    (``[tool.lockstep.images.<role>] requirements``) into its ``python_lock``, with the
    shared lock's pins as constraints so that a project both need is locked once.

    Each lock is checked (https URLs, sha256 everywhere, wheels only) before it
    atomically replaces its file (in the directory ``into`` instead, by its file name,
    if given); the paths written.
    """

    def where(path: Path) -> Path:
        return path if into is None else into / path.name

    if not project.requirements:
        raise BadInput(
            f"{project.pyproject} [tool.lockstep]: requirements is empty; list the "
            "packages the image needs (e.g. distributed==2026.8.0)"
        )
    read_platform(project.complete_platform)
    written = [where(project.python_lock)]
    shared = _lock_one(project, project.requirements, written[0], None, cache_dir, progress)
    pins = "".join(f"{w.project}=={w.version}\n" for w in shared).encode()
    for role, spec in sorted(project.images.items()):
        if spec.python_lock is None:
            continue
        with tempfile.TemporaryDirectory(prefix="lockstep-lock-") as tmp:
            constraints = Path(tmp) / "shared-pins.txt"
            constraints.write_bytes(pins)
            out = where(spec.python_lock)
            own = _lock_one(project, spec.requirements, out, constraints, cache_dir, progress)
        progress(f"{role}: {len(role_only(shared, own, str(out)))} wheel(s) of its own")
        written.append(out)
    return written


def _lock_one(
    project: Project,
    requirements: Sequence[str],
    out_path: Path,
    constraints: Path | None,
    cache_dir: Path,
    progress: Progress,
) -> list[LockedWheel]:
    """``pex3 lock create`` of ``requirements`` into ``out_path``; its wheels."""
    platform = project.complete_platform
    progress(f"locking {', '.join(requirements)} for {platform.name}")
    with tempfile.TemporaryDirectory(prefix="lockstep-lock-") as tmp:
        tmp_lock = Path(tmp) / "lock.json"
        run_pex(
            [
                "lock",
                "create",
                *common_args(cache_dir),
                "--style",
                "strict",
                "--complete-platform",
                str(platform),
                *(["--constraints", str(constraints)] if constraints else []),
                "--output",
                str(tmp_lock),
                *requirements,
            ],
            cache_dir,
            "lock create",
            progress,
        )
        try:
            data = json.loads(tmp_lock.read_bytes())
        except (OSError, ValueError) as exc:
            raise ServiceFailed(
                f"pex3 lock create wrote no readable lock ({exc}); rerun `lockstep lock python`"
            ) from exc
    raw = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    wheels = parse_lock(raw, f"the new lock for {out_path}")
    write_bytes(out_path, raw)
    progress(f"locked {len(wheels)} wheels into {out_path}")
    return wheels
