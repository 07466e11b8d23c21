"""``lockstep inspect HOST/REPO/NAME@sha256:…``: an image (or a release's image index: then
also the image of each platform in it) in a registry and what is attached to it — its
SBOM and provenance (by the referrers tag scheme), its cosign signatures and its
Sigstore bundles.

Read-only: one manifest, the ``sha256-<hex>`` referrers index, the artifacts' manifests
and the SBOM's blob, and the ``sha256-<hex>.sig`` signature manifest, each checked
against its digest. A signature is *verified* only against a public key the caller
names; without one, the status says it is present and unchecked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lockstep.assembly import provenance, sbom
from lockstep.core.digests import sha256_digest
from lockstep.core.errors import CheckFailed
from lockstep.oci.auth import credentials_for
from lockstep.oci.client import RegistryClient
from lockstep.oci.media import INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, MANIFEST_MEDIA_TYPES
from lockstep.oci.reference import parse_pinned
from lockstep.release import attach, signing, sigstore_bundle

KINDS = {sbom.MEDIA_TYPE: "sbom", provenance.MEDIA_TYPE: "provenance"}


def _blob(client: RegistryClient, name: str, digest: str) -> bytes:
    resp = client.request("GET", f"/v2/{name}/blobs/{digest}", scope=[client.scope(name, "pull")])
    if resp.status != 200:
        raise client._unexpected("GET", f"blob {name}@{digest}", resp)
    if sha256_digest(resp.body) != digest:
        raise CheckFailed(f"registry {client.host} served {name}@{digest} with other bytes")
    return resp.body


def inspect_remote(
    reference: str, public_key: Path | None = None, plain_http: bool = False
) -> dict[str, Any]:
    """The image at ``reference``, its attachments and its signature status."""
    pinned = parse_pinned(reference)
    key = signing.load_public_key(public_key) if public_key else None
    client = RegistryClient(pinned.host, credentials_for(pinned.host), plain_http=plain_http)
    try:
        raw = client.get_manifest(
            pinned.name, pinned.digest, (*MANIFEST_MEDIA_TYPES, INDEX_MEDIA_TYPE)
        )
        if sha256_digest(raw) != pinned.digest:
            raise CheckFailed(f"registry {pinned.host} served {reference} with other bytes")
        manifest = json.loads(raw)
        attached: dict[str, Any] = {}
        index = attach.get_optional(
            client, pinned.name, attach.referrers_tag(pinned.digest), INDEX_MEDIA_TYPE
        )
        for entry in json.loads(index).get("manifests", []) if index else []:
            kind = KINDS.get(str(entry.get("artifactType")))
            if kind is None:
                continue
            attached[kind] = {"digest": entry["digest"]}
            if kind == "sbom":
                artifact = json.loads(client.get_manifest(pinned.name, entry["digest"]))
                document = json.loads(_blob(client, pinned.name, artifact["layers"][0]["digest"]))
                attached[kind]["packages"] = packages_of(document)
        signatures = attach.read_signatures(client, pinned.name, pinned.digest)
        bundles = bundle_status(client, pinned.name, pinned.digest, key, public_key)
    finally:
        client.close()
    platforms = [
        {"platform": _platform_name(entry.get("platform")), "digest": str(entry.get("digest"))}
        for entry in manifest.get("manifests", [])
    ]
    return {
        "reference": reference,
        "digest": pinned.digest,
        **({"platforms": platforms} if manifest.get("mediaType") == INDEX_MEDIA_TYPE else {}),
        "layers": len(manifest.get("layers", [])),
        "attached": attached,
        "signature": signature_status(signatures, pinned.digest, key, public_key),
        "bundles": bundles,
        "media_type": manifest.get("mediaType", MANIFEST_MEDIA_TYPE),
    }


def _platform_name(platform: Any) -> str:
    if not isinstance(platform, dict):
        return "(no platform)"
    return f"{platform.get('os')}/{platform.get('architecture')}"


def signature_status(
    signatures: list[tuple[bytes, str]], digest: str, key: Any, key_path: Path | None
) -> str:
    """``verified with KEY``, ``signed (not verified: pass --public-key)``, ``not signed by
    KEY``, or ``unsigned``."""
    if not signatures:
        return "unsigned"
    if key is None:
        return f"signed ({len(signatures)} signature(s); not verified: pass --public-key)"
    for payload, signature in signatures:
        claims = json.loads(payload).get("critical", {}).get("image", {})
        if claims.get("docker-manifest-digest") == digest and signing.verify(
            key, payload, signature
        ):
            return f"verified with {key_path}"
    return f"not signed by {key_path} ({len(signatures)} other signature(s))"


BUNDLE_KINDS = {
    sigstore_bundle.SIGN_PREDICATE_TYPE: "signature",
    provenance.PREDICATE_TYPE: "provenance attestation",
}


def bundle_status(
    client: RegistryClient, name: str, digest: str, key: Any, key_path: Path | None
) -> str:
    """The Sigstore bundles attached to ``name@digest``: how many, and with a key which
    of them (signature, provenance attestation) it verifies."""
    found = sigstore_bundle.bundles_for(client, name, digest)
    if not found:
        return "none"
    if key is None:
        return f"{len(found)} attached (not verified: pass --public-key)"
    kinds = sorted(
        {
            BUNDLE_KINDS.get(v.predicate_type, v.predicate_type)
            for v in sigstore_bundle.verified_bundles(client, name, digest, key)
        }
    )
    if not kinds:
        return f"{len(found)} attached, none verified with {key_path}"
    return f"{len(found)} attached; verified with {key_path}: {', '.join(kinds)}"


def packages_of(document: dict[str, Any]) -> list[dict[str, str]]:
    """name, version, license and purl of every package an SPDX document lists, by name."""
    rows = []
    for pkg in document.get("packages", []):
        purl = next(
            (r.get("referenceLocator", "") for r in pkg.get("externalRefs", [])
             if r.get("referenceType") == "purl"),
            "",
        )  # fmt: skip
        rows.append(
            {
                "name": str(pkg.get("name", "")),
                "version": str(pkg.get("versionInfo", "")),
                "license": str(pkg.get("licenseDeclared") or ""),
                "purl": str(purl),
            }
        )
    return sorted(rows, key=lambda r: (r["purl"].split("/")[0], r["name"]))


def describe(info: dict[str, Any], packages: bool = False) -> str:
    lines = [f"image      {info['reference']}"]
    if "platforms" in info:  # an image index: its images, inspected by their own digests
        lines += [f"platform   {p['platform']} {p['digest']}" for p in info["platforms"]]
    lines += [
        f"layers     {info['layers']}",
        f"signature  {info['signature']}",
        f"bundles    {info['bundles']}",
    ]
    for kind in ("sbom", "provenance"):
        found = info["attached"].get(kind)
        extra = ""
        if found and "packages" in found:
            extra = f" ({len(found['packages'])} packages)"
        lines.append(f"{kind:<10} {found['digest'] + extra if found else '(none attached)'}")
    if packages and "sbom" in info["attached"]:
        lines += package_lines(info["attached"]["sbom"]["packages"])
    return "\n".join(lines)


def package_lines(rows: list[dict[str, str]]) -> list[str]:
    return [
        f"  {r['name']:<28} {r['version']:<24} {r['license'][:30]:<30} {r['purl']}" for r in rows
    ]
