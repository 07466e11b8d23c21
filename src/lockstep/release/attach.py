"""SBOM and provenance as OCI artifacts that refer to their image, and cosign signatures.

Each artifact is an OCI image manifest with an ``artifactType``, the empty
config, one layer (the document) and ``subject`` = the image manifest. A
registry with the referrers API finds it from ``subject``; for one without it
(docker-registry 2.8) we also keep the *referrers tag scheme* of the OCI
distribution spec: the tag ``sha256-<hex of the subject>`` holds an index of
every referrer's descriptor, merged with what is already there.

Signatures (``--sign-key``) use the sigstore/cosign format that skopeo and
podman verify with a ``sigstoreSigned`` policy: the tag ``sha256-<hex>.sig``
holds a manifest whose layers are simple-signing payloads, each with its
base64 signature in the ``dev.cosignproject.cosign/signature`` annotation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lockstep.core.digests import canonical_json, hex_of, sha256_digest
from lockstep.core.errors import CheckFailed
from lockstep.oci import media
from lockstep.oci.artifact import artifact_manifest as oci_artifact_manifest
from lockstep.oci.artifact import descriptor, subject_descriptor
from lockstep.oci.client import PushStats, RegistryClient

log = logging.getLogger(__name__)

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
CREATED = "org.opencontainers.image.created"


@dataclass(frozen=True)
class Artifact:
    """One pushed manifest: its bytes and digest."""

    manifest: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)


def artifact_manifest(
    artifact_type: str, document: bytes, subject: bytes, created: str
) -> Artifact:
    """The manifest of a document (SBOM, provenance) that refers to the image ``subject``."""
    return Artifact(
        oci_artifact_manifest(
            artifact_type,
            [descriptor(artifact_type, document)],
            config=descriptor(media.EMPTY_MEDIA_TYPE, media.EMPTY_CONFIG),
            subject=subject_descriptor(subject),
            annotations={CREATED: created},
        )
    )


def referrers_tag(digest: str) -> str:
    """The referrers tag scheme's tag for ``digest``: ``sha256-<hex>``."""
    return "sha256-" + hex_of(digest)


def signature_tag(digest: str) -> str:
    """cosign's (and containers/image's) signature tag for ``digest``: ``sha256-<hex>.sig``."""
    return referrers_tag(digest) + ".sig"


def referrers_index(descriptors: Sequence[Mapping[str, Any]]) -> bytes:
    unique = {d["digest"]: dict(d) for d in descriptors}
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": media.INDEX_MEDIA_TYPE,
            "manifests": [unique[k] for k in sorted(unique)],
        }
    )


def get_optional(client: RegistryClient, name: str, reference: str, accept: str) -> bytes | None:
    """The manifest at ``name:reference``, or None if the registry has none."""
    resp = client.request(
        "GET",
        f"/v2/{name}/manifests/{reference}",
        scope=[client.scope(name, "pull")],
        headers={"Accept": accept},
    )
    if resp.status == 404:
        return None
    if resp.status != 200:
        raise client._unexpected("GET", f"manifest {name}:{reference}", resp)
    return resp.body


def push_artifact(
    client: RegistryClient,
    name: str,
    artifact: Artifact,
    blobs: Sequence[bytes],
    stats: PushStats,
) -> None:
    for blob in blobs:
        client.push_blob(name, sha256_digest(blob), blob, stats)
    client.put_manifest(
        name, artifact.digest, artifact.manifest, media.MANIFEST_MEDIA_TYPE, artifact.digest, stats
    )


def add_referrers(
    client: RegistryClient,
    name: str,
    subject: str,
    artifacts: Sequence[tuple[str, Artifact]],
    stats: PushStats,
) -> str:
    """Merge the artifacts into the ``sha256-<hex>`` referrers index; its digest."""
    tag = referrers_tag(subject)
    existing = get_optional(client, name, tag, media.INDEX_MEDIA_TYPE)
    descriptors: list[Mapping[str, Any]] = []
    if existing is not None:
        try:
            descriptors = list(json.loads(existing)["manifests"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckFailed(
                f"registry {client.host}: {name}:{tag} is not a referrers index; delete that tag"
            ) from exc
    for artifact_type, artifact in artifacts:
        manifest = json.loads(artifact.manifest)
        descriptors.append(
            descriptor(
                media.MANIFEST_MEDIA_TYPE,
                artifact.manifest,
                artifactType=artifact_type,
                annotations=manifest.get("annotations", {}),
            )
        )
    index = referrers_index(descriptors)
    digest = sha256_digest(index)
    client.put_manifest(name, tag, index, media.INDEX_MEDIA_TYPE, digest, stats)
    return digest


# -- cosign signatures -----------------------------------------------------------------


def simple_signing_payload(docker_reference: str, digest: str) -> bytes:
    """The payload cosign signs: the repository (no tag) and the manifest digest."""
    return json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": docker_reference},
                "image": {"docker-manifest-digest": digest},
                "type": SIGNATURE_TYPE,
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()


def signature_manifest(payloads: Sequence[tuple[bytes, str]]) -> tuple[bytes, bytes]:
    """(config, manifest) of a ``.sig`` image: one layer per (payload, base64 signature)."""
    return cosign_image(
        [(media.SIMPLE_SIGNING_MEDIA_TYPE, p, {SIGNATURE_ANNOTATION: s}) for p, s in payloads]
    )


def cosign_image(layers: Sequence[tuple[str, bytes, Mapping[str, str]]]) -> tuple[bytes, bytes]:
    """(config, manifest) of the image cosign keeps signatures (``.sig``) and attestations
    (``.att``) in: one layer per (media type, blob, annotations)."""
    config = canonical_json(
        {
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(b) for _, b, _ in layers]},
        }
    )
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": media.MANIFEST_MEDIA_TYPE,
            "config": descriptor(media.CONFIG_MEDIA_TYPE, config),
            "layers": [
                descriptor(media_type, blob, annotations=dict(annotations))
                for media_type, blob, annotations in layers
            ],
        }
    )
    return config, manifest


