"""A signed release with SBOM and provenance attached, checked by independent clients.

The release goes to Debian's docker-registry 2.8 on 127.0.0.1 (no referrers
API, so the ``sha256-<hex>`` referrers tag scheme), signed with an ECDSA
P-256 key made here. skopeo, with a ``policy.json`` requiring
``sigstoreSigned`` by our public key and ``use-sigstore-attachments``, must
accept the release and refuse an unsigned copy, a copy signed by another key,
and a tampered signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lockstep.oci.client import PushStats, RegistryClient
from lockstep.release import attach, signing
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


def manifest(signed: Signed, name: str, reference: str) -> dict[str, Any]:
    status, body = signed.get(f"/v2/{name}/manifests/{reference}")
    assert status == 200, (name, reference)
    return dict(json.loads(body))


def test_release_records_and_attaches_sbom_and_provenance(signed: Signed) -> None:
    record = json.loads((signed.root / "release" / f"{VERSION}.json").read_text())
    assert record["attachments"] == signed.out["attachments"]
    for role in ROLES:
        image = signed.out["images"][role]
        found = record["attachments"][role]
        assert sorted(found) == [
            "provenance",
            "provenance_signature",
            "referrers",
            "sbom",
            "sbom_signature",
            "signature",
        ]
        name = f"sig/main/lockstep-{role}"
        index = manifest(signed, name, "sha256-" + image["digest"][7:])
        assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
        listed = {d["artifactType"]: d["digest"] for d in index["manifests"]}
        assert listed == {
            "application/spdx+json": found["sbom"],
            "application/vnd.in-toto+json": found["provenance"],
        }
        documents = {}
        for kind in ("sbom", "provenance"):
            artifact = manifest(signed, name, found[kind])
            assert artifact["subject"]["digest"] == image["digest"]
            [layer] = artifact["layers"]
            status, blob = signed.get(f"/v2/{name}/blobs/{layer['digest']}")
            assert status == 200 and "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]
            documents[kind] = json.loads(blob)
        assert documents["sbom"]["name"] == f"lockstep-{role}@{image['digest']}"
        subjects = {
            s["name"]: "sha256:" + s["digest"]["sha256"] for s in documents["provenance"]["subject"]
        }
        assert subjects == {f"lockstep-{r}": signed.out["images"][r]["digest"] for r in ROLES}
        commit = documents["provenance"]["predicate"]["buildDefinition"]["resolvedDependencies"][0]
        assert commit["digest"]["gitCommit"] == signed.out["commit"]


# -- skopeo with a sigstoreSigned policy -------------------------------------------------


def skopeo_copy(
    signed: Signed, tmp: Path, reference: str, public_key: Path
) -> subprocess.CompletedProcess[str]:
    require(shutil.which("skopeo") is not None, "skopeo is not installed (Debian package skopeo)")
    host = signed.registry.address
    policy = {
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                f"{host}/sig": [
                    {
                        "type": "sigstoreSigned",
                        "keyPath": str(public_key),
                        "signedIdentity": {"type": "matchRepoDigestOrExact"},
                    }
                ]
            }
        },
    }
    (tmp / "policy.json").write_text(json.dumps(policy))
    registries = tmp / "registries.d"
    registries.mkdir(exist_ok=True)
    (registries / "lockstep.yaml").write_text(
        f"docker:\n  {host}:\n    use-sigstore-attachments: true\n"
    )
    dest = tmp / "copy"
    shutil.rmtree(dest, ignore_errors=True)
    return subprocess.run(
        [
            "skopeo",
            "--policy",
            str(tmp / "policy.json"),
            "--registries.d",
            str(registries),
            "copy",
            "--src-tls-verify=false",
            f"docker://{reference}",
            f"dir:{dest}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


SIGSTORE_DISABLED = "sigstore disabled"


def require_sigstore(signed: Signed, tmp: Path) -> None:
    """Skip where skopeo cannot verify sigstore signatures at all: Debian builds
    containers/image with sigstore verification patched out ("Debian-local change:
    sigstore disabled"), so such a skopeo refuses every image and proves nothing."""
    reference = signed.out["images"]["worker"]["reference"]
    proc = skopeo_copy(signed, tmp, reference, signed.key.with_suffix(".pub"))
    if SIGSTORE_DISABLED in proc.stderr:
        pytest.skip(f"this skopeo cannot verify sigstore signatures: {proc.stderr.strip()}")


def copy_unchecked(signed: Signed, source: str, dest: str) -> None:
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--insecure-policy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{source}",
            f"docker://{dest}",
        ],
        capture_output=True,
        check=True,
        timeout=300,
    )


