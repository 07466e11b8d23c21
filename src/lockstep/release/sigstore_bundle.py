"""Sigstore bundles (v0.3, key-based, offline) attached to what they sign, as cosign 3 does.

A bundle is JSON: ``mediaType`` ``application/vnd.dev.sigstore.bundle.v0.3+json``,
``verificationMaterial`` = ``{"publicKey": {"hint": …}, "tlogEntries": []}`` (a key
the user holds, no certificate, no transparency log: the signatures are made
offline) and a ``dsseEnvelope`` (``release.dsse``) around an in-toto statement:

- an **image signature** (cosign 3's ``cosign sign``): predicate type
  ``https://sigstore.dev/cosign/sign/v1``, an empty predicate, one subject = the
  signed manifest (its repository and digest);
- an **attestation** (``cosign attest``): the SLSA provenance statement itself,
  whose subjects are the images.

Each bundle is pushed as an OCI artifact (cosign's BUNDLE_SPEC): ``artifactType``
and its one layer of the bundle media type, the empty config, ``subject`` = the
signed manifest, annotations ``dev.sigstore.bundle.content`` (``dsse-envelope``),
``dev.sigstore.bundle.predicateType`` and ``org.opencontainers.image.created``,
and listed in the subject's ``sha256-<hex>`` referrers index (``release.attach``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lockstep.core.digests import canonical_json, hex_of, sha256_digest
from lockstep.oci import media
from lockstep.oci.artifact import artifact_manifest, descriptor, subject_descriptor
from lockstep.oci.client import RegistryClient
from lockstep.release import attach, dsse

BUNDLE_MEDIA_TYPE = media.SIGSTORE_BUNDLE_MEDIA_TYPE
SIGN_PREDICATE_TYPE = "https://sigstore.dev/cosign/sign/v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
CONTENT = "dev.sigstore.bundle.content"
PREDICATE = "dev.sigstore.bundle.predicateType"
TITLE = "org.opencontainers.image.title"


def key_hint(public_key: Any) -> str:
    """base64 of the SHA-256 of the key's DER SubjectPublicKeyInfo: which key signed."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def sign_statement(repository: str, digest: str) -> bytes:
    """cosign 3's image-signature statement: ``repository@digest`` is signed, nothing more."""
    return canonical_json(
        {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": repository, "digest": {"sha256": hex_of(digest)}}],
            "predicateType": SIGN_PREDICATE_TYPE,
            "predicate": {},
        }
    )


def bundle(statement: bytes, private_key: Any) -> bytes:
    """The bundle of ``statement`` signed by ``private_key`` (canonical JSON)."""
    return canonical_json(
        {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {
                "publicKey": {"hint": key_hint(private_key.public_key())},
                "tlogEntries": [],
            },
            "dsseEnvelope": dsse.envelope(statement, private_key),
        }
    )


def bundle_artifact(
    data: bytes, subject: bytes, predicate_type: str, created: str
) -> attach.Artifact:
    """The referrer manifest carrying the bundle ``data`` for the manifest ``subject``."""
    title = "sha256-" + hashlib.sha256(data).hexdigest() + ".sigstore.json"
    return attach.Artifact(
        artifact_manifest(
            BUNDLE_MEDIA_TYPE,
            [descriptor(BUNDLE_MEDIA_TYPE, data, annotations={TITLE: title})],
            config=descriptor(media.EMPTY_MEDIA_TYPE, media.EMPTY_CONFIG),
            subject=subject_descriptor(subject),
            annotations={
                CONTENT: "dsse-envelope",
                PREDICATE: predicate_type,
                attach.CREATED: created,
            },
        )
    )


@dataclass(frozen=True)
class Verified:
    """A bundle found for a subject whose envelope the key verified."""

    digest: str  # the bundle artifact's manifest digest
    predicate_type: str
    statement: Mapping[str, Any]


