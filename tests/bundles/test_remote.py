"""Bundles as OCI artifacts against a real docker-registry: push, pull, inspect, faults.

The bundles lock small wheels made here (``tests.fixtures.wheels``), put into the
runner's cache by their sha256 (as ``lockstep bundle lock`` leaves them), so the
push reads them from there and nothing is downloaded. ``skopeo`` is the
independent client that must read our manifest and agree on its digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lockstep.bundles.artifact import code_tar, parse_bundle_reference, read_code_tar
from lockstep.core.digests import TreeFile, tree_digest
from lockstep.core.store import Cache
from lockstep.jobs.spec import read_spec
from lockstep.oci.media import BUNDLE_ARTIFACT_TYPE as ARTIFACT_TYPE
from lockstep.oci.media import BUNDLE_CODE_MEDIA_TYPE as CODE_MEDIA_TYPE
from lockstep.oci.media import WHEEL_MEDIA_TYPE
from tests.fixtures.registry import OciRegistry, find_registry, free_port
from tests.fixtures.support import require
from tests.fixtures.wheels import make_wheel, wheel_entry, write_lock
from tests.jobs.test_jobs_units import EXAMPLES

SIR = EXAMPLES / "sir"


def lockstep(
    *args: str, cache: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "LOCKSTEP_CACHE_DIR": str(cache), **(env or {})}
    full.setdefault("DOCKER_CONFIG", str(cache / "no-docker"))
    return subprocess.run(
        [sys.executable, "-m", "lockstep", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=300,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("lockstep: error:")]


def skopeo_raw(reference: str, *extra: str) -> bytes:
    require(shutil.which("skopeo") is not None, "skopeo is not installed (Debian package skopeo)")
    proc = subprocess.run(
        ["skopeo", "inspect", "--raw", *extra, f"docker://{reference}"],
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


_WHEELS: dict[tuple[str, str], bytes] = {}


def make_bundle(dest: Path, cache: Path, wheels: dict[str, bytes] | None = None) -> Path:
    """The SIR example's bundle, locking ``wheels`` ({name: size in bytes of filler})."""
    shutil.copytree(SIR / "bundle", dest, ignore=shutil.ignore_patterns("__pycache__"))
    entries = []
    for name, filler in (wheels or {}).items():
        key = (name, hashlib.sha256(filler).hexdigest())
        if key not in _WHEELS:  # zip members carry the time: one wheel, made once
            _WHEELS[key] = make_wheel(
                name, files={f"{name}/__init__.py": b"VALUE = 1\n", f"{name}/x": filler}
            )
        data = _WHEELS[key]
        Cache(cache).put_blob(data)
        entries.append(wheel_entry(data, name))
    if entries:
        write_lock(dest, entries, requirements=[f"{n}==1.0" for n in wheels or {}])
    return dest


def push(bundle: Path, registry: str, cache: Path, *extra: str) -> dict[str, Any]:
    proc = lockstep("bundle", "push", str(bundle), "--registry", registry, "--json", *extra,
                    cache=cache)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


@pytest.fixture
def registry(registry_running: OciRegistry) -> OciRegistry:
    return registry_running


def test_code_tar_is_deterministic_and_reads_back() -> None:
    files = [TreeFile("b/x.py", False, b"x = 1\n"), TreeFile("a.sh", True, b"#!/bin/sh\n")]
    tar = code_tar(files)
    assert tar == code_tar(list(reversed(files)))
    back = read_code_tar(tar)
    assert tree_digest(back) == tree_digest(files)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("127.0.0.1:5000/team/sir:v1", "names the tag :v1"),
        ("registry.example.com/sir", "has no digest"),
        ("registry.example.com/sir@sha256:abc", "is not sha256:<64 hex>"),
    ],
)
def test_a_spec_naming_a_tag_or_no_digest_is_refused_with_how_to_pin(
    tmp_path: Path, text: str, says: str
) -> None:
    spec = tmp_path / "job.toml"
    body = (SIR / "job.toml").read_text()
    spec.write_text(
        "\n".join(f'bundle = "{text}"' if line.startswith("bundle") else line
                  for line in body.splitlines())
    )  # fmt: skip
    fields, problems = read_spec(spec, {"cold": "", "direct": "", "isolated_warm": ""})
    assert "bundle" not in fields
    [problem] = [p for p in problems if p.name == "bundle"]
    assert says in problem.message and "pin it as HOST/REPO@sha256:" in problem.message
    assert problem.exit_code == 2
    proc = lockstep("preflight", str(spec), cache=tmp_path / "cache")
    assert proc.returncode == 2, proc.stderr
    assert "pin it as HOST/REPO@sha256:" in proc.stderr


