"""The build inputs as one value: declared sources, both locks, the builder, the stamp.

``read_platforms`` reads each input once — every declared file (``declared``),
each lock file's bytes (hashed once, parsed once) — into one frozen
``BuildInputs`` per platform (``read_inputs``: one platform); the build takes
those values and reads no input file again. The platforms of one build share
every digest (one lock file holds every platform), so they share one build id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lockstep.core import platforms as platform_table
from lockstep.core.digests import TreeFile, sha256_digest, tree_digest
from lockstep.core.errors import BadInput
from lockstep.core.platforms import Platform
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


@dataclass(frozen=True)
class DebianInput:
    """The Debian lock, read once: its path, the file's digest, and one platform's packages."""

    path: Path
    digest: str  # sha256: of the file's bytes (what the manifest's inputs name)
    lock: debian_lock.DebianLock  # this platform's architecture

    @staticmethod
    def read_all(path: Path, names: tuple[str, ...]) -> dict[str, DebianInput]:
        """Each of the platforms ``names``' view of the file, read and parsed once."""
        raw = read_lock_bytes(path, debian_lock.RELOCK)
        digest, locks = sha256_digest(raw), debian_lock.parse_lock(raw, str(path))
        return {
            n: DebianInput(path, digest, locks.of(platform_table.platform(n).deb_arch, str(path)))
            for n in names
        }

    @staticmethod
    def read(path: Path, name: str = platform_table.AMD64.name) -> DebianInput:
        return DebianInput.read_all(path, (name,))[name]


@dataclass(frozen=True)
class PythonInput:
    """The Python lock, read once: its path, the file's digest, one platform's wheels and
    the file's bytes (the image carries the shared lock's, ``manifest.PYTHON_LOCK_PATH``)."""

    path: Path
    digest: str
    wheels: tuple[python_lock.LockedWheel, ...]
    raw: bytes = b""

    @staticmethod
    def read_all(
        path: Path, names: tuple[str, ...], raw: bytes | None = None
    ) -> dict[str, PythonInput]:
        """Each of the platforms ``names``' view of the file (its bytes ``raw`` if already
        read), read and parsed once."""
        raw = read_lock_bytes(path, pex.RELOCK) if raw is None else raw
        digest, locks = sha256_digest(raw), python_lock.parse_locks(raw, str(path))
        missing = [n for n in names if n not in locks]
        if missing:
            raise BadInput(
                f"{path}: no resolve for {', '.join(missing)} (it has "
                f"{', '.join(locks)}); {pex.LOCK_HINT}"
            )
        return {n: PythonInput(path, digest, locks[n], raw) for n in names}

    @staticmethod
    def read(path: Path, name: str = platform_table.AMD64.name) -> PythonInput:
        return PythonInput.read_all(path, (name,))[name]


def declared_platform(project: Project, files: tuple[TreeFile, ...], name: str) -> bytes:
    """Platform ``name``'s complete platform's bytes, from the declared files: its image
    carries them (``manifest.PLATFORM_PATH``), so they must be in the build id, as a
    declared source."""
    path = project.complete_platform_of(name)
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
    """Everything one platform of one build reads, read and digested once.

    ``digests`` is what the build manifest records as ``inputs`` (its build id);
    ``stamp`` and ``created`` (the stamped commit's time) change the images but
    never the build id; ``mirror`` is where a missing ``.deb`` is fetched from
    (the locks pin every byte, so it is in no digest)."""

    project: Project
    platform: Platform
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
    shared: Mapping[str, PythonInput],
    files: tuple[TreeFile, ...] = (),
) -> dict[str, dict[str, PythonInput]]:
    """Each platform's view of each role's own lock (platform -> role -> input), its wheels
    narrowed to those the platform's ``shared`` lacks (``BadInput`` if the two locks
    disagree on a wheel both hold). A role's lock is a declared source: its bytes are taken
    from ``files`` (the declared files read) when there."""
    read = {f.path: f.data for f in files}
    names = tuple(shared)
    out: dict[str, dict[str, PythonInput]] = {name: {} for name in names}
    for role, spec in sorted(project.images.items()):
        if spec.python_lock is not None:
            raw = read.get(spec.python_lock.relative_to(project.root).as_posix())
            own = PythonInput.read_all(spec.python_lock, names, raw)
            for name in names:
                wheels = python_lock.role_only(
                    shared[name].wheels, own[name].wheels, f"{spec.python_lock} ({name})"
                )
                out[name][role] = PythonInput(own[name].path, own[name].digest, wheels)
    return out


def read_platforms(
    project: Project,
    builder: str,
    *,
    stamp: Stamp | None = None,
    platforms: tuple[str, ...] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, BuildInputs]:
    """Read the build inputs of ``project`` once, for each of ``platforms`` (default: the
    project's), by platform name (``builder`` names the builder: its format version and
    what makes its bytes, so a change of either is a new build id)."""
    names = platforms or project.platforms
    for name in names:
        if name not in project.platforms:
            raise BadInput(
                f"--platform {name}: {project.pyproject} builds {', '.join(project.platforms)}; "
                "name one of them or add it to [tool.lockstep] platforms"
            )
    for spec in project.images.values():  # a declared source, but say how to make it
        if spec.python_lock is not None and not spec.python_lock.is_file():
            read_lock_bytes(spec.python_lock, pex.RELOCK)
    files = declared.load(project.root, project.sources)
    sources = tree_digest(files)
    debian = DebianInput.read_all(project.debian_lock, names)
    python = PythonInput.read_all(project.python_lock, names)
    roles = read_roles(project, python, files)
    created = stamping.commit_time(project.root, stamp.commit) if stamp else None
    mirror = project.mirror(environ)
    return {
        name: BuildInputs(
            project=project,
            platform=platform_table.platform(name),
            builder=builder,
            files=files,
            sources=sources,
            debian=debian[name],
            python=python[name],
            complete_platform=declared_platform(project, files, name),
            mirror=mirror,
            roles=roles[name],
            stamp=stamp,
            created=created,
        )
        for name in names
    }


def read_inputs(
    project: Project,
    builder: str,
    *,
    stamp: Stamp | None = None,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> BuildInputs:
    """The build inputs of one platform (default: the project's first; ``read_platforms``)."""
    name = platform or project.platforms[0]
    return read_platforms(project, builder, stamp=stamp, platforms=(name,), environ=environ)[name]
