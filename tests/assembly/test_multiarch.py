"""One build of every platform (issue #22): one build id, each role an image index, the pure
layers one blob on every platform, files named by platform, and a pure layer that differs
between platforms failing the build."""

from __future__ import annotations

import collections
import dataclasses
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from pathlib import Path
from typing import Any

import pytest

from lockstep.assembly import inspection, oci, pycompile
from lockstep.assembly.builder import Builder, read_inputs
from lockstep.assembly.layercache import LayerRecord
from lockstep.assembly.layers import Compiler, CompilerToBe, LayerMaker, python_deb
from lockstep.assembly.layout import PYTHON_PACKAGE
from lockstep.core import reap
from lockstep.core.errors import BadInput
from lockstep.core.platforms import AMD64
from lockstep.core.store import Cache
from lockstep.inputs.build_inputs import DebianInput
from lockstep.project import load_project
from tests.assembly.test_compress import _shim
from tests.assembly.test_hygiene import _cmdline
from tests.fixtures.build import ROOT, Built, build, clone, downloads_only, lockstep
from tests.fixtures.engine import DockerEngine

pytestmark = pytest.mark.slow

PLATFORMS = {"linux/amd64": "amd64", "linux/arm64": "arm64"}


@pytest.fixture(scope="module")
def both(built_platforms: Built) -> Built:
    return built_platforms


def _images(both: Built, name: str) -> dict[str, dict[str, str]]:
    return dict(both.result["platforms"][name]["images"])


def _top_file(archive: oci.Archive, path: str) -> bytes:
    blob = archive.blob(archive.manifest["layers"][-1]["digest"])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        member = tar.extractfile(path)
        assert member is not None
        return member.read()


def test_one_build_id_and_the_amd64_images_of_a_one_platform_build(
    both: Built, built: Built
) -> None:
    """The build id is of the inputs, not the platforms built: a build of amd64 alone makes
    the same build id and the same amd64 images."""
    assert both.build_id == built.build_id
    assert list(both.result["platforms"]) == list(PLATFORMS)
    for role in ("runner", "worker"):
        assert _images(both, "linux/amd64")[role]["digest"] == built.digest(role)


def test_each_role_is_an_index_naming_each_platform(both: Built) -> None:
    layout = Path(both.result["layout"])
    top = json.loads((layout / "index.json").read_bytes())
    for role in ("runner", "worker"):
        index_digest = both.result["images"][role]["digest"]
        (entry,) = [m for m in top["manifests"] if m["digest"] == index_digest]
        assert entry["mediaType"] == "application/vnd.oci.image.index.v1+json"
        assert (
            entry["annotations"]["org.opencontainers.image.ref.name"]
            == (both.result["images"][role]["ref"])
        )
        index = json.loads((layout / oci.blob_name(index_digest)).read_bytes())
        assert [(m["platform"]["os"], m["platform"]["architecture"], m["digest"])
                for m in index["manifests"]] == [
            ("linux", arch, _images(both, name)[role]["digest"])
            for name, arch in PLATFORMS.items()
        ]  # fmt: skip
        assert index["annotations"]["io.lockstep.build-id"] == both.build_id


