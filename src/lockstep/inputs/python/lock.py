"""The image's third-party Python packages, pinned by a pex lock (``images/python.lock.json``).

``lock`` runs ``pex3 lock create`` once for every platform's complete platform
(one ``--complete-platform`` each, so one run holds one resolve per platform):
strict, wheels only, sha256 for every artifact, packages from the public index
only (the host's pip configuration and pexrc files are ignored). ``parse_locks``
validates a lock: one resolve per platform (known by its platform tag's
machine, ``…_x86_64`` / ``…_aarch64``), https wheels only, a sha256 for each;
``parse_lock`` picks one platform's resolve.

A role may need packages the other does not (the runner: pyarrow, for
``lockstep results``): they are locked into a lock of the role's own, for every
platform too, with the shared lock's pins as constraints, and ``role_only`` is
what that role's image adds on top of the shared wheels of a platform.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lockstep.core import platforms
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


def parse_lock(raw: bytes, where: str, platform: str = platforms.AMD64.name) -> list[LockedWheel]:
    """The wheels of ``platform``'s resolve in the pex lock ``raw`` (validated whole)."""
    locks = parse_locks(raw, where)
    if platform not in locks:
        raise BadInput(
            f"{where}: no resolve for {platform} (it has {', '.join(locks) or 'none'}); {LOCK_HINT}"
        )
    return list(locks[platform])


def parse_locks(raw: bytes, where: str) -> dict[str, tuple[LockedWheel, ...]]:
    """Validate a pex lock: strict, one resolve per platform, https wheels only, sha256 for
    every artifact. Returns each platform's wheels, by platform name."""

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
    if not isinstance(resolves, list) or not resolves:
        raise fail("no locked resolve")
    out: dict[str, tuple[LockedWheel, ...]] = {}
    for resolve in resolves:
        if not isinstance(resolve, dict):
            raise fail("a locked resolve is not an object")
        name = _resolve_platform(resolve, fail)
        if name in out:
            raise fail(f"two locked resolves for {name}")
        out[name] = tuple(_resolve_wheels(resolve, fail))
    return dict(sorted(out.items()))


def _resolve_platform(resolve: dict[str, object], fail: Callable[[str], BadInput]) -> str:
    """The platform a resolve is for: the machine its platform tag ends with."""
    tag = resolve.get("platform_tag")
    last = tag[-1] if isinstance(tag, list) and tag and isinstance(tag[-1], str) else ""
    for p in platforms.PLATFORMS.values():
        if last.endswith(f"_{p.machine}"):
            return p.name
    raise fail(f"a locked resolve's platform tag {tag!r} names no platform lockstep builds")


def _resolve_wheels(
    resolve: dict[str, object], fail: Callable[[str], BadInput]
) -> list[LockedWheel]:
    requirements = resolve.get("locked_requirements")
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


