"""Layers and archives: same entries, same bytes; the archive reads back."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import threading
from pathlib import Path

import pytest

from lockstep.assembly import oci
from lockstep.assembly.compress import gzip_bytes
from lockstep.assembly.entries import Entry, Layer, make_layer, normalize, tar_bytes
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
    assert oci.write_archives([out], oci.copy_from(blobs.__getitem__)) == [path]
    first = path.read_bytes()
    assert (
        oci.write_archives([out], oci.copy_from(blobs.__getitem__)) == []
    )  # already current: not rewritten
    path.unlink()
    assert oci.write_archives([out], oci.copy_from(blobs.__getitem__)) == [path]
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


def _image(*layers: oci.LayerRef, label: str = "") -> oci.Image:
    return oci.make_image(
        platform=AMD64, layers=layers, entrypoint=["x"], env={}, labels={"l": label}
    )


def _tarfile_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """The archive as ``tarfile`` itself writes it (what the archives were before they were
    written with the layers copied in the kernel): the reference for their bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.parametrize("sizes", [[0], [1, 511, 512, 513], [10_000, 10_240 * 3]])
def test_archives_are_the_bytes_tarfile_writes(tmp_path: Path, sizes: list[int]) -> None:
    layers = [make_layer([Entry.file("f", bytes(range(256)) * (n // 256 + 1))]) for n in sizes]
    layers += [make_layer([Entry.file("g", b"x" * n)]) for n in sizes]  # other block fills
    blobs = {layer.digest: layer.blob for layer in layers}
    image = _image(*(oci.LayerRef.of(layer) for layer in layers))
    path = tmp_path / "img.tar"
    oci.write_archives([oci.ArchiveOut(path, image, "r:1", ("r:1",))], oci.copy_from(blobs.get))
    expected = _tarfile_bytes(oci.archive_members(image, blobs.__getitem__, "r:1", ["r:1"]))
    assert path.read_bytes() == expected
    out = io.BytesIO()
    oci.write_tar(out, oci.archive_members(image, blobs.__getitem__, "r:1", ["r:1"]))
    assert out.getvalue() == expected


def test_a_rewritten_archive_reuses_the_one_before_unless_a_reader_holds_it(
    tmp_path: Path,
) -> None:
    small, big = make_layer(ENTRIES), make_layer([Entry.file("big", os.urandom(300_000))])
    blobs = oci.copy_from({small.digest: small.blob, big.digest: big.blob}.__getitem__)
    path = tmp_path / "img.tar"
    spare = tmp_path / ".img.tar.spare"

    def write(*layers: Layer, label: str) -> bytes:
        image = _image(*(oci.LayerRef.of(layer) for layer in layers), label=label)
        assert oci.write_archives([oci.ArchiveOut(path, image, "r:1", ())], blobs) == [path]
        assert oci.read_archive(path).digest == image.digest
        return path.read_bytes()

    first = write(small, big, label="1")
    assert not spare.exists()
    first_inode = path.stat().st_ino
    second = write(small, label="2")  # a new file; the first archive is kept as the spare
    assert spare.read_bytes() == first and spare.stat().st_ino == first_inode
    third = write(small, big, label="3")  # written over the spare: the first's inode again
    assert path.stat().st_ino == first_inode and spare.read_bytes() == second
    with spare.open("rb") as reader:  # a reader of the second archive still has it open
        write(small, label="4")
        assert reader.read() == second  # not overwritten under it
    assert spare.read_bytes() == third
    assert sorted(p.name for p in tmp_path.iterdir()) == [".img.tar.spare", "img.tar"]
    kept = tmp_path / "kept" / "img-4.tar"  # a user keeps the fourth archive by a hard link
    kept.parent.mkdir()
    os.link(path, kept)
    fourth = kept.read_bytes()
    write(small, big, label="5")  # the fourth becomes the spare, still linked
    write(small, label="6")  # the spare has another name: a new file, never written over
    assert kept.read_bytes() == fourth


def test_a_failed_archive_write_leaves_the_old_archives_and_no_temporary(tmp_path: Path) -> None:
    layer = make_layer(ENTRIES)
    blobs = {layer.digest: layer.blob}
    paths = [tmp_path / "a.tar", tmp_path / "b.tar"]

    def outs(label: str) -> list[oci.ArchiveOut]:
        image = _image(oci.LayerRef.of(layer), label=label)
        return [oci.ArchiveOut(p, image, "r:1", (p.name,)) for p in paths]

    oci.write_archives(outs("1"), oci.copy_from(blobs.__getitem__))
    oci.write_archives(outs("2"), oci.copy_from(blobs.__getitem__))  # now each has a spare
    before = {p: p.read_bytes() for p in paths}
    calls = []

    def failing(digest: str, fd: int) -> None:
        calls.append(digest)
        if len(calls) == 2:  # the second archive's layer: the cache lost it
            raise BadInput("cached layer is missing or corrupt")
        oci.copy_from(blobs.__getitem__)(digest, fd)

    with pytest.raises(BadInput):
        oci.write_archives(outs("3"), failing)
    assert {p: p.read_bytes() for p in paths} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "b.tar"]


def test_the_archives_are_written_side_by_side(tmp_path: Path) -> None:
    """Each archive's layers are copied while the other's are: a copy that waits until both
    archives have begun one (a barrier) completes; one archive after the other would not."""
    layer = make_layer(ENTRIES)
    image = _image(oci.LayerRef.of(layer))
    outs = [oci.ArchiveOut(tmp_path / f"{n}.tar", image, "r:1", (n,)) for n in "ab"]
    both = threading.Barrier(2, timeout=60)

    def copy(digest: str, fd: int) -> None:
        both.wait()  # BrokenBarrierError after 60 s if the archives were written in turn
        oci.copy_from(lambda _: layer.blob)(digest, fd)

    oci.write_archives(outs, copy)
    assert [oci.read_archive(o.path).digest for o in outs] == [image.digest] * 2


def test_a_layer_of_another_size_than_its_image_names_is_refused(tmp_path: Path) -> None:
    layer = make_layer(ENTRIES)
    path = tmp_path / "img.tar"
    out = oci.ArchiveOut(path, _image(oci.LayerRef.of(layer)), "r:1", ())
    with pytest.raises(BadInput, match=f"layer {layer.digest}: {layer.size + 1} bytes where"):
        oci.write_archives([out], oci.copy_from(lambda _: layer.blob + b"!"))
    assert list(tmp_path.iterdir()) == []
