"""The image's third-party Python packages, pinned by a pex lock (``images/python.lock.json``).

``lock`` runs ``pex3 lock create`` for the image's complete platform: strict,
wheels only, sha256 for every artifact, packages from the public index only
(the host's pip configuration and pexrc files are ignored). ``read_lock``
validates a lock: one resolve, https wheels only, a sha256 for each.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lockstep.core.atomic import write_bytes
from lockstep.core.errors import BadInput, ServiceFailed
from lockstep.core.progress import Progress, quiet
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


def lock(
    project: Project, out_path: Path | None, cache_dir: Path, progress: Progress = quiet
) -> None:
    """``lockstep lock python``: lock ``[tool.lockstep] requirements`` for the image's platform.

    The lock is checked (https URLs, sha256 everywhere, wheels only) before it
    atomically replaces ``out_path`` (default: the project's ``python_lock``).
    """
    out_path = out_path or project.python_lock
    if not project.requirements:
        raise BadInput(
            f"{project.pyproject} [tool.lockstep]: requirements is empty; list the "
            "packages the image needs (e.g. distributed==2026.8.0)"
        )
    platform = project.complete_platform
    read_platform(platform)
    progress(f"locking {', '.join(project.requirements)} for {project.complete_platform.name}")
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
                "--output",
                str(tmp_lock),
                *project.requirements,
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
