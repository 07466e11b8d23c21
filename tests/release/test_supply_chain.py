"""A signed release with SBOM and provenance attached, checked by independent clients.

The release goes to Debian's docker-registry 2.8 on 127.0.0.1 (no referrers
API, so the ``sha256-<hex>`` referrers tag scheme), signed with an ECDSA
P-256 key made here. The independent checks: the Sigstore project's own
verifier, ``@sigstore/verify`` (Node, pinned in tests/node), walks the
registry and verifies every bundle and attestation, and refuses a tampered
bundle, a stranger's key and an unsigned attestation; in-toto's library
parses the provenance; openssl verifies the cosign signatures. (Debian's
skopeo and podman have sigstore verification patched out, so they cannot
be used for this: docs/design.md §6.)
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lockstep.oci.client import PushStats, RegistryClient
from lockstep.oci.media import EMPTY_CONFIG
from lockstep.release import attach, dsse, signing, sigstore_bundle
from tests.fixtures.build import lockstep, make_repo
from tests.fixtures.registry import OciRegistry
from tests.fixtures.support import require
from tests.release.test_release import VERSION, docker_config, release

pytestmark = [pytest.mark.slow, pytest.mark.registry]
ROLES = ("runner", "worker")


def make_key(path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.with_suffix(".pub").write_bytes(signing.public_pem(key))
    return path


@dataclass
class Signed:
    root: Path
    registry: OciRegistry
    out: dict[str, Any]
    key: Path
    other: Path

    @property
    def target(self) -> str:
        return f"{self.registry.address}/sig/main"

    def get(self, path: str) -> tuple[int, bytes]:
        accept = (
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"
        )
        status, _, body = self.registry.get(path, {"Accept": accept})
        return status, body


@pytest.fixture(scope="module")
def signed(
    tmp_path_factory: pytest.TempPathFactory, oci_registry: OciRegistry, cache_dir: Path
) -> Signed:
    oci_registry.start()
    tmp = tmp_path_factory.mktemp("signed")
    key, other = make_key(tmp / "ours.pem"), make_key(tmp / "other.pem")
    root = make_repo(tmp)
    proc = release(root, cache_dir, f"{oci_registry.address}/sig/main", "--sign-key", str(key))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Signed(root, oci_registry, json.loads(proc.stdout), key, other)


def blob_of(signed: Signed, name: str, artifact: str) -> bytes:
    """The one layer's bytes of the artifact manifest ``name@artifact``."""
    [layer] = manifest(signed, name, artifact)["layers"]
    status, data = signed.get(f"/v2/{name}/blobs/{layer['digest']}")
    assert status == 200
    return data


def manifest(signed: Signed, name: str, reference: str) -> dict[str, Any]:
    status, body = signed.get(f"/v2/{name}/manifests/{reference}")
    assert status == 200, (name, reference)
    return dict(json.loads(body))


PLATFORMS = ("linux/amd64", "linux/arm64")


