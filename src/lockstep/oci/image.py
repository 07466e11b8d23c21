"""An image read where it lives — a registry or an OCI image archive — as each platform's
config and the files of its top layer, every byte checked against its digest.

This is how a command that has no checkout reads what an image says about itself
(``bundle lock --image``). An index (a multi-platform image) gives every entry; which
platform an image is for is its config's ``os``/``architecture`` (``variant``), the
image spec's own fields, and an index entry's ``platform`` must say the same.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lockstep.core.digests import hex_of, is_digest, sha256_digest
from lockstep.core.errors import BadInput, CheckFailed
from lockstep.oci.auth import credentials_for
from lockstep.oci.client import RegistryClient
from lockstep.oci.media import (
    DOCKER_INDEX_MEDIA_TYPE,
    INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPES,
)
from lockstep.oci.reference import parse_pinned

MANIFEST_MAX = 4 << 20  # an image manifest, index or config
TOP_LAYER_MAX = 64 << 20  # the top layer's compressed bytes
INDEX_TYPES = (INDEX_MEDIA_TYPE, DOCKER_INDEX_MEDIA_TYPE)


class Blobs(Protocol):
    """Where an image's manifests and blobs are read from, by digest (bytes unchecked)."""

    where: str

    def manifest(self, digest: str) -> bytes: ...

    def blob(self, digest: str, max_bytes: int) -> bytes: ...


@dataclass(frozen=True)
class ImageView:
    """One platform's image: its manifest digest, config and top layer, all checked."""

    where: str  # the reference or archive it was read from
    digest: str  # the image manifest's digest
    config: Mapping[str, Any]
    top_layer: bytes  # compressed, as stored

    @property
    def platform(self) -> str:
        """``os/architecture[/variant]`` from the config."""
        return platform_of(self.config)

    def top_files(self, paths: Iterable[str]) -> dict[str, bytes]:
        """The regular files at ``paths`` (absolute) in the top layer; absent ones left out."""
        wanted = {p.lstrip("/") for p in paths}
        found: dict[str, bytes] = {}
        try:
            raw = gzip.decompress(self.top_layer)
            with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
                for info in tar:
                    name = info.name.removeprefix("./")
                    if name in wanted and info.isfile():
                        f = tar.extractfile(info)
                        assert f is not None
                        found["/" + name] = f.read()
        except (OSError, EOFError, tarfile.TarError) as exc:
            raise BadInput(f"{self.where}: its top layer is not a gzip'd tar ({exc})") from exc
        return found


