"""What a bundle is locked against: the image's Python lock and, for each platform the
image is built for, its python's complete platform, from a checkout of the build
repository (the project's platforms) or from the images themselves (every entry of an
index, or each archive given; ``only`` keeps the platforms ``--platform`` names).

Every image carries both beside its build manifest (``manifest.BESIDE``), so a
modeller can lock against a released image — by reference, by release record or
by archive — with no checkout, and get the lock the checkout makes. What an image
says is checked before it is used: the lock's sha256 must be the manifest's
``inputs.python_lock``, and the complete platform must be for the platform the
image's config names (``os``/``architecture``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lockstep.core import platforms as platform_table
from lockstep.core.digests import sha256_digest
from lockstep.core.errors import BadInput, CheckFailed
from lockstep.core.settings import MANIFEST_PATH
from lockstep.core.wheels import normalize_name
from lockstep.inputs.python import lock as image_lock
from lockstep.inputs.python.pex import LOCK_HINT
from lockstep.inputs.python.platform import parse_platform
from lockstep.manifest import BESIDE, PLATFORM_PATH, PYTHON_LOCK_PATH, BuildManifest
from lockstep.oci.image import ImageView, images_from_archive, images_from_registry
from lockstep.project import Project
from lockstep.release.record import ReleaseManifest

# An image config's (os, architecture) → the complete platform's (sys_platform,
# platform_machine), as Python reports them.
MACHINES = {("linux", "amd64"): ("linux", "x86_64"), ("linux", "arm64"): ("linux", "aarch64")}
ROLE = "worker"  # bundles run on workers: a release record is read for its worker image


@dataclass(frozen=True)
class LockBase:
    """The image a bundle is locked against, as the bytes the lock is made from: its Python
    lock (one for every platform of a build) and, for each platform it is locked for, that
    platform python's complete platform."""

    where: str  # what messages name: the lock's path, or the lock in the image
    python_lock: bytes
    complete_platforms: Mapping[str, bytes]  # platform -> its complete platform, in order

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(self.complete_platforms)

    def locks(self) -> dict[str, tuple[image_lock.LockedWheel, ...]]:
        """Each platform's wheels in the image's Python lock; ``BadInput`` if it lacks one."""
        found = image_lock.parse_locks(self.python_lock, self.where)
        missing = [p for p in self.platforms if p not in found]
        if missing:
            raise BadInput(
                f"{self.where}: no resolve for {', '.join(missing)} (it has "
                f"{', '.join(found)}); {LOCK_HINT}"
            )
        return {p: found[p] for p in self.platforms}

    def pins(self, platform: str) -> dict[str, str]:
        """The image's projects on ``platform`` (normalised name -> version)."""
        wheels = image_lock.parse_lock(self.python_lock, self.where, platform)
        return {normalize_name(w.project): w.version for w in wheels}

    def tags(self, platform: str) -> list[str]:
        """``platform``'s image python's compatible wheel tags, in preference order."""
        parsed = parse_platform(self.complete_platforms[platform], f"{self.where} ({platform})")
        return [str(t) for t in parsed["compatible_tags"]]

    def only(self, wanted: Sequence[str]) -> LockBase:
        """This base for the platforms ``wanted`` only (``--platform``); ``BadInput`` naming
        the ones it has if one is not among them."""
        for name in wanted:
            platform_table.platform(name, "--platform")
            if name not in self.complete_platforms:
                raise BadInput(
                    f"--platform {name}: not a platform of {self.where} (it has "
                    f"{', '.join(self.platforms)})"
                )
        kept = {p: b for p, b in self.complete_platforms.items() if p in wanted}
        return LockBase(self.where, self.python_lock, kept)


def joined(bases: Sequence[LockBase]) -> LockBase:
    """One base of the images ``bases`` (several archives, or an index's entries): one
    build's, so one Python lock; ``BadInput`` if they are of several, or repeat a platform."""
    first = bases[0]
    merged: dict[str, bytes] = {}
    for base in bases:
        if base.python_lock != first.python_lock:
            raise BadInput(
                f"{base.where} and {first.where} are of builds with other Python locks; "
                "lock against the images of one build"
            )
        for name, data in base.complete_platforms.items():
            if name in merged:
                raise BadInput(f"{base.where}: a second image for {name}; give each platform once")
            merged[name] = data
    order = [p for p in platform_table.PLATFORMS if p in merged]
    return LockBase(first.where, first.python_lock, {p: merged[p] for p in order})


def from_project(project: Project) -> LockBase:
    """The checkout's: its Python lock and the complete platform of each of its platforms
    (``where`` relative to the project's directory)."""
    try:
        lock = project.python_lock.read_bytes()
        platforms = {p: project.complete_platform_of(p).read_bytes() for p in project.platforms}
    except OSError as exc:
        raise BadInput(
            f"{exc.filename}: cannot read it ({exc.strerror}); restore it from version control"
        ) from exc
    try:
        where = str(project.python_lock.resolve().relative_to(project.root.resolve()))
    except ValueError:
        where = str(project.python_lock)
    return LockBase(where, lock, platforms)


def from_image(view: ImageView) -> LockBase:
    """The image's own, from its top layer, checked against its manifest and config."""
    files = view.top_files([MANIFEST_PATH, *BESIDE])
    raw = files.get(MANIFEST_PATH)
    if raw is None:
        raise BadInput(f"{view.where}: no {MANIFEST_PATH} in its top layer; not a lockstep image")
    manifest = BuildManifest.from_json(raw, f"{view.where}:{MANIFEST_PATH}")
    missing = [p for p in BESIDE if p not in files]
    if missing:
        raise BadInput(
            f"{view.where}: carries no {' or '.join(missing)} (built before images carried "
            "them); lock in a checkout of its build: lockstep bundle lock DIR --project ROOT"
        )
    lock, platform = files[PYTHON_LOCK_PATH], files[PLATFORM_PATH]
    if sha256_digest(lock) != manifest.inputs["python_lock"]:
        raise CheckFailed(
            f"{view.where}: {PYTHON_LOCK_PATH} is not the Python lock its manifest names "
            f"({manifest.inputs['python_lock']}); the image is corrupt"
        )
    markers = parse_platform(platform, f"{PLATFORM_PATH} in {view.where}")["marker_environment"]
    os_arch = (str(view.config.get("os")), str(view.config.get("architecture")))
    base = LockBase(f"{PYTHON_LOCK_PATH} in {view.where}", lock, {"/".join(os_arch): platform})
    expected = MACHINES.get(os_arch)
    found = (markers.get("sys_platform"), markers.get("platform_machine"))
    if expected is None or expected != found:
        raise CheckFailed(
            f"{view.where}: its config says {view.platform} but {PLATFORM_PATH} is for "
            f"{found[0]}/{found[1]}; the image is corrupt"
        )
    return base


def from_reference(reference: str, plain_http: bool) -> LockBase:
    """The image ``HOST/REPO@sha256:…``: every platform of an index."""
    return joined([from_image(v) for v in images_from_registry(reference, plain_http)])


def from_archives(paths: Sequence[Path]) -> LockBase:
    """The images in archives ``lockstep build`` wrote (one per platform), of one build."""
    return joined([from_image(v) for path in paths for v in images_from_archive(path)])


def from_release(record: Path, plain_http: bool) -> LockBase:
    """The worker image of a release record (``release/<version>.json``), from its registry."""
    images = ReleaseManifest.read(record).images
    if ROLE not in images:
        raise BadInput(f"{record}: the release has no {ROLE} image; pass --image instead")
    return from_reference(images[ROLE].reference, plain_http)
