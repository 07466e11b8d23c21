"""OCI config, manifest, image index and layout index as values, and the one-file archive.

An image is computed as data first (every digest taken once, from the exact
bytes that will be written), then written: to archives here, to a registry by
``lockstep.release``. The archive is a tar of regular
files — GNU format, uid/gid 0, sorted, no directory entries — holding the
OCI layout (``oci-layout``, ``index.json``, ``blobs/sha256/…``) and a docker
``manifest.json``, so ``docker load`` and ``skopeo … oci-archive:`` both
read it and keep our digests (docs/design.md, "Facts the code relies on").
A role built for several platforms is an ``ImageIndex``: one manifest per
platform, each descriptor naming its ``platform``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lockstep.assembly.entries import Layer
from lockstep.assembly.layout import EPOCH, USER, WORKDIR
from lockstep.core.atomic import open_spare, remove_stale, replace_keeping
from lockstep.core.digests import canonical_json, of_hex, sha256_digest
from lockstep.core.errors import BadInput
from lockstep.core.platforms import Platform
from lockstep.core.store import write_all
from lockstep.oci.media import (
    CONFIG_MEDIA_TYPE,
    INDEX_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
)

REF_NAME = "org.opencontainers.image.ref.name"
BlobSource = Callable[[str], bytes]  # a layer's bytes by its digest
# Append a layer blob's verified bytes (by its digest) to the file open as the descriptor.
BlobCopy = Callable[[str, int], None]


@dataclass(frozen=True)
class LayerRef:
    """A layer as the config and manifest see it (the blob itself may live in a cache)."""

    digest: str
    diff_id: str
    size: int

    @staticmethod
    def of(layer: Layer) -> LayerRef:
        return LayerRef(layer.digest, layer.diff_id, layer.size)


@dataclass(frozen=True)
class Image:
    """An image as bytes and digests: config, manifest, and its layers."""

    config: bytes
    manifest: bytes
    layers: tuple[LayerRef, ...]

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config)

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def platform(self) -> dict[str, str]:
        """The OCI ``platform`` of the image, as its config names it."""
        config = json.loads(self.config)
        return {"architecture": str(config["architecture"]), "os": str(config["os"])}

    def descriptor(self) -> dict[str, Any]:
        """The image's descriptor in an index: media type, digest, size, platform."""
        return {
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": self.digest,
            "size": len(self.manifest),
            "platform": self.platform,
        }


@dataclass(frozen=True)
class ImageIndex:
    """One role's images of every platform of a build, as an OCI image index."""

    manifest: bytes  # the index's canonical JSON
    images: tuple[Image, ...]  # in the index's order (the build's platform order)

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": INDEX_MEDIA_TYPE, "digest": self.digest, "size": len(self.manifest)}

    @staticmethod
    def of(images: Sequence[Image], annotations: Mapping[str, str]) -> ImageIndex:
        """The index of ``images`` (one per platform, in order); BadInput if two share one."""
        seen = [json.dumps(i.platform, sort_keys=True) for i in images]
        if len(set(seen)) != len(seen):
            raise BadInput(f"an image index needs one image per platform, got {seen}")
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": INDEX_MEDIA_TYPE,
                "manifests": [i.descriptor() for i in images],
                "annotations": dict(annotations),
            }
        )
        return ImageIndex(manifest, tuple(images))


def image_config(
    *,
    platform: Platform,
    layers: Sequence[LayerRef],
    entrypoint: Sequence[str],
    cmd: Sequence[str] = (),
    env: Mapping[str, str],
    labels: Mapping[str, str],
    user: str = USER,
    workdir: str = WORKDIR,
    history: Sequence[str] = (),
    created: str = EPOCH,
) -> bytes:
    """The image config, as canonical JSON. ``history``: one ``created_by`` per layer
    saying what it is (default ``lockstep build``); ``created``: never the clock."""
    if history and len(history) != len(layers):
        raise ValueError(f"{len(history)} history entries for {len(layers)} layers")
    created_by = list(history) or ["lockstep build"] * len(layers)
    config: dict[str, Any] = {
        "Env": [f"{k}={v}" for k, v in sorted(env.items())],
        "Entrypoint": list(entrypoint),
        "Labels": dict(labels),
        "User": user,
        "WorkingDir": workdir,
    }
    if cmd:
        config["Cmd"] = list(cmd)
    return canonical_json(
        {
            "architecture": platform.architecture,
            "os": platform.os,
            "created": created,
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [{"created": created, "created_by": what} for what in created_by],
        }
    )


def image_manifest(
    config: bytes, layers: Sequence[LayerRef], annotations: Mapping[str, str]
) -> bytes:
    """The OCI image manifest, as canonical JSON."""
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": LAYER_MEDIA_TYPE, "digest": layer.digest, "size": layer.size}
                for layer in layers
            ],
            "annotations": dict(annotations),
        }
    )