def test_release_records_and_attaches_sbom_and_provenance(signed: Signed) -> None:
    record = json.loads((signed.root / "release" / f"{VERSION}.json").read_text())
    assert record["attachments"] == signed.out["attachments"]
    for role in ROLES:
        image = signed.out["images"][role]
        name = f"sig/main/lockstep-{role}"
        assert sorted(record["attachments"][role]) == ["index", *PLATFORMS]
        # The index, the digest deployments pin, is signed (both forms) ...
        signed_index = record["attachments"][role]["index"]
        assert sorted(signed_index) == ["bundle", "referrers", "signature"]
        listed = manifest(signed, name, "sha256-" + image["digest"][7:])
        assert {(d["artifactType"], d["digest"]) for d in listed["manifests"]} == {
            (BUNDLE, signed_index["bundle"])
        }
        bundle = manifest(signed, name, signed_index["bundle"])
        assert bundle["subject"] == {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": image["digest"],
            "size": len(signed.get(f"/v2/{name}/manifests/{image['digest']}")[1]),
        }
        # ... and each platform's image carries its own SBOM and provenance, signed.
        for p in PLATFORMS:
            digest = image["platforms"][p]["digest"]
            found = record["attachments"][role][p]
            assert sorted(found) == [
                "attestation",
                "bundle",
                "legacy_attestation",
                "provenance",
                "provenance_bundle",
                "provenance_signature",
                "referrers",
                "sbom",
                "sbom_bundle",
                "sbom_signature",
                "signature",
            ]
            index = manifest(signed, name, "sha256-" + digest[7:])
            assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
            listed_here = {(d["artifactType"], d["digest"]) for d in index["manifests"]}
            assert listed_here == {
                ("application/spdx+json", found["sbom"]),
                ("application/vnd.in-toto+json", found["provenance"]),
                (BUNDLE, found["bundle"]),
                (BUNDLE, found["attestation"]),
            }
            documents = {}
            for kind in ("sbom", "provenance"):
                artifact = manifest(signed, name, found[kind])
                assert artifact["subject"]["digest"] == digest
                [layer] = artifact["layers"]
                status, blob = signed.get(f"/v2/{name}/blobs/{layer['digest']}")
                assert status == 200
                assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]
                documents[kind] = json.loads(blob)
            assert documents["sbom"]["name"] == f"lockstep-{role}@{digest}"
            subjects = {
                s["name"]: "sha256:" + s["digest"]["sha256"]
                for s in documents["provenance"]["subject"]
            }
            # a platform's provenance names both roles' images of that platform
            assert subjects == {
                f"lockstep-{r}": signed.out["images"][r]["platforms"][p]["digest"] for r in ROLES
            }
            att = manifest(signed, name, "sha256-" + digest[7:] + ".att")
            [layer] = att["layers"]
            assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
            assert layer["annotations"] == {"predicateType": "https://slsa.dev/provenance/v1"}
            status, envelope = signed.get(f"/v2/{name}/blobs/{layer['digest']}")
            assert json.loads(envelope)["payloadType"] == "application/vnd.in-toto+json"
            assert base64.b64decode(json.loads(envelope)["payload"]) == blob_of(
                signed, name, found["provenance"]
            )
            resolved = documents["provenance"]["predicate"]["buildDefinition"]
            commit = resolved["resolvedDependencies"][0]
            assert commit["digest"]["gitCommit"] == signed.out["commit"]


# -- the Sigstore project's own verifier (@sigstore/verify, Node) ------------------------

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
VERIFIER = NODE_DIR / "verify-release.mjs"
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SLSA = "https://slsa.dev/provenance/v1"


