"""The declared build inputs as one value: source files, both locks, the builder, the stamp.

``read_inputs`` reads each input once — every declared file, each lock file's
bytes (hashed once, parsed once) — into a frozen ``BuildInputs`` for one
platform; the build takes that value and reads no input file again.

Only files matched by ``[tool.lockstep] sources`` count. The digest covers
each file's relative path, exec bit and content — not mtimes, absolute paths
or ownership (``lockstep.core.digests.tree_digest``). Git-ignored files and
stray build outputs never count.
"""

from __future__ import annotations

import logging
import stat
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lockstep.core.digests import TreeFile, sha256_digest, tree_digest
from lockstep.core.errors import BadInput
from lockstep.inputs import stamp as stamping
from lockstep.inputs.debian import lock as debian_lock
from lockstep.inputs.python import lock as python_lock
from lockstep.inputs.python import pex
from lockstep.manifest import Stamp
from lockstep.project import Project

log = logging.getLogger(__name__)

# Build outputs that never enter an image, whatever the globs say.
EXCLUDED_DIRS = ("__pycache__", ".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache")
EXCLUDED_SUFFIXES = (".pyc", ".pyo")


def _excluded(rel: str) -> bool:
    parts = rel.split("/")
    return (
        any(p in EXCLUDED_DIRS or p.endswith(".egg-info") for p in parts[:-1])
        or parts[-1].endswith(EXCLUDED_SUFFIXES)
        or parts[-1].endswith(".egg-info")
    )


def _git_ignored(root: Path, rels: Sequence[str]) -> set[str]:
    """The subset of ``rels`` that git ignores; empty outside a git work tree.

    Asks ``git check-ignore`` directly: this runs on every build, and importing
    gitpython alone would cost more than the rest of a no-op rebuild.
    """
    if not rels or not _in_git_tree(root):
        return set()
    try:
        proc = subprocess.run(
            ["git", "check-ignore", "--stdin", "-z"],
            cwd=root,
            input="\0".join(rels) + "\0",
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("not filtering git-ignored files: %s", exc)
        return set()
    if proc.returncode not in (0, 1):  # 1: nothing is ignored
        log.debug("not filtering git-ignored files: %s", proc.stderr.strip())
        return set()
    return {name for name in proc.stdout.split("\0") if name}


def _in_git_tree(root: Path) -> bool:
    return any((p / ".git").exists() for p in (root.resolve(), *root.resolve().parents))


def select(
    root: Path, patterns: Iterable[str], where: str = "[tool.lockstep] sources"
) -> list[str]:
    """Relative posix paths of the declared files; BadInput if a pattern matches nothing."""
    chosen: set[str] = set()
    for pattern in patterns:
        matched = [p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file()]
        matched = [m for m in matched if not _excluded(m)]
        if not matched:
            raise BadInput(
                f"{root / 'pyproject.toml'}: {where} pattern {pattern!r} matches no "
                "file; create it or remove the pattern"
            )
        chosen.update(matched)
    ignored = _git_ignored(root, sorted(chosen))
    return sorted(chosen - ignored)


def read(root: Path, rels: Iterable[str]) -> tuple[TreeFile, ...]:
    files = []
    for rel in rels:
        path = root / rel
        try:
            st = path.stat()
            data = path.read_bytes()
        except OSError as exc:
            raise BadInput(f"{path}: cannot read declared input ({exc.strerror})") from exc
        files.append(TreeFile(rel, bool(st.st_mode & stat.S_IXUSR), data))
    return tuple(sorted(files, key=lambda f: f.path))


def load(root: Path, patterns: Iterable[str]) -> tuple[TreeFile, ...]:
    """The declared source files of the project at ``root``."""
    return read(root, select(root, patterns))


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
    files = load(project.root, project.sources)
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
