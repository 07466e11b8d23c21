"""Signing one released role: its cosign signatures, Sigstore bundles and attestations.

With the release key, for each platform's image and each artifact attached to it
(SBOM, provenance): a cosign signature at ``sha256-<hex>.sig`` (``release.attach``)
and a Sigstore bundle referring to it (``release.sigstore_bundle``); for the image
the provenance statement in a signed DSSE envelope (``release.dsse``), as a bundle
and at ``sha256-<hex>.att``; and the role's image index, the digest deployments pin,
signed in both forms too (what ``cosign sign --recursive`` does to an index).
docs/design.md §4.12 is the contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lockstep.assembly import provenance
from lockstep.core.digests import canonical_json, sha256_digest
from lockstep.oci.client import PushStats, RegistryClient
from lockstep.oci.media import EMPTY_CONFIG
from lockstep.release import attach, dsse, signing
from lockstep.release.sigstore_bundle import (
    BUNDLE_MEDIA_TYPE,
    SIGN_PREDICATE_TYPE,
    bundle,
    bundle_artifact,
    sign_statement,
)


@dataclass(frozen=True)
class Attached:
    """One bundle to push: the digest of the manifest it signs, its artifact and its bytes."""

    subject: str
    artifact: attach.Artifact
    data: bytes


def bundles_of(
    private_key: Any,
    repository: str,
    image_manifest: bytes,
    artifacts: Mapping[str, attach.Artifact],
    provenance_statement: bytes,
    provenance_predicate: str,
    created: str,
) -> dict[str, Attached]:
    """The bundles of one released image, by record field: ``bundle`` (the image signed),
    ``<kind>_bundle`` (each attached artifact — SBOM, provenance — signed) and
    ``attestation`` (the provenance statement itself in a signed envelope, for the image)."""
    image = sha256_digest(image_manifest)
    signed = {"bundle": (image, image_manifest)}
    signed.update({f"{kind}_bundle": (a.digest, a.manifest) for kind, a in artifacts.items()})
    out = {}
    for field, (digest, manifest) in signed.items():
        data = bundle(sign_statement(repository, digest), private_key)
        out[field] = Attached(
            digest, bundle_artifact(data, manifest, SIGN_PREDICATE_TYPE, created), data
        )
    data = bundle(provenance_statement, private_key)
    out["attestation"] = Attached(
        image, bundle_artifact(data, image_manifest, provenance_predicate, created), data
    )
    return out


@dataclass(frozen=True)
class Signed:
    """What signing one image pushed: the release record's fields (their manifest
    digests) and the bundles to list in the image's own referrers index."""

    fields: Mapping[str, str]
    image_referrers: tuple[tuple[str, attach.Artifact], ...]


UNSIGNED = Signed({}, ())


def sign_image(
    client: RegistryClient,
    name: str,
    image_manifest: bytes,
    artifacts: Mapping[str, attach.Artifact],
    provenance_statement: bytes,
    private_key: Any,
    created: str,
    stats: PushStats,
) -> Signed:
    """Sign ``name``'s image and its ``artifacts`` (by kind) with ``private_key``, in every
    form, and attest ``provenance_statement``; the referrers indexes of the artifacts are
    updated here, the image's is the caller's (it lists the artifacts too)."""
    reference = f"{client.host}/{name}"
    image = sha256_digest(image_manifest)
    fields: dict[str, str] = {}
    referrers: dict[str, list[tuple[str, attach.Artifact]]] = {}
    bundles = bundles_of(
        private_key,
        reference,
        image_manifest,
        artifacts,
        provenance_statement,
        provenance.PREDICATE_TYPE,
        created,
    )
    for field_name, b in sorted(bundles.items()):
        attach.push_artifact(client, name, b.artifact, [EMPTY_CONFIG, b.data], stats)
        referrers.setdefault(b.subject, []).append((BUNDLE_MEDIA_TYPE, b.artifact))
        fields[field_name] = b.artifact.digest
    for subject, listed in sorted(referrers.items()):
        if subject != image:
            attach.add_referrers(client, name, subject, listed, stats)
    signed = {"signature": image}
    signed.update({f"{kind}_signature": a.digest for kind, a in artifacts.items()})
    for field_name, digest in sorted(signed.items()):
        payload = attach.simple_signing_payload(reference, digest)
        fields[field_name] = attach.push_signature(
            client, name, digest, payload, signing.sign(private_key, payload), stats
        )
    fields["legacy_attestation"] = attach.push_attestation(
        client,
        name,
        image,
        canonical_json(dsse.envelope(provenance_statement, private_key)),
        provenance.PREDICATE_TYPE,
        stats,
    )
    return Signed(fields, tuple(referrers.get(image, [])))


def sign_index(
    client: RegistryClient,
    name: str,
    index_manifest: bytes,
    private_key: Any,
    created: str,
    stats: PushStats,
) -> Signed:
    """Sign ``name``'s image index with ``private_key``: a cosign signature (``signature``)
    and a Sigstore bundle (``bundle``) whose subject is the index; the caller lists the
    bundle in the index's referrers index."""
    reference = f"{client.host}/{name}"
    index = sha256_digest(index_manifest)
    data = bundle(sign_statement(reference, index), private_key)
    artifact = bundle_artifact(data, index_manifest, SIGN_PREDICATE_TYPE, created)
    attach.push_artifact(client, name, artifact, [EMPTY_CONFIG, data], stats)
    payload = attach.simple_signing_payload(reference, index)
    signature = attach.push_signature(
        client, name, index, payload, signing.sign(private_key, payload), stats
    )
    return Signed(
        {"bundle": artifact.digest, "signature": signature},
        ((BUNDLE_MEDIA_TYPE, artifact),),
    )
