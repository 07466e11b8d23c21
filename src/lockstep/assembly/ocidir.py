"""An OCI image layout directory: both images over one shared ``blobs/``, written incrementally.

``write_layout`` adds only the blobs the directory lacks (each written under a
temporary name and renamed into place), then names the images in ``index.json``
beside the names already there (earlier builds keep theirs), so a one-line
change adds the app and manifest layers, two configs and two
manifests, and rewrites nothing else — where the ``.tar`` archives are written
whole every time. Each image is named in the index by
``org.opencontainers.image.ref.name`` (``lockstep-worker:0.1.0-<id>``).
skopeo and podman read it as ``oci:DIR:REF``; ``lockstep load DIR`` loads one
image of it into Docker (``docker_archive``), which reads only archives. A build of
several platforms names each role's image index; ``read_image`` then picks one
platform's image of it (the host's unless told).
"""

from __future__ import annotations

import io
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from lockstep.assembly.oci import (
    REF_NAME,
    BlobCopy,
    Image,
    ImageIndex,
    LayerRef,
    archive_members,
    blob_name,
    index_json,
    write_tar,
)
from lockstep.core.atomic import open_atomic, write_bytes, write_if_changed
from lockstep.core.digests import canonical_json, sha256_digest
from lockstep.core.errors import BadInput
from lockstep.core.platforms import Platform, host
from lockstep.oci.media import INDEX_MEDIA_TYPE

LAYOUT = canonical_json({"imageLayoutVersion": "1.0.0"})


def write_layout(
    root: Path,
    images: Mapping[str, Image | ImageIndex],
    copy: BlobCopy,
    changed: Collection[Path] = frozenset(),
) -> list[str]:
    """Write ``images`` (ref name -> image, or image index) into the layout at ``root``; the
    digests of the blobs that were not there before (or were in ``changed``: their file
    changed since a build wrote it), in the order written. ``copy`` appends a layer's
    verified bytes to a file (the config and manifests are values)."""
    added: list[str] = []

    def put(digest: str, data: bytes | None = None) -> None:
        path = root / blob_name(digest)
        if path not in changed and path.exists() and path.stat().st_size > 0:
            return  # content-addressed: a present blob is the blob
        if data is None:  # a layer: the cache's verified bytes, copied
            with open_atomic(path) as out:
                out.flush()
                copy(digest, out.fileno())
        else:
            write_bytes(path, data)
        added.append(digest)

    for named in images.values():
        for image in named.images if isinstance(named, ImageIndex) else (named,):
            for layer in image.layers:
                put(layer.digest)
            put(image.config_digest, image.config)
            put(image.digest, image.manifest)
        if isinstance(named, ImageIndex):
            put(named.digest, named.manifest)
    # Unchanged files are left as they are: a no-op build's record vouches for their stat.
    write_if_changed(root / "oci-layout", LAYOUT)
    write_if_changed(root / "index.json", _merged_index(root, images))
    return added


def _merged_index(root: Path, images: Mapping[str, Image | ImageIndex]) -> bytes:
    """``index.json`` with ``images`` added: the entries of other names already there (earlier
    builds, other tools) are kept; an entry of the same name is replaced."""
    try:
        old = json.loads((root / "index.json").read_bytes())
        kept = [m for m in old.get("manifests", []) if m.get("annotations", {}).get(REF_NAME)
                not in images]  # fmt: skip
    except FileNotFoundError:
        kept = []
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise BadInput(f"{root}/index.json: not an OCI index ({exc}); use another --layout "
                       "directory, or remove this one") from exc  # fmt: skip
    new = json.loads(index_json(images))
    new["manifests"] = sorted(
        [*kept, *new["manifests"]],
        key=lambda m: str(m.get("annotations", {}).get(REF_NAME, "")),
    )
    return canonical_json(new)


@dataclass(frozen=True)
class LayoutImage:
    """One image of a layout directory, read back and checked: its ref name and value."""

    ref: str
    image: Image
    role: str | None


def _blob(root: Path, digest: str) -> bytes:
    try:
        data = (root / blob_name(digest)).read_bytes()
    except OSError as exc:
        raise BadInput(f"{root}: blob {digest} is missing ({exc.strerror})") from exc
    if sha256_digest(data) != digest:
        raise BadInput(f"{root}: blob {digest} does not match its digest: the layout is corrupt")
    return data


def _platform_manifest(root: Path, ref: str, digest: str, platform: Platform) -> str:
    """The digest of ``platform``'s manifest in the image index ``digest`` (named ``ref``)."""
    index = json.loads(_blob(root, digest))
    offered = []
    for m in index.get("manifests", []):
        found = m.get("platform", {})
        offered.append(f"{found.get('os')}/{found.get('architecture')}")
        if offered[-1] == platform.name:
            return str(m["digest"])
    raise BadInput(
        f"{root}: {ref} has no {platform.name} image (it has {', '.join(offered)}); "
        "name one of those with --platform"
    )


def read_image(
    root: Path, pick: str | None = None, platform: Platform | None = None
) -> LayoutImage:
    """The image named ``pick`` (a ref name, or a role: ``worker``), or the only one; of an
    image index, its ``platform``'s image (default: the host's), named ``<ref>-<arch>``
    as its archive is. BadInput naming the
    directory and the choices for anything amiss."""
    try:
        index = json.loads((root / "index.json").read_bytes())
        entries = [
            (m["annotations"][REF_NAME], m["digest"], m.get("mediaType"))
            for m in index["manifests"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{root}: not an OCI layout written by lockstep ({exc})") from exc
    found = []
    for ref_, named, media_type in entries:
        ref, digest = ref_, named
        if media_type == INDEX_MEDIA_TYPE:  # one platform's image, named as its archive is
            want = platform or host()
            if want is None:
                raise BadInput(f"{root}: {ref} is an image index; name a platform to load")
            digest = _platform_manifest(root, ref, named, want)
            ref = f"{ref}-{want.architecture}"
        raw = _blob(root, digest)
        manifest = json.loads(raw)
        config_digest = manifest["config"]["digest"]
        config_raw = _blob(root, config_digest)
        config = json.loads(config_raw)
        role = config.get("config", {}).get("Labels", {}).get("io.lockstep.role")
        if pick is None or pick in (ref, role):
            layers = tuple(
                LayerRef(layer["digest"], diff_id, layer["size"])
                for layer, diff_id in zip(
                    manifest["layers"], config["rootfs"]["diff_ids"], strict=True
                )
            )
            found.append(LayoutImage(ref, Image(config_raw, raw, layers), role))
    if len(found) != 1:
        what = f"no image {pick!r}" if not found else f"{len(found)} images"
        names = ", ".join(ref for ref, _, _ in entries)
        raise BadInput(f"{root}: {what}; name one of: {names} (or its role)")
    return found[0]


def docker_archive(root: Path, found: LayoutImage) -> bytes:
    """A ``docker load`` archive of one image of the layout: our archive format, our blobs."""
    out = io.BytesIO()
    members = archive_members(found.image, lambda d: _blob(root, d), found.ref, [found.ref])
    write_tar(out, members)
    return out.getvalue()
