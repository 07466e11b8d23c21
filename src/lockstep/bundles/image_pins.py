"""What a bundle is locked against: the image's Python lock and its python's complete
platform, from a checkout of the build repository or from the image itself.

Every image carries both beside its build manifest (``manifest.BESIDE``), so a
modeller can lock against a released image — by reference, by release record or
by archive — with no checkout, and get the lock the checkout makes. What an image
says is checked before it is used: the lock's sha256 must be the manifest's
``inputs.python_lock``, and the complete platform must be for the platform the
image's config names (``os``/``architecture``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lockstep.core.digests import sha256_digest
from lockstep.core.errors import BadInput, CheckFailed
from lockstep.core.settings import MANIFEST_PATH
from lockstep.core.wheels import normalize_name
from lockstep.inputs.python import lock as image_lock
from lockstep.inputs.python.platform import parse_platform
from lockstep.manifest import BESIDE, PLATFORM_PATH, PYTHON_LOCK_PATH, BuildManifest
from lockstep.oci.image import ImageView, image_from_archive, image_from_registry
from lockstep.release.record import ReleaseManifest

# An image config's (os, architecture) → the complete platform's (sys_platform,
# platform_machine), as Python reports them.
MACHINES = {("linux", "amd64"): ("linux", "x86_64"), ("linux", "arm64"): ("linux", "aarch64")}
ROLE = "worker"  # bundles run on workers: a release record is read for its worker image


@dataclass(frozen=True)
class LockBase:
    """The image a bundle is locked against, as the bytes the lock is made from."""

    where: str  # what messages name: the lock's path, or the lock in the image
    python_lock: bytes
    complete_platform: bytes

    @property
    def pins(self) -> dict[str, str]:
        """The image's projects (normalised name -> version), from its Python lock."""
        wheels = image_lock.parse_lock(self.python_lock, self.where)
        return {normalize_name(w.project): w.version for w in wheels}

    @property
    def tags(self) -> list[str]:
        """The image python's compatible wheel tags, in preference order."""
        platform = parse_platform(self.complete_platform, self.where)
        return [str(t) for t in platform["compatible_tags"]]


def from_files(python_lock: Path, complete_platform: Path, root: Path) -> LockBase:
    """The checkout's: its Python lock and complete platform (``where`` relative to
    ``root``, the project's directory)."""
    try:
        lock, platform = python_lock.read_bytes(), complete_platform.read_bytes()
    except OSError as exc:
        raise BadInput(
            f"{exc.filename}: cannot read it ({exc.strerror}); restore it from version control"
        ) from exc
    try:
        where = str(python_lock.resolve().relative_to(root.resolve()))
    except ValueError:
        where = str(python_lock)
    return LockBase(where, lock, platform)


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
    base = LockBase(f"{PYTHON_LOCK_PATH} in {view.where}", lock, platform)
    markers = parse_platform(platform, f"{PLATFORM_PATH} in {view.where}")["marker_environment"]
    os_arch = (str(view.config.get("os")), str(view.config.get("architecture")))
    expected = MACHINES.get(os_arch)
    found = (markers.get("sys_platform"), markers.get("platform_machine"))
    if expected is None or expected != found:
        raise CheckFailed(
            f"{view.where}: its config says {view.platform} but {PLATFORM_PATH} is for "
            f"{found[0]}/{found[1]}; the image is corrupt"
        )
    return base


def from_reference(reference: str, platform: str | None, plain_http: bool) -> LockBase:
    """The image ``HOST/REPO@sha256:…`` (an index resolved to ``platform``)."""
    return from_image(image_from_registry(reference, platform, plain_http))


def from_archive(path: Path, platform: str | None) -> LockBase:
    """The image in an archive ``lockstep build`` wrote."""
    return from_image(image_from_archive(path, platform))


def from_release(record: Path, platform: str | None, plain_http: bool) -> LockBase:
    """The worker image of a release record (``release/<version>.json``), from its registry."""
    images = ReleaseManifest.read(record).images
    if ROLE not in images:
        raise BadInput(f"{record}: the release has no {ROLE} image; pass --image instead")
    return from_reference(images[ROLE].reference, platform, plain_http)
