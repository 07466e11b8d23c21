"""Layers and archives: same entries, same bytes; the archive reads back."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from lockstep.assembly import oci
from lockstep.assembly.compress import gzip_bytes
from lockstep.assembly.entries import Entry, make_layer, normalize, tar_bytes
from lockstep.core.errors import BadInput
from lockstep.core.platforms import AMD64, ARM64

ENTRIES = [
    Entry.file("usr/bin/tool", b"#!/bin/sh\necho hi\n", 0o755),
    Entry.symlink("usr/bin/alias", "tool"),
    Entry.file("etc/conf", b"x=1\n"),
    Entry.dir("tmp", 0o1777),
]


def test_same_entries_any_order_give_same_digest() -> None:
    a = make_layer(ENTRIES)
    b = make_layer(list(reversed(ENTRIES)))
    assert a.digest == b.digest and a.diff_id == b.diff_id
    assert a.digest == "sha256:" + hashlib.sha256(a.blob).hexdigest()
    assert a.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(a.blob)).hexdigest()


def test_tar_is_normalised() -> None:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes(ENTRIES))) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {"etc", "usr", "usr/bin"} <= set(names)  # parents added
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0)
    by_name = {m.name: m for m in members}
    assert by_name["tmp"].mode == 0o1777
    assert by_name["usr/bin/tool"].mode == 0o755
    assert by_name["usr/bin/alias"].issym() and by_name["usr/bin/alias"].linkname == "tool"


def test_gzip_header_is_stable() -> None:
    blob = gzip_bytes(b"hello")
    # magic, deflate, no flags, mtime 0; no file name stored.
    assert blob[:8] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00"
    assert gzip.decompress(blob) == b"hello"


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../b", ""])
def test_escaping_paths_are_refused(path: str) -> None:
    with pytest.raises(BadInput):
        normalize([Entry.file(path, b"")])


def test_archive_round_trip(tmp_path: Path) -> None:
    layer = make_layer(ENTRIES)
    ref = oci.LayerRef.of(layer)
    image = oci.make_image(
        platform=ARM64,
        layers=[ref],
        entrypoint=["/usr/bin/tool"],
        env={"A": "1"},
        labels={"io.lockstep.role": "worker"},
    )
    path = tmp_path / "img.tar"
    out = oci.ArchiveOut(path, image, "1", ("x:1",))
    blobs = {layer.digest: layer.blob}
    assert oci.write_archives([out], blobs.__getitem__) == [path]
    first = path.read_bytes()
    assert oci.write_archives([out], blobs.__getitem__) == []  # already current: not rewritten
    path.unlink()
    assert oci.write_archives([out], blobs.__getitem__) == [path]
    assert path.read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == ["img.tar"]  # no temporary file left
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    assert all(m.isfile() for m in members)  # no directory entries
    assert [m.name for m in members] == sorted(m.name for m in members)
    archive = oci.read_archive(path)
    assert archive.digest == image.digest
    assert archive.config_digest == image.config_digest
    assert archive.config["rootfs"]["diff_ids"] == [layer.diff_id]
    assert archive.config["config"]["User"] == "65532:65532"
    assert (archive.config["architecture"], archive.config["os"]) == ("arm64", "linux")
    # The archive's index names the platform of its image.
    assert archive.index["manifests"][0]["platform"] == {"architecture": "arm64", "os": "linux"}
    docker = json.loads(archive.blobs["manifest.json"])
    assert docker[0]["Config"] == oci.blob_name(image.config_digest)
    assert docker[0]["Layers"] == [oci.blob_name(layer.digest)]


def test_corrupt_archive_is_refused(tmp_path: Path) -> None:
    layer = make_layer(ENTRIES)
    image = oci.make_image(
        platform=AMD64, layers=[oci.LayerRef.of(layer)], entrypoint=["x"], env={}, labels={}
    )
    members = oci.archive_members(image, {layer.digest: layer.blob}.__getitem__, "1", [])
    members = [(n, d + b"!" if n == oci.blob_name(layer.digest) else d) for n, d in members]
    path = tmp_path / "bad.tar"
    with path.open("wb") as f:
        oci.write_tar(f, members)
    with pytest.raises(BadInput, match="does not match its digest"):
        oci.read_archive(path)
    (tmp_path / "junk.tar").write_bytes(b"junk")
    with pytest.raises(BadInput, match="not a readable image archive"):
        oci.read_archive(tmp_path / "junk.tar")


def test_an_image_index_names_each_platform_once() -> None:
    ref = oci.LayerRef.of(make_layer(ENTRIES))
    images = [
        oci.make_image(platform=p, layers=[ref], entrypoint=["x"], env={}, labels={})
        for p in (AMD64, ARM64)
    ]
    index = oci.ImageIndex.of(images, {"io.lockstep.build-id": "sha256:ab"})
    data = json.loads(index.manifest)
    assert data["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [(m["digest"], m["platform"]["architecture"]) for m in data["manifests"]] == [
        (images[0].digest, "amd64"),
        (images[1].digest, "arm64"),
    ]
    assert images[0].layers == images[1].layers and images[0].digest != images[1].digest
    layout = json.loads(oci.index_json({"x:1": index}))
    assert layout["manifests"][0]["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert layout["manifests"][0]["digest"] == index.digest
    with pytest.raises(BadInput, match="one image per platform"):
        oci.ImageIndex.of([images[0], images[0]], {})
