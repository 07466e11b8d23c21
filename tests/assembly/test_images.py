"""The real images: built by the CLI, reproducible, read by skopeo, umoci and Docker.

These tests build for real: .debs from the Debian mirror, wheels from PyPI
through pex, and the image's own python3.11 compiling and checking the tree.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lockstep.assembly import oci
from lockstep.assembly.pycompile import pyc_path
from lockstep.core.digests import sha256_digest as sha256
from lockstep.core.stamps import RACY_NS, Stamp
from lockstep.core.store import Cache
from lockstep.core.wheels import in_test_dir
from tests.fixtures.build import PLATFORM, ROOT, Built, build, clone, lockstep
from tests.fixtures.support import require

pytestmark = pytest.mark.slow


def layer_files(blob: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_build_prints_the_json_contract(built: Built) -> None:
    assert built.build_id.startswith("sha256:")
    for role in ("runner", "worker"):
        image = built.result["images"][role]
        assert set(image) == {"digest", "config", "path", "ref", "sbom"}
        # The project builds two platforms: each image's name says its architecture.
        assert image["ref"] == f"lockstep-{role}:0.1.0-{built.build_id[7:19]}-amd64"
        archive = oci.read_archive(Path(image["path"]))
        assert archive.digest == image["digest"]
        assert archive.config_digest == image["config"]
    assert built.digest("runner") != built.digest("worker")


def test_images_share_every_layer_but_the_runners_own_wheels(built: Built) -> None:
    runner = oci.read_archive(built.path("runner"))
    worker = oci.read_archive(built.path("worker"))
    ours, theirs = runner.manifest["layers"], worker.manifest["layers"]
    # The runner: the worker's layers up to the app, then its own (pyarrow), then the same
    # manifest layer; the worker has no layer the runner lacks.
    assert ours[: len(theirs) - 1] == theirs[:-1] and ours[-1] == theirs[-1]
    assert list(named_layers(runner))[len(theirs) - 1 : -1] == ["runner:pyarrow"]
    assert set(named_layers(runner)) - set(named_layers(worker)) == {"runner:pyarrow"}
    own = runner.config["history"][len(theirs) - 1]["created_by"]
    assert own == "lockstep runner:pyarrow: pyarrow 26.0.1"
    assert not any("pyarrow" in h["created_by"] for h in worker.config["history"])
    # One history entry per layer says what it is: base, the wheel groups, app, manifest.
    names = [h["created_by"].split(":")[0] for h in worker.config["history"]]
    assert len(names) == len(worker.manifest["layers"])
    assert names[0] == "lockstep base" and names[-2:] == ["lockstep app", "lockstep manifest"]
    assert names[1:-2] and all(n.startswith("lockstep python") for n in names[1:-2])
    assert any("distributed 2026.8.0" in h["created_by"] for h in worker.config["history"])
    diff_ids = runner.config["rootfs"]["diff_ids"], worker.config["rootfs"]["diff_ids"]
    assert diff_ids[0][: len(theirs) - 1] == diff_ids[1][:-1]
    assert runner.config["config"]["Entrypoint"][-1] == "runner"
    assert worker.config["config"]["Entrypoint"][-1] == "worker"
    labels = worker.config["config"]["Labels"]
    assert labels["io.lockstep.build-id"] == built.build_id
    assert labels["io.lockstep.executors"] == "cold,direct,isolated_warm"
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert worker.manifest["annotations"]["io.lockstep.build-id"] == built.build_id


def test_manifest_in_the_image_matches_the_build(built: Built) -> None:
    proc = lockstep(["inspect", str(built.path("worker")), "--json"], cwd=ROOT, cache=built.cache)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    m = info["manifest"]
    assert m["build_id"] == built.build_id
    assert m["executors"] == ["cold", "direct", "isolated_warm"]
    assert m["python"] == "3.11.2"
    assert m["stamp"] is None
    assert info["digest"] == built.digest("worker")


def test_a_reader_that_goes_early_ends_inspect_quietly(built: Built) -> None:
    """`lockstep inspect … | head`: the pipe's reader is gone before anything is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "lockstep", "inspect", str(built.path("worker")), "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "LOCKSTEP_CACHE_DIR": str(built.cache)},
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""


