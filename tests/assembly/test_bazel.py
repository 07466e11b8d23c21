"""Bazel as a second build driver: same bytes as `lockstep build`, only declared inputs.

Real Bazel (Debian ``bazel-bootstrap`` 4.2.3) in a clone of the CLI's session
build, with its own ``--output_user_root`` in a temporary directory and the
session's lockstep cache (so nothing is downloaded twice). One workspace and
one Bazel server serve the whole module; every test that edits the workspace
puts it back afterwards, and the server is shut down at the end.

The committed project builds two platforms (issue #22): ``//images:<role>`` is the
role's OCI image index (an OCI layout, ``<role>.oci``) and ``//images:<role>_<arch>`` one
platform's archive, compared with the CLI's build of every platform.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lockstep.assembly import oci
from lockstep.core.digests import sha256_digest as sha256
from lockstep.inputs import declared as sources
from lockstep.project import ROLES, load_project
from tests.fixtures.build import PLATFORM, Built, build, clone, lockstep
from tests.fixtures.engine import DockerEngine
from tests.fixtures.support import require

pytestmark = pytest.mark.slow

# What Bazel itself may set up under external/: its own embedded tools and our
# local repository rule. Anything else would be a fetch.
LOCAL_REPOSITORIES = {"bazel_tools", "local_config_platform", "platforms", "lockstep_project"}
PROCESSES = re.compile(r"^INFO: (\d+) process(?:es)?(?:: (.*))?\.$", re.MULTILINE)
PLATFORMS = {"linux/amd64": "amd64", "linux/arm64": "arm64"}


@dataclass
class Workspace:
    """A clone with its own Bazel output root; ``bazel(...)`` runs the real command."""

    root: Path
    user_root: Path
    cache: Path
    timings: dict[str, float] = field(default_factory=dict)

    def startup(self) -> list[str]:
        # The same startup options every time, or Bazel restarts its server.
        return [f"--output_user_root={self.user_root}", "--max_idle_secs=900"]

    def bazel(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        command, *rest = args
        full_env = {**_base_env(), "LOCKSTEP_CACHE_DIR": str(self.cache), **(env or {})}
        return subprocess.run(
            ["bazel", *self.startup(), command, "--color=no", "--curses=no", *rest],
            cwd=self.root,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def build(self, *targets: str, ok: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        start = time.perf_counter()
        proc = self.bazel("build", *targets, **kw)
        self.timings.setdefault(f"build {' '.join(targets)}", time.perf_counter() - start)
        if ok:
            assert proc.returncode == 0, f"bazel build failed:\n{proc.stderr[-4000:]}"
        return proc

    def bin(self, rel: str) -> Path:
        return self.root / "bazel-bin" / rel

    def result(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.bin("images/build.json").read_text())
        return data

    def restore(self) -> None:
        """Undo a test's edits (the clone is ours; bazel-* and .venv stay)."""
        subprocess.run(["git", "checkout", "-q", "--", "."], cwd=self.root, check=True)
        subprocess.run(["git", "clean", "-fdq", "-e", ".venv"], cwd=self.root, check=True)

    def shutdown(self) -> None:
        subprocess.run(
            ["bazel", *self.startup(), "shutdown"],
            cwd=self.root,
            env=_base_env(),
            capture_output=True,
            timeout=120,
        )


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "LOCKSTEP_CACHE_DIR"}


def processes(output: str) -> str:
    """Bazel's "N processes: …" summary of the last build (what ran, and where)."""
    found = PROCESSES.findall(output)
    assert found, output[-2000:]
    count, kinds = found[-1]
    return f"{count}: {kinds}"


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if "lockstep: error:" in line]


