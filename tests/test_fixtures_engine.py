"""The real parts work: a private dockerd, a private registry, skopeo and umoci.

This tests the test harness (tests/fixtures/engine.py, registry.py) and the host's tools, no
module of src/, so it sits at the top of tests/ rather than in a package's mirror; how fast
the private dockerd starts is a figure of bench/bench_replay.py, not an assert.

Nothing is pulled from a registry on the internet. The test builds its own
image archive (a static busybox from Debian's ``busybox-static`` .deb, in the
archive layout of docs/design.md §6), loads it into the engine, runs it the way our
images run, networks two containers by name, pushes it to the registry with
skopeo and unpacks it with umoci.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.engine import DockerEngine
from tests.fixtures.registry import OciRegistry
from tests.fixtures.support import require

pytestmark = [pytest.mark.engine, pytest.mark.registry]

APPLETS = ("sh", "cat", "echo", "id", "ls", "nc", "httpd", "mkdir", "seq", "sleep", "touch")
MTIME = 1_700_000_000
REF = "1"
REPO_TAG = "lockstep-test/busybox:1"


# --- a static busybox, without the internet ---------------------------------------------


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable with no PT_INTERP (no dynamic loader needed)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only
        return False
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    for i in range(phnum):
        p_type = int.from_bytes(data[phoff + i * phentsize : phoff + i * phentsize + 4], "little")
        if p_type == 3:  # PT_INTERP
            return False
    return True


@pytest.fixture(scope="session")
def static_busybox(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The host's busybox if static, else busybox-static from the Debian mirror
    (``apt-get download``, cached in .pytest_cache)."""
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if _is_static_elf(candidate):
            return candidate
    cache_provider = getattr(request.config, "cache", None)
    cache = (
        Path(cache_provider.mkdir("busybox-static"))
        if cache_provider is not None
        else tmp_path_factory.mktemp("busybox-static")
    )
    unpacked = cache / "root" / "bin" / "busybox"
    if _is_static_elf(unpacked):
        return unpacked
    require(
        shutil.which("apt-get") is not None and shutil.which("dpkg-deb") is not None,
        "no static busybox and no apt-get/dpkg-deb to fetch busybox-static",
    )
    for old in cache.glob("*.deb"):
        old.unlink()
    fetch = subprocess.run(
        ["apt-get", "download", "busybox-static"],
        cwd=cache,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    debs = sorted(cache.glob("busybox-static_*.deb"))
    require(
        fetch.returncode == 0 and bool(debs),
        f"apt-get download busybox-static failed: {fetch.stderr.strip()[-500:]}",
    )
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(cache / "root")], check=True)
    assert _is_static_elf(unpacked), f"{unpacked} is not a static ELF"
    return unpacked


# --- an image archive in the docs/design.md §6 layout -------------------------------------


@dataclass(frozen=True)
class Archive:
    path: Path
    digest: str  # manifest digest (what a registry reference pins)
    config: str  # config digest (docker load's image ID)