def test_a_directory_stays_a_directory(tmp_path: Path) -> None:
    ref = parse_bundle_reference("localhost:5000/a/b@sha256:" + "0" * 64)
    assert str(ref) == "localhost:5000/a/b@sha256:" + "0" * 64
    spec = tmp_path / "job.toml"
    spec.write_text((SIR / "job.toml").read_text())
    fields, _problems = read_spec(spec, {"cold": ""})
    assert fields["bundle"] == (tmp_path / "bundle").resolve()


@pytest.mark.registry
def test_push_is_an_artifact_skopeo_reads_and_a_code_change_uploads_only_the_code(
    registry: OciRegistry, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    bundle = make_bundle(tmp_path / "b", cache, {"alpha": b"a" * 200_000, "beta": b"b" * 100})
    first = push(bundle, f"{registry.address}/team/sir", cache)
    ref = first["reference"]
    assert ref == f"{registry.address}/team/sir@{first['digest']}"
    assert first["blobs_uploaded"] == 5  # config, code, lock, two wheels
    raw = skopeo_raw(ref, "--tls-verify=false")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == first["digest"]
    manifest = json.loads(raw)
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["annotations"]["io.lockstep.bundle.digest"] == first["bundle"]
    wheels = [layer for layer in manifest["layers"] if layer["mediaType"] == WHEEL_MEDIA_TYPE]
    lock = json.loads((bundle / "lockstep.lock.json").read_text())
    assert sorted(w["digest"] for w in wheels) == sorted(
        "sha256:" + w["sha256"] for part in lock["platforms"].values() for w in part["wheels"]
    )  # each wheel's blob is named by the wheel's own sha256

    again = push(bundle, f"{registry.address}/team/sir", cache)
    assert again["digest"] == first["digest"] and again["blobs_uploaded"] == 0

    model = bundle / "sir" / "model.py"
    model.write_text(model.read_text() + "\n# one more line\n")
    changed = push(bundle, f"{registry.address}/team/sir", cache)
    assert changed["digest"] != first["digest"]
    assert changed["blobs_uploaded"] == 1 and changed["blobs_present"] == 4
    code = next(x for x in json.loads(skopeo_raw(changed["reference"], "--tls-verify=false"))[
        "layers"] if x["mediaType"] == CODE_MEDIA_TYPE)  # fmt: skip
    assert changed["bytes_uploaded"] == code["size"]  # the code blob, nothing else

    # Another bundle that locks one of the same wheels shares its blob.
    other = make_bundle(tmp_path / "o", cache, {"alpha": b"a" * 200_000})
    shared = push(other, f"{registry.address}/team/sir", cache)
    assert shared["blobs_present"] >= 2 and shared["bytes_uploaded"] < 200_000


@pytest.mark.registry
def test_inspect_and_pull_show_and_write_the_bundle(registry: OciRegistry, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    bundle = make_bundle(tmp_path / "b", cache, {"alpha": b"a" * 1000})
    ref = push(bundle, f"{registry.address}/team/sir", cache)["reference"]
    proc = lockstep("bundle", "inspect", ref, cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"reference {ref}\nbundle    sha256:")
    assert "sir/model.py" in proc.stdout and "alpha-1.0-py3-none-any.whl" in proc.stdout
    info = json.loads(lockstep("bundle", "inspect", ref, "--json", cache=cache).stdout)
    assert [w["filename"] for w in info["wheels"]] == ["alpha-1.0-py3-none-any.whl"]

    fresh = tmp_path / "fresh-cache"
    proc = lockstep("bundle", "pull", ref, str(tmp_path / "out"), "--json", cache=fresh)
    assert proc.returncode == 0, proc.stderr
    pulled = json.loads(proc.stdout)
    assert pulled["bundle"] == info["bundle"]
    files = sorted(p.relative_to(tmp_path / "out").as_posix()
                   for p in (tmp_path / "out").rglob("*") if p.is_file())  # fmt: skip
    assert "lockstep.lock.json" in files and "sir/model.py" in files
    assert Cache(fresh).get_blob(info["wheels"][0]["digest"]) is not None
    again = lockstep("bundle", "pull", ref, str(tmp_path / "out"), cache=fresh)
    assert again.returncode == 2 and "not an empty directory" in again.stderr


def test_registry_down_is_exit_3_one_line(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    bundle = make_bundle(tmp_path / "b", cache)
    port = free_port()
    proc = lockstep("bundle", "push", str(bundle), "--registry", f"127.0.0.1:{port}/t", cache=cache)
    assert proc.returncode == 3, proc.stderr
    [line] = error_lines(proc.stderr)
    assert f"registry 127.0.0.1:{port} did not answer" in line
    ref = f"127.0.0.1:{port}/t@sha256:" + "1" * 64
    assert lockstep("bundle", "inspect", ref, cache=cache).returncode == 3


def blob_file(registry: OciRegistry, digest: str) -> Path:
    hexpart = digest.removeprefix("sha256:")
    return (
        registry.root
        / "storage"
        / "docker/registry/v2/blobs/sha256"
        / hexpart[:2]
        / hexpart
        / "data"
    )


@pytest.mark.registry
def test_a_blob_that_is_not_its_digest_is_refused_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    require(find_registry() is not None, "docker-registry is not installed")
    registry = OciRegistry.start_new(tmp_path / "registry")
    try:
        cache = tmp_path / "cache"
        bundle = make_bundle(tmp_path / "b", cache)
        pushed = push(bundle, f"{registry.address}/team/sir", cache)
        code = next(x for x in json.loads(skopeo_raw(pushed["reference"], "--tls-verify=false"))[
            "layers"] if x["mediaType"] == CODE_MEDIA_TYPE)  # fmt: skip
        path = blob_file(registry, code["digest"])
        assert path.is_file(), sorted(str(p) for p in registry.root.rglob("data"))[:5]
        data = bytearray(path.read_bytes())
        data[600] ^= 1  # one bit of a file's contents, same size
        path.write_bytes(bytes(data))
        proc = lockstep("bundle", "pull", pushed["reference"], str(tmp_path / "out"),
                        cache=tmp_path / "c2")  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        [line] = error_lines(proc.stderr)
        assert f"served blob {code['digest']}" in line and "refused, nothing kept" in line
        assert not (tmp_path / "out").exists()
    finally:
        registry.close()


@pytest.mark.registry
def test_registry_killed_mid_push_then_push_again_uploads_only_what_is_missing(
    tmp_path: Path,
) -> None:
    require(find_registry() is not None, "docker-registry is not installed")
    registry = OciRegistry.start_new(tmp_path / "registry")
    try:
        cache = tmp_path / "cache"
        bundle = make_bundle(
            tmp_path / "b",
            cache,
            {"alpha": os.urandom(3_000_000), "beta": os.urandom(3_000_000), "gamma": b"g"},
        )
        target = f"{registry.address}/crash"
        env = {**os.environ, "LOCKSTEP_CACHE_DIR": str(cache), "DOCKER_CONFIG": str(tmp_path)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "lockstep", "-v", "bundle", "push", str(bundle),
             "--registry", target],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stderr is not None
        stderr, uploads = [], 0
        for line in proc.stderr:
            stderr.append(line)
            if "uploading" in line:
                uploads += 1
                if uploads == 2 and registry.running:
                    registry.stop(kill=True)  # the first blob is in, the second on its way
        assert proc.wait(timeout=300) == 3, "".join(stderr)
        [line] = error_lines("".join(stderr))
        assert f"registry {registry.address}" in line

        registry.start()
        again = push(bundle, target, cache)
        assert again["blobs_present"] >= 1
        assert again["blobs_uploaded"] + again["blobs_present"] == 6  # config, code, lock, 3
        assert again["bytes_uploaded"] < again["size"]
        raw = skopeo_raw(again["reference"], "--tls-verify=false")
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == again["digest"]
    finally:
        registry.close()
