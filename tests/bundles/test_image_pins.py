"""What an image says before a bundle is locked against it: the lock its manifest names,
a complete platform for the platform its config names, and both files present.

Images made here from the repository's own lock and platform files (the real
ones: ``tests/bundles/test_lock_image.py``); an index of two platforms is an OCI
archive written here.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from lockstep.bundles.image_pins import from_archives, from_image, from_project, joined
from lockstep.core.digests import sha256_digest
from lockstep.core.errors import BadInput, CheckFailed
from lockstep.manifest import PLATFORM_PATH, PYTHON_LOCK_PATH, BuildManifest
from lockstep.oci.image import ImageView, images_from_archive
from tests.inputs.test_python_lock import LOCK, PLATFORM, PROJECT

LOCK_BYTES = LOCK.read_bytes()
PLATFORM_BYTES = PLATFORM.read_bytes()
ARM64_BYTES = PROJECT.complete_platform_of("linux/arm64").read_bytes()
MANIFEST_PATH = "/etc/lockstep/manifest.json"


def layer(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(out.getvalue(), mtime=0)


def manifest(lock: bytes = LOCK_BYTES) -> bytes:
    inputs = {
        "builder": "b",
        "debian_lock": sha256_digest(b"d"),
        "python_lock": sha256_digest(lock),
        "sources": sha256_digest(b"s"),
    }
    return BuildManifest("lockstep", "0.1.0", inputs, ("cold",), "3.11.2").to_json()


def view(files: dict[str, bytes], architecture: str = "amd64") -> ImageView:
    return ImageView(
        "HOST/img@sha256:x", "sha256:x", {"os": "linux", "architecture": architecture}, layer(files)
    )


def complete(**files: bytes) -> dict[str, bytes]:
    base = {MANIFEST_PATH: manifest(), PYTHON_LOCK_PATH: LOCK_BYTES, PLATFORM_PATH: PLATFORM_BYTES}
    return {**base, **{k.replace("_", "/"): v for k, v in files.items()}}


def test_an_image_gives_the_checkout_s_bytes() -> None:
    base = from_image(view(complete()))
    checkout = from_project(PROJECT)
    assert checkout.platforms == ("linux/amd64", "linux/arm64")
    assert base.platforms == ("linux/amd64",)
    assert base.python_lock == checkout.python_lock
    assert base.complete_platforms["linux/amd64"] == checkout.complete_platforms["linux/amd64"]
    amd64 = "linux/amd64"
    assert base.pins(amd64) == checkout.pins(amd64) and base.tags(amd64) == checkout.tags(amd64)
    assert checkout.tags("linux/arm64")[0].endswith("_aarch64")
    assert base.where == f"{PYTHON_LOCK_PATH} in HOST/img@sha256:x"
    assert checkout.where == "images/python.lock.json"


def test_a_lock_the_manifest_does_not_name_is_refused() -> None:
    files = complete()
    files[PYTHON_LOCK_PATH] = LOCK_BYTES + b"\n"
    with pytest.raises(CheckFailed, match="is not the Python lock its manifest names"):
        from_image(view(files))


def test_a_platform_file_for_another_machine_than_the_config_is_refused() -> None:
    with pytest.raises(
        CheckFailed, match=r"its config says linux/arm64 but .* is for linux/x86_64"
    ):
        from_image(view(complete(), architecture="arm64"))


def test_an_image_without_the_files_says_to_lock_in_a_checkout() -> None:
    files = complete()
    del files[PLATFORM_PATH]
    with pytest.raises(
        BadInput, match=r"carries no /etc/lockstep/complete-platform.json .*--project"
    ):
        from_image(view(files))
    with pytest.raises(BadInput, match="not a lockstep image"):
        from_image(view({PYTHON_LOCK_PATH: LOCK_BYTES}))


def blob(blobs: dict[str, bytes], data: bytes) -> dict[str, object]:
    digest = sha256_digest(data)
    blobs[f"blobs/sha256/{digest.removeprefix('sha256:')}"] = data
    return {"digest": digest, "size": len(data)}


def two_platform_archive(path: Path, lock: bytes = LOCK_BYTES, said: str = "") -> None:
    """An OCI archive whose index holds an amd64 and an arm64 image (``said``: the arm64
    entry's platform in the index, if not its own)."""
    blobs: dict[str, bytes] = {}
    entries = []
    for arch, platform in (("amd64", PLATFORM_BYTES), ("arm64", ARM64_BYTES)):
        config = blob(blobs, json.dumps({"os": "linux", "architecture": arch}).encode())
        files = complete()
        files[PLATFORM_PATH], files[PYTHON_LOCK_PATH], files[MANIFEST_PATH] = (
            platform,
            lock,
            manifest(lock),
        )
        top = blob(blobs, layer(files))
        image = json.dumps({"schemaVersion": 2, "config": config, "layers": [top]}).encode()
        listed = said if arch == "arm64" and said else arch
        entries.append({**blob(blobs, image), "platform": {"os": "linux", "architecture": listed}})
    blobs["index.json"] = json.dumps({"schemaVersion": 2, "manifests": entries}).encode()
    with tarfile.open(path, mode="w") as tar:
        for name, data in blobs.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_an_index_of_two_platforms_gives_both_and_platform_keeps_some(tmp_path: Path) -> None:
    archive = tmp_path / "worker.tar"
    two_platform_archive(archive)
    assert [v.platform for v in images_from_archive(archive)] == ["linux/amd64", "linux/arm64"]
    base = from_archives([archive])
    assert base.complete_platforms == {"linux/amd64": PLATFORM_BYTES, "linux/arm64": ARM64_BYTES}
    assert base.python_lock == LOCK_BYTES
    assert base.only(["linux/arm64"]).platforms == ("linux/arm64",)
    with pytest.raises(BadInput, match=r"unknown platform 'linux/s390x'"):
        base.only(["linux/s390x"])
    one = base.only(["linux/amd64"])
    with pytest.raises(BadInput) as refused:
        one.only(["linux/arm64"])
    assert refused.value.message == (
        f"--platform linux/arm64: not a platform of {PYTHON_LOCK_PATH} in {archive} (it has "
        "linux/amd64)"
    )


def test_images_of_two_builds_or_one_platform_twice_are_refused(tmp_path: Path) -> None:
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    two_platform_archive(first)
    two_platform_archive(second, LOCK_BYTES + b" ")
    with pytest.raises(BadInput, match="are of builds with other Python locks"):
        from_archives([first, second])
    with pytest.raises(BadInput, match="a second image for linux/amd64"):
        joined([from_archives([first]), from_archives([first])])


def test_an_index_entry_that_names_another_platform_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "worker.tar"
    two_platform_archive(archive, said="s390x")
    with pytest.raises(CheckFailed, match=r"for linux/s390x, but its config says linux/arm64"):
        images_from_archive(archive)


def test_a_corrupt_blob_in_an_archive_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "worker.tar"
    two_platform_archive(archive)
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    index = json.loads(members["index.json"])
    config_name = None
    for entry in index["manifests"]:
        image = json.loads(members[f"blobs/sha256/{entry['digest'].removeprefix('sha256:')}"])
        config_name = f"blobs/sha256/{image['config']['digest'].removeprefix('sha256:')}"
    assert config_name is not None
    members[config_name] = b'{"os": "linux", "architecture": "arm64", "x": 1}'
    with tarfile.open(archive, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(CheckFailed, match="has other bytes; it is corrupt"):
        images_from_archive(archive)