def _tar_member(
    name: str,
    *,
    data: bytes = b"",
    mode: int = 0o644,
    kind: bytes = tarfile.REGTYPE,
    link: str = "",
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in sorted(members, key=lambda m: m[0].name):
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write_archive(path: Path, busybox: Path) -> Archive:
    layer_members = [
        _tar_member("bin", kind=tarfile.DIRTYPE, mode=0o755),
        _tar_member("bin/busybox", data=busybox.read_bytes(), mode=0o755),
        _tar_member("tmp", kind=tarfile.DIRTYPE, mode=0o1777),
        _tar_member("etc", kind=tarfile.DIRTYPE, mode=0o755),
        _tar_member(
            "etc/passwd", data=b"root:x:0:0::/:/bin/sh\nnonroot:x:65532:65532::/:/bin/sh\n"
        ),
        _tar_member("etc/group", data=b"root:x:0:\nnonroot:x:65532:\n"),
    ]
    layer_members += [
        _tar_member(f"bin/{name}", kind=tarfile.SYMTYPE, mode=0o777, link="busybox")
        for name in APPLETS
    ]
    layer_tar = _tar(layer_members)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, filename="", compresslevel=6) as f:
        f.write(layer_tar)
    layer = gz.getvalue()
    config = _json(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2023-11-14T22:13:20Z",
            "config": {
                "User": "65532",
                "Env": ["PATH=/bin"],
                "Cmd": ["/bin/sh"],
                "Labels": {"io.lockstep.test": "busybox"},
            },
            "rootfs": {"type": "layers", "diff_ids": [_sha(layer_tar)]},
            "history": [
                {"created": "2023-11-14T22:13:20Z", "created_by": "tests/test_engine_fixture.py"}
            ],
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _sha(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _sha(layer),
                    "size": len(layer),
                }
            ],
        }
    )
    index = _json(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _sha(manifest),
                    "size": len(manifest),
                    "annotations": {"org.opencontainers.image.ref.name": REF},
                }
            ],
        }
    )

    def blob(data: bytes) -> str:
        return f"blobs/sha256/{_sha(data).removeprefix('sha256:')}"

    docker_manifest = _json(
        [{"Config": blob(config), "RepoTags": [REPO_TAG], "Layers": [blob(layer)]}]
    )
    files = {
        "oci-layout": _json({"imageLayoutVersion": "1.0.0"}),
        "index.json": index,
        "manifest.json": docker_manifest,
        blob(config): config,
        blob(layer): layer,
        blob(manifest): manifest,
    }
    path.write_bytes(_tar([_tar_member(name, data=data) for name, data in files.items()]))
    return Archive(path=path, digest=_sha(manifest), config=_sha(config))


@pytest.fixture(scope="module")
def busybox_archive(tmp_path_factory: pytest.TempPathFactory, static_busybox: Path) -> Archive:
    return write_archive(tmp_path_factory.mktemp("archive") / "busybox.tar", static_busybox)


@pytest.fixture(scope="module")
def busybox_image(docker_engine: DockerEngine, busybox_archive: Archive) -> str:
    images = docker_engine.client.images.load(busybox_archive.path.read_bytes())
    assert [image.id for image in images] == [busybox_archive.config], "docker load image ID"
    assert REPO_TAG in images[0].tags
    return REPO_TAG


# --- the tests ---------------------------------------------------------------------------


def test_engine_is_private(docker_engine: DockerEngine) -> None:
    assert docker_engine.client.ping()
    assert docker_engine.host.startswith("unix://")
    assert docker_engine.socket_path.is_socket()
    info = docker_engine.client.info()
    assert info["DockerRootDir"] == str(docker_engine.root / "data")
    assert info["Driver"] == docker_engine.storage_driver
    assert info["Containers"] == len(docker_engine.client.containers.list(all=True))
    pid = int((docker_engine.root / "dockerd.pid").read_text())
    assert pid == docker_engine.pid


def test_runs_read_only_nonroot_without_network(
    docker_engine: DockerEngine, busybox_image: str
) -> None:
    script = (
        "id -u; echo scratch > /tmp/x && cat /tmp/x; "
        "touch /etc/x 2>/dev/null && echo root-writable || echo root-read-only; "
        "ls /sys/class/net"
    )
    out = docker_engine.client.containers.run(
        busybox_image,
        ["sh", "-c", script],
        read_only=True,
        tmpfs={"/tmp": ""},
        user="65532",
        network_mode="none",
        remove=True,
    ).decode()
    assert out.split() == ["65532", "scratch", "root-read-only", "lo"]
    # The docker CLI, through .host, sees the same engine.
    cli = docker_engine.cli(
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--user",
        "65532",
        "--network",
        "none",
        busybox_image,
        "echo",
        "cli-ok",
    )
    assert cli.stdout.strip() == "cli-ok"