def test_skopeo_policy_accepts_the_signed_release(signed: Signed, tmp_path: Path) -> None:
    require_sigstore(signed, tmp_path)
    for role in ROLES:
        reference = signed.out["images"][role]["reference"]
        proc = skopeo_copy(signed, tmp_path, reference, signed.key.with_suffix(".pub"))
        assert proc.returncode == 0, proc.stderr
    # ... and refuses it under another key.
    reference = signed.out["images"]["worker"]["reference"]
    proc = skopeo_copy(signed, tmp_path, reference, signed.other.with_suffix(".pub"))
    assert proc.returncode != 0
    assert "signature" in proc.stderr.lower()


def test_skopeo_policy_refuses_unsigned_other_key_and_tampered(
    signed: Signed, tmp_path: Path
) -> None:
    require_sigstore(signed, tmp_path)
    host = signed.registry.address
    image = signed.out["images"]["worker"]
    digest = image["digest"]
    client = RegistryClient(host, None, plain_http=True)
    try:
        cases = {}
        for case in ("unsigned", "otherkey", "tampered"):
            name = f"sig/{case}/lockstep-worker"
            copy_unchecked(signed, image["reference"], f"{host}/{name}:{VERSION}")
            cases[case] = name
        stats = PushStats()
        payload = attach.simple_signing_payload(f"{host}/{cases['otherkey']}", digest)
        other = signing.load_private_key(signed.other)
        attach.push_signature(
            client, cases["otherkey"], digest, payload, signing.sign(other, payload), stats
        )
        ours = signing.load_private_key(signed.key)
        payload = attach.simple_signing_payload(f"{host}/{cases['tampered']}", digest)
        signature = signing.sign(ours, payload)
        tampered = payload.replace(b'"optional":null', b'"optional":{"x":1}')
        attach.push_signature(client, cases["tampered"], digest, tampered, signature, stats)
    finally:
        client.close()
    public = signed.key.with_suffix(".pub")
    for case, name in cases.items():
        proc = skopeo_copy(signed, tmp_path, f"{host}/{name}@{digest}", public)
        assert proc.returncode != 0, case
        assert "signature" in proc.stderr.lower(), (case, proc.stderr)


def test_openssl_verifies_our_signatures_of_the_payload_it_names(
    signed: Signed, tmp_path: Path
) -> None:
    """An independent check of the cryptography: openssl verifies each ECDSA-SHA256
    signature of the `.sig` tag against the public key, and the payload names the image."""
    require(shutil.which("openssl") is not None, "openssl is not installed")
    host = signed.registry.address
    client = RegistryClient(host, None, plain_http=True)
    try:
        for role in ROLES:
            digest = signed.out["images"][role]["digest"]
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
    worker = signed.out["images"]["worker"]["reference"]

    def inspect(*extra: str) -> str:
        proc = lockstep(["inspect", worker, *extra], cwd=signed.root, cache=cache_dir, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    found = json.loads(inspect("--json", "--public-key", str(signed.key.with_suffix(".pub"))))
    attachments = signed.out["attachments"]["worker"]
    assert found["attached"]["sbom"]["digest"] == attachments["sbom"]
    assert found["attached"]["provenance"]["digest"] == attachments["provenance"]
    names = {p["name"] for p in found["attached"]["sbom"]["packages"]}
    assert {"python3.11", "distributed", "numpy"} & names >= {"python3.11", "distributed"}
    assert found["signature"].startswith("verified with ")
    assert inspect().splitlines()[2].startswith("signature  signed (1 signature(s); not verified")
    other = inspect("--public-key", str(signed.other.with_suffix(".pub")))
    assert "signature  not signed by " in other
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