def _blob(client: RegistryClient, name: str, digest: str) -> bytes | None:
    resp = client.request("GET", f"/v2/{name}/blobs/{digest}", scope=[client.scope(name, "pull")])
    if resp.status != 200 or sha256_digest(resp.body) != digest:
        return None
    return resp.body


def bundles_for(client: RegistryClient, name: str, digest: str) -> list[tuple[str, bytes]]:
    """(artifact digest, bundle bytes) of every bundle referring to ``name@digest``, by the
    referrers tag scheme; an artifact whose ``subject`` is another manifest is skipped."""
    index = attach.get_optional(client, name, attach.referrers_tag(digest), media.INDEX_MEDIA_TYPE)
    found = []
    for entry in json.loads(index).get("manifests", []) if index else []:
        if entry.get("artifactType") != BUNDLE_MEDIA_TYPE:
            continue
        raw = attach.get_optional(client, name, entry["digest"], media.MANIFEST_MEDIA_TYPE)
        if raw is None or sha256_digest(raw) != entry["digest"]:
            continue
        manifest = json.loads(raw)
        layers = manifest.get("layers") or []
        if manifest.get("subject", {}).get("digest") != digest or len(layers) != 1:
            continue
        data = _blob(client, name, layers[0]["digest"])
        if data is not None:
            found.append((entry["digest"], data))
    return found


def verify_bundle(data: bytes, public_key: Any, digest: str) -> tuple[str, dict[str, Any]] | None:
    """(predicate type, statement) if ``data`` is a v0.3 bundle whose DSSE envelope is signed
    by ``public_key`` and whose statement names ``digest`` as a subject; else None."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("mediaType") != BUNDLE_MEDIA_TYPE:
        return None
    envelope = doc.get("dsseEnvelope")
    if not isinstance(envelope, dict) or envelope.get("payloadType") != dsse.PAYLOAD_TYPE:
        return None
    payload = dsse.verified_payload(envelope, public_key)
    statement = dsse.statement_of(payload) if payload is not None else None
    if statement is None or digest not in dsse.subject_digests(statement):
        return None
    if statement.get("_type") != STATEMENT_TYPE:
        return None
    return str(statement.get("predicateType")), statement


def verified_bundles(
    client: RegistryClient, name: str, digest: str, public_key: Any
) -> list[Verified]:
    """Every bundle attached to ``name@digest`` that ``public_key`` verifies for it."""
    out = []
    for artifact, data in bundles_for(client, name, digest):
        found = verify_bundle(data, public_key, digest)
        if found is not None:
            out.append(Verified(artifact, *found))
    return out


def has_verified(
    client: RegistryClient,
    name: str,
    digest: str,
    public_key: Any,
    predicate_type: str,
    repository: str | None = None,
) -> bool:
    """Whether a bundle of ``predicate_type`` signed by ``public_key`` is attached to
    ``name@digest``; with ``repository``, its statement must name it for that digest."""
    for found in verified_bundles(client, name, digest, public_key):
        if found.predicate_type != predicate_type:
            continue
        if repository is None or any(
            s.get("name") == repository and s.get("digest", {}).get("sha256") == hex_of(digest)
            for s in found.statement.get("subject", [])
            if isinstance(s, Mapping)
        ):
            return True
    return False


def has_legacy_attestation(
    client: RegistryClient, name: str, digest: str, public_key: Any, predicate_type: str
) -> bool:
    """Whether ``sha256-<hex>.att`` holds a DSSE envelope of ``predicate_type`` signed by
    ``public_key`` whose statement names ``digest`` (cosign's format before bundles)."""
    for predicate, raw in attach.read_attestations(client, name, digest):
        try:
            envelope = json.loads(raw)
        except ValueError:
            continue
        payload = (
            dsse.verified_payload(envelope, public_key) if predicate == predicate_type else None
        )
        statement = dsse.statement_of(payload) if payload is not None else None
        if (
            statement is not None
            and statement.get("predicateType") == predicate_type
            and digest in dsse.subject_digests(statement)
        ):
            return True
    return False