def named_layers(archive: oci.Archive) -> dict[str, str]:
    """Layer name (``base``, ``python:group-3``, ``app``, ``manifest``) -> digest."""
    names = [
        h["created_by"].split(":")[0].removeprefix("lockstep ") for h in archive.config["history"]
    ]
    names = [
        n
        if n not in ("python", "runner")
        else h["created_by"].split(": ")[0].removeprefix("lockstep ")
        for n, h in zip(names, archive.config["history"], strict=True)
    ]
    return {n: layer["digest"] for n, layer in zip(names, archive.manifest["layers"], strict=True)}


def test_python_files_are_precompiled(built: Built) -> None:
    archive = oci.read_archive(built.path("worker"))
    layers = named_layers(archive)
    app = layer_files(archive.blob(layers["app"]))
    site = "usr/local/lib/python3.11/dist-packages"
    assert f"{site}/lockstep/__pycache__/cli.cpython-311.pyc" in app
    third: dict[str, Any] = {}
    for name, digest in layers.items():
        if name.startswith("python:"):
            third.update(layer_files(archive.blob(digest)))
    assert f"{site}/distributed/__pycache__/worker.cpython-311.pyc" in third
    # the wheels' own test suites are installed but not compiled; every other module is
    tests = [p for p in third if p.endswith(".py") and in_test_dir(p)]
    assert tests and not [p for p in tests if pyc_path(p, "cpython-311") in third]
    modules = [p for p in third if p.endswith(".py") and not in_test_dir(p)]
    assert [p for p in modules if pyc_path(p, "cpython-311") not in third] == []
    base = layer_files(archive.blob(layers["base"]))
    assert "usr/lib/python3.11/__pycache__/os.cpython-311.pyc" in base
    assert base["tmp"].mode == 0o1777


def test_a_pyc_does_not_depend_on_what_else_its_process_compiled(built: Built) -> None:
    """What lets a build reuse the app's .pyc files across builds (a one-line change
    compiles one file) without changing a digest: the image's python gives a source the
    same bytes alone as among others."""
    from lockstep.assembly import pycompile
    from lockstep.assembly.entries import Entry
    from lockstep.assembly.layers import LayerMaker
    from lockstep.assembly.stage import StagedPython
    from lockstep.core.store import Cache
    from lockstep.inputs.build_inputs import DebianInput
    from lockstep.project import load_project

    project = load_project(built.root)
    maker = LayerMaker(Cache(built.cache))
    base = maker.base_layer(DebianInput.read(project.debian_lock), project.mirror())
    python = StagedPython(maker.layers.staged(base))
    sources = sorted((built.root / "src/lockstep").rglob("*.py"))[::4]  # a spread of modules
    entries = [Entry.file(f"app/{p.name}-{i}.py", p.read_bytes(), 0o644)
               for i, p in enumerate(sources)]  # fmt: skip
    together = {e.path: e.data for e in pycompile.compile_pycs(python, entries)}
    assert len(together) == len(entries) >= 20
    memo: pycompile.Memo = {}
    pycompile.compile_pycs(python, entries[::-1][:5], memo=memo)  # another company, reversed
    for entry in entries:
        alone = pycompile.compile_pycs(python, [entry], memo=dict(memo))
        assert [e.data for e in alone] == [together[pycompile.pyc_path(entry.path, "cpython-311")]]