def platform_of(entry: Mapping[str, Any]) -> str:
    """``os/architecture[/variant]`` of a config or an index entry's ``platform``."""
    parts = [str(entry.get("os", "?")), str(entry.get("architecture", "?"))]
    if entry.get("variant"):
        parts.append(str(entry["variant"]))
    return "/".join(parts)


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise BadInput(f"{what} is not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise BadInput(f"{what} is not a JSON object")
    return value


def _checked_manifest(blobs: Blobs, digest: str) -> dict[str, Any]:
    data = blobs.manifest(digest)
    if len(data) > MANIFEST_MAX or sha256_digest(data) != digest:
        raise CheckFailed(f"{blobs.where}: the manifest {digest} is served with other bytes")
    return _json(data, f"{blobs.where}: manifest {digest}")


def read_images(blobs: Blobs, digest: str, depth: int = 2) -> list[ImageView]:
    """Every image ``digest`` names in ``blobs``: itself, or each entry of an index (an
    index of indexes at most: an archive's ``index.json`` holds one). An entry's
    ``platform`` must be its config's."""
    manifest = _checked_manifest(blobs, digest)
    if manifest.get("mediaType") not in INDEX_TYPES and "manifests" not in manifest:
        return [_image(blobs, digest, manifest)]
    return _entries(blobs, manifest, f"{blobs.where}@{digest}", depth)


def _entries(blobs: Blobs, index: Mapping[str, Any], where: str, depth: int) -> list[ImageView]:
    """The images of ``index``'s entries, each checked against the platform it is listed for."""
    entries = [e for e in index.get("manifests") or [] if isinstance(e, dict)]
    if depth == 0 or not entries or not all(is_digest(e.get("digest")) for e in entries):
        raise BadInput(f"{where} is not an index of images")
    found = []
    for entry in entries:
        views = read_images(blobs, str(entry["digest"]), depth - 1)
        said = platform_of(entry["platform"]) if isinstance(entry.get("platform"), dict) else None
        for view in views:
            if said is not None and view.platform != said:
                raise CheckFailed(
                    f"{blobs.where}: the index lists {view.digest} for {said}, but its "
                    f"config says {view.platform}; the image is corrupt"
                )
        found += views
    return found


def _image(blobs: Blobs, digest: str, manifest: Mapping[str, Any]) -> ImageView:
    try:
        config_digest = str(manifest["config"]["digest"])
        top_digest = str(manifest["layers"][-1]["digest"])
    except (KeyError, IndexError, TypeError) as exc:
        raise BadInput(f"{blobs.where}: {digest} is not an image manifest") from exc
    config = _json(_checked_blob(blobs, config_digest, MANIFEST_MAX), f"{blobs.where}: its config")
    return ImageView(blobs.where, digest, config, _checked_blob(blobs, top_digest, TOP_LAYER_MAX))


def _checked_blob(blobs: Blobs, digest: str, max_bytes: int) -> bytes:
    data = blobs.blob(digest, max_bytes)
    if sha256_digest(data) != digest:
        raise CheckFailed(f"{blobs.where}: blob {digest} has other bytes; it is corrupt")
    return data


class ArchiveBlobs:
    """An OCI image archive (``lockstep build``'s ``.tar``): blobs read by name on demand."""

    def __init__(self, path: Path) -> None:
        self.where = str(path)
        self.path = path
        try:
            with tarfile.open(path, mode="r:") as tar:
                self.members = {m.name: m for m in tar.getmembers() if m.isfile()}
        except (OSError, tarfile.TarError) as exc:
            raise BadInput(f"{path}: not a readable image archive ({exc})") from exc

    def read(self, name: str, max_bytes: int) -> bytes:
        info = self.members.get(name)
        if info is None:
            raise BadInput(f"{self.path}: the archive has no {name}; is it an OCI image archive?")
        if info.size > max_bytes:
            raise BadInput(f"{self.path}: {name} is {info.size} bytes, more than {max_bytes}")
        with tarfile.open(self.path, mode="r:") as tar:
            f = tar.extractfile(info)
            assert f is not None
            return f.read()

    def manifest(self, digest: str) -> bytes:
        return self.read(f"blobs/sha256/{hex_of(digest)}", MANIFEST_MAX)

    def blob(self, digest: str, max_bytes: int) -> bytes:
        return self.read(f"blobs/sha256/{hex_of(digest)}", max_bytes)

    def index(self) -> dict[str, Any]:
        return _json(self.read("index.json", MANIFEST_MAX), f"{self.path}: index.json")


class RegistryBlobs:
    """One repository of a registry, read-only."""

    def __init__(self, client: RegistryClient, name: str) -> None:
        self.client = client
        self.name = name
        self.where = f"{client.host}/{name}"

    def manifest(self, digest: str) -> bytes:
        return self.client.get_manifest(
            self.name, digest, accept=(*MANIFEST_MEDIA_TYPES, *INDEX_TYPES)
        )

    def blob(self, digest: str, max_bytes: int) -> bytes:
        return self.client.get_blob(self.name, digest, max_bytes)


def images_from_archive(path: Path) -> list[ImageView]:
    """The images in the archive at ``path`` (one per platform it holds)."""
    blobs = ArchiveBlobs(path)
    return _entries(blobs, blobs.index(), f"{path}: index.json", 2)


def images_from_registry(reference: str, plain_http: bool = False) -> list[ImageView]:
    """The images ``HOST/REPO@sha256:…`` names: one, or each platform's of an index."""
    pinned = parse_pinned(reference)
    client = RegistryClient(pinned.host, credentials_for(pinned.host), plain_http=plain_http)
    try:
        return read_images(RegistryBlobs(client, pinned.name), pinned.digest)
    finally:
        client.close()
