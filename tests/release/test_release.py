"""`lockstep release`, `verify` and the release CI script against a real registry.

A release runs in a clone of the committed tree (its own git identity, and an
`origin` that is a bare repository in the test's temp dir), against Debian's
docker-registry on 127.0.0.1; skopeo is the independent client that must
report our digests. Builds share the session cache, so only the stamped
manifest layer is new per release.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lockstep.project import ROLES
from tests.fixtures.build import ROOT, git, lockstep, make_repo
from tests.fixtures.registry import OciRegistry, find_registry, free_port
from tests.fixtures.support import require

pytestmark = [pytest.mark.slow, pytest.mark.registry]

VERSION = "0.1.0"


# -- helpers -------------------------------------------------------------------------


def docker_config(dest: Path, auths: dict[str, Any] | None = None) -> dict[str, str]:
    """Env pointing DOCKER_CONFIG at a config.json of our own (never the machine's)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps({"auths": auths or {}}))
    return {"DOCKER_CONFIG": str(dest)}


def auth_entry(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def release(
    root: Path, cache: Path, registry: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**docker_config(root.parent / "docker"), **(env or {})}
    return lockstep(
        ["release", VERSION, "--registry", registry, "--json", *extra],
        cwd=root,
        cache=cache,
        env=full_env,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("lockstep: error:")]


def tags(root: Path) -> list[str]:
    return git(root, "tag", "--list").split()


def assert_no_release(root: Path) -> None:
    release_dir = root / "release"
    leftovers = sorted(p.name for p in release_dir.iterdir()) if release_dir.exists() else []
    assert leftovers == ["README.md"], leftovers
    assert f"v{VERSION}" not in tags(root)


def skopeo(*args: str) -> str:
    require(shutil.which("skopeo") is not None, "skopeo is not installed (Debian package skopeo)")
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def blob_uploads(registry: OciRegistry, repo: str) -> int:
    """Completed blob uploads into ``repo`` according to the registry's own log."""
    log = registry.log_path.read_text(errors="replace")
    return sum(
        1
        for line in log.splitlines()
        if "http.request.method=PUT" in line
        and f"/v2/{repo}/" in line
        and "/blobs/uploads/" in line
        and "http.response.status=201" in line
    )


@dataclass
class Released:
    root: Path
    registry: OciRegistry
    repo: str
    out: dict[str, Any]
    stderr: str

    @property
    def target(self) -> str:
        return f"{self.registry.address}/{self.repo}"


@pytest.fixture(scope="module")
def released(
    tmp_path_factory: pytest.TempPathFactory, oci_registry: OciRegistry, cache_dir: Path
) -> Released:
    oci_registry.start()
    root = make_repo(tmp_path_factory.mktemp("released"))
    proc = release(root, cache_dir, f"{oci_registry.address}/rel/main")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Released(root, oci_registry, "rel/main", json.loads(proc.stdout), proc.stderr)


# -- a release -----------------------------------------------------------------------


PLATFORMS = ["linux/amd64", "linux/arm64"]


def test_release_writes_the_manifest_pinned_files_and_the_tag(released: Released) -> None:
    root, out = released.root, released.out
    head = git(root, "rev-parse", "HEAD")
    record = json.loads((root / "release" / f"{VERSION}.json").read_text())
    assert record == {k: out[k] for k in record}
    assert record["schema"] == "lockstep.release/v2"
    assert (record["version"], record["tag"], record["commit"]) == (VERSION, "v0.1.0", head)
    assert record["executors"] == ["cold", "direct", "isolated_warm"]
    assert sorted(record["inputs"]) == ["builder", "debian_lock", "python_lock", "sources"]
    assert list(record["layers"]) == PLATFORMS
    for found in record["layers"].values():
        names = sorted(found)
        assert [n for n in names if n.startswith("runner:")] == ["runner:pyarrow"]
        assert [n for n in names if not n.startswith(("python:", "runner:"))] == [
            "app",
            "base",
            "manifest",
        ]
        assert any(n.startswith("python:") for n in names)  # the third-party layers, by group
    # The pure layers are the same blobs on both platforms; the base is not.
    amd64, arm64 = (record["layers"][p] for p in PLATFORMS)
    assert amd64["app"] == arm64["app"] and amd64["base"] != arm64["base"]
    for role in ROLES:
        image = record["images"][role]
        # Each role is pinned by its index, which holds one image per platform.
        assert image["reference"] == (f"{released.target}/lockstep-{role}@{image['digest']}")
        assert list(image["platforms"]) == PLATFORMS
        digests = {image["digest"], *(p["digest"] for p in image["platforms"].values())}
        assert len(digests) == 3
    assert out["tagged"] is True and out["dry_run"] is False
    every = {d for found in record["layers"].values() for d in found.values()}
    own = {d for found in record["layers"].values() for n, d in found.items() if n[:7] == "runner:"}
    # every distinct layer once + 4 configs; per repository, each platform's SBOM and
    # provenance and the empty config
    assert out["push"]["blobs_uploaded"] == len(every) + 4 + 2 * 5
    # both indexes, four platform manifests, 2 x 4 artifacts, 2 x 2 referrers indexes and
    # both version tags
    assert out["push"]["manifests_put"] == 2 + 4 + 8 + 4 + 2
    for role in ROLES:
        assert list(out["attachments"][role]) == PLATFORMS  # nothing signed: no index entry
        for p in PLATFORMS:
            assert sorted(out["attachments"][role][p]) == ["provenance", "referrers", "sbom"]
    # the worker mounts every layer of the runner's but the runner's own
    assert out["push"]["blobs_mounted"] == len(every) - len(own)
    deploy = root / "release" / VERSION
    assert sorted(str(Path(p).relative_to(deploy)) for p in out["deploy_files"]) == [
        "10-network.yaml",
        "20-scheduler.yaml",
        "30-workers-warm.yaml",
        "40-workspace.yaml",
        "50-runner-job.yaml",
        "operator/dask-cluster.yaml",
        "operator/lockstep.yaml",
    ]
    # Every rendered reference, the operator's too, is an index's.
    for path in out["deploy_files"]:
        text = Path(path).read_text()
        for role in ROLES:
            for found in record["images"][role]["platforms"].values():
                assert found["digest"] not in text, path
        if "runner-job" in path or "dask-cluster" in path:
            assert record["images"]["worker"]["reference"] in text or (
                record["images"]["runner"]["reference"] in text
            )
    # The annotated tag, at the commit that was built, names the build and both indexes.
    assert git(root, "cat-file", "-t", "v0.1.0") == "tag"
    assert git(root, "rev-parse", "v0.1.0^{commit}") == head
    message = git(root, "tag", "-l", "--format=%(contents)", "v0.1.0")
    assert record["build_id"] in message
    assert all(record["images"][r]["reference"] in message for r in ROLES)
    # The release files are outputs: the tree is otherwise unchanged, and nothing committed.
    assert git(root, "status", "--porcelain") == "?? release/0.1.0.json\n?? release/0.1.0/"
    assert not [p for p in (root / "release").iterdir() if p.name.startswith(".")]


def test_skopeo_sees_an_index_of_both_platforms_and_copies_it(
    released: Released, tmp_path: Path
) -> None:
    for role in ROLES:
        image = released.out["images"][role]
        ref = f"docker://{image['reference']}"
        raw = skopeo("inspect", "--tls-verify=false", "--raw", ref).encode()
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == image["digest"]
        index = json.loads(raw)
        assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
        assert index["annotations"]["io.lockstep.build-id"] == released.out["build_id"]
        assert [
            (f"{m['platform']['os']}/{m['platform']['architecture']}", m["digest"])
            for m in index["manifests"]
        ] == [(p, image["platforms"][p]["digest"]) for p in PLATFORMS]
        for p in PLATFORMS:
            arch = p.split("/")[1]
            info = json.loads(
                skopeo("inspect", "--tls-verify=false", f"--override-arch={arch}", ref)
            )
            assert info["Architecture"] == arch
            assert info["Labels"]["io.lockstep.build-id"] == released.out["build_id"]
            config = skopeo(
                "inspect", "--tls-verify=false", f"--override-arch={arch}", "--config", "--raw", ref
            ).encode()
            assert "sha256:" + hashlib.sha256(config).hexdigest() == image["platforms"][p]["config"]
        by_tag = f"docker://{released.target}/lockstep-{role}:{VERSION}"
        raw = skopeo("inspect", "--tls-verify=false", "--raw", by_tag).encode()
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == image["digest"]
        # skopeo copies the whole index, every platform's manifest and blob, unchanged.
        layout = tmp_path / role
        skopeo(
            "copy", "--all", "--preserve-digests", "--src-tls-verify=false", ref, f"oci:{layout}"
        )
        (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
        assert entry["digest"] == image["digest"]
        for p in PLATFORMS:
            digest = image["platforms"][p]["digest"]
            manifest = json.loads((layout / "blobs" / "sha256" / digest[7:]).read_bytes())
            for blob in [manifest["config"], *manifest["layers"]]:
                data = (layout / "blobs" / "sha256" / blob["digest"][7:]).read_bytes()
                assert "sha256:" + hashlib.sha256(data).hexdigest() == blob["digest"]


def test_released_image_is_stamped_with_commit_and_tag(released: Released) -> None:
    for p in PLATFORMS:
        digest = released.out["layers"][p]["manifest"]
        path = f"/v2/{released.repo}/lockstep-worker/blobs/{digest}"
        status, _, blob = released.registry.get(path)
        assert status == 200
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
            member = tar.extractfile("etc/lockstep/manifest.json")
            assert member is not None
            manifest = json.loads(member.read())
        assert manifest["build_id"] == released.out["build_id"]  # one build id on both
        assert manifest["platform"] == p
        stamp = {"commit": released.out["commit"], "tag": "v0.1.0", "dirty": False}
        assert manifest["stamp"] == stamp


def test_rendered_files_pass_check_pins_and_the_old_workspace_fails(released: Released) -> None:
    deploy = released.root / "release" / VERSION
    proc = lockstep(["check-pins", str(deploy)], cwd=released.root, cache=released.root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "18 image references in 6 files, all pinned by digest" in proc.stdout
    old = ROOT / "tests" / "release" / "data" / "release" / "workspace-old.yaml"
    proc = lockstep(["check-pins", str(deploy), str(old)], cwd=released.root, cache=released.root)
    assert proc.returncode == 1
    assert [line.split(": image")[0] for line in proc.stdout.splitlines()] == [
        f"{old}:6",
        f"{old}:7",
    ]


def test_second_release_of_an_unchanged_tree_pushes_no_blob(
    released: Released, cache_dir: Path
) -> None:
    before = blob_uploads(released.registry, released.repo)
    assert before >= 6
    manifest = (released.root / "release" / f"{VERSION}.json").read_bytes()
    proc = release(released.root, cache_dir, released.target)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["push"]["blobs_uploaded"] == 0 and out["push"]["bytes_uploaded"] == 0
    layers = json.loads(manifest)["layers"]
    every = {d for found in layers.values() for d in found.values()}
    own = {d for found in layers.values() for n, d in found.items() if n.startswith("runner:")}
    # each role's distinct layers + its two configs; per platform image its SBOM and
    # provenance, each with the empty config
    runner, worker = len(every) + 2, len(every) - len(own) + 2
    assert out["push"]["blobs_present"] == runner + worker + 2 * 2 * 4
    assert out["tagged"] is False
    assert blob_uploads(released.registry, released.repo) == before  # the registry agrees
    assert (released.root / "release" / f"{VERSION}.json").read_bytes() == manifest


def test_verify_rebuilds_the_tag_in_a_fresh_worktree(released: Released, cache_dir: Path) -> None:
    proc = lockstep(
        ["verify", f"release/{VERSION}.json", "--registry"],
        cwd=released.root,
        cache=cache_dir,
        env=docker_config(released.root.parent / "docker"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == f"verified v0.1.0  build_id {released.out['build_id']}"
    for role, line in zip(ROLES, lines[1:], strict=True):
        assert line == (
            f"{role:<7} {released.out['images'][role]['digest']}  rebuilt; served by the registry"
        )
    assert "fresh worktree" in proc.stderr
    assert (
        "rebuilt v0.1.0: every platform's images (linux/amd64, linux/arm64) and both indexes "
        "match the release"
    ) in proc.stderr
    assert len(git(released.root, "worktree", "list").splitlines()) == 1  # removed again


def test_verify_names_the_differing_layer(
    released: Released, cache_dir: Path, tmp_path: Path
) -> None:
    record = json.loads((released.root / "release" / f"{VERSION}.json").read_text())
    forged = json.loads(json.dumps(record))
    forged["layers"]["linux/arm64"]["base"] = "sha256:" + "0" * 64
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    proc = lockstep(["verify", str(path)], cwd=released.root, cache=cache_dir)
    assert proc.returncode == 1
    (line,) = error_lines(proc.stderr)
    assert "linux/arm64 layer 'base' differs (released sha256:000" in line
    assert f"rebuilt {record['layers']['linux/arm64']['base']}" in line
    assert "linux/amd64" not in line and "layer 'app'" not in line

    forged = json.loads(json.dumps(record))
    forged["images"]["worker"]["platforms"]["linux/arm64"]["config"] = "sha256:" + "1" * 64
    path.write_text(json.dumps(forged))
    proc = lockstep(["verify", str(path)], cwd=released.root, cache=cache_dir)
    assert proc.returncode == 1
    assert "worker linux/arm64 config differs" in error_lines(proc.stderr)[0]

    # A record without one of the platforms the tag's project builds.
    forged = json.loads(json.dumps(record))
    del forged["layers"]["linux/arm64"]
    path.write_text(json.dumps(forged))
    proc = lockstep(["verify", str(path)], cwd=released.root, cache=cache_dir)
    assert proc.returncode == 1
    (line,) = error_lines(proc.stderr)
    assert "platform linux/arm64 is not released (released linux/amd64; rebuilt " in line

    # Every platform image matches, but the index recorded is another one.
    forged = json.loads(json.dumps(record))
    forged["images"]["runner"]["digest"] = "sha256:" + "2" * 64
    path.write_text(json.dumps(forged))
    proc = lockstep(["verify", str(path)], cwd=released.root, cache=cache_dir)
    assert proc.returncode == 1
    (line,) = error_lines(proc.stderr)
    assert f"runner index differs (released sha256:{'2' * 64}, rebuilt " in line

    forged = json.loads(json.dumps(record))
    forged["tag"] = "v9.9.9"
    path.write_text(json.dumps(forged))
    proc = lockstep(["verify", str(path)], cwd=released.root, cache=cache_dir)
    assert proc.returncode == 1
    assert "tag v9.9.9 is not in" in error_lines(proc.stderr)[0]

    # The rebuild matches, but the registry named in the references does not serve them.
    forged = json.loads(json.dumps(record))
    for role in ROLES:
        forged["images"][role]["reference"] = forged["images"][role]["reference"].replace(
            "/rel/main/", "/rel/elsewhere/"
        )
    path.write_text(json.dumps(forged))
    proc = lockstep(["verify", str(path), "--registry"], cwd=released.root, cache=cache_dir)
    assert proc.returncode == 1
    assert "does not serve rel/elsewhere/lockstep-runner@sha256:" in error_lines(proc.stderr)[0]


def test_dry_run_needs_no_registry_and_makes_no_tag(tmp_path: Path, cache_dir: Path) -> None:
    root = make_repo(tmp_path)
    proc = release(root, cache_dir, f"127.0.0.1:{free_port()}/dry", "--dry-run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["dry_run"] is True and out["tagged"] is False
    assert out["push"]["blobs_uploaded"] == 0 and out["push"]["manifests_put"] == 0
    assert (root / "release" / f"{VERSION}.json").exists()
    assert len(out["deploy_files"]) == 7
    assert tags(root) == []


def test_a_single_platform_project_releases_an_index_of_one_image(
    registry_running: OciRegistry, tmp_path: Path, cache_dir: Path
) -> None:
    root = make_repo(tmp_path)
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(
        text.replace("[tool.lockstep]\n", '[tool.lockstep]\nplatforms = ["linux/amd64"]\n', 1)
    )
    git(root, "commit", "-q", "-am", "amd64 only")
    target = f"{registry_running.address}/single"
    proc = release(root, cache_dir, target)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert list(out["layers"]) == ["linux/amd64"]
    for role in ROLES:
        image = out["images"][role]
        assert list(image["platforms"]) == ["linux/amd64"]
        index = json.loads(
            skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{image['reference']}")
        )
        assert [(m["platform"]["architecture"], m["digest"]) for m in index["manifests"]] == [
            ("amd64", image["platforms"]["linux/amd64"]["digest"])
        ]
    proc = lockstep(
        ["verify", f"release/{VERSION}.json", "--registry"],
        cwd=root,
        cache=cache_dir,
        env=docker_config(root.parent / "docker"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "every platform's images (linux/amd64) and both indexes match" in proc.stderr


# -- faults and bad input ------------------------------------------------------------


def test_registry_down_is_exit_3_and_leaves_no_release(tmp_path: Path, cache_dir: Path) -> None:
    root = make_repo(tmp_path)
    port = free_port()
    proc = release(root, cache_dir, f"127.0.0.1:{port}/down")
    assert proc.returncode == 3
    (line,) = error_lines(proc.stderr)
    assert line.startswith(f"lockstep: error: registry 127.0.0.1:{port} did not answer (")
    assert "check that it is running" in line
    assert "Traceback" not in proc.stderr
    assert_no_release(root)


def test_version_dirty_tree_and_tag_reuse_are_refused(tmp_path: Path, cache_dir: Path) -> None:
    root = make_repo(tmp_path)
    registry = f"127.0.0.1:{free_port()}/x"
    proc = lockstep(["release", "0.2.0", "--registry", registry], cwd=root, cache=cache_dir)
    assert proc.returncode == 2
    assert error_lines(proc.stderr) == [
        f"lockstep: error: release '0.2.0' but {root}/pyproject.toml [project] version is "
        "'0.1.0'; set version = \"0.2.0\" there and commit, or release 0.1.0"
    ]

    readme = root / "README.md"
    readme.write_text(readme.read_text() + "\nuncommitted\n")
    proc = release(root, cache_dir, registry)
    assert proc.returncode == 1
    (line,) = error_lines(proc.stderr)
    assert "the work tree is dirty (README.md)" in line and "commit or stash" in line
    git(root, "checkout", "README.md")
    (root / "src" / "lockstep" / "new.py").write_text("x = 1\n")
    proc = release(root, cache_dir, registry)
    assert proc.returncode == 1 and "src/lockstep/new.py" in error_lines(proc.stderr)[0]
    (root / "src" / "lockstep" / "new.py").unlink()

    git(root, "tag", "-a", "v0.1.0", "-m", "an older release", "HEAD~1")
    proc = release(root, cache_dir, registry)
    assert proc.returncode == 1
    (line,) = error_lines(proc.stderr)
    old = git(root, "rev-parse", "HEAD~1")[:12]
    assert f"tag v0.1.0 already exists at {old}, not at HEAD" in line
    assert "bump [project] version" in line
    assert not (root / "release" / f"{VERSION}.json").exists()


class AuthRegistry(OciRegistry):
    """docker-registry with htpasswd (bcrypt) basic auth for one user."""

    USER = "ci"
    PASSWORD = "right-password-7"

    def __init__(self, root: Path, port: int, binary: str) -> None:
        super().__init__(root, port, binary)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # bcrypt through libcrypt; Go's bcrypt accepts $2b$

            hashed = crypt.crypt(self.PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))
        (root / "htpasswd").write_text(f"{self.USER}:{hashed}\n")
        config = json.loads(self.config_path.read_text())
        config["auth"] = {"htpasswd": {"realm": "lockstep-test", "path": str(root / "htpasswd")}}
        self.config_path.write_text(json.dumps(config))

    def get(
        self, path: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, dict[str, str], bytes]:
        basic = base64.b64encode(f"{self.USER}:{self.PASSWORD}".encode()).decode()
        return super().get(path, {"Authorization": f"Basic {basic}", **(headers or {})}, method)


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    require(
        find_registry() is not None,
        "docker-registry is not installed (Debian package docker-registry)",
    )
    registry = AuthRegistry.start_new(tmp_path_factory.mktemp("auth-registry"))
    try:
        yield registry
    finally:
        registry.close()


def test_credentials_from_docker_config_basic_auth(
    auth_registry: OciRegistry, tmp_path: Path, cache_dir: Path
) -> None:
    root = make_repo(tmp_path)
    host = auth_registry.address
    proc = release(root, cache_dir, f"{host}/auth")
    assert proc.returncode == 2
    (line,) = error_lines(proc.stderr)
    assert f"registry {host} needs credentials" in line and f"`docker login {host}`" in line

    wrong = docker_config(tmp_path / "wrong", {host: auth_entry("ci", "wrong-password-3")})
    proc = release(root, cache_dir, f"{host}/auth", env=wrong)
    assert proc.returncode == 2
    (line,) = error_lines(proc.stderr)
    assert line == (
        f"lockstep: error: registry {host} rejected the credentials of 'ci' from "
        f"{tmp_path}/wrong/config.json; run `docker login {host}` or fix that file"
    )
    assert "wrong-password-3" not in proc.stderr + proc.stdout
    assert_no_release(root)

    right = docker_config(
        tmp_path / "right", {f"https://{host}": auth_entry("ci", AuthRegistry.PASSWORD)}
    )
    proc = release(root, cache_dir, f"{host}/auth", env=right)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert AuthRegistry.PASSWORD not in proc.stderr + proc.stdout
    out = json.loads(proc.stdout)
    info = json.loads(
        skopeo(
            "inspect",
            "--tls-verify=false",
            f"--creds=ci:{AuthRegistry.PASSWORD}",
            f"docker://{out['images']['worker']['reference']}",
        )
    )
    assert info["Digest"] == out["images"]["worker"]["digest"]


class Proxy(ThreadingHTTPServer):
    """A proxy on 127.0.0.1 in front of the real registry that can demand a bearer token
    (``token_password``) or report a wrong digest for every manifest PUT (``fake_digest``)."""

    daemon_threads = True
    TOKEN = "test-token-1234"

    def __init__(
        self,
        upstream_port: int,
        *,
        token_password: str | None = None,
        fake_digest: str | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.upstream_port = upstream_port
        self.token_password = token_password
        self.fake_digest = fake_digest
        self.token_requests = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Proxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        proxy = self.server
        if proxy.token_password is not None:
            if self.path.startswith("/token"):
                proxy.token_requests += 1
                basic = base64.b64encode(f"ci:{proxy.token_password}".encode()).decode()
                if self.headers.get("Authorization") == f"Basic {basic}":
                    self.reply(200, {}, json.dumps({"token": Proxy.TOKEN}).encode())
                else:
                    self.reply(401, {}, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
                return
            if self.headers.get("Authorization") != f"Bearer {Proxy.TOKEN}":
                challenge = f'Bearer realm="http://{proxy.address}/token",service="lockstep-test"'
                self.reply(401, {"WWW-Authenticate": challenge}, b'{"errors":[]}')
                return
        conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in ("authorization", "connection")
        }
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        out = {
            k: v
            for k, v in resp.getheaders()
            if k.lower() not in ("connection", "transfer-encoding")
        }
        if self.command != "HEAD":
            out["Content-Length"] = str(len(data))
        if proxy.fake_digest and self.command == "PUT" and "/manifests/" in self.path:
            out["Docker-Content-Digest"] = proxy.fake_digest
        conn.close()
        self.reply(resp.status, out, data)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any


def test_bearer_token_challenge(
    registry_running: OciRegistry, tmp_path: Path, cache_dir: Path
) -> None:
    proxy = Proxy(registry_running.port, token_password="token-pass-5")
    try:
        root = make_repo(tmp_path)
        wrong = docker_config(tmp_path / "wrong", {proxy.address: auth_entry("ci", "nope-9")})
        proc = release(root, cache_dir, f"{proxy.address}/bearer", env=wrong)
        assert proc.returncode == 2
        assert "rejected the credentials of 'ci'" in error_lines(proc.stderr)[0]
        assert "nope-9" not in proc.stderr
        right = docker_config(tmp_path / "right", {proxy.address: auth_entry("ci", "token-pass-5")})
        proc = release(root, cache_dir, f"{proxy.address}/bearer", env=right)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proxy.token_requests >= 2
        out = json.loads(proc.stdout)
        assert out["images"]["runner"]["reference"].startswith(f"{proxy.address}/bearer/")
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_registry_answering_another_digest_is_a_failed_check(
    registry_running: OciRegistry, tmp_path: Path, cache_dir: Path
) -> None:
    other = "sha256:" + "e" * 64
    proxy = Proxy(registry_running.port, fake_digest=other)
    try:
        root = make_repo(tmp_path)
        proc = release(root, cache_dir, f"{proxy.address}/tampered")
        assert proc.returncode == 1
        (line,) = error_lines(proc.stderr)
        assert f"reports {other} for the manifest tampered/lockstep-runner@sha256:" in line
        assert "cannot be pinned there" in line
        assert_no_release(root)
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_registry_killed_mid_push_then_release_again_completes(
    tmp_path: Path, cache_dir: Path
) -> None:
    require(
        find_registry() is not None,
        "docker-registry is not installed (Debian package docker-registry)",
    )
    registry = OciRegistry.start_new(tmp_path / "registry")
    try:
        root = make_repo(tmp_path)
        target = f"{registry.address}/crash"
        env = {
            **os.environ,
            "LOCKSTEP_CACHE_DIR": str(cache_dir),
            **docker_config(tmp_path / "docker"),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "lockstep", "-v", "release", VERSION, "--registry", target],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        stderr = []
        for line in proc.stderr:
            stderr.append(line)
            if "uploading" in line and registry.running:
                registry.stop(kill=True)  # the first (largest) layer is on its way
        assert proc.wait(timeout=300) == 3, "".join(stderr)
        errors = error_lines("".join(stderr))
        assert len(errors) == 1 and f"registry {registry.address}" in errors[0]
        assert_no_release(root)

        registry.start()
        again = release(root, cache_dir, target)
        assert again.returncode == 0, again.stderr[-2000:]
        out = json.loads(again.stdout)
        assert out["tagged"] is True
        assert sorted(p.name for p in (root / "release").iterdir()) == [
            "0.1.0",
            "0.1.0.json",
            "README.md",
        ]
        for role in ROLES:
            info = json.loads(
                skopeo(
                    "inspect", "--tls-verify=false", f"docker://{out['images'][role]['reference']}"
                )
            )
            assert info["Digest"] == out["images"][role]["digest"]
    finally:
        registry.close()


# -- the release CI script -----------------------------------------------------------


def test_ci_release_script_releases_verifies_and_pushes_the_tag(
    registry_running: OciRegistry, tmp_path: Path, cache_dir: Path
) -> None:
    root = make_repo(tmp_path)
    bin_dir = str(Path(sys.executable).parent)  # the venv's `lockstep`
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "LOCKSTEP_CACHE_DIR": str(cache_dir),
        "VERIFY_CACHE_DIR": str(cache_dir),
        **docker_config(tmp_path / "docker"),
    }
    proc = subprocess.run(
        [str(root / ".ci" / "release"), VERSION, f"{registry_running.address}/ci"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "verified v0.1.0  build_id sha256:" in proc.stdout
    assert "all pinned by digest" in proc.stdout
    # The annotated tag reached the origin (a bare repository in tmp_path).
    remote = git(root, "ls-remote", "--tags", "origin")
    assert "refs/tags/v0.1.0" in remote
    assert git(root, "rev-parse", "v0.1.0^{commit}") == git(root, "rev-parse", "HEAD")

    # Started by a pushed tag: the tag is kept as it is and not pushed again.
    again = subprocess.run(
        [str(root / ".ci" / "release"), VERSION, f"{registry_running.address}/ci"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "git push origin" not in again.stdout
    assert "tag v0.1.0 was already at HEAD" in again.stdout