def test_the_pyc_are_the_bytes_py_compile_writes_and_no_file_is_made(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image's python compiles from stdin to stdout (no file per source): the bytes
    are what ``py_compile.compile`` writes from files, unchecked-hash, under the image's
    path; a source that does not compile (Python 2) is skipped; nothing is written to the
    temporary directory."""
    from lockstep.assembly import pycompile
    from lockstep.assembly.entries import Entry
    from lockstep.assembly.layers import LayerMaker
    from lockstep.assembly.stage import StagedPython
    from lockstep.inputs.build_inputs import DebianInput
    from lockstep.project import load_project

    project = load_project(built.root)
    maker = LayerMaker(Cache(built.cache))
    base = maker.base_layer(DebianInput.read(project.debian_lock), project.mirror())
    python = StagedPython(maker.layers.staged(base))
    sources = sorted((built.root / "src/lockstep").rglob("*.py"))[::7]
    entries = [Entry.file(f"app/m{i}.py", p.read_bytes(), 0o644) for i, p in enumerate(sources)]
    entries.append(Entry.file("app/old.py", b"print 'python 2'\n", 0o644))
    nowhere = tmp_path / "absent"  # a temporary directory that cannot be written
    monkeypatch.setattr(tempfile, "tempdir", str(nowhere))
    monkeypatch.setenv("TMPDIR", str(nowhere))
    found = {e.path: e.data for e in pycompile.compile_pycs(python, entries)}
    assert not nowhere.exists()
    assert "app/__pycache__/old.cpython-311.pyc" not in found
    assert len(found) == len(entries) - 1 >= 20
    by_files = tmp_path / "files"
    by_files.mkdir()
    script = (
        "import py_compile, sys\n"
        "for src, dfile, out in zip(*[iter(sys.argv[1:])] * 3):\n"
        "    py_compile.compile(src, cfile=out, dfile=dfile, doraise=True, optimize=0,\n"
        "        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)\n"
    )
    args = []
    for i, entry in enumerate(entries[:-1]):
        (by_files / f"{i}.py").write_bytes(entry.data)
        args += [str(by_files / f"{i}.py"), "/" + entry.path, str(by_files / f"{i}.pyc")]
    python.run(["-c", script, *args], check=True)
    for i, entry in enumerate(entries[:-1]):
        expected = (by_files / f"{i}.pyc").read_bytes()
        assert found[pycompile.pyc_path(entry.path, "cpython-311")] == expected, entry.path


def test_two_clones_two_environments_same_digests(built: Built, tmp_path: Path) -> None:
    """A second clone elsewhere, other mtimes, umask, TZ and locale, and an empty cache."""
    other = clone(tmp_path / "deeper" / "path" / "elsewhere")
    rng = random.Random(7)
    for path in other.rglob("*"):
        if ".git" not in path.parts and path.is_file():
            t = rng.randint(10**8, 2 * 10**9)
            os.utime(path, (t, t))
    old_umask = os.umask(0o077)
    try:
        second = build(
            other,
            tmp_path / "out",
            tmp_path / "empty-cache",
            env={"TZ": "Pacific/Chatham", "LANG": "de_DE.UTF-8", "LC_ALL": "C"},
        )
    finally:
        os.umask(old_umask)
    assert second.build_id == built.build_id
    for role in ("runner", "worker"):
        assert second.digest(role) == built.digest(role), role
        assert second.path(role).read_bytes() == built.path(role).read_bytes()
        sbom = Path(second.result["images"][role]["sbom"])  # the SBOM too: same bytes
        assert sbom.read_bytes() == Path(built.result["images"][role]["sbom"]).read_bytes()


def test_noop_rebuild_is_identical(built: Built, tmp_path: Path) -> None:
    again = build(built.root, tmp_path / "again", built.cache)
    assert again.result["build_id"] == built.build_id
    for role in ("runner", "worker"):
        assert again.digest(role) == built.digest(role)


def test_one_line_change_rewrites_only_app_and_manifest(built: Built, tmp_path: Path) -> None:
    changed = clone(tmp_path / "changed")
    target = changed / "src/lockstep/runtime/__init__.py"
    target.write_text(target.read_text() + "\n# a one-line change\n")
    second = build(changed, tmp_path / "out", built.cache)
    assert second.build_id != built.build_id
    a = named_layers(oci.read_archive(built.path("worker")))
    b = named_layers(oci.read_archive(second.path("worker")))
    assert list(a) == list(b)
    assert [n for n in a if a[n] != b[n]] == ["app", "manifest"]


def test_stamp_changes_only_manifest_layer_and_config(built: Built, tmp_path: Path) -> None:
    stamped = build(built.root, tmp_path / "stamped", built.cache, "--stamp")
    assert stamped.build_id == built.build_id
    a = oci.read_archive(built.path("worker"))
    b = oci.read_archive(stamped.path("worker"))
    assert a.manifest["layers"][:-1] == b.manifest["layers"][:-1]
    assert a.manifest["layers"][-1] != b.manifest["layers"][-1]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=built.root, capture_output=True, text=True, check=True
    ).stdout.strip()
    labels = b.config["config"]["Labels"]
    assert labels["org.opencontainers.image.revision"] == head
    # ``created`` is the commit's time under --stamp (never the clock), the epoch without.
    commit_time = subprocess.run(
        ["git", "show", "-s", "--format=%cd", "--date=format-local:%Y-%m-%dT%H:%M:%SZ", head],
        cwd=built.root,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TZ": "UTC"},
    ).stdout.strip()
    assert labels["org.opencontainers.image.created"] == commit_time
    assert b.config["created"] == commit_time
    assert {h["created"] for h in b.config["history"]} == {commit_time}
    assert a.config["created"] == "1970-01-01T00:00:00Z"
    proc = lockstep(["inspect", str(stamped.path("worker")), "--json"], cwd=ROOT, cache=built.cache)
    assert json.loads(proc.stdout)["manifest"]["stamp"] == {
        "commit": head,
        "tag": None,
        "dirty": False,
    }


# -- metadata users expect ------------------------------------------------------------------


def test_each_role_has_its_own_name_history_and_annotations(built: Built) -> None:
    bases = set()
    for role in ("runner", "worker"):
        archive = oci.read_archive(built.path(role))
        ref = archive.index["manifests"][0]["annotations"][oci.REF_NAME]
        assert ref == f"lockstep-{role}:0.1.0-{built.build_id[7:19]}-amd64"
        with tarfile.open(built.path(role)) as tar:
            member = tar.extractfile("manifest.json")
            assert member is not None
            assert json.loads(member.read())[0]["RepoTags"] == [ref]
        created_by = [h["created_by"] for h in archive.config["history"]]
        assert len(created_by) == len(archive.manifest["layers"])
        assert created_by[0].startswith("lockstep base: Debian bookworm")
        own = ["lockstep runner:pyarrow: pyarrow 26.0.1"] if role == "runner" else []
        if own:  # the runner's own wheels sit above the app
            assert created_by[-1 - len(own) : -1] == own
            created_by = [*created_by[: -1 - len(own)], created_by[-1]]
        assert all(c.startswith("lockstep python:") for c in created_by[1:-2])
        assert created_by[-2].startswith("lockstep app: lockstep 0.1.0")
        assert created_by[-1].startswith("lockstep manifest: the build manifest")
        annotations = archive.manifest["annotations"]
        assert annotations == archive.config["config"]["Labels"]
        prefix = "org.opencontainers.image."
        assert annotations[prefix + "created"] == "1970-01-01T00:00:00Z"
        assert annotations[prefix + "licenses"] == "Apache-2.0"
        assert annotations[prefix + "source"] == "https://github.com/lockstep-dev/lockstep"
        assert annotations[prefix + "version"] == "0.1.0"
        assert annotations[prefix + "description"].endswith(f"({role} image)")
        assert prefix + "revision" not in annotations  # unstamped
        base_digest = annotations[prefix + "base.digest"]
        assert annotations[prefix + "base.name"] == f"lockstep-base:bookworm-{base_digest[7:19]}"
        bases.add(base_digest)
    assert len(bases) == 1


def test_podman_loads_both_roles_under_their_own_names(built: Built, tmp_path: Path) -> None:
    require(shutil.which("podman") is not None, "podman is not installed (Debian package podman)")
    run = Path(tempfile.mkdtemp(prefix="ls-pm-"))  # podman wants a runroot under 50 characters
    podman = [
        "podman",
        "--root",
        str(tmp_path / "root"),
        "--runroot",
        str(run),
        "--storage-driver",
        "vfs",
    ]
    names = {}
    for role in ("runner", "worker"):
        proc = subprocess.run(
            [*podman, "load", "-i", str(built.path(role))], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        names[role] = f"localhost/lockstep-{role}:0.1.0-{built.build_id[7:19]}-amd64"
        assert f"Loaded image: {names[role]}" in proc.stdout
    listed = subprocess.run(
        [*podman, "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(listed) == sorted(names.values())  # no <none>: neither took the other's name
    history = subprocess.run(
        [*podman, "history", "--no-trunc", "--format", "{{.CreatedBy}}", names["worker"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    # newest first: the manifest, the app, the wheel groups, the Debian base
    assert "build manifest" in history[0] and "lockstep app:" in history[1]
    assert all("lockstep python:" in h for h in history[2:-1])
    assert "Debian bookworm" in history[-1] and len(history) >= 4
    shutil.rmtree(run, ignore_errors=True)


# -- independent readers ----------------------------------------------------------------


def test_skopeo_reads_our_digests(built: Built) -> None:
    require(shutil.which("skopeo") is not None, "skopeo is not installed (Debian package skopeo)")
    for role in ("runner", "worker"):
        ref = f"oci-archive:{built.path(role)}"
        raw = subprocess.run(
            ["skopeo", "inspect", "--raw", ref], capture_output=True, check=True
        ).stdout
        assert sha256(raw) == built.digest(role)
        info = json.loads(
            subprocess.run(
                ["skopeo", "inspect", ref], capture_output=True, text=True, check=True
            ).stdout
        )
        assert info["Digest"] == built.digest(role)
        assert info["Labels"]["io.lockstep.build-id"] == built.build_id
        config = subprocess.run(
            ["skopeo", "inspect", "--config", "--raw", ref], capture_output=True, check=True
        ).stdout
        assert sha256(config) == built.config(role)


def test_umoci_unpacks_and_verifies(built: Built, tmp_path: Path) -> None:
    require(shutil.which("umoci") is not None, "umoci is not installed (Debian package umoci)")
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(built.path("worker")) as tar:
        tar.extractall(layout, filter="data")
    ref = json.loads((layout / "index.json").read_text())["manifests"][0]["annotations"][
        oci.REF_NAME
    ]
    stat = subprocess.run(
        ["umoci", "stat", "--image", f"{layout}:{ref}", "--json"], capture_output=True, text=True
    )
    assert stat.returncode == 0, stat.stderr
    bundle = tmp_path / "bundle"
    proc = subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{layout}:{ref}", str(bundle)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((bundle / "rootfs/etc/lockstep/manifest.json").read_text())
    assert manifest["build_id"] == built.build_id
    assert (bundle / "rootfs/usr/bin/python3.11").is_file()


# -- the real engine ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(built: Built, docker_engine: Any) -> Iterator[Any]:
    for role in ("worker", "runner"):
        proc = lockstep(
            ["load", str(built.path(role))],
            cwd=ROOT,
            cache=built.cache,
            env={"DOCKER_HOST": docker_engine.host},
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == built.config(role)
    yield docker_engine


LOCKED_DOWN = {
    "read_only": True,
    "tmpfs": {"/tmp": ""},
    "user": "65532",
    "network_mode": "none",
    "remove": True,
}


def test_docker_load_reports_the_config_digest(built: Built, loaded: Any) -> None:
    image = loaded.client.images.get(built.config("worker"))
    assert image.id == built.config("worker")
    assert image.labels["io.lockstep.build-id"] == built.build_id


def test_worker_self_check_in_a_locked_down_container(built: Built, loaded: Any) -> None:
    out = loaded.client.containers.run(
        built.config("worker"),
        entrypoint=["/usr/bin/python3.11", "-m", "lockstep"],
        command=["self-check"],
        read_only=True,
        tmpfs={"/tmp": ""},
        user="65532",
        network_mode="none",
        remove=True,
        stdout=True,
        stderr=True,
    )
    manifest = json.loads(out)
    assert manifest["build_id"] == built.build_id
    assert manifest["executors"] == ["cold", "direct", "isolated_warm"]


def test_base_runs_python_with_its_promises(built: Built, loaded: Any) -> None:
    script = (
        "import ssl, sqlite3, json, asyncio, zoneinfo, locale, os, pwd, sys\n"
        "zoneinfo.ZoneInfo('Europe/Paris')\n"
        "locale.setlocale(locale.LC_ALL, 'C.UTF-8')\n"
        "ctx = ssl.create_default_context()\n"
        "assert ctx.cert_store_stats()['x509_ca'] > 50, ctx.cert_store_stats()\n"
        "assert pwd.getpwuid(os.getuid()).pw_name == 'nonroot'\n"
        "open('/tmp/x', 'w').write('ok')\n"
        "try:\n    open('/etc/x', 'w')\nexcept OSError:\n    pass\n"
        "else:\n    raise SystemExit('root filesystem is writable')\n"
        "print(sys.version.split()[0], os.getuid())\n"
    )
    out = loaded.client.containers.run(
        built.config("worker"),
        entrypoint=["/usr/bin/python3.11", "-c", script],
        read_only=True,
        tmpfs={"/tmp": ""},
        user="65532",
        network_mode="none",
        remove=True,
    )
    assert out.decode().split() == ["3.11.2", "65532"]


def test_the_runner_image_has_pyarrow_and_the_worker_image_does_not(
    built: Built, loaded: Any
) -> None:
    import docker.errors

    script = "import pyarrow, pyarrow.parquet; print(pyarrow.__version__)"
    run = ["/usr/bin/python3.11", "-c", script]
    out = loaded.client.containers.run(built.config("runner"), entrypoint=run, **LOCKED_DOWN)
    assert out.decode().strip() == "26.0.1"
    with pytest.raises(docker.errors.ContainerError, match=r"No module named .{1,2}pyarrow"):
        loaded.client.containers.run(built.config("worker"), entrypoint=run, **LOCKED_DOWN)


def test_lockstep_results_exports_parquet_in_the_runner_image(
    built: Built, loaded: Any, tmp_path: Path
) -> None:
    """A store made on the host is exported by the runner image's own `lockstep results`
    (its pyarrow), in a locked-down container; the host reads the Parquet back."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lockstep.results.keys import Inputs
    from lockstep.results.store import ResultStore

    store = ResultStore.open(tmp_path / "store")
    curve = pa.table({"t": [0.0, 0.5, 1.0], "v": [3, 2, 1]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, curve.schema) as writer:
        writer.write_table(curve)
    table = store.put_blob(sink.getvalue().to_pybytes())
    inputs = Inputs("sha256:" + "a" * 64, "sha256:" + "b" * 64, "direct", "m:f")
    records = [
        {
            "key": inputs.key({"beta": 0.5}, seed),
            "build_id": inputs.build_id,
            "bundle": inputs.bundle,
            "executor": inputs.executor,
            "model": inputs.model,
            "status": "ok",
            "params": {"beta": 0.5},
            "seed": seed,
            "output": {"x": seed * 2.5},
            "tables": {"curve": table},
            "cause": None,
            "worker": "tcp://127.0.0.1:1",
            "pid": 100 + seed,
            "environment": None,
            "seconds": 0.01,
        }
        for seed in range(3)
    ]
    store.writer().write(records)
    for path in [store.root, *store.root.rglob("*")]:  # the container's user writes there
        path.chmod(0o777 if path.is_dir() else 0o666)
    out = loaded.client.containers.run(
        built.config("runner"),
        entrypoint=["/usr/bin/python3.11", "-m", "lockstep"],
        command=["results", "/store"],
        volumes={str(store.root): {"bind": "/store", "mode": "rw"}},
        **LOCKED_DOWN,
    )
    assert out.decode().splitlines()[0] == (
        "store /store: 3 simulation(s), 3 ok, 0 failed; 1 segment(s), 0 corrupt entr(y/ies)"
    )
    rows = pq.read_table(store.root / "parquet" / "simulations.parquet").to_pylist()
    assert [(r["key"], r["seed"], r["output"], r["pid"]) for r in rows] == [
        (r["key"], r["seed"], r["output"], r["pid"]) for r in records
    ]
    curves = pq.read_table(store.root / "parquet" / "tables" / "curve.parquet")
    assert curves.column("seed").to_pylist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert curves.select(["t", "v"]).slice(0, 3).equals(curve)


# -- bad input: one clear line, the right exit code, nothing in --out ---------------------


def failing_build(root: Path, out: Path, cache: Path) -> str:
    proc = lockstep(["build", "all", "--out", str(out), *PLATFORM], cwd=root, cache=cache)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("lockstep: error:")]
    assert len(lines) == 1, proc.stderr
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
    return lines[0]


def test_executor_that_does_not_import_fails_the_build(built: Built, tmp_path: Path) -> None:
    src = clone(tmp_path / "bogus")
    pyproject = src / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            'cold = "lockstep.runtime.executors.cold:ColdExecutor"',
            'cold = "lockstep.runtime.executors.cold:ColdExecutor"\n'
            'bogus = "lockstep.runtime.executors.bogus:Bogus"',
        )
    )
    line = failing_build(src, tmp_path / "out", built.cache)
    assert "'bogus'" in line and "does not import" in line


