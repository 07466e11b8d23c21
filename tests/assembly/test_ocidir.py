"""The incremental output: both images in one OCI layout directory, only new blobs written,
read by skopeo, and loaded into Docker from there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lockstep.assembly import ocidir
from lockstep.core.digests import sha256_digest
from lockstep.core.errors import BadInput
from tests.fixtures.build import PLATFORM, Built, clone, lockstep
from tests.fixtures.engine import DockerEngine
from tests.fixtures.support import require


def build_layout(src: Path, layout: Path, cache: Path) -> dict[str, object]:
    proc = lockstep(
        ["build", "all", "--layout", str(layout), "--no-archives", "--json", *PLATFORM],
        cwd=src,
        cache=cache,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def blob_files(layout: Path) -> dict[str, tuple[int, int]]:
    """Each blob file's (inode, mtime in ns): a rewritten file would change both."""
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (layout / "blobs" / "sha256").iterdir()
    }


def test_a_one_line_change_adds_only_its_blobs_and_rewrites_nothing(
    built: Built, tmp_path: Path
) -> None:
    src = clone(tmp_path / "src")
    layout = tmp_path / "layout"
    first = build_layout(src, layout, built.cache)
    images = first["images"]
    assert isinstance(images, dict)
    for role in ("runner", "worker"):  # the same images as the archives
        assert images[role]["digest"] == built.digest(role) and images[role]["path"] is None
    before = blob_files(layout)
    target = src / "src/lockstep/runtime/__init__.py"
    target.write_text(target.read_text() + "\n# a one-line change\n")
    second = build_layout(src, layout, built.cache)
    after = blob_files(layout)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing rewritten
    added = set(after) - set(before)
    # the app and manifest layers, and each image's config and manifest
    assert len(added) == 6, sorted(added)
    index = json.loads((layout / "index.json").read_text())
    refs = sorted(m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"])
    old, new = first["images"], second["images"]
    assert isinstance(old, dict) and isinstance(new, dict)
    # both builds stay named (their blobs stay referenced); a role is now ambiguous, a ref is not
    assert refs == sorted(b[r]["ref"] for b in (old, new) for r in ("runner", "worker"))
    with pytest.raises(BadInput, match="2 images; name one of"):
        ocidir.read_image(layout, "worker")
    assert ocidir.read_image(layout, new["worker"]["ref"]).image.digest == new["worker"]["digest"]


def test_skopeo_reads_the_layout_with_our_digests(built: Built, tmp_path: Path) -> None:
    require(shutil.which("skopeo") is not None, "skopeo is not installed (Debian package skopeo)")
    layout = tmp_path / "layout"
    result = build_layout(built.root, layout, built.cache)
    images = result["images"]
    assert isinstance(images, dict)
    for role in ("runner", "worker"):
        ref = images[role]["ref"]
        proc = subprocess.run(
            ["skopeo", "inspect", "--raw", f"oci:{layout}:{ref}"], capture_output=True, check=True
        )
        assert sha256_digest(proc.stdout) == built.digest(role)


def test_a_layout_image_loads_into_docker_with_our_image_id(
    built: Built, tmp_path: Path, docker_engine: DockerEngine
) -> None:
    layout = tmp_path / "layout"
    build_layout(built.root, layout, built.cache)
    proc = lockstep(
        ["load", str(layout), "--image", "worker"],
        cwd=built.root,
        cache=built.cache,
        env={"DOCKER_HOST": docker_engine.host},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == built.config("worker")


def test_a_corrupt_or_ambiguous_layout_is_one_clear_error(built: Built, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    build_layout(built.root, layout, built.cache)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "index.json").write_text("not json")
    proc = lockstep(
        ["build", "all", "--layout", str(foreign), "--no-archives", *PLATFORM],
        cwd=built.root,
        cache=built.cache,
    )
    assert proc.returncode == 2 and "not an OCI index" in proc.stderr, proc.stderr
    with pytest.raises(BadInput, match="2 images; name one of"):
        ocidir.read_image(layout)
    with pytest.raises(BadInput, match="no image 'gpu'"):
        ocidir.read_image(layout, "gpu")
    manifest = layout / "blobs" / "sha256" / built.digest("worker").removeprefix("sha256:")
    os.chmod(manifest, 0o644)
    manifest.write_bytes(manifest.read_bytes() + b" ")
    with pytest.raises(BadInput, match="does not match its digest"):
        ocidir.read_image(layout, "worker")