def node_verify(*args: str) -> tuple[int, dict[str, Any]]:
    """Run tests/node/verify-release.mjs (installed by `make`: npm ci); (exit code, report)."""
    require(shutil.which("node") is not None, "node is not installed (Debian package nodejs)")
    require(
        (NODE_DIR / "node_modules" / "@sigstore" / "verify").is_dir(),
        "tests/node/node_modules is missing: run "
        "`make tests/node/node_modules/.package-lock.json` (npm ci)",
    )
    proc = subprocess.run(
        ["node", str(VERIFIER), *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, dict(json.loads(proc.stdout))


def images_of(signed: Signed, repo: str = "sig/main") -> list[str]:
    return [f"{repo}/lockstep-{r}@{signed.out['images'][r]['digest']}" for r in ROLES]


def test_sigstore_verify_accepts_every_bundle_and_attestation_of_the_release(
    signed: Signed,
) -> None:
    """The independent check: @sigstore/verify walks the registry itself and verifies every
    bundle (each image, SBOM and provenance signed; each image's provenance attestation)."""
    code, report = node_verify(
        "--key",
        str(signed.key.with_suffix(".pub")),
        "--registry",
        signed.registry.url,
        *(a for image in images_of(signed) for a in ("--image", image)),
    )
    assert code == 0, report
    assert report["missing"] == []
    by_subject: dict[str, set[str]] = {}
    for row in report["checked"]:
        assert row["ok"], row
        if "bundle" in row:
            by_subject.setdefault(row["subject"], set()).add(row["predicateType"])
    for role in ROLES:
        name = f"sig/main/lockstep-{role}"
        image = signed.out["images"][role]
        # the index: its signature; each image in it: signature and attestation
        assert by_subject[f"{name}@{image['digest']}"] == {"https://sigstore.dev/cosign/sign/v1"}
        for p in PLATFORMS:
            found = signed.out["attachments"][role][p]
            digest = image["platforms"][p]["digest"]
            assert by_subject[f"{name}@{digest}"] == {"https://sigstore.dev/cosign/sign/v1", SLSA}
            for kind in ("sbom", "provenance"):
                assert by_subject[f"{name}@{found[kind]}"] == {
                    "https://sigstore.dev/cosign/sign/v1"
                }
    # 2 indexes x (the index's bundle + per platform image: image, attestation, SBOM,
    # provenance bundles + the .att envelope)
    assert len(report["checked"]) == 2 * (1 + 2 * 5)
    att = [r for r in report["checked"] if "attestationTag" in r]
    assert len(att) == 4 and {r["predicateType"] for r in att} == {SLSA}
    # ... and with a stranger's key nothing verifies.
    code, report = node_verify(
        "--key",
        str(signed.other.with_suffix(".pub")),
        "--registry",
        signed.registry.url,
        "--image",
        images_of(signed)[1],
    )
    assert code == 1
    assert report["checked"] and all(
        not r["ok"] and r["error"].startswith("SIGNATURE_ERROR") for r in report["checked"]
    ), report


def test_the_attestation_is_the_signed_provenance_and_in_toto_parses_it(
    signed: Signed,
) -> None:
    """The attestation's DSSE envelope holds exactly the provenance statement the release
    attached, and in-toto's own library parses and validates it."""
    from tests.assembly.test_provenance import parse_with_in_toto

    client = RegistryClient(signed.registry.address, None, plain_http=True)
    key = signing.load_public_key(signed.key.with_suffix(".pub"))
    try:
        for role, p in [(role, p) for role in ROLES for p in PLATFORMS]:
            digest = signed.out["images"][role]["platforms"][p]["digest"]
            found = signed.out["attachments"][role][p]
            name = f"sig/main/lockstep-{role}"
            [attestation] = [
                v
                for v in sigstore_bundle.verified_bundles(client, name, digest, key)
                if v.predicate_type == SLSA
            ]
            assert attestation.digest == found["attestation"]
            artifact = manifest(signed, name, found["provenance"])
            status, statement = signed.get(f"/v2/{name}/blobs/{artifact['layers'][0]['digest']}")
            assert status == 200 and json.loads(statement) == attestation.statement
            parse_with_in_toto(statement)
            index = manifest(signed, name, "sha256-" + digest[7:])
            [listed] = [m for m in index["manifests"] if m["digest"] == attestation.digest]
            assert listed["artifactType"] == BUNDLE
            assert listed["annotations"]["dev.sigstore.bundle.content"] == "dsse-envelope"
            assert listed["annotations"]["dev.sigstore.bundle.predicateType"] == SLSA
    finally:
        client.close()


def bundle_copy(signed: Signed, case: str, role: str = "worker") -> tuple[RegistryClient, str, str]:
    """The role's amd64 image pushed (by our client, blobs mounted) to ``sig/<case>``,
    unsigned."""
    host = signed.registry.address
    client = RegistryClient(host, None, plain_http=True)
    image = signed.out["images"][role]["platforms"]["linux/amd64"]
    source = f"sig/main/lockstep-{role}"
    name = f"sig/{case}/lockstep-{role}"
    raw = client.get_manifest(source, image["digest"])
    stats = PushStats()
    for d in [
        json.loads(raw)["config"]["digest"],
        *(x["digest"] for x in json.loads(raw)["layers"]),
    ]:
        client.push_blob(name, d, lambda d=d: client_get_blob(client, source, d), stats, source)
    client.put_manifest(
        name, image["digest"], raw, json.loads(raw)["mediaType"], image["digest"], stats
    )
    return client, name, image["digest"]


def client_get_blob(client: RegistryClient, name: str, digest: str) -> bytes:
    resp = client.request("GET", f"/v2/{name}/blobs/{digest}", scope=[client.scope(name, "pull")])
    assert resp.status == 200
    return resp.body


def attach_bundle(
    client: RegistryClient, name: str, digest: str, data: bytes, predicate: str
) -> None:
    stats = PushStats()
    raw = client.get_manifest(name, digest)
    artifact = sigstore_bundle.bundle_artifact(data, raw, predicate, "1970-01-01T00:00:00Z")
    attach.push_artifact(client, name, artifact, [EMPTY_CONFIG, data], stats)
    attach.add_referrers(client, name, digest, [(BUNDLE, artifact)], stats)


def test_sigstore_verify_and_lockstep_refuse_tampered_stranger_and_unsigned(
    signed: Signed,
) -> None:
    """Each case: a copy of the worker with a signature bundle and a provenance attestation,
    one of them bad. @sigstore/verify must fail it, and lockstep's own check must agree."""
    ours = signing.load_private_key(signed.key)
    other = signing.load_private_key(signed.other)
    public = signing.load_public_key(signed.key.with_suffix(".pub"))
    statement = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "lockstep-worker", "digest": {"sha256": "0" * 64}}],
            "predicateType": SLSA,
            "predicate": {"buildDefinition": {}, "runDetails": {}},
        },
        separators=(",", ":"),
    ).encode()

    def tampered(data: bytes) -> bytes:
        doc = json.loads(data)
        payload = base64.b64decode(doc["dsseEnvelope"]["payload"])
        doc["dsseEnvelope"]["payload"] = base64.b64encode(
            payload.replace(b'"predicate":{', b'"predicate":{"x":1,', 1)
        ).decode()
        return json.dumps(doc).encode()

    def unsigned(data: bytes) -> bytes:
        doc = json.loads(data)
        doc["dsseEnvelope"]["signatures"] = []
        return json.dumps(doc).encode()

    cases = {
        "tampered": lambda s, k: tampered(sigstore_bundle.bundle(s, k)),
        "stranger": lambda s, k: sigstore_bundle.bundle(s, other),
        "unsigned": lambda s, k: unsigned(sigstore_bundle.bundle(s, k)),
    }
    for case, make in cases.items():
        client, name, digest = bundle_copy(signed, case)
        try:
            reference = f"{signed.registry.address}/{name}"
            image_statement = sigstore_bundle.sign_statement(reference, digest)
            good = statement.replace(b"0" * 64, digest[7:].encode())
            # The image's signature is fine; the attestation is the bad one...
            attach_bundle(
                client,
                name,
                digest,
                sigstore_bundle.bundle(image_statement, ours),
                sigstore_bundle.SIGN_PREDICATE_TYPE,
            )
            attach_bundle(client, name, digest, make(good, ours), SLSA)
            code, report = node_verify(
                "--key",
                str(signed.key.with_suffix(".pub")),
                "--registry",
                signed.registry.url,
                "--image",
                f"{name}@{digest}",
            )
            assert code == 1, (case, report)
            [bad] = [r for r in report["checked"] if not r["ok"]]
            want = "not a Sigstore bundle" if case == "unsigned" else "SIGNATURE_ERROR"
            assert bad["error"].startswith(want), (case, bad)
            assert "no provenance attestation" in " ".join(report["missing"]), report
            assert sigstore_bundle.has_verified(
                client, name, digest, public, sigstore_bundle.SIGN_PREDICATE_TYPE, reference
            )
            assert not sigstore_bundle.has_verified(client, name, digest, public, SLSA)
        finally:
            client.close()
    # A bundle file by itself, tampered, by --bundle: the same verdict.
    data = tampered(
        sigstore_bundle.bundle(sigstore_bundle.sign_statement("r", "sha256:" + "a" * 64), ours)
    )
    path = signed.root.parent / "tampered.sigstore.json"
    path.write_bytes(data)
    code, report = node_verify(
        "--key",
        str(signed.key.with_suffix(".pub")),
        "--bundle",
        str(path),
        "--subject",
        "sha256:" + "a" * 64,
    )
    assert code == 1 and report["checked"][0]["error"].startswith("SIGNATURE_ERROR"), report