def make_image(
    *,
    platform: Platform,
    layers: Sequence[LayerRef],
    entrypoint: Sequence[str],
    cmd: Sequence[str] = (),
    env: Mapping[str, str],
    labels: Mapping[str, str],
    history: Sequence[str] = (),
    created: str = EPOCH,
) -> Image:
    config = image_config(
        platform=platform,
        layers=layers,
        entrypoint=entrypoint,
        cmd=cmd,
        env=env,
        labels=labels,
        history=history,
        created=created,
    )
    return Image(
        config=config, manifest=image_manifest(config, layers, labels), layers=tuple(layers)
    )


def index_json(images: Mapping[str, Image | ImageIndex]) -> bytes:
    """An OCI ``index.json`` naming each image or image index (ref name -> it), in ref-name
    order; an image's descriptor names its platform."""
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [
                {**image.descriptor(), "annotations": {REF_NAME: ref}}
                for ref, image in sorted(images.items())
            ],
        }
    )


def docker_manifest_json(image: Image, repo_tags: Sequence[str]) -> bytes:
    return canonical_json(
        [
            {
                "Config": blob_name(image.config_digest),
                "RepoTags": list(repo_tags),
                "Layers": [blob_name(layer.digest) for layer in image.layers],
            }
        ]
    )


BLOBS = "blobs/sha256/"


def blob_name(digest: str) -> str:
    return BLOBS + digest.removeprefix("sha256:")


def small_members(image: Image, ref_name: str, repo_tags: Sequence[str]) -> dict[str, bytes]:
    """Every archive member except the layer blobs."""
    return {
        "oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
        "index.json": index_json({ref_name: image}),
        "manifest.json": docker_manifest_json(image, repo_tags),
        blob_name(image.digest): image.manifest,
        blob_name(image.config_digest): image.config,
    }


def archive_is_current(path: Path, image: Image, ref_name: str, repo_tags: Sequence[str]) -> bool:
    """Whether ``path`` already holds exactly this archive's members (a no-op rebuild).

    Compares every member's name and size, and the bytes of every member but
    the layer blobs; the layer blobs are named by their digests.
    """
    small = small_members(image, ref_name, repo_tags)
    expected = {name: len(data) for name, data in small.items()}
    expected.update({blob_name(layer.digest): layer.size for layer in image.layers})
    try:
        with tarfile.open(path, mode="r:") as tar:
            found: dict[str, int] = {}
            for info in tar:
                found[info.name] = info.size
                if info.name in small:
                    f = tar.extractfile(info)
                    if f is None or f.read() != small[info.name]:
                        return False
    except (OSError, tarfile.TarError):
        return False
    return found == expected


def archive_members(
    image: Image, blob: BlobSource, ref_name: str, repo_tags: Sequence[str]
) -> list[tuple[str, bytes]]:
    """(name, bytes) of every archive member, sorted by name."""
    return [
        (m.name, blob(m.digest) if m.data is None else m.data)
        for m in archive_plan(image, ref_name, repo_tags)
    ]


@dataclass(frozen=True)
class Member:
    """One member of an archive: its bytes, or (``data`` None) the layer blob ``digest``."""

    name: str
    size: int
    data: bytes | None = None
    digest: str = ""


def archive_plan(image: Image, ref_name: str, repo_tags: Sequence[str]) -> list[Member]:
    """Every archive member, sorted by name; the layer blobs by digest and size only."""
    small = small_members(image, ref_name, repo_tags)
    members = [Member(name, len(data), data) for name, data in small.items()]
    members += [Member(blob_name(x.digest), x.size, None, x.digest) for x in image.layers]
    return sorted(members, key=lambda m: m.name)


# The tar format of the archives, as ``tarfile`` writes it (``tarfile.open(mode="w",
# format=GNU_FORMAT)`` + ``addfile``): one header block per member, its data padded to a
# block, then two empty blocks and padding to a whole record.
def tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.GNU_FORMAT, tarfile.ENCODING, "surrogateescape")


def tar_padding(size: int) -> bytes:
    return tarfile.NUL * (-size % tarfile.BLOCKSIZE)


def tar_end(offset: int) -> bytes:
    """The end of a tar whose members took ``offset`` bytes."""
    end = offset + 2 * tarfile.BLOCKSIZE
    return tarfile.NUL * (2 * tarfile.BLOCKSIZE + -end % tarfile.RECORDSIZE)


def write_tar(out: IO[bytes], members: Sequence[tuple[str, bytes]]) -> None:
    offset = 0
    for name, data in members:
        chunk = tar_header(name, len(data)) + data + tar_padding(len(data))
        out.write(chunk)
        offset += len(chunk)
    out.write(tar_end(offset))


def write_archive(fd: int, members: Sequence[Member], copy: BlobCopy) -> None:
    """The tar of ``members`` to the file open as ``fd``: the layer blobs by ``copy``."""
    offset = 0
    for m in members:
        head = tar_header(m.name, m.size)
        write_all(fd, head if m.data is None else head + m.data)
        if m.data is None:
            start = os.lseek(fd, 0, os.SEEK_CUR)
            copy(m.digest, fd)
            copied = os.lseek(fd, 0, os.SEEK_CUR) - start
            if copied != m.size:  # what the manifest says: a tar of other sizes is corrupt
                raise BadInput(
                    f"layer {m.digest}: {copied} bytes where its image names {m.size}; "
                    "run the build again"
                )
        write_all(fd, tar_padding(m.size))
        offset += len(head) + m.size + len(tar_padding(m.size))
    write_all(fd, tar_end(offset))