def test_missing_lock_and_missing_input(built: Built, tmp_path: Path) -> None:
    src = clone(tmp_path / "nolock")
    (src / "images/python.lock.json").unlink()
    line = failing_build(src, tmp_path / "out", built.cache)
    assert "python.lock.json" in line and "lockstep lock python" in line
    runnerless = clone(tmp_path / "norunnerlock")
    (runnerless / "images/python-runner.lock.json").unlink()
    line = failing_build(runnerless, tmp_path / "out1", built.cache)
    assert "python-runner.lock.json: cannot read the lock" in line
    assert "lockstep lock python" in line
    src2 = clone(tmp_path / "noinput")
    pyproject = src2 / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            '"images/complete-platform.json",',
            '"images/complete-platform.json", "images/gone.txt",',
        )
    )
    line = failing_build(src2, tmp_path / "out2", built.cache)
    assert "images/gone.txt" in line


def test_tampered_deb_in_cache_is_refused(built: Built, tmp_path: Path) -> None:
    """A cache holding the .debs but no base layer yet: one .deb is altered."""
    lock = json.loads((ROOT / "images/debian.lock.json").read_text())
    cache = tmp_path / "cache"
    victim = lock["packages"]["amd64"][0]
    for pkg in lock["packages"]["amd64"]:
        src = built.cache / "blobs" / "sha256" / pkg["sha256"]
        dst = cache / "blobs" / "sha256" / pkg["sha256"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    target = cache / "blobs" / "sha256" / victim["sha256"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    proc = lockstep(
        ["build", "all", "--out", str(tmp_path / "out"), *PLATFORM],
        cwd=built.root,
        cache=cache,
        env={"LOCKSTEP_DEBIAN_MIRROR": "http://127.0.0.1:9/debian"},
    )
    assert proc.returncode in (1, 2, 3), proc.stderr
    assert victim["name"] in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_cached_layer_changed_after_its_stamp_is_refused_then_made_again(
    built: Built, tmp_path: Path
) -> None:
    """Archives trust a cached layer by the stamp of its last hash (core/stamps.py): a change
    to it since, with its size and mtime as they were, is still caught before any archive
    is written, and the next build makes the layer again."""
    cache = tmp_path / "cache"  # the session's, linked: the victim alone is a copy
    shutil.copytree(
        built.cache, cache, copy_function=os.link, ignore=lambda _, n: {"staged", "stamps"} & set(n)
    )
    (cache / "staged").symlink_to(built.cache / "staged")
    app = named_layers(oci.read_archive(built.path("worker")))["app"]
    blobs = Cache(cache)
    path = blobs.blob_path(app)
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)
    st = path.stat()  # stamped as a build hashing it after the racy window would
    blobs.stamps.hashed(app, Stamp.of(st), st.st_ctime_ns + RACY_NS)
    with path.open("r+b") as f:
        f.seek(len(data) // 2)
        f.write(bytes([data[len(data) // 2] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    line = failing_build(built.root, tmp_path / "out", cache)
    assert f"{app.removeprefix('sha256:')}: cached layer is missing or corrupt" in line
    assert not path.exists()
    again = build(built.root, tmp_path / "again", cache)
    for role in ("runner", "worker"):
        assert again.path(role).read_bytes() == built.path(role).read_bytes()