def test_openssl_verifies_our_signatures_of_the_payload_it_names(
    signed: Signed, tmp_path: Path
) -> None:
    """An independent check of the cryptography: openssl verifies each ECDSA-SHA256
    signature of the `.sig` tag against the public key, and the payload names the image."""
    require(shutil.which("openssl") is not None, "openssl is not installed")
    host = signed.registry.address
    client = RegistryClient(host, None, plain_http=True)
    try:
        subjects = [
            (r, d)
            for r in ROLES
            for d in [
                signed.out["images"][r]["digest"],
                *(signed.out["images"][r]["platforms"][p]["digest"] for p in PLATFORMS),
            ]
        ]
        for role, digest in subjects:
            name = f"sig/main/lockstep-{role}"
            status, body = signed.get(f"/v2/{name}/manifests/sha256-{digest[7:]}.sig")
            assert status == 200
            sig_manifest = json.loads(body)
            [layer] = sig_manifest["layers"]
            assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
            assert "dev.cosignproject.cosign/signature" in layer["annotations"]
            [(payload, signature)] = attach.read_signatures(client, name, digest)
            assert json.loads(payload) == {
                "critical": {
                    "identity": {"docker-reference": f"{host}/{name}"},
                    "image": {"docker-manifest-digest": digest},
                    "type": "cosign container image signature",
                },
                "optional": None,
            }
            (tmp_path / "payload").write_bytes(payload)
            (tmp_path / "sig").write_bytes(base64.b64decode(signature))
            for key, ok in ((signed.key, True), (signed.other, False)):
                proc = subprocess.run(
                    [
                        "openssl",
                        "dgst",
                        "-sha256",
                        "-verify",
                        str(key.with_suffix(".pub")),
                        "-signature",
                        str(tmp_path / "sig"),
                        str(tmp_path / "payload"),
                    ],
                    capture_output=True,
                    text=True,
                )
                assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    finally:
        client.close()