def copy_from(blob: BlobSource) -> BlobCopy:
    """A ``BlobCopy`` of blobs held in memory (an archive read back, a test's layers)."""
    return lambda digest, fd: write_all(fd, blob(digest))


@dataclass(frozen=True)
class ArchiveOut:
    """One archive to write: where, which image, and the names it is loaded under."""

    path: Path
    image: Image
    ref_name: str  # the OCI index's ref name
    repo_tags: tuple[str, ...]  # docker's manifest.json RepoTags


def write_archives(
    outs: Sequence[ArchiveOut], copy: BlobCopy, changed: Collection[Path] = frozenset()
) -> list[Path]:
    """Write every archive of ``outs`` that is not already current (or is in ``changed``:
    its file changed since a build wrote it), each to its spare (the
    archive before the current one, overwritten in place) or a new temporary file, then
    swap them all into place; the paths written. ``copy`` appends a layer blob's verified
    bytes to an open file (asked only for archives that are written: the cache's copy is
    in the kernel, without hashing a blob its stamp vouches for).

    Readers see each path's old archive or the whole new one; a failure leaves
    every old archive as it was and no temporary file behind.
    """
    for out in outs:  # what a killed build left, also when nothing is written now
        remove_stale(out.path.parent, out.path.name)
    stale = [
        o
        for o in outs
        if o.path in changed or not archive_is_current(o.path, o.image, o.ref_name, o.repo_tags)
    ]
    written: list[tuple[Path, Path]] = []
    opened: list[tuple[int, ArchiveOut]] = []
    try:
        for out in stale:
            fd, name = open_spare(out.path)
            written.append((name, out.path))
            opened.append((fd, out))
        # Side by side: each archive is mostly the kernel copying cached layers.
        with ThreadPoolExecutor(max(1, len(opened)), "archive") as pool:
            jobs = [pool.submit(_fill_archive, fd, out, copy) for fd, out in opened]
            opened = []  # each job closes its file
            for job in jobs:
                job.result()
        for name, final in written:
            replace_keeping(name, final)
        written = []
    finally:
        for fd, _ in opened:  # opened, not handed to a job (a later one failed to open)
            os.close(fd)
        for name, _ in written:
            with contextlib.suppress(FileNotFoundError):
                name.unlink()
    return [o.path for o in stale]


def _fill_archive(fd: int, out: ArchiveOut, copy: BlobCopy) -> None:
    """``out``'s archive written into the file open as ``fd`` (from its start), which this
    closes."""
    try:
        write_archive(fd, archive_plan(out.image, out.ref_name, out.repo_tags), copy)
        os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_CUR))  # a spare may have been longer
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Archive:
    """What an archive on disk holds, as read back (for inspect and checks)."""

    path: Path
    index: dict[str, Any]
    manifest: dict[str, Any]
    config: dict[str, Any]
    digest: str
    config_digest: str
    blobs: Mapping[str, bytes]

    def blob(self, digest: str) -> bytes:
        return self.blobs[blob_name(digest)]

    @property
    def image(self) -> Image:
        """The image value this archive holds (its exact config and manifest bytes)."""
        diff_ids = self.config["rootfs"]["diff_ids"]
        layers = tuple(
            LayerRef(layer["digest"], diff_id, layer["size"])
            for layer, diff_id in zip(self.manifest["layers"], diff_ids, strict=True)
        )
        return Image(self.blob(self.config_digest), self.blob(self.digest), layers)


def read_archive(path: Path) -> Archive:
    """Read an image archive and check every blob against its name; BadInput on any problem."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = {}
            for info in tar:
                if not info.isfile():
                    continue
                extracted = tar.extractfile(info)
                assert extracted is not None
                members[info.name] = extracted.read()
    except (OSError, tarfile.TarError) as exc:
        raise BadInput(f"{path}: not a readable image archive ({exc})") from exc

    def load(name: str) -> Any:
        if name not in members:
            raise BadInput(f"{path}: archive has no {name}; is it an OCI image archive?")
        return json.loads(members[name])

    for name, data in members.items():
        if name.startswith(BLOBS) and sha256_digest(data) != of_hex(name.rsplit("/", 1)[1]):
            raise BadInput(f"{path}: blob {name} does not match its digest: the archive is corrupt")
    index = load("index.json")
    try:
        digest = index["manifests"][0]["digest"]
    except (KeyError, IndexError, TypeError) as exc:
        raise BadInput(f"{path}: index.json names no manifest") from exc
    manifest = load(blob_name(digest))
    config_digest = manifest["config"]["digest"]
    return Archive(
        path=path,
        index=index,
        manifest=manifest,
        config=load(blob_name(config_digest)),
        digest=digest,
        config_digest=config_digest,
        blobs=members,
    )
