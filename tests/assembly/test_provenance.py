"""The provenance statement beside the archives: in-toto v1, SLSA v1, digests of the real images."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lockstep.assembly import oci
from lockstep.inputs.debian.lock import read_lock as read_debian_lock
from lockstep.inputs.python.lock import read_lock as read_python_lock
from tests.fixtures.build import Built, build

pytestmark = pytest.mark.slow


def statement(result: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(Path(result["provenance"]).read_bytes()))


def test_subjects_are_the_images_and_every_input_is_named(built: Built) -> None:
    doc = statement(built.result)
    assert Path(built.result["provenance"]) == built.out / "provenance.intoto.json"
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
    for deb in read_debian_lock(root / "images/debian.lock.json").packages:
        found = resolved[f"deb:{deb.name}"]
        assert found["digest"] == {"sha256": deb.sha256}
        assert found["uri"].endswith(deb.filename)
    for wheel in read_python_lock(root / "images/python.lock.json"):
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
        sbom = (built.out / f"{role}.spdx.json").read_bytes()
        assert byproducts[f"{role}.spdx.json"] == hashlib.sha256(sbom).hexdigest()


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
