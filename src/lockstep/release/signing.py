"""ECDSA P-256 signatures of manifests, in the sigstore/cosign format, with a key the user holds.

No signing service and no transparency log: the private key is a PEM file
(PKCS#8 or SEC1, unencrypted), the signature is ECDSA over SHA-256 of the
simple-signing payload, DER-encoded and base64'd, which is what
containers/image verifies for a ``sigstoreSigned`` policy with ``keyPath``.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

from lockstep.core.bounded import KEY_MAX, read_regular
from lockstep.core.errors import BadInput


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError as exc:  # pragma: no cover - the build extra pins it
        raise BadInput("signing needs cryptography; install lockstep[build]") from exc
    return hashes, serialization, ec


def load_private_key(path: Path, password: bytes | None = None) -> Any:
    """An ECDSA P-256 private key from PEM; BadInput naming the file otherwise."""
    _, serialization, ec = _crypto()
    try:
        key = serialization.load_pem_private_key(read_regular(path, KEY_MAX), password=password)
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the signing key ({exc.strerror})") from exc
    except (ValueError, TypeError) as exc:
        raise BadInput(
            f"{path}: not an unencrypted PEM private key ({exc}); make one with "
            "`openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt`"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise BadInput(f"{path}: the signing key must be ECDSA P-256 (prime256v1)")
    return key


def public_pem(private_key: Any) -> bytes:
    _, serialization, _ = _crypto()
    data: bytes = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def load_public_key(path: Path) -> Any:
    _, serialization, ec = _crypto()
    try:
        key = serialization.load_pem_public_key(read_regular(path, KEY_MAX))
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the public key ({exc.strerror})") from exc
    except ValueError as exc:
        raise BadInput(f"{path}: not a PEM public key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise BadInput(f"{path}: the public key must be ECDSA P-256")
    return key


def sign(private_key: Any, payload: bytes) -> str:
    """base64 of the DER ECDSA-SHA256 signature of ``payload``; deterministic (RFC 6979),
    so signing the same bytes again gives the same signature and a re-run of a release
    pushes nothing new."""
    hashes, _, ec = _crypto()
    der: bytes = private_key.sign(payload, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    return base64.b64encode(der).decode()


def verify(public_key: Any, payload: bytes, signature: str) -> bool:
    hashes, _, ec = _crypto()
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(
            base64.b64decode(signature, validate=True), payload, ec.ECDSA(hashes.SHA256())
        )
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