def test_verify_checks_the_signatures(signed: Signed, cache_dir: Path) -> None:
    env = docker_config(signed.root.parent / "docker")
    ok = lockstep(
        ["verify", f"release/{VERSION}.json", "--public-key", str(signed.key.with_suffix(".pub"))],
        cwd=signed.root,
        cache=cache_dir,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert all(line.endswith("; signed") for line in ok.stdout.splitlines()[1:])
    bad = lockstep(
        [
            "verify",
            f"release/{VERSION}.json",
            "--public-key",
            str(signed.other.with_suffix(".pub")),
        ],
        cwd=signed.root,
        cache=cache_dir,
        env=env,
    )
    assert bad.returncode == 1, bad.stderr[-3000:]
    assert "no signature by the given public key" in bad.stderr


def test_inspect_shows_what_is_attached_and_the_signature_status(
    signed: Signed, cache_dir: Path
) -> None:
    env = docker_config(signed.root.parent / "docker")
    index = signed.out["images"]["worker"]
    worker = index["reference"].replace(
        index["digest"], index["platforms"]["linux/amd64"]["digest"]
    )

    def inspect(*extra: str) -> str:
        proc = lockstep(["inspect", worker, *extra], cwd=signed.root, cache=cache_dir, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    found = json.loads(inspect("--json", "--public-key", str(signed.key.with_suffix(".pub"))))
    attachments = signed.out["attachments"]["worker"]["linux/amd64"]
    assert found["attached"]["sbom"]["digest"] == attachments["sbom"]
    assert found["attached"]["provenance"]["digest"] == attachments["provenance"]
    names = {p["name"] for p in found["attached"]["sbom"]["packages"]}
    assert {"python3.11", "distributed", "numpy"} & names >= {"python3.11", "distributed"}
    assert found["signature"].startswith("verified with ")
    assert found["bundles"].startswith("2 attached; verified with ")
    assert found["bundles"].endswith(": provenance attestation, signature")
    assert inspect().splitlines()[2].startswith("signature  signed (1 signature(s); not verified")
    assert inspect().splitlines()[3] == "bundles    2 attached (not verified: pass --public-key)"
    other = inspect("--public-key", str(signed.other.with_suffix(".pub")))
    assert "signature  not signed by " in other
    assert "bundles    2 attached, none verified with " in other
    # The index the release pins: its images by platform, and its own signature.
    pub = str(signed.key.with_suffix(".pub"))
    proc = lockstep(
        ["inspect", index["reference"], "--public-key", pub],
        cwd=signed.root,
        cache=cache_dir,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[1:3] == [f"platform   {p} {index['platforms'][p]['digest']}" for p in PLATFORMS]
    assert f"signature  verified with {pub}" in lines
    assert f"bundles    1 attached; verified with {pub}: signature" in lines
    listing = inspect("--packages")
    assert "pkg:pypi/distributed@2026.8.0" in listing and "pkg:deb/debian/libc6@" in listing


def test_the_signed_release_carries_its_admission_policy(signed: Signed) -> None:
    import yaml

    policy = signed.root / "release" / VERSION / "admission" / "image-policy.yaml"
    doc = yaml.safe_load(policy.read_text())
    assert doc["kind"] == "ClusterImagePolicy"
    [authority] = doc["spec"]["authorities"]
    assert authority["key"]["data"].encode() == signed.key.with_suffix(".pub").read_bytes()
    globs = {image["glob"] for image in doc["spec"]["images"]}
    for role in ROLES:
        repository = signed.out["images"][role]["reference"].split("@")[0]
        assert f"{repository}**" in globs
    assert str(policy) in signed.out["deploy_files"]
    proc = lockstep(["check-pins", str(policy.parent)], cwd=signed.root, cache=signed.root)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_template_named_like_the_policy_is_refused_before_anything_is_built(
    tmp_path: Path, cache_dir: Path
) -> None:
    root = make_repo(tmp_path)
    (root / "images" / "deploy" / "image-policy.yaml").write_text("kind: Mine\n")
    key = make_key(tmp_path / "k.pem")
    proc = release(root, cache_dir, "127.0.0.1:9/none", "--sign-key", str(key))
    assert proc.returncode == 2, proc.stderr
    assert "images/deploy/image-policy.yaml: a signed release writes this file" in proc.stderr
    assert not (root / "release" / VERSION).exists()
    assert not (root / "release" / f"{VERSION}.json").exists()


def test_verify_wants_the_bundles_and_the_attestation_too(signed: Signed) -> None:
    """A release whose images carry only cosign signatures fails `verify --public-key`
    (no Sigstore bundle), then one with bundles but no attestation, then it passes."""
    from lockstep.core.errors import CheckFailed
    from lockstep.release.record import ImageRecord, PlatformImage, ReleaseManifest
    from lockstep.release.verify import check_signatures

    host = signed.registry.address
    ours = signing.load_private_key(signed.key)
    public = signing.load_public_key(signed.key.with_suffix(".pub"))
    record = ReleaseManifest.read(signed.root / "release" / f"{VERSION}.json")
    images = {}
    clients = []
    try:
        for role in ROLES:
            client, name, digest = bundle_copy(signed, "legacyonly", role)
            clients.append((client, name, digest))
            # the copy's one image stands for its index too (so both are checked)
            config = record.images[role].platforms["linux/amd64"].config
            images[role] = ImageRecord(
                f"{host}/{name}@{digest}", digest, {"linux/amd64": PlatformImage(digest, config)}
            )
            payload = attach.simple_signing_payload(f"{host}/{name}", digest)
            attach.push_signature(
                client, name, digest, payload, signing.sign(ours, payload), PushStats()
            )
        copy = dataclasses.replace(record, images=images, attachments={})
        with pytest.raises(CheckFailed, match="has no Sigstore bundle signed by the given"):
            check_signatures(copy, public, plain_http=True)
        for client, name, digest in clients:
            statement = sigstore_bundle.sign_statement(f"{host}/{name}", digest)
            attach_bundle(
                client,
                name,
                digest,
                sigstore_bundle.bundle(statement, ours),
                sigstore_bundle.SIGN_PREDICATE_TYPE,
            )
        with pytest.raises(CheckFailed, match="no provenance attestation"):
            check_signatures(copy, public, plain_http=True)
        for client, name, digest in clients:
            attestation = sigstore_bundle.bundle(
                json.dumps(
                    {
                        "_type": "https://in-toto.io/Statement/v1",
                        "subject": [{"name": "x", "digest": {"sha256": digest[7:]}}],
                        "predicateType": SLSA,
                        "predicate": {},
                    }
                ).encode(),
                ours,
            )
            attach_bundle(client, name, digest, attestation, SLSA)
        with pytest.raises(
            CheckFailed, match=r"signed by the given public key in a sha256-.*\.att tag"
        ):
            check_signatures(copy, public, plain_http=True)
        for client, name, digest in clients:
            statement = json.dumps(
                {
                    "_type": "https://in-toto.io/Statement/v1",
                    "subject": [{"name": "x", "digest": {"sha256": digest[7:]}}],
                    "predicateType": SLSA,
                    "predicate": {},
                }
            ).encode()
            envelope = json.dumps(dsse.envelope(statement, ours)).encode()
            attach.push_attestation(client, name, digest, envelope, SLSA, PushStats())
        check_signatures(copy, public, plain_http=True)
    finally:
        for client, _, _ in clients:
            client.close()