def target_files(proc: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    """What ``bazel build`` says each target made (``--show_result``): label -> files."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in proc.stderr.splitlines():
        if line.startswith("Target ") and line.endswith(" up-to-date:"):
            current = found.setdefault(line.split()[1], [])
        elif current is not None and line.startswith("  bazel-bin/"):
            current.append(line.strip().removeprefix("bazel-bin/"))
        else:
            current = None
    return found


@pytest.fixture(scope="module")
def workspace(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A clone of exactly the tree the CLI built, with the builder's environment as ``.venv``."""
    require(
        shutil.which("bazel") is not None, "bazel is not installed (Debian package bazel-bootstrap)"
    )
    base = tmp_path_factory.mktemp("bazel")
    root = base / "lockstep"
    clone(root, source=built.root)
    # .bazelrc names the builder's environment as .venv/bin/python, like `make` makes it.
    (root / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    ws = Workspace(root=root, user_root=base / "output_user_root", cache=built.cache)
    start = time.perf_counter()
    proc = ws.bazel("query", "//images:all")
    ws.timings["first command (server start, repository rule)"] = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-4000:]
    try:
        yield ws
    finally:
        ws.shutdown()
        print("\nbazel timings:", json.dumps(ws.timings, indent=2))


@pytest.fixture
def scratch(workspace: Workspace) -> Iterator[Workspace]:
    """The module's workspace for a test that edits it; restored afterwards."""
    try:
        yield workspace
    finally:
        workspace.restore()


@pytest.fixture(scope="module")
def bazel_built(workspace: Workspace) -> dict[str, Any]:
    workspace.build("//images:worker", "//images:runner")
    return workspace.result()


def _cli_image(both: Built, platform: str, role: str) -> dict[str, str]:
    return dict(both.result["platforms"][platform]["images"][role])


# -- same bytes ---------------------------------------------------------------------------


def test_bazel_builds_each_role_as_the_clis_index(
    built_platforms: Built, workspace: Workspace, bazel_built: dict[str, Any]
) -> None:
    """``//images:<role>``: the role's image index of every platform, as an OCI layout,
    with the CLI's build id, index digest, ref and blobs; build.json is the CLI's object."""
    both = built_platforms
    assert bazel_built["build_id"] == both.build_id
    assert bazel_built["images"] == {  # each role's index: digest, ref, and its layout
        role: {**index, "layout": f"{role}.oci"} for role, index in both.result["images"].items()
    }
    assert bazel_built["manifest"] == "manifest.json"
    assert workspace.bin("images/manifest.json").read_bytes() == (
        Path(both.result["manifest"]).read_bytes()
    )
    cli_blobs = Path(both.result["layout"]) / "blobs/sha256"
    for role in ROLES:
        index = both.result["images"][role]
        layout = workspace.bin(f"images/{role}.oci")
        (entry,) = json.loads((layout / "index.json").read_bytes())["manifests"]
        assert entry["digest"] == index["digest"], role
        assert entry["mediaType"] == "application/vnd.oci.image.index.v1+json"
        assert entry["annotations"]["org.opencontainers.image.ref.name"] == index["ref"]
        blobs = sorted((layout / "blobs/sha256").iterdir())
        for blob in blobs:  # content-addressed, and the very bytes of the CLI's layout
            assert blob.read_bytes() == (cli_blobs / blob.name).read_bytes(), blob
        listed = json.loads((layout / oci.blob_name(index["digest"])).read_bytes())
        assert [m["digest"] for m in listed["manifests"]] == [
            _cli_image(both, p, role)["digest"] for p in PLATFORMS
        ]
        per_role = json.loads(workspace.bin(f"images/{role}.json").read_text())
        assert per_role == {
            "build_id": both.build_id,
            "role": role,
            "digest": index["digest"],
            "ref": index["ref"],
            "layout": f"{role}.oci",
            "platforms": {
                p: {
                    "digest": _cli_image(both, p, role)["digest"],
                    "config": _cli_image(both, p, role)["config"],
                    "path": f"{role}-{arch}.tar",
                    "ref": _cli_image(both, p, role)["ref"],
                    "sbom": f"{role}-{arch}.spdx.json",
                }
                for p, arch in PLATFORMS.items()
            },
        }


def test_bazel_archives_per_platform_are_the_clis(
    built_platforms: Built, workspace: Workspace, bazel_built: dict[str, Any]
) -> None:
    """``//images:<role>_<arch>``: that platform's archive, SBOM and JSON, the CLI's bytes."""
    both = built_platforms
    for p, arch in PLATFORMS.items():
        assert bazel_built["platforms"][p]["images"] == {
            role: {
                **_cli_image(both, p, role),
                "path": f"{role}-{arch}.tar",
                "sbom": f"{role}-{arch}.spdx.json",
            }
            for role in ROLES
        }
        assert bazel_built["platforms"][p]["provenance"] == f"provenance-{arch}.intoto.json"
        provenance = workspace.bin(f"images/provenance-{arch}.intoto.json")
        assert (
            provenance.read_bytes() == Path(both.result["platforms"][p]["provenance"]).read_bytes()
        )
        for role in ROLES:
            cli = _cli_image(both, p, role)
            archive = workspace.bin(f"images/{role}-{arch}.tar")
            assert archive.read_bytes() == Path(cli["path"]).read_bytes(), (role, p)
            sbom = workspace.bin(f"images/{role}-{arch}.spdx.json")
            assert sbom.read_bytes() == Path(cli["sbom"]).read_bytes(), (role, p)
            assert oci.read_archive(archive).config["architecture"] == arch
            one = json.loads(workspace.bin(f"images/{role}-{arch}.json").read_text())
            assert one == {
                "build_id": both.build_id,
                "role": role,
                "platform": p,
                "digest": cli["digest"],
                "config": cli["config"],
                "path": f"{role}-{arch}.tar",
                "ref": cli["ref"],
                "sbom": f"{role}-{arch}.spdx.json",
            }


def test_a_target_per_platform_names_only_its_files(
    workspace: Workspace, bazel_built: dict[str, Any]
) -> None:
    proc = workspace.build("//images:worker_arm64", "//images:worker_amd64", "//images:worker")
    assert {label: sorted(files) for label, files in target_files(proc).items()} == {
        **{
            f"//images:worker_{arch}": [
                f"images/worker-{arch}.json",
                f"images/worker-{arch}.spdx.json",
                f"images/worker-{arch}.tar",
            ]
            for arch in PLATFORMS.values()
        },
        "//images:worker": ["images/worker.json", "images/worker.oci"],
    }
    assert workspace.result() == bazel_built  # one build: nothing ran again


def test_declared_inputs_are_the_clis_sources(workspace: Workspace) -> None:
    """The files Bazel declares are exactly the ones `lockstep build` reads as sources."""
    proc = workspace.bazel("query", "labels(srcs, //:sources) union labels(srcs, //images:sources)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    declared = set()
    for label in proc.stdout.split():
        package, _, name = label.removeprefix("//").partition(":")
        declared.add(f"{package}/{name}" if package else name)
    project = load_project(workspace.root)
    assert declared == set(sources.select(workspace.root, project.sources))
    assert {
        "src/lockstep/assembly/bazel.py",
        "images/complete-platform.json",
        "images/complete-platform-arm64.json",
    } <= declared


def test_second_build_is_fully_cached(workspace: Workspace, bazel_built: dict[str, Any]) -> None:
    start = time.perf_counter()
    proc = workspace.build("//images:worker", "//images:runner")
    workspace.timings["no-op rebuild"] = time.perf_counter() - start
    summary = processes(proc.stderr)
    assert "linux-sandbox" not in summary and "local" not in summary.split(":", 1)[1], summary
    assert workspace.result() == bazel_built


def test_nothing_is_fetched(workspace: Workspace, bazel_built: dict[str, Any]) -> None:
    (output_base,) = [p for p in workspace.user_root.iterdir() if (p / "external").is_dir()]
    external = {p.name for p in (output_base / "external").iterdir() if p.is_dir()}
    assert external <= LOCAL_REPOSITORIES, external
    downloads = workspace.user_root / "cache" / "repos"
    assert not [p for p in downloads.rglob("*") if p.is_file()], "Bazel downloaded something"


def test_one_file_change_rebuilds_with_new_digests(
    scratch: Workspace, built: Built, bazel_built: dict[str, Any], tmp_path: Path
) -> None:
    target = scratch.root / "src/lockstep/runtime/__init__.py"
    target.write_text(target.read_text() + "\n# a one-line change\n")
    start = time.perf_counter()
    proc = scratch.build("//images:worker", "//images:runner")
    scratch.timings["one-file change"] = time.perf_counter() - start
    assert "1 linux-sandbox" in processes(proc.stderr)
    changed = scratch.result()
    assert changed["build_id"] != bazel_built["build_id"]
    for role in ROLES:
        assert changed["images"][role]["digest"] != bazel_built["images"][role]["digest"]
    old = oci.read_archive(built.path("worker")).manifest["layers"]
    new = oci.read_archive(scratch.bin("images/worker-amd64.tar")).manifest["layers"]
    assert old[:2] == new[:2] and old[2:] != new[2:]
    # ...and the CLI agrees on the changed tree (its amd64 images).
    cli = build(scratch.root, tmp_path / "out", scratch.cache)
    assert cli.build_id == changed["build_id"]
    for role in ROLES:
        amd64 = changed["platforms"]["linux/amd64"]["images"][role]
        assert cli.digest(role) == amd64["digest"]


def _base_of(workspace: Workspace, built: Built, platform: str, stem: str) -> dict[str, Any]:
    """Bazel's ``<stem>.json`` for ``platform``, checked against its blob and against the
    bottom layer of that platform's worker image from the CLI (digest, diff id, size)."""
    info: dict[str, Any] = json.loads(workspace.bin(f"images/{stem}.json").read_text())
    blob = workspace.bin(f"images/{stem}.tar.gz").read_bytes()
    assert sha256(blob) == info["digest"] and len(blob) == info["size"]
    one = built.result["platforms"][platform] if "platforms" in built.result else built.result
    archive = oci.read_archive(Path(one["images"]["worker"]["path"]))
    bottom = archive.manifest["layers"][0]
    assert info == {
        "digest": bottom["digest"],
        "diff_id": archive.config["rootfs"]["diff_ids"][0],
        "size": bottom["size"],
        "python": "3.11.2",
        "platform": platform,
        "path": f"{stem}.tar.gz",
    }, platform
    return info


def test_a_base_target_per_platform_builds_alone(
    workspace: Workspace, built_platforms: Built
) -> None:
    """``//images:base_arm64``: that platform's base layer alone (its standard library
    compiled by the host's python, as `lockstep build` compiles it): the bottom layer of
    the CLI's arm64 worker."""
    proc = workspace.build("//images:base_arm64")
    assert {label: sorted(files) for label, files in target_files(proc).items()} == {
        "//images:base_arm64": ["images/base-arm64.json", "images/base-arm64.tar.gz"]
    }
    _base_of(workspace, built_platforms, "linux/arm64", "base-arm64")


def test_base_target_is_the_images_bottom_layer(
    workspace: Workspace, built_platforms: Built
) -> None:
    """``//images:base``: every platform's base layer, each the bottom layer of that
    platform's worker image from the CLI."""
    proc = workspace.build("//images:base")
    assert {label: sorted(files) for label, files in target_files(proc).items()} == {
        "//images:base": sorted(
            f"images/base-{arch}.{ext}" for arch in PLATFORMS.values() for ext in ("json", "tar.gz")
        )
    }
    for platform, arch in PLATFORMS.items():
        _base_of(workspace, built_platforms, platform, f"base-{arch}")


def test_cold_bases_are_compiled_as_the_cli_compiles_them(
    workspace: Workspace, built_platforms: Built, tmp_path: Path
) -> None:
    """A cache holding only the locked ``.deb``s: ``//images:base`` makes every base, the
    compiler platform's python compiling every standard library (another platform's
    python never runs), to the bottom layers of the CLI's images."""
    from lockstep.assembly.builder import compiler_platform
    from lockstep.core.store import Cache
    from lockstep.inputs.build_inputs import DebianInput

    project = load_project(workspace.root)
    warm, cold = Cache(workspace.cache), Cache(tmp_path / "cache")
    for debian in DebianInput.read_all(project.debian_lock, project.platforms).values():
        for pkg in debian.lock.packages:
            cold.blob_path(pkg.digest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(warm.blob_path(pkg.digest), cold.blob_path(pkg.digest))
    proc = workspace.build("//images:base", env={"LOCKSTEP_CACHE_DIR": str(cold.root)})
    compiler = compiler_platform(project.platforms)
    compiled = re.findall(r"lockstep: compiling (\S+)'s standard library with (.+)", proc.stderr)
    assert sorted(compiled) == sorted(
        (p, "its python" if p == compiler else f"{compiler}'s python") for p in PLATFORMS
    ), proc.stderr[-3000:]
    for platform, arch in PLATFORMS.items():
        _base_of(workspace, built_platforms, platform, f"base-{arch}")


# -- bad input ----------------------------------------------------------------------------


def test_missing_builder_environment(scratch: Workspace, tmp_path: Path) -> None:
    proc = scratch.bazel(
        "build", "--repo_env=LOCKSTEP_PYTHON=/nonexistent/venv/bin/python", "//images:worker"
    )
    assert proc.returncode != 0
    assert "LOCKSTEP_PYTHON=/nonexistent/venv/bin/python does not exist" in proc.stderr
    assert ".bazelrc" in proc.stderr

    # An environment that vanishes after Bazel has looked at it: the action says so.
    link = tmp_path / "env"
    link.symlink_to(sys.prefix, target_is_directory=True)
    flag = f"--repo_env=LOCKSTEP_PYTHON={link}/bin/python"
    assert scratch.bazel("query", flag, "//images:worker").returncode == 0
    link.unlink()
    proc = scratch.bazel("build", flag, "//images:worker")
    assert proc.returncode != 0
    assert f"{link}/bin/python" in proc.stderr
    assert "is missing or not executable" in proc.stderr or "does not exist" in proc.stderr, (
        proc.stderr[-3000:]
    )


def test_lock_hash_mismatch_fails_the_action(scratch: Workspace) -> None:
    lock_path = scratch.root / "images/debian.lock.json"
    lock = json.loads(lock_path.read_text())
    victim = min(lock["packages"]["amd64"], key=lambda p: p["size"])  # one small download
    victim["sha256"] = "0" * 64
    lock_path.write_text(json.dumps(lock, indent=2) + "\n")
    proc = scratch.build("//images:worker", ok=False)
    assert proc.returncode != 0
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr[-3000:]
    assert f"Debian package {victim['name']}" in lines[0] and "0" * 64 in lines[0], lines


def test_source_pattern_not_declared_in_bazel_fails_in_the_sandbox(
    scratch: Workspace, tmp_path: Path
) -> None:
    """pyproject.toml declares a file that a hand-written BUILD does not: the action cannot
    fall back to the host's copy (the CLI, without a sandbox, reads it)."""
    pyproject = scratch.root / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            '    "pyproject.toml",\n', '    "pyproject.toml",\n    "README.md",\n', 1
        )
    )
    build_file = scratch.root / "BUILD"
    text = build_file.read_text()
    assert "\ndeclared_sources()\n" in text
    build_file.write_text(
        text.replace(
            "\ndeclared_sources()\n",
            '\nfilegroup(name = "sources", srcs = ["pyproject.toml"] + '
            'glob(["src/lockstep/**/*.py", "src/lockstep/py.typed"]), '
            'visibility = ["//visibility:public"])\n',
        )
    )
    proc = scratch.build("//images:worker", ok=False)
    assert proc.returncode != 0
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "'README.md' matches none of the action's declared inputs" in lines[0]
    cli = lockstep(
        ["build", "all", "--out", str(tmp_path / "out"), *PLATFORM],
        cwd=scratch.root,
        cache=scratch.cache,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]


def test_undeclared_lock_fails_in_the_sandbox(scratch: Workspace) -> None:
    rules = scratch.root / "images/image.bzl"
    text = rules.read_text()
    assert "            PYTHON_LOCK,\n" in text
    rules.write_text(text.replace("            PYTHON_LOCK,\n", "", 1))
    proc = scratch.build("//images:worker", ok=False)
    assert proc.returncode != 0
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "images/python.lock.json is not among the action's declared inputs" in lines[0]


# -- bazel run: load into the engine ------------------------------------------------------


def test_load_worker_into_the_engine(
    workspace: Workspace, bazel_built: dict[str, Any], docker_engine: DockerEngine
) -> None:
    """``:load_worker`` loads the host's platform's image of the index; ``:load_worker_<arch>``
    that platform's archive (under its own tag: docker keeps one architecture per tag)."""
    env = {"DOCKER_HOST": docker_engine.host}
    for target, platform in [("load_worker", "linux/amd64"), ("load_worker_arm64", "linux/arm64")]:
        proc = workspace.bazel("run", f"//images:{target}", env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        image = bazel_built["platforms"][platform]["images"]["worker"]
        assert proc.stdout.strip().splitlines()[-1] == image["config"], target
        found = docker_engine.client.images.get(image["ref"])
        assert found.id == image["config"]
        assert found.attrs["Architecture"] == PLATFORMS[platform]
        assert found.labels["io.lockstep.build-id"] == bazel_built["build_id"]


def test_a_project_of_one_platform_builds_one_image_per_role(
    scratch: Workspace, tmp_path: Path
) -> None:
    """``platforms = ["linux/amd64"]``: no index; ``//images:<role>`` is that platform's
    ``<role>.tar`` (and ``<role>_amd64`` the same files), the CLI's bytes."""
    pyproject = scratch.root / "pyproject.toml"
    text = pyproject.read_text()
    assert "\n[tool.lockstep]\n" in text
    pyproject.write_text(
        text.replace("\n[tool.lockstep]\n", '\n[tool.lockstep]\nplatforms = ["linux/amd64"]\n')
    )
    proc = scratch.build(
        "//images:worker", "//images:worker_amd64", "//images:runner", "//images:base"
    )
    files = {label: sorted(found) for label, found in target_files(proc).items()}
    one = ["images/worker.json", "images/worker.spdx.json", "images/worker.tar"]
    assert files["//images:worker"] == files["//images:worker_amd64"] == one, files
    assert files["//images:base"] == ["images/base.json", "images/base.tar.gz"], files
    cli = build(scratch.root, tmp_path / "out", scratch.cache, platform=())
    _base_of(scratch, cli, "linux/amd64", "base")
    assert scratch.result()["build_id"] == cli.build_id
    for role in ROLES:
        assert scratch.bin(f"images/{role}.tar").read_bytes() == cli.path(role).read_bytes()
        assert json.loads(scratch.bin(f"images/{role}.json").read_text()) == {
            "build_id": cli.build_id,
            "role": role,
            "platform": "linux/amd64",
            "path": f"{role}.tar",
            "digest": cli.digest(role),
            "config": cli.config(role),
            "ref": cli.result["images"][role]["ref"],
            "sbom": f"{role}.spdx.json",
        }


# -- the describe step, without Bazel -------------------------------------------------------


def test_describe_is_pyproject_in_starlark(tmp_path: Path) -> None:
    from lockstep.assembly.bazel import describe
    from tests.fixtures.build import ROOT

    text = describe(ROOT, "/opt/env/bin/python")
    facts: dict[str, Any] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(" = ")
            facts[key] = json.loads(value)
    project = load_project(ROOT)
    assert facts["PYTHON"] == "/opt/env/bin/python"
    assert facts["ROLES"] == sorted(project.images) == list(ROLES)
    flat = [
        f"{package}/{p}" if package else p
        for package, patterns in facts["SOURCES"].items()
        for p in patterns
    ]
    assert sorted(flat) == sorted(project.sources)
    assert facts["PYTHON_LOCK"] == "//images:python.lock.json"
    assert facts["DEBIAN_LOCK"] == "//images:debian.lock.json"
    assert facts["PYPROJECT"] == "//:pyproject.toml"
    # each platform: its name, architecture and complete platform's label
    assert facts["PLATFORMS"] == [
        {
            "name": "linux/amd64",
            "arch": "amd64",
            "complete_platform": "//images:complete-platform.json",
        },
        {
            "name": "linux/arm64",
            "arch": "arm64",
            "complete_platform": "//images:complete-platform-arm64.json",
        },
    ]
    # the base action's files: each platform's, named as its archives are
    assert facts["BASES"] == {
        "base": {
            "files": [f"base-{a}.{ext}" for a in ("amd64", "arm64") for ext in ("json", "tar.gz")],
            "dirs": [],
        },
        "base_amd64": {"files": ["base-amd64.tar.gz", "base-amd64.json"], "dirs": []},
        "base_arm64": {"files": ["base-arm64.tar.gz", "base-arm64.json"], "dirs": []},
    }


def test_describe_refuses_what_bazel_would_declare_differently(tmp_path: Path) -> None:
    from lockstep.assembly.bazel import describe
    from lockstep.core.errors import BadInput
    from tests.fixtures.build import clone

    root = clone(tmp_path / "ws")
    (root / "src/lockstep/runtime/BUILD").write_text("# a package that cuts the glob\n")
    with pytest.raises(BadInput, match=r"reaches into the Bazel package //src/lockstep/runtime"):
        describe(root, sys.executable)
    (root / "src/lockstep/runtime/BUILD").unlink()
    pyproject = root / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('"src/lockstep/py.typed"', '"src/lockstep/py.type?"')
    )
    with pytest.raises(BadInput, match=r"Bazel's glob does not support"):
        describe(root, sys.executable)


def test_action_refuses_a_read_only_or_missing_cache(tmp_path: Path) -> None:
    from lockstep.assembly.bazel import sandbox_cache
    from lockstep.core.errors import BadInput

    with pytest.raises(BadInput, match="LOCKSTEP_CACHE_DIR is not set"):
        sandbox_cache({})
    with pytest.raises(BadInput, match="not an absolute path"):
        sandbox_cache({"LOCKSTEP_CACHE_DIR": "relative/cache"})
    assert sandbox_cache({"LOCKSTEP_CACHE_DIR": str(tmp_path / "c")}) == tmp_path / "c"


# -- a fresh clone, without make: the rule creates the builder's environment ----------------


def test_fresh_clone_without_venv_creates_the_locked_builder_environment(
    built: Built, tmp_path: Path
) -> None:
    """No .venv: @lockstep_project makes the builder's environment from
    requirements/build.lock.txt under the output base and builds with it, to the CLI's
    digests; a host python that is not 3.11 is refused in one line; a lock change makes a
    new environment."""
    require(
        shutil.which("bazel") is not None, "bazel is not installed (Debian package bazel-bootstrap)"
    )
    root = tmp_path / "lockstep"
    clone(root, source=built.root)
    assert not (root / ".venv").exists()
    ws = Workspace(root=root, user_root=tmp_path / "output_user_root", cache=built.cache)
    try:
        # Only a Python 3.10 on PATH: refused before anything is made.
        fake = tmp_path / "fakebin"
        fake.mkdir()
        (fake / "python3.11").write_text("#!/bin/sh\necho 3.10\n")
        (fake / "python3.11").chmod(0o755)
        proc = ws.bazel("query", f"--repo_env=PATH={fake}", "//images:worker")
        assert proc.returncode != 0
        # Bazel shows the message as "Error in fail:" and again as "ERROR: no such package";
        # the rest of the lines naming it are the rule's source.
        messages = {
            line.split("lockstep: error: ", 1)[1]
            for line in error_lines(proc)
            if line.startswith(("Error in fail: ", "ERROR: "))
        }
        (line,) = messages
        assert "LOCKSTEP_PYTHON=.venv/bin/python does not exist" in line, line
        assert "is Python 3.10, not 3.11" in line, line

        start = time.perf_counter()
        ws.build("//images:worker_amd64")
        took = time.perf_counter() - start
        print(f"\nfresh clone, bazel build //images:worker_amd64: {took:.1f} s")
        assert not (root / ".venv").exists()
        (output_base,) = [p for p in ws.user_root.iterdir() if (p / "external").is_dir()]
        (env,) = (output_base / "lockstep-builder").iterdir()
        project_bzl = (output_base / "external/lockstep_project/project.bzl").read_text()
        assert f'PYTHON = "{env}/bin/python"' in project_bzl, project_bzl
        facts = json.loads((env / "lockstep-builder-env.json").read_text())
        lock = root / "requirements/build.lock.txt"
        assert facts["lock"] == sha256(lock.read_bytes())
        worker = json.loads(ws.bin("images/worker-amd64.json").read_text())
        assert worker["build_id"] == built.build_id
        assert (worker["digest"], worker["config"]) == (
            built.digest("worker"),
            built.config("worker"),
        )
        assert ws.bin("images/worker-amd64.tar").read_bytes() == built.path("worker").read_bytes()

        # The rule reads the lock: a new lock is a new environment (the old one removed).
        lock.write_text(lock.read_text() + "# a change of the lock\n")
        proc = ws.bazel("query", "//images:worker")
        assert proc.returncode == 0, proc.stderr[-3000:]
        (new_env,) = (output_base / "lockstep-builder").iterdir()
        assert new_env.name != env.name
        facts = json.loads((new_env / "lockstep-builder-env.json").read_text())
        assert facts["lock"] == sha256(lock.read_bytes())
    finally:
        ws.shutdown()