def read_signatures(client: RegistryClient, name: str, digest: str) -> list[tuple[bytes, str]]:
    """(payload, base64 signature) of every simple-signing layer at ``sha256-<hex>.sig``."""
    raw = get_optional(client, name, signature_tag(digest), media.MANIFEST_MEDIA_TYPE)
    if raw is None:
        return []
    out = []
    for layer in json.loads(raw).get("layers", []):
        if layer.get("mediaType") != media.SIMPLE_SIGNING_MEDIA_TYPE:
            continue
        signature = layer.get("annotations", {}).get(SIGNATURE_ANNOTATION)
        if not isinstance(signature, str):
            continue
        resp = client.request(
            "GET", f"/v2/{name}/blobs/{layer['digest']}", scope=[client.scope(name, "pull")]
        )
        if resp.status == 200 and sha256_digest(resp.body) == layer["digest"]:
            out.append((resp.body, signature))
    return out


def push_signature(
    client: RegistryClient,
    name: str,
    digest: str,
    payload: bytes,
    signature: str,
    stats: PushStats,
) -> str:
    """Add one signature of ``digest`` to its ``.sig`` tag (keeping others); the tag's digest."""
    existing = [
        (p, s) for p, s in read_signatures(client, name, digest) if p != payload or s == signature
    ]
    payloads = list({(p, s): None for p, s in [*existing, (payload, signature)]})
    config, manifest = signature_manifest(payloads)
    for blob in [config, *(p for p, _ in payloads)]:
        client.push_blob(name, sha256_digest(blob), blob, stats)
    manifest_digest = sha256_digest(manifest)
    client.put_manifest(
        name, signature_tag(digest), manifest, media.MANIFEST_MEDIA_TYPE, manifest_digest, stats
    )
    return manifest_digest


# -- cosign attestations (the legacy ``.att`` tag) ---------------------------------------

PREDICATE_ANNOTATION = "predicateType"


def attestation_tag(digest: str) -> str:
    """cosign's attestation tag for ``digest``: ``sha256-<hex>.att``."""
    return referrers_tag(digest) + ".att"


def push_attestation(
    client: RegistryClient,
    name: str,
    digest: str,
    envelope: bytes,
    predicate_type: str,
    stats: PushStats,
) -> str:
    """Put the DSSE ``envelope`` (JSON bytes) as the one layer of ``sha256-<hex>.att``, as
    ``cosign attest`` without the bundle format does; the tag's digest."""
    config, manifest = cosign_image(
        [(media.DSSE_MEDIA_TYPE, envelope, {PREDICATE_ANNOTATION: predicate_type})]
    )
    for blob in (config, envelope):
        client.push_blob(name, sha256_digest(blob), blob, stats)
    manifest_digest = sha256_digest(manifest)
    client.put_manifest(
        name, attestation_tag(digest), manifest, media.MANIFEST_MEDIA_TYPE, manifest_digest, stats
    )
    return manifest_digest


def read_attestations(client: RegistryClient, name: str, digest: str) -> list[tuple[str, bytes]]:
    """(predicate type, envelope bytes) of every DSSE layer at ``sha256-<hex>.att``."""
    raw = get_optional(client, name, attestation_tag(digest), media.MANIFEST_MEDIA_TYPE)
    out = []
    for layer in json.loads(raw).get("layers", []) if raw else []:
        if layer.get("mediaType") != media.DSSE_MEDIA_TYPE:
            continue
        resp = client.request(
            "GET", f"/v2/{name}/blobs/{layer['digest']}", scope=[client.scope(name, "pull")]
        )
        if resp.status == 200 and sha256_digest(resp.body) == layer["digest"]:
            predicate = layer.get("annotations", {}).get(PREDICATE_ANNOTATION, "")
            out.append((str(predicate), resp.body))
    return out
