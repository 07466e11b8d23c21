"""The build inputs as one value: declared sources, both locks, the builder, the stamp.

``read_inputs`` reads each input once — every declared file (``declared``),
each lock file's bytes (hashed once, parsed once) — into a frozen
``BuildInputs`` for one platform; the build takes that value and reads no
input file again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lockstep.core.digests import TreeFile, sha256_digest, tree_digest
from lockstep.core.errors import BadInput
from lockstep.inputs import declared
from lockstep.inputs import stamp as stamping
from lockstep.inputs.debian import lock as debian_lock
from lockstep.inputs.python import lock as python_lock
from lockstep.inputs.python import pex
from lockstep.manifest import PLATFORM_PATH, Stamp
from lockstep.project import Project


def read_lock_bytes(path: Path, relock: str) -> bytes:
    """A lock file's bytes; BadInput naming it and the command that makes it."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot read the lock ({exc.strerror}); run `{relock}` to create it"
        ) from exc


PLATFORM = "linux/amd64"  # the one platform built today; BuildInputs is per platform


@dataclass(frozen=True)
class DebianInput:
    """The Debian lock, read once: its path, digest and parsed value."""

    path: Path
    digest: str  # sha256: of the file's bytes (what the manifest's inputs name)
    lock: debian_lock.DebianLock

    @staticmethod
    def read(path: Path) -> DebianInput:
        raw = read_lock_bytes(path, debian_lock.RELOCK)
        return DebianInput(path, sha256_digest(raw), debian_lock.parse_lock(raw, str(path)))


@dataclass(frozen=True)
class PythonInput:
    """The Python lock, read once: its path, digest, locked wheels and bytes (the image
    carries the shared lock's, ``manifest.PYTHON_LOCK_PATH``)."""

    path: Path
    digest: str
    wheels: tuple[python_lock.LockedWheel, ...]
    raw: bytes = b""

    @staticmethod
    def read(path: Path) -> PythonInput:
        return PythonInput.of(path, read_lock_bytes(path, pex.RELOCK))

    @staticmethod
    def of(path: Path, raw: bytes) -> PythonInput:
        wheels = tuple(python_lock.parse_lock(raw, str(path)))
        return PythonInput(path, sha256_digest(raw), wheels, raw)


def declared_platform(project: Project, files: tuple[TreeFile, ...]) -> bytes:
    """The complete platform's bytes, from the declared files: the image carries them
    (``manifest.PLATFORM_PATH``), so they must be in the build id, as a declared source."""
    path = project.complete_platform
    try:
        rel = path.relative_to(project.root).as_posix()
    except ValueError:
        rel = str(path)
    for f in files:
        if f.path == rel:
            return f.data
    raise BadInput(
        f"{path}: the complete platform is not a declared source, but the image carries it "
        f"({PLATFORM_PATH}); add {rel!r} to [tool.lockstep] sources"
    )


@dataclass(frozen=True)
class BuildInputs:
    """Everything one build of one platform reads, read and digested once.

    ``digests`` is what the build manifest records as ``inputs`` (its build id);
    ``stamp`` and ``created`` (the stamped commit's time) change the images but
    never the build id; ``mirror`` is where a missing ``.deb`` is fetched from
    (the locks pin every byte, so it is in no digest)."""

    project: Project
    platform: str
    builder: str  # format version and compressor: ``lockstep-build/2 zlib-ng/…``
    files: tuple[TreeFile, ...]
    sources: str  # the tree digest of ``files``
    debian: DebianInput
    python: PythonInput
    complete_platform: bytes  # the image python's markers and tags (a declared file)
    mirror: str
    stamp: Stamp | None = None
    created: str | None = None  # the stamped commit's time (RFC 3339); None unstamped
    # A role's own lock (``[tool.lockstep.images.<role>] python_lock``), read once, with
    # only the wheels the shared lock lacks (``lock.role_only``); its bytes are also a
    # declared source, so ``sources`` (and so the build id) covers it.
    roles: Mapping[str, PythonInput] = field(default_factory=dict)

    def role_wheels(self, role: str) -> tuple[python_lock.LockedWheel, ...]:
        """The wheels only ``role``'s image has, on top of the shared lock's."""
        own = self.roles.get(role)
        return own.wheels if own is not None else ()

    @property
    def digests(self) -> dict[str, str]:
        """The build inputs' digests, as the manifest records them (its ``build_id``)."""
        return {
            "builder": self.builder,
            "debian_lock": self.debian.digest,
            "python_lock": self.python.digest,
            "sources": self.sources,
        }


def read_roles(
    project: Project,
    shared: tuple[python_lock.LockedWheel, ...],
    files: tuple[TreeFile, ...] = (),
) -> dict[str, PythonInput]:
    """Each role's own lock, its wheels narrowed to those ``shared`` lacks (``BadInput`` if
    the two locks disagree on a wheel both hold). A role's lock is a declared source: its
    bytes are taken from ``files`` (the declared files read) when there."""
    read = {f.path: f.data for f in files}
    out = {}
    for role, spec in sorted(project.images.items()):
        if spec.python_lock is not None:
            raw = read.get(spec.python_lock.relative_to(project.root).as_posix())
            if raw is None:
                own = PythonInput.read(spec.python_lock)
            else:
                own = PythonInput.of(spec.python_lock, raw)
            wheels = python_lock.role_only(shared, own.wheels, str(spec.python_lock))
            out[role] = PythonInput(own.path, own.digest, wheels)
    return out


def read_inputs(
    project: Project,
    builder: str,
    *,
    stamp: Stamp | None = None,
    platform: str = PLATFORM,
    environ: Mapping[str, str] | None = None,
) -> BuildInputs:
    """Read the build inputs of ``project`` once (``builder`` names the builder: its format
    version and what makes its bytes, so a change of either is a new build id)."""
    if platform != PLATFORM:
        raise BadInput(f"platform {platform!r}: lockstep builds {PLATFORM} only")
    for spec in project.images.values():  # a declared source, but say how to make it
        if spec.python_lock is not None and not spec.python_lock.is_file():
            read_lock_bytes(spec.python_lock, pex.RELOCK)
    files = declared.load(project.root, project.sources)
    shared = PythonInput.read(project.python_lock)
    return BuildInputs(
        project=project,
        platform=platform,
        builder=builder,
        files=files,
        sources=tree_digest(files),
        debian=DebianInput.read(project.debian_lock),
        python=shared,
        complete_platform=declared_platform(project, files),
        mirror=project.mirror(environ),
        roles=read_roles(project, shared.wheels, files),
        stamp=stamp,
        created=stamping.commit_time(project.root, stamp.commit) if stamp else None,
    )
