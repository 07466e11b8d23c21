"""A job bundle as an OCI artifact: its format, shared by the runner and the workers.

One image manifest (``application/vnd.oci.image.manifest.v1+json``) whose
``artifactType`` is ``application/vnd.lockstep.bundle.v1+json``; the config is
the OCI empty descriptor (``{}``), so the manifest's digest is decided by its
layers alone and names the bundle (``HOST/REPO@sha256:…``). Layers, in order:

- the code: ``application/vnd.lockstep.bundle.code.v1.tar``, a deterministic
  tar of every file of the bundle (``code_tar``), the lock included;
- the lock, if the bundle has one: ``application/vnd.lockstep.bundle.lock.v1+json``,
  the same bytes as the tar's ``lockstep.lock.json`` (so a reader sees the
  wheels without unpacking the code);
- one ``application/vnd.lockstep.wheel.v1+zip`` per locked wheel, whose digest
  is the wheel's own sha256: bundles that share a wheel share its blob, and a
  re-push after a code change uploads only the code (and the manifest);
- pushed with ``--prebuilt``, the environment as one layer per platform and Python
  (``application/vnd.lockstep.bundle.env.v1.tar+gzip``, ``bundles/prebuilt.py``),
  annotated ``io.lockstep.env.platform`` and ``io.lockstep.env.tag``: a worker of that
  platform and tag pulls it instead of the wheels (which stay, for the others).

The manifest's annotations carry the bundle's tree digest
(``io.lockstep.bundle.digest``), which the worker checks again from the files.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from typing import Any

from lockstep.core.digests import TreeFile, is_digest, sha256_digest
from lockstep.oci.artifact import artifact_manifest, empty_config
from lockstep.oci.media import (
    BUNDLE_ARTIFACT_TYPE,
    BUNDLE_CODE_MEDIA_TYPE,
    BUNDLE_ENV_MEDIA_TYPE,
    BUNDLE_LOCK_MEDIA_TYPE,
    EMPTY_CONFIG,
    EMPTY_MEDIA_TYPE,
    WHEEL_MEDIA_TYPE,
)
from lockstep.oci.reference import Pinned, ReferenceRefused, parse_reference

DIGEST_ANNOTATION = "io.lockstep.bundle.digest"
TITLE_ANNOTATION = "org.opencontainers.image.title"
PLATFORM_ANNOTATION = "io.lockstep.env.platform"
TAG_ANNOTATION = "io.lockstep.env.tag"
CODE_TITLE = "bundle.tar"
LOCK_TITLE = "lockstep.lock.json"
MAX_MANIFEST_BYTES = 4 << 20
MAX_CODE_BYTES = 80 << 20  # the 64 MiB bundle limit plus tar headers


class ArtifactRefused(ValueError):
    """Not a lockstep bundle artifact, or one that breaks its own format."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    title: str
    platform: str = ""  # an environment layer's: the platform and Python tag it is for
    tag: str = ""

    def to_json(self) -> dict[str, Any]:
        annotations = {TITLE_ANNOTATION: self.title}
        if self.platform:
            annotations |= {PLATFORM_ANNOTATION: self.platform, TAG_ANNOTATION: self.tag}
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
            "annotations": annotations,
        }


@dataclass(frozen=True)
class Artifact:
    """A bundle artifact's manifest, read: the tree digest and its blobs."""

    digest: str  # the bundle's tree digest
    code: Descriptor
    lock: Descriptor | None
    wheels: tuple[Descriptor, ...]
    envs: tuple[Descriptor, ...] = ()  # prebuilt environment layers

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        config = Descriptor(EMPTY_MEDIA_TYPE, sha256_digest(EMPTY_CONFIG), 2, "config")
        lock = (self.lock,) if self.lock else ()
        return (config, self.code, *lock, *self.wheels, *self.envs)

    def env_for(self, platform: str, tag: str) -> Descriptor | None:
        """The prebuilt environment layer for ``platform`` and Python ``tag``, if any."""
        return next((d for d in self.envs if (d.platform, d.tag) == (platform, tag)), None)

    @property
    def size(self) -> int:
        return sum(d.size for d in self.blobs)


def parse_bundle_reference(text: str) -> Pinned:
    """A bundle's ``HOST[:PORT]/REPO@sha256:<64 hex>``; ``ReferenceRefused`` saying how to
    pin it."""
    try:
        return parse_reference(text)
    except ReferenceRefused as exc:
        raise ReferenceRefused(
            f"bundle reference {text!r}: {exc}; a bundle is named by digest only; pin it as "
            "HOST/REPO@sha256:… (`lockstep bundle push DIR --registry HOST/REPO` prints it)"
        ) from exc


