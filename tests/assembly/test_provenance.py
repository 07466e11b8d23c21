"""The provenance statement beside the archives: in-toto v1, SLSA v1, digests of the real images."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lockstep.assembly import oci
from lockstep.assembly.identity import builder_identity
from lockstep.inputs.debian.lock import read_lock as read_debian_lock
from lockstep.inputs.python.lock import read_lock as read_python_lock
from tests.fixtures.build import Built, build

pytestmark = pytest.mark.slow


def statement(result: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(Path(result["provenance"]).read_bytes()))


def test_subjects_are_the_images_and_every_input_is_named(built: Built) -> None:
    doc = statement(built.result)
    assert Path(built.result["provenance"]) == built.out / "provenance-amd64.intoto.json"
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == "https://slsa.dev/provenance/v1"
    subjects = {s["name"]: "sha256:" + s["digest"]["sha256"] for s in doc["subject"]}
    assert subjects == {f"lockstep-{role}": built.digest(role) for role in ("runner", "worker")}
    for role in ("runner", "worker"):  # and they are the archives' manifests, byte for byte
        archive = oci.read_archive(built.path(role))
        manifest = archive.blob(archive.digest)
        assert "sha256:" + hashlib.sha256(manifest).hexdigest() == subjects[f"lockstep-{role}"]
    definition = doc["predicate"]["buildDefinition"]
    resolved = {d["name"]: d for d in definition["resolvedDependencies"]}
    root = built.root
    for lock in ("images/python.lock.json", "images/debian.lock.json"):
        want = hashlib.sha256((root / lock).read_bytes()).hexdigest()
        assert resolved[lock]["digest"] == {"sha256": want}
    sources = resolved["sources"]["digest"]
    assert "gitCommit" not in sources  # unstamped: the tree digest only
    for deb in read_debian_lock(root / "images/debian.lock.json").of("amd64").packages:
        found = resolved[f"deb:{deb.name}"]
        assert found["digest"] == {"sha256": deb.sha256}
        assert found["uri"].endswith(deb.filename)
    wheels = [
        *read_python_lock(root / "images/python.lock.json"),
        *read_python_lock(root / "images/python-runner.lock.json"),  # the runner's pyarrow
    ]
    for wheel in wheels:
        assert resolved[f"pypi:{wheel.project}"] == {
            "name": f"pypi:{wheel.project}",
            "digest": {"sha256": wheel.sha256},
            "uri": wheel.url,
        }
    run = doc["predicate"]["runDetails"]
    assert run["builder"]["version"]["lockstep"] == "0.1.0"
    assert run["metadata"]["invocationId"] == built.build_id
    byproducts = {b["name"]: b["digest"]["sha256"] for b in run["byproducts"]}
    for role in ("runner", "worker"):
        sbom = (built.out / f"{role}-amd64.spdx.json").read_bytes()  # named as written
        assert byproducts[f"{role}-amd64.spdx.json"] == hashlib.sha256(sbom).hexdigest()


def test_stamped_provenance_names_the_commit(built: Built, tmp_path: Path) -> None:
    stamped = build(built.root, tmp_path / "stamped", built.cache, "--stamp")
    doc = statement(stamped.result)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=built.root, capture_output=True, text=True, check=True
    ).stdout.strip()
    source = doc["predicate"]["buildDefinition"]["resolvedDependencies"][0]
    assert source["digest"]["gitCommit"] == head
    assert source["uri"] == f"git+https://github.com/lockstep-dev/lockstep@{head}"
    assert (
        statement(built.result)["predicate"]["buildDefinition"]["resolvedDependencies"][0][
            "digest"
        ]["sha256"]
        == source["digest"]["sha256"]
    )  # the same tree
    # A rebuild writes the same bytes.
    again = build(built.root, tmp_path / "again", built.cache, "--stamp")
    assert (
        Path(again.result["provenance"]).read_bytes()
        == Path(stamped.result["provenance"]).read_bytes()
    )


# RFC 3986 §3: scheme ":" then only unreserved, reserved and percent-encoded characters.
URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")


def parse_with_in_toto(data: bytes) -> Any:
    """The statement parsed and validated by in-toto's own attestation library (protobuf:
    an unknown field or a wrong type is an error), and its SLSA v1 predicate likewise."""
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    from in_toto_attestation.v1.statement import Statement

    pb = json_format.Parse(data, statement_pb2.Statement())  # type: ignore[attr-defined]
    Statement.copy_from_pb(pb).validate()
    doc = json.loads(data)
    predicate = json_format.ParseDict(doc["predicate"], provenance_pb2.Provenance())  # type: ignore[attr-defined]
    for dep in predicate.build_definition.resolved_dependencies:
        ResourceDescriptor.copy_from_pb(dep).validate()
    return predicate


def test_in_toto_parses_the_statement_and_its_uris_are_uris(built: Built) -> None:
    data = Path(built.result["provenance"]).read_bytes()
    predicate = parse_with_in_toto(data)
    build_type = predicate.build_definition.build_type
    builder_id = predicate.run_details.builder.id
    for uri in (build_type, builder_id):
        assert URI.fullmatch(uri), uri
    assert build_type == "https://github.com/lockstep-dev/lockstep/build-types/lockstep-build/2"
    assert builder_id == "https://github.com/lockstep-dev/lockstep/builders/lockstep-build/2"
    toolchain = builder_identity()
    assert " " in toolchain  # the exact toolchain, which is not a URI, is still named:
    assert predicate.run_details.builder.version["toolchain"] == toolchain
    assert predicate.build_definition.internal_parameters["builder"] == toolchain
