"""OCI config, manifest and index as values, and the one-file archive.

An image is computed as data first (every digest taken once, from the exact
bytes that will be written), then written. The archive is a tar of regular
files — GNU format, uid/gid 0, sorted, no directory entries — holding the
OCI layout (``oci-layout``, ``index.json``, ``blobs/sha256/…``) and a docker
``manifest.json``, so ``docker load`` and ``skopeo … oci-archive:`` both
read it and keep our digests (DESIGN.md §6).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lockstep.atomic import write_bytes
from lockstep.build.layers import LAYER_MEDIA_TYPE, Layer, sha256
from lockstep.errors import BadInput
from lockstep.manifest import canonical_json

CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
EPOCH = "1970-01-01T00:00:00Z"


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
        return sha256(self.config)

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def image_config(
    *,
    layers: Sequence[LayerRef],
    entrypoint: Sequence[str],
    cmd: Sequence[str] = (),
    env: Mapping[str, str],
    labels: Mapping[str, str],
    user: str = "65532:65532",
    workdir: str = "/tmp",
) -> bytes:
    """The image config, as canonical JSON."""
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
            "architecture": "amd64",
            "os": "linux",
            "created": EPOCH,
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [{"created": EPOCH, "created_by": "lockstep build"} for _ in layers],
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
                "digest": sha256(config),
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
    layers: Sequence[LayerRef],
    entrypoint: Sequence[str],
    cmd: Sequence[str] = (),
    env: Mapping[str, str],
    labels: Mapping[str, str],
) -> Image:
    config = image_config(layers=layers, entrypoint=entrypoint, cmd=cmd, env=env, labels=labels)
    return Image(
        config=config, manifest=image_manifest(config, layers, labels), layers=tuple(layers)
    )


def index_json(image: Image, ref_name: str) -> bytes:
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [
                {
                    "mediaType": MANIFEST_MEDIA_TYPE,
                    "digest": image.digest,
                    "size": len(image.manifest),
                    "annotations": {REF_NAME: ref_name},
                }
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


def blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def small_members(image: Image, ref_name: str, repo_tags: Sequence[str]) -> dict[str, bytes]:
    """Every archive member except the layer blobs."""
    return {
        "oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
        "index.json": index_json(image, ref_name),
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
    image: Image, blobs: Mapping[str, bytes], ref_name: str, repo_tags: Sequence[str]
) -> list[tuple[str, bytes]]:
    """(name, bytes) of every archive member, sorted by name."""
    members = small_members(image, ref_name, repo_tags)
    for layer in image.layers:
        members[blob_name(layer.digest)] = blobs[layer.digest]
    return sorted(members.items())


def write_tar(out: IO[bytes], members: Sequence[tuple[str, bytes]]) -> None:
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))


def archive_bytes(
    image: Image, blobs: Mapping[str, bytes], ref_name: str, repo_tags: Sequence[str]
) -> bytes:
    buf = io.BytesIO()
    write_tar(buf, archive_members(image, blobs, ref_name, repo_tags))
    return buf.getvalue()


def write_archive(
    path: Path, image: Image, blobs: Mapping[str, bytes], ref_name: str, repo_tags: Sequence[str]
) -> None:
    """Write the archive atomically to ``path``."""
    write_bytes(path, archive_bytes(image, blobs, ref_name, repo_tags))


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
        if name.startswith("blobs/sha256/") and sha256(data) != "sha256:" + name.rsplit("/", 1)[1]:
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