def code_tar(files: list[TreeFile] | tuple[TreeFile, ...]) -> bytes:
    """A tar of ``files`` whose bytes depend only on their paths, exec bits and contents:
    regular files only, sorted, no directory entries, uid/gid 0, no owner names, mtime 0,
    mode 0644 or 0755, GNU format."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for f in sorted(files, key=lambda f: f.path):
            info = tarfile.TarInfo(f.path)
            info.size = len(f.data)
            info.mode = 0o755 if f.executable else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(f.data))
    return out.getvalue()


def read_code_tar(data: bytes) -> list[TreeFile]:
    """The files of a code tar; ``ArtifactRefused`` for anything but plain, relative,
    distinct regular files. Nothing is written anywhere."""
    files: dict[str, TreeFile] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                name = member.name
                if (
                    not member.isreg()
                    or not name
                    or name.startswith("/")
                    or "\\" in name
                    or "\0" in name
                    or any(p in ("", ".", "..") for p in name.split("/"))
                ):
                    raise ArtifactRefused(
                        f"the bundle's code holds {name!r}, not a plain relative file"
                    )
                if name in files:
                    raise ArtifactRefused(f"the bundle's code holds {name!r} twice")
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file
                files[name] = TreeFile(name, bool(member.mode & 0o100), handle.read())
    except tarfile.TarError as exc:
        raise ArtifactRefused(f"the bundle's code is not a tar ({exc})") from exc
    return sorted(files.values(), key=lambda f: f.path)


def build_manifest(
    tree: str,
    code: Descriptor,
    lock: Descriptor | None,
    wheels: list[Descriptor],
    envs: list[Descriptor] | None = None,
) -> bytes:
    """The artifact manifest's bytes (canonical JSON, so one bundle has one digest)."""
    layers = [code, *((lock,) if lock else ()), *sorted(wheels, key=lambda d: d.title)]
    layers += sorted(envs or [], key=lambda d: (d.platform, d.tag))
    return artifact_manifest(
        BUNDLE_ARTIFACT_TYPE,
        [d.to_json() for d in layers],
        config=empty_config(),
        annotations={DIGEST_ANNOTATION: tree},
    )


def _descriptor(raw: Any, what: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise ArtifactRefused(f"{what} is not a descriptor")
    media, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    notes = raw.get("annotations") or {}
    title = notes.get(TITLE_ANNOTATION, "") if isinstance(notes, dict) else None
    platform = notes.get(PLATFORM_ANNOTATION, "") if isinstance(notes, dict) else None
    tag = notes.get(TAG_ANNOTATION, "") if isinstance(notes, dict) else None
    if (
        not isinstance(media, str)
        or not isinstance(digest, str)
        or not is_digest(digest)
        or not isinstance(size, int)
        or isinstance(size, bool)
        or size < 0
        or not isinstance(title, str)
        or not isinstance(platform, str)
        or not isinstance(tag, str)
    ):
        raise ArtifactRefused(f"{what} has no valid mediaType, sha256 digest and size")
    return Descriptor(media, digest, size, title, platform, tag)


def parse_manifest(data: bytes) -> Artifact:
    """Read a bundle artifact's manifest; ``ArtifactRefused`` if it is not one."""
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise ArtifactRefused(f"the manifest is not JSON ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("artifactType") != BUNDLE_ARTIFACT_TYPE:
        found = raw.get("artifactType") if isinstance(raw, dict) else None
        raise ArtifactRefused(
            f"it is not a lockstep bundle (artifactType {found!r}, not {BUNDLE_ARTIFACT_TYPE!r}); "
            "push the bundle with `lockstep bundle push`"
        )
    tree = (raw.get("annotations") or {}).get(DIGEST_ANNOTATION)
    if not isinstance(tree, str) or not is_digest(tree):
        raise ArtifactRefused(f"the manifest has no {DIGEST_ANNOTATION} annotation")
    layers = raw.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ArtifactRefused("the manifest has no layers")
    descs = [_descriptor(layer, f"layer {i}") for i, layer in enumerate(layers)]
    codes = [d for d in descs if d.media_type == BUNDLE_CODE_MEDIA_TYPE]
    locks = [d for d in descs if d.media_type == BUNDLE_LOCK_MEDIA_TYPE]
    wheels = [d for d in descs if d.media_type == WHEEL_MEDIA_TYPE]
    envs = [d for d in descs if d.media_type == BUNDLE_ENV_MEDIA_TYPE]
    if (
        len(codes) != 1
        or len(locks) > 1
        or len(codes) + len(locks) + len(wheels) + len(envs) != len(descs)
        or any(not d.platform or not d.tag for d in envs)
        or len({(d.platform, d.tag) for d in envs}) != len(envs)
        or (envs and not locks)
    ):
        raise ArtifactRefused(
            "the manifest must have one code layer, at most one lock layer, wheel layers "
            "and at most one environment layer per platform and Python tag"
        )
    if codes[0].size > MAX_CODE_BYTES:
        raise ArtifactRefused(f"its code is {codes[0].size} bytes, over {MAX_CODE_BYTES}")
    return Artifact(tree, codes[0], locks[0] if locks else None, tuple(wheels), tuple(envs))