def test_containers_reach_each_other_by_name(
    docker_engine: DockerEngine, busybox_image: str
) -> None:
    client = docker_engine.client
    suffix = uuid.uuid4().hex[:8]
    network = client.networks.create(f"lockstep-test-{suffix}", driver="bridge")
    server_name = f"server-{suffix}"
    server = None
    try:
        server = client.containers.run(
            busybox_image,
            [
                "sh",
                "-c",
                "mkdir /tmp/www && echo hello-by-name > /tmp/www/index.html "
                "&& exec httpd -f -p 8080 -h /tmp/www",
            ],
            name=server_name,
            network=network.name,
            read_only=True,
            tmpfs={"/tmp": ""},
            user="65532",
            detach=True,
            ports={"8080/tcp": ("127.0.0.1", None)},
        )
        fetch = (
            f"for i in $(seq 100); do printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' "
            f"| nc -w 2 {server_name} 8080 && exit 0; sleep 0.1; done; exit 1"
        )
        out = client.containers.run(
            busybox_image,
            ["sh", "-c", fetch],
            network=network.name,
            read_only=True,
            tmpfs={"/tmp": ""},
            user="65532",
            remove=True,
        ).decode()
        assert "200 OK" in out and out.rstrip().endswith("hello-by-name")
        # A published port on 127.0.0.1 reaches the container from the host.
        server.reload()
        host_port = server.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        with urllib.request.urlopen(f"http://127.0.0.1:{host_port}/index.html", timeout=5) as r:
            assert r.read() == b"hello-by-name\n"
    finally:
        if server is not None:
            server.remove(force=True)
        network.remove()


def _skopeo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    policy = tmp_path / "policy.json"
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    proc = subprocess.run(
        ["skopeo", "--policy", str(policy), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"skopeo {' '.join(args)}: {proc.stderr}"
    return proc


def test_skopeo_pushes_to_registry_and_it_survives_a_restart(
    tmp_path: Path,
    oci_registry: OciRegistry,
    busybox_archive: Archive,
) -> None:
    require(shutil.which("skopeo") is not None, "skopeo is not installed")
    oci_registry.start()
    local = json.loads(_skopeo(tmp_path, "inspect", f"oci-archive:{busybox_archive.path}").stdout)
    assert local["Digest"] == busybox_archive.digest
    ref = f"docker://{oci_registry.address}/lockstep-test/busybox:{uuid.uuid4().hex[:8]}"
    _skopeo(
        tmp_path,
        "copy",
        "--dest-tls-verify=false",
        f"oci-archive:{busybox_archive.path}:{REF}",
        ref,
    )
    raw = _skopeo(tmp_path, "inspect", "--tls-verify=false", "--raw", ref).stdout
    assert _sha(raw.encode()) == busybox_archive.digest, "the registry kept our manifest bytes"
    remote = json.loads(_skopeo(tmp_path, "inspect", "--tls-verify=false", ref).stdout)
    assert remote["Digest"] == busybox_archive.digest
    assert remote["Labels"] == {"io.lockstep.test": "busybox"}

    port, pid = oci_registry.port, oci_registry.pid
    oci_registry.stop(kill=True)
    assert not oci_registry.running
    with pytest.raises(OSError):
        oci_registry.get("/v2/")
    oci_registry.start()
    assert (oci_registry.port, oci_registry.running) == (port, True)
    assert oci_registry.pid != pid
    status, headers, _ = oci_registry.get(
        f"/v2/lockstep-test/busybox/manifests/{busybox_archive.digest}",
        method="HEAD",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert status == 200 and headers["Docker-Content-Digest"] == busybox_archive.digest


def test_umoci_unpacks_the_archive(tmp_path: Path, busybox_archive: Archive) -> None:
    require(shutil.which("umoci") is not None, "umoci is not installed")
    version = subprocess.run(["umoci", "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and "umoci version" in version.stdout
    layout = tmp_path / "layout"
    with tarfile.open(busybox_archive.path) as tar:
        tar.extractall(layout, filter="data")
    bundle = tmp_path / "bundle"
    unpack = subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{REF}", str(bundle)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unpack.returncode == 0, unpack.stderr
    busybox = bundle / "rootfs" / "bin" / "busybox"
    assert busybox.is_file() and os.access(busybox, os.X_OK)
    assert os.readlink(bundle / "rootfs" / "bin" / "sh") == "busybox"
