"""DSSE envelopes (Dead Simple Signing Envelope v1): an in-toto statement signed with a key.

The signature is over the *pre-authentication encoding* (PAE) of the payload
type and the payload, never over the JSON of the envelope, so the envelope's
own serialisation does not matter to a verifier:

    PAE(type, body) = "DSSEv1" SP len(type) SP type SP len(body) SP body

with lengths as ASCII decimals of byte counts. The signature is ECDSA P-256
over SHA-256 (``release.signing``), DER, base64 in the envelope. This is the
envelope in-toto, cosign (``verify-attestation``), slsa-verifier and Sigstore
bundles (``dsseEnvelope``) read.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from lockstep.release import signing

PAYLOAD_TYPE = "application/vnd.in-toto+json"  # an in-toto statement


def pae(payload_type: str, payload: bytes) -> bytes:
    """The bytes a DSSE signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def envelope(payload: bytes, private_key: Any, payload_type: str = PAYLOAD_TYPE) -> dict[str, Any]:
    """``{"payload", "payloadType", "signatures": [{"keyid", "sig"}]}`` signed by the key."""
    return {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": payload_type,
        "signatures": [{"keyid": "", "sig": signing.sign(private_key, pae(payload_type, payload))}],
    }


def verified_payload(env: Mapping[str, Any], public_key: Any) -> bytes | None:
    """The payload of ``env`` if one of its signatures is by ``public_key``, else None
    (also for anything that is not a well-formed envelope)."""
    try:
        payload = base64.b64decode(env["payload"], validate=True)
        payload_type = env["payloadType"]
        signatures = list(env["signatures"])
        if not isinstance(payload_type, str):
            return None
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None
    message = pae(payload_type, payload)
    for entry in signatures:
        sig = entry.get("sig") if isinstance(entry, Mapping) else None
        if isinstance(sig, str) and signing.verify(public_key, message, sig):
            return payload
    return None


def statement_of(payload: bytes) -> dict[str, Any] | None:
    """The in-toto statement a verified payload holds, or None if it is not one."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("subject"), list):
        return None
    return doc


def subject_digests(statement: Mapping[str, Any]) -> set[str]:
    """``sha256:<hex>`` of every subject of an in-toto statement."""
    found = set()
    for subject in statement.get("subject", []):
        hexd = subject.get("digest", {}).get("sha256") if isinstance(subject, Mapping) else None
        if isinstance(hexd, str):
            found.add("sha256:" + hexd)
    return found