def test_each_image_names_its_platform_and_shares_the_pure_layers(both: Built) -> None:
    archives = {
        name: oci.read_archive(Path(_images(both, name)["worker"]["path"])) for name in PLATFORMS
    }
    for name, arch in PLATFORMS.items():
        archive = archives[name]
        assert archive.config["architecture"] == arch and archive.config["os"] == "linux"
        assert archive.index["manifests"][0]["platform"]["architecture"] == arch
        manifest = json.loads(_top_file(archive, "etc/lockstep/manifest.json"))
        assert manifest["platform"] == name and manifest["build_id"] == both.build_id
        assert Path(_images(both, name)["worker"]["path"]).name == f"worker-{arch}.tar"
        assert _images(both, name)["worker"]["ref"].endswith(f"-{arch}")
        found = inspection.inspect_archive(Path(_images(both, name)["worker"]["path"]))
        assert found["platform"] == name  # what `lockstep inspect` shows

    amd, arm = (_layer_names(archives[name]) for name in PLATFORMS)
    assert amd["base"] != arm["base"] and amd["manifest"] != arm["manifest"]
    pure = [n for n in amd if n == "app" or n.startswith("python:pure-")]
    assert "app" in pure and len(pure) > 3, list(amd)
    # Compiled once: byte-identical across platforms, by digest.
    assert {n: amd[n] for n in pure} == {n: arm.get(n) for n in pure}
    sizes = [Path(_images(both, n)["worker"]["path"]).stat().st_size for n in PLATFORMS]
    assert abs(sizes[1] - sizes[0]) <= sizes[0] // 10  # arm64 within 10 % of amd64


def _layer_names(archive: oci.Archive) -> dict[str, str]:
    names = [h["created_by"].removeprefix("lockstep ").split(": ", 1)[0]
             for h in archive.config["history"]]  # fmt: skip
    return {n: m["digest"] for n, m in zip(names, archive.manifest["layers"], strict=True)}


def test_the_runners_own_pyarrow_is_a_layer_of_each_platform(both: Built) -> None:
    """The runner's own lock has a resolve per platform: each platform's runner image holds
    its own pyarrow wheel (a binary wheel: another blob on each, which the pure-layer check
    lets be), above the app; no worker image has it; the shared layers stay shared."""
    runners = {}
    for name, arch in PLATFORMS.items():
        runner = _layer_names(oci.read_archive(Path(_images(both, name)["runner"]["path"])))
        worker = _layer_names(oci.read_archive(Path(_images(both, name)["worker"]["path"])))
        assert list(runner)[-3:] == ["app", "runner:pyarrow", "manifest"], (arch, list(runner))
        assert [n for n in worker if n.startswith("runner:")] == []
        assert {n: d for n, d in runner.items() if n not in ("runner:pyarrow", "manifest")} == {
            n: d for n, d in worker.items() if n != "manifest"
        }
        runners[name] = runner
    amd, arm = (runners[name] for name in PLATFORMS)
    assert amd["runner:pyarrow"] != arm["runner:pyarrow"]
    assert amd["app"] == arm["app"]