def read_lock(path: Path, platform: str = platforms.AMD64.name) -> list[LockedWheel]:
    """Read and validate the lock, and give ``platform``'s wheels; ``BadInput`` naming the
    file if it is absent or bad."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot read the Python lock ({exc.strerror}); {LOCK_HINT}"
        ) from exc
    return parse_lock(raw, str(path), platform)


def role_only(
    shared: Sequence[LockedWheel], own: Sequence[LockedWheel], where: str
) -> tuple[LockedWheel, ...]:
    """The wheels of a role's lock (``own``, read from ``where``) that the shared lock
    lacks, both of one platform; ``BadInput`` if a project both locks hold is another wheel
    in each (the role's lock was made against another shared lock)."""
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


def pins(locks: Mapping[str, Sequence[LockedWheel]]) -> str:
    """The shared lock's pins as a constraints file: ``name==version`` for a project every
    platform locks alike, one line per platform (a ``platform_machine`` marker) otherwise."""
    versions: dict[str, dict[str, str]] = {}
    for name, wheels in locks.items():
        for w in wheels:
            versions.setdefault(w.project, {})[name] = w.version
    lines = []
    for project, by_platform in sorted(versions.items()):
        if len(set(by_platform.values())) == 1 and len(by_platform) == len(locks):
            lines.append(f"{project}=={next(iter(by_platform.values()))}")
            continue
        for name, version in sorted(by_platform.items()):
            machine = platforms.platform(name).machine
            lines.append(f'{project}=={version}; platform_machine == "{machine}"')
    return "".join(f"{line}\n" for line in lines)


def lock(
    project: Project, cache_dir: Path, progress: Progress = quiet, *, into: Path | None = None
) -> list[Path]:
    """``lockstep lock python``: lock ``[tool.lockstep] requirements`` for every platform of
    the project in one pex run (one resolve each, from one view of the index) into the
    project's ``python_lock``, then each role's own requirements (``[tool.lockstep.images.
    <role>] requirements``) likewise into its ``python_lock``, with the shared lock's pins
    as constraints so that a project both need is locked once.

    Each lock is checked (https URLs, sha256 everywhere, wheels only, a resolve for
    each platform) before it atomically replaces its file (in the directory ``into``
    instead, by its file name, if given); the paths written.
    """

    def where(path: Path) -> Path:
        return path if into is None else into / path.name

    if not project.requirements:
        raise BadInput(
            f"{project.pyproject} [tool.lockstep]: requirements is empty; list the "
            "packages the image needs (e.g. distributed==2026.8.0)"
        )
    files = [project.complete_platform_of(p) for p in project.platforms]
    for file in files:
        read_platform(file)
    written = [where(project.python_lock)]
    shared = _lock_one(project, project.requirements, written[0], None, cache_dir, progress)
    for role, spec in sorted(project.images.items()):
        if spec.python_lock is None:
            continue
        with tempfile.TemporaryDirectory(prefix="lockstep-lock-") as tmp:
            constraints = Path(tmp) / "shared-pins.txt"
            constraints.write_text(pins(shared))
            out = where(spec.python_lock)
            own = _lock_one(project, spec.requirements, out, constraints, cache_dir, progress)
        counts = ", ".join(
            f"{len(role_only(shared[p], own[p], str(out)))} for {p}" for p in project.platforms
        )
        progress(f"{role}: wheel(s) of its own: {counts}")
        written.append(out)
    return written


def _lock_one(
    project: Project,
    requirements: Sequence[str],
    out_path: Path,
    constraints: Path | None,
    cache_dir: Path,
    progress: Progress,
) -> dict[str, tuple[LockedWheel, ...]]:
    """``pex3 lock create`` of ``requirements`` for every platform into ``out_path``; each
    platform's wheels."""
    files = [project.complete_platform_of(p) for p in project.platforms]
    progress(
        f"locking {', '.join(requirements)} for {', '.join(project.platforms)} "
        f"({', '.join(f.name for f in files)})"
    )
    raw = resolve(requirements, files, constraints, cache_dir, "lock create", progress)
    locks = parse_locks(raw, f"the new lock for {out_path}")
    missing = [p for p in project.platforms if p not in locks]
    if missing:
        raise ServiceFailed(
            f"pex3 lock create gave no resolve for {', '.join(missing)}; check "
            f"{', '.join(str(f) for f in files)} and rerun `lockstep lock python`"
        )
    write_bytes(out_path, raw)
    counts = ", ".join(f"{len(w)} for {p}" for p, w in locks.items())
    progress(f"locked {counts} into {out_path}")
    return locks


def resolve(
    requirements: Sequence[str],
    complete_platforms: Sequence[Path],
    constraints: Path | None,
    cache_dir: Path,
    what: str,
    progress: Progress = quiet,
) -> bytes:
    """One ``pex3 lock create`` of ``requirements`` with one resolve per complete-platform
    file (strict, wheels only, ``constraints`` if given): the lock's bytes, sorted and
    indented (``parse_locks`` reads them). The image's locks and a bundle's are made here.
    ``what`` names the run in errors and its log (``CACHE/logs/pex-WHAT.log``)."""
    with tempfile.TemporaryDirectory(prefix="lockstep-lock-") as tmp:
        tmp_lock = Path(tmp) / "lock.json"
        run_pex(
            [
                "lock",
                "create",
                *common_args(cache_dir),
                "--style",
                "strict",
                *(arg for f in complete_platforms for arg in ("--complete-platform", str(f))),
                *(["--constraints", str(constraints)] if constraints else []),
                "--output",
                str(tmp_lock),
                *requirements,
            ],
            cache_dir,
            what,
            progress,
        )
        try:
            data = json.loads(tmp_lock.read_bytes())
        except (OSError, ValueError) as exc:
            raise ServiceFailed(f"pex3 lock create wrote no readable lock ({exc}); rerun") from exc
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
