"""OCI artifacts: descriptors and the image manifest an artifact is (empty config).

An artifact is an image manifest with an ``artifactType``, the empty config
(``{}``) and its documents as layers; with a ``subject`` it refers to another
manifest (SBOM, provenance). Bytes are canonical JSON, so one artifact has one
digest. Used by release's attachments and by job bundles.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from lockstep.core.digests import canonical_json, sha256_digest
from lockstep.oci.media import EMPTY_CONFIG, EMPTY_MEDIA_TYPE, MANIFEST_MEDIA_TYPE


def descriptor(media_type: str, blob: bytes, **extra: Any) -> dict[str, Any]:
    """The descriptor of ``blob``: media type, sha256 digest, size, and ``extra`` keys."""
    return {"mediaType": media_type, "digest": sha256_digest(blob), "size": len(blob), **extra}


def subject_descriptor(manifest: bytes) -> dict[str, Any]:
    """The descriptor of the manifest ``manifest`` as a ``subject``: an image's or an image
    index's, by the ``mediaType`` it declares (an image manifest's if it names none)."""
    try:
        declared = json.loads(manifest).get("mediaType")
    except (ValueError, AttributeError):
        declared = None
    return descriptor(declared if isinstance(declared, str) else MANIFEST_MEDIA_TYPE, manifest)


def empty_config() -> dict[str, Any]:
    """The image spec's empty descriptor, its two bytes inline (``data``)."""
    return descriptor(EMPTY_MEDIA_TYPE, EMPTY_CONFIG, data="e30=")


def artifact_manifest(
    artifact_type: str,
    layers: Sequence[Mapping[str, Any]],
    *,
    config: Mapping[str, Any] | None = None,
    subject: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> bytes:
    """An artifact's manifest bytes (canonical JSON); the config is the empty one unless
    given."""
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": artifact_type,
        "config": dict(config) if config is not None else empty_config(),
        "layers": [dict(d) for d in layers],
    }
    if subject is not None:
        manifest["subject"] = dict(subject)
    if annotations:
        manifest["annotations"] = dict(annotations)
    return canonical_json(manifest)
