"""The builder's contract: inputs read once into one value, a build that returns values and
writes nothing, and the sinks that write them."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import shutil
from pathlib import Path

import pytest

from lockstep.assembly import documents, sbom, sinks
from lockstep.assembly.builder import Builder, read_inputs
from lockstep.core import store
from lockstep.core.digests import of_hex, sha256_digest
from lockstep.core.store import Cache
from lockstep.inputs.debian import lock as debian_lock
from lockstep.inputs.python import lock as python_lock
from lockstep.project import load_project
from tests.fixtures.build import Built, build

pytestmark = pytest.mark.slow


def test_each_lock_is_read_and_parsed_once_and_the_build_reads_none(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before BuildInputs, a warm build read each lock file 5 times (hashing the Debian lock
    3 times and the Python lock 3) and parsed the Debian lock twice."""
    project = load_project(built.root)
    runner_lock = project.images["runner"].python_lock
    assert runner_lock is not None
    locks = {project.debian_lock: "debian", project.python_lock: "python", runner_lock: "runner"}
    reads: collections.Counter[str] = collections.Counter()
    parses: collections.Counter[str] = collections.Counter()
    read_bytes = pathlib.Path.read_bytes

    def counting_read(path: Path) -> bytes:
        if path in locks:
            reads[locks[path]] += 1
        return read_bytes(path)

    def counting(name: str, parse):  # type: ignore[no-untyped-def]
        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            parses[name] += 1
            return parse(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(pathlib.Path, "read_bytes", counting_read)
    for module, name, parse in (
        (debian_lock, "debian", "parse_lock"),
        (python_lock, "python", "parse_locks"),
    ):
        monkeypatch.setattr(module, parse, counting(name, getattr(module, parse)))
        monkeypatch.setattr(module, "read_lock", counting(name, module.read_lock))

    # Every platform's inputs, from one read and one parse of each lock; the runner's own
    # lock is read once too (as a declared source) and parsed once
    every = read_inputs(project)
    assert list(every) == ["linux/amd64", "linux/arm64"]
    assert reads == {"debian": 1, "python": 1, "runner": 1}
    assert parses == {"debian": 1, "python": 2}
    inputs = every["linux/amd64"]
    assert inputs.debian.digest == sha256_digest(read_bytes(project.debian_lock))
    assert inputs.python.digest == sha256_digest(read_bytes(project.python_lock))
    assert every["linux/arm64"].debian.digest == inputs.debian.digest  # one file, one id
    assert inputs.platform.name == "linux/amd64"
    assert every["linux/arm64"].debian.lock.arch == "arm64"

    reads.clear()
    parses.clear()
    result = Builder(Cache(built.cache)).build(inputs)
    assert reads == {} and parses == {}
    assert result.build_id == built.build_id
    assert {r: b.digest for r, b in result.images.items()} == {
        r: built.digest(r) for r in ("runner", "worker")
    }


def test_a_lock_change_hashes_each_wheel_once_for_planning_and_the_sboms(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a changed lock recomputes while every layer is cached: the layer plan and the
    SBOMs' inventory. Before one digest per input per build, the plan hashed every wheel,
    the SBOM hashed each again twice and the runner's SBOM the shared ones once more."""
    cache = tmp_path / "cache"  # the session's, without the plan, the inventory and stamps
    left_out = {"staged", "stamps", "wheel-plan", "sbom", "sbom-wheel"}
    shutil.copytree(
        built.cache, cache, copy_function=os.link, ignore=lambda _, names: left_out & set(names)
    )
    (cache / "staged").symlink_to(built.cache / "staged")  # the base, as files: only read
    project = load_project(built.root)
    inputs = read_inputs(project, None, ["linux/amd64"])["linux/amd64"]
    locks = (inputs.python, *inputs.roles.values())
    wheels = {of_hex(w.sha256) for own in locks for w in own.wheels}
    hashed: collections.Counter[str] = collections.Counter()
    real = store.sha256_digest

    def counting(data: bytes) -> str:
        digest = real(data)
        hashed[digest] += 1
        return digest

    monkeypatch.setattr(store, "sha256_digest", counting)
    result = Builder(Cache(cache)).build(inputs)
    assert {r: b.digest for r, b in result.images.items()} == {
        r: built.digest(r) for r in ("runner", "worker")
    }
    for role, image in result.images.items():  # the per-wheel facts give the same SBOMs
        assert image.sbom == (built.out / sbom.file_name(role + image.suffix)).read_bytes()
    assert wheels <= set(hashed)  # not yet stamped: each hashed
    assert {d: n for d, n in hashed.items() if d in wheels and n > 1} == {}  # once

    # Another lock holding the same wheels: its inventory reads none of them.
    shutil.rmtree(cache / "keys" / "sbom")

    def no_reading(wheels: list[object], *_: object) -> dict[str, bytes]:
        assert not wheels, f"read {len(wheels)} wheel(s) again"
        return {}

    monkeypatch.setattr(documents.pyfetch, "fetch_wheels", no_reading)
    again = Builder(Cache(cache)).build(inputs)
    assert {r: b.sbom for r, b in again.images.items()} == {
        r: b.sbom for r, b in result.images.items()
    }


def test_the_build_writes_nothing_and_the_sinks_write_its_values(
    built: Built, tmp_path: Path
) -> None:
    project = load_project(built.root)
    builder = Builder(Cache(built.cache))
    before = {p: p.stat().st_mtime_ns for p in built.root.rglob("*") if ".git" not in p.parts}
    platforms = builder.build_platforms(read_inputs(project, None, ["linux/amd64"]))
    after = {p: p.stat().st_mtime_ns for p in built.root.rglob("*") if ".git" not in p.parts}
    assert after == before
    out = tmp_path / "out"
    assert not out.exists()
    written = sinks.write_outputs(
        platforms, out, builder.layers.copy_blob, layout=tmp_path / "layout"
    )
    data = sinks.build_json(platforms, written)
    # A project of several platforms: every file's name says its platform.
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",  # the build manifest of the host's platform, one file
        "provenance-amd64.intoto.json",
        "runner-amd64.spdx.json",
        "runner-amd64.tar",
        "worker-amd64.spdx.json",
        "worker-amd64.tar",
    ]
    result = platforms.results["linux/amd64"]
    for role, image in result.images.items():
        assert written.sboms["linux/amd64"][role].read_bytes() == image.sbom
        assert written.archives["linux/amd64"][role].read_bytes() == built.path(role).read_bytes()
    assert written.provenance["linux/amd64"].read_bytes() == result.provenance
    assert written.manifest is not None
    assert written.manifest.read_bytes() == result.manifest.to_json()
    assert data["layout"] == str(tmp_path / "layout")
    assert {k: v for k, v in data.items() if k not in ("layout", "provenance", "manifest")} == {
        "build_id": built.build_id,
        "platform": "linux/amd64",
        "images": {
            role: {
                **image,
                "path": str(out / f"{role}-amd64.tar"),
                "sbom": str(out / f"{role}-amd64.spdx.json"),
            }
            for role, image in built.result["images"].items()
        },
    }


def test_the_build_honours_the_debian_mirror_variable(built: Built, tmp_path: Path) -> None:
    """The base is cached, so nothing is fetched; the SBOM names where a .deb comes from."""
    mirror = "http://mirror.invalid/debian"
    env = {"LOCKSTEP_DEBIAN_MIRROR": mirror + "/"}
    again = build(built.root, tmp_path / "out", built.cache, env=env)
    assert again.build_id == built.build_id
    sbom = json.loads(Path(again.result["images"]["worker"]["sbom"]).read_bytes())
    debs = [
        p["downloadLocation"] for p in sbom["packages"] if p["SPDXID"].startswith("SPDXRef-deb-")
    ]
    assert debs and all(url.startswith("http://mirror.invalid/debian") for url in debs), debs[:3]


def test_the_manifest_layer_carries_the_python_lock_and_the_complete_platform(
    built: Built,
) -> None:
    """What `bundle lock --image` reads (docs/design.md §4.1): the files' exact bytes."""
    import gzip
    import io
    import tarfile

    from lockstep.assembly.oci import read_archive

    project = load_project(built.root)
    archive = read_archive(built.path("worker"))
    top = archive.blob(archive.manifest["layers"][-1]["digest"])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(top))) as tar:
        files = {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }
    assert files == {
        "etc/lockstep/complete-platform.json": project.complete_platform.read_bytes(),
        "etc/lockstep/manifest.json": files["etc/lockstep/manifest.json"],
        "etc/lockstep/python.lock.json": project.python_lock.read_bytes(),
    }


def test_an_undeclared_complete_platform_is_refused() -> None:
    """The image carries it, so its bytes must be in the build id."""
    import dataclasses

    from lockstep.core.errors import BadInput
    from tests.fixtures.build import ROOT

    project = load_project(ROOT)
    undeclared = dataclasses.replace(
        project, sources=tuple(s for s in project.sources if "complete-platform" not in s)
    )
    with pytest.raises(BadInput) as caught:
        read_inputs(undeclared)
    assert caught.value.message == (
        f"{project.complete_platform}: the complete platform is not a declared source, but "
        "the image carries it (/etc/lockstep/complete-platform.json); add "
        "'images/complete-platform.json' to [tool.lockstep] sources"
    )
