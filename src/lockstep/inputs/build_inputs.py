"""The build inputs as one value: declared sources, both locks, the builder, the stamp.

``read_inputs`` reads each input once — every declared file (``declared``),
each lock file's bytes (hashed once, parsed once) — into a frozen
``BuildInputs`` for one platform; the build takes that value and reads no
input file again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lockstep.core.digests import TreeFile, sha256_digest, tree_digest
from lockstep.core.errors import BadInput
from lockstep.inputs import declared
from lockstep.inputs import stamp as stamping
from lockstep.inputs.debian import lock as debian_lock
from lockstep.inputs.python import lock as python_lock
from lockstep.inputs.python import pex
from lockstep.manifest import Stamp
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
    """The Python lock, read once: its path, digest and locked wheels."""

    path: Path
    digest: str
    wheels: tuple[python_lock.LockedWheel, ...]

    @staticmethod
    def read(path: Path) -> PythonInput:
        raw = read_lock_bytes(path, pex.RELOCK)
        return PythonInput(path, sha256_digest(raw), tuple(python_lock.parse_lock(raw, str(path))))


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
    mirror: str
    stamp: Stamp | None = None
    created: str | None = None  # the stamped commit's time (RFC 3339); None unstamped

    @property
    def digests(self) -> dict[str, str]:
        """The build inputs' digests, as the manifest records them (its ``build_id``)."""
        return {
            "builder": self.builder,
            "debian_lock": self.debian.digest,
            "python_lock": self.python.digest,
            "sources": self.sources,
        }


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
    files = declared.load(project.root, project.sources)
    return BuildInputs(
        project=project,
        platform=platform,
        builder=builder,
        files=files,
        sources=tree_digest(files),
        debian=DebianInput.read(project.debian_lock),
        python=PythonInput.read(project.python_lock),
        mirror=project.mirror(environ),
        stamp=stamp,
        created=stamping.commit_time(project.root, stamp.commit) if stamp else None,
    )