def test_a_pure_layer_that_differs_between_platforms_fails_the_build(
    built: Built, tmp_path: Path
) -> None:
    """The arm64 resolve of the Python lock lacks one pure wheel its amd64 resolve has: the
    pure layer holding it would differ, and one build refuses that (exit 1, one line)."""
    src = clone(tmp_path / "lockstep")
    lock = src / "images/python.lock.json"
    data = json.loads(lock.read_bytes())
    arm = data["locked_resolves"][1]
    assert arm["platform_tag"][-1].endswith("_aarch64")
    arm["locked_requirements"] = [
        r for r in arm["locked_requirements"] if r["project_name"] != "sortedcontainers"
    ]
    lock.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    proc = lockstep(["build", "worker", "--out", str(src / "out")], cwd=src, cache=built.cache)
    assert proc.returncode == 1, proc.stderr[-2000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert "pure layer python:pure-" in line and "differs between linux/amd64" in line
    assert not (src / "out").exists() or not list((src / "out").glob("*.tar"))


def test_docker_load_of_both_keeps_both_and_load_picks_the_host_platform(
    both: Built, docker_engine: DockerEngine
) -> None:
    env = {"DOCKER_HOST": docker_engine.host}
    for name in PLATFORMS:
        image = _images(both, name)["worker"]
        proc = lockstep(["load", image["path"]], cwd=both.root, cache=both.cache, env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == image["config"]
    for name, arch in PLATFORMS.items():
        image = _images(both, name)["worker"]
        found = docker_engine.client.images.get(image["ref"])
        assert found.id == image["config"] and found.attrs["Architecture"] == arch
    # A layout's index: the host's platform unless told.
    layout = both.result["layout"]
    proc = lockstep(["load", layout, "--image", "worker"], cwd=both.root, cache=both.cache, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == _images(both, "linux/amd64")["worker"]["config"]
    proc = lockstep(
        ["load", layout, "--image", "worker", "--platform", "linux/arm64"],
        cwd=both.root,
        cache=both.cache,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == _images(both, "linux/arm64")["worker"]["config"]


def test_every_platform_is_reproducible_from_another_clone_with_zlib_ng(
    both: Built, tmp_path: Path
) -> None:
    """A second clone elsewhere, another umask and TZ, the downloads but no layer in its
    cache (every layer made again), and zlib-ng as the host's zlib: every platform's images
    and documents have the same bytes as the first build's (stock zlib)."""
    other = clone(tmp_path / "deeper" / "elsewhere")
    cache = downloads_only(both, tmp_path / "cache")
    old_umask = os.umask(0o077)
    try:
        again = build(
            other, tmp_path / "out", cache, env={"TZ": "Pacific/Chatham", **_shim(tmp_path)},
            platform=(),
        )  # fmt: skip
    finally:
        os.umask(old_umask)
    assert again.build_id == both.build_id
    assert again.result["images"] == both.result["images"]  # each role's index
    for name in PLATFORMS:
        for role in ("runner", "worker"):
            first, second = _images(both, name)[role], _images(again, name)[role]
            assert second["digest"] == first["digest"], (name, role)
            assert Path(second["path"]).read_bytes() == Path(first["path"]).read_bytes()
            assert Path(second["sbom"]).read_bytes() == Path(first["sbom"]).read_bytes()


def test_a_platform_with_another_python_is_refused_before_anything_is_fetched(
    tmp_path: Path,
) -> None:
    """.pyc files are compiled once, by one python: every platform must lock the same one."""
    project = load_project(ROOT)
    amd, arm = (DebianInput.read(project.debian_lock, n) for n in PLATFORMS)
    other = [
        dataclasses.replace(p, version=p.version + "+other") if p.name == PYTHON_PACKAGE else p
        for p in arm.lock.packages
    ]
    arm = dataclasses.replace(arm, lock=dataclasses.replace(arm.lock, packages=tuple(other)))
    python_deb = amd.lock.get(PYTHON_PACKAGE).version
    compiler = Compiler(LayerRecord("sha256:" + "0" * 64, "sha256:" + "1" * 64, 1, {
        "python": "3.11.2", "python_deb": python_deb}), AMD64)  # fmt: skip
    maker = LayerMaker(Cache(tmp_path / "cache"))
    with pytest.raises(BadInput, match=r"python3\.11-minimal is .*\+other for linux/arm64"):
        maker.base_layer(arm, "http://127.0.0.1:9/debian", compiler)
    assert not (tmp_path / "cache" / "blobs").exists()  # nothing fetched


def test_a_cold_build_overlaps_the_bases_and_reuses_the_compilers_pyc(
    both: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no layer cached: arm64's base is fetched and unpacked while amd64's (the
    compiler's) is made, the wheel layers start before it is done, arm64's standard library
    takes amd64's .pyc (only what differs by platform is compiled again), and every image
    is the bytes the session's build made one platform after the other."""
    cache = downloads_only(both, tmp_path / "cache")
    spans: dict[str, list[tuple[float, float]]] = {}
    compiled: list[str] = []

    def timed(label: Callable[[tuple[Any, ...]], str], fn: Callable[..., Any]) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                spans.setdefault(label(args), []).append((start, time.monotonic()))

        return run

    def counted(python: Any, sources: Any) -> Any:
        compiled.extend(path for path, _ in sources)
        return chunk(python, sources)

    base_layer, wheel_layer, chunk = (
        LayerMaker.base_layer, LayerMaker._wheel_layer, pycompile._compile_chunk,
    )  # fmt: skip
    monkeypatch.setattr(LayerMaker, "base_layer", timed(lambda a: a[1].lock.arch, base_layer))
    monkeypatch.setattr(LayerMaker, "_wheel_layer", timed(lambda a: "wheels", wheel_layer))
    monkeypatch.setattr(pycompile, "_compile_chunk", counted)
    project = load_project(both.root)
    result = Builder(Cache(cache)).build_platforms(read_inputs(project))
    for name in PLATFORMS:
        for role in ("runner", "worker"):
            assert result.results[name].images[role].digest == _images(both, name)[role]["digest"]
    (amd_start, amd_end), (arm_start, arm_end) = spans["amd64"][0], spans["arm64"][0]
    assert arm_start < amd_end and amd_start < arm_end  # side by side
    assert min(start for start, _ in spans["wheels"]) < amd_end  # not after the compiler
    stdlib = [p for p in compiled if p.startswith("usr/lib/python3.11/")]
    assert len(stdlib) > 500
    twice = [p for p, n in collections.Counter(stdlib).items() if n > 1]
    assert twice == []  # arm64's standard library is amd64's .pyc, not compiled again


def test_a_base_waiting_for_a_compiler_that_failed_ends_and_leaves_nothing(
    both: Built, tmp_path: Path
) -> None:
    """If the compiler's base fails, the other platform's base (unpacked meanwhile) ends
    with the cancellation, caches no layer and leaves no staging tree."""
    cache = downloads_only(both, tmp_path / "cache")
    project = load_project(both.root)
    amd, arm = (DebianInput.read(project.debian_lock, n) for n in PLATFORMS)
    made: Future[Compiler] = Future()
    made.cancel()
    to_be = CompilerToBe(AMD64, python_deb(amd), made)
    with pytest.raises(CancelledError):
        LayerMaker(Cache(cache)).base_layer(arm, project.mirror(), to_be, {})
    assert not (cache / "keys").exists() or not list((cache / "keys").rglob("*"))
    staged = cache / "staged"
    assert not staged.exists() or list(staged.iterdir()) == []


def _sigint_as_in_a_terminal() -> None:
    """SIGINT's default action, as a terminal's foreground job has it: a suite started in
    the background by a shell without job control (a CI runner may be) ignores SIGINT,
    its children inherit that, and Python then leaves it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_an_interrupted_cold_build_ends_in_one_line_and_the_next_build_is_whole(
    both: Built, tmp_path: Path
) -> None:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while the compiler's
    base compiles and the other jobs wait for it: exit 130, one line, no traceback; the
    build after it makes the same images."""
    src = clone(tmp_path / "src")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "lockstep", "build", "all", "--out", str(out), "--json"]
    for attempt in range(3):
        cache = downloads_only(both, tmp_path / f"cache-{attempt}")
        env = {**os.environ, "LOCKSTEP_CACHE_DIR": str(cache)}
        proc = subprocess.Popen(
            argv, cwd=src, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, preexec_fn=_sigint_as_in_a_terminal,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while not any("pyc_driver" in _cmdline(p) for p in reap.descendants(proc.pid)):
                assert proc.poll() is None, "the build ended before it compiled"
                assert time.monotonic() < deadline, "the build never compiled"
                time.sleep(0.02)
            # A compile seen in its last moments (the app's, at the very end) can let the
            # build finish before the signal: that try proves nothing, and is run again.
            signalled = proc.poll() is None
            if signalled:
                os.killpg(proc.pid, signal.SIGINT)
            _, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if signalled:
            break
    else:
        raise AssertionError("every try's build ended before the signal could be sent")
    text = err.decode()
    assert proc.returncode == 130, text[-2000:]
    assert text.rstrip().splitlines()[-1] == "lockstep: interrupted"
    assert "Traceback" not in text
    again = build(src, out, cache, platform=())
    for name in PLATFORMS:
        for role in ("runner", "worker"):
            assert _images(again, name)[role]["digest"] == _images(both, name)[role]["digest"]
