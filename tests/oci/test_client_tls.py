"""`lockstep release` and `verify --registry` against a registry that speaks only TLS.

The test makes a throwaway CA and a server certificate for 127.0.0.1 (IP SAN)
and localhost with the openssl CLI, and runs Debian's docker-registry on
127.0.0.1 with ``http: tls:``. A loopback registry is probed for TLS first
(src/lockstep/oci/transport.py), so ``--registry 127.0.0.1:PORT/team``
reaches it over HTTPS; the client verifies with ``ssl.create_default_context()``,
so ``SSL_CERT_FILE=ca.pem`` trusts the CA. skopeo, verifying TLS with the CA,
is the independent client that must report our digests. The probe itself is
also tested against small in-process servers (plain HTTP, silent, TLS).
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lockstep.core.errors import ServiceFailed
from lockstep.oci import transport
from lockstep.oci.client import RegistryClient
from lockstep.oci.media import INDEX_MEDIA_TYPE
from lockstep.project import ROLES
from tests.fixtures.build import Built, git, lockstep, make_repo
from tests.fixtures.registry import OciRegistry, TlsFiles, find_registry
from tests.fixtures.support import require

VERSION = "0.1.0"


# -- a throwaway CA ------------------------------------------------------------------


def openssl(cwd: Path, *args: str) -> None:
    require(shutil.which("openssl") is not None, "openssl is not installed")
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"openssl {' '.join(args)}:\n{proc.stderr}"


def make_pki(dest: Path, names: str = "IP:127.0.0.1,DNS:localhost", prefix: str = "") -> TlsFiles:
    """A CA (``ca.pem``) and a server certificate for ``names`` that it signed."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"{prefix}openssl.cnf").write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n"
        "[ca]\nbasicConstraints = critical, CA:TRUE\n"
        "keyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n"
        f"[server]\nsubjectAltName = {names}\nbasicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n"
        "authorityKeyIdentifier = keyid\n"
    )
    cnf = f"{prefix}openssl.cnf"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl(
        dest,
        "req",
        "-config",
        cnf,
        "-x509",
        *ec,
        "-keyout",
        f"{prefix}ca.key",
        "-out",
        f"{prefix}ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=lockstep test CA",
        "-extensions",
        "ca",
    )
    openssl(
        dest,
        "req",
        "-config",
        cnf,
        *ec,
        "-keyout",
        f"{prefix}server.key",
        "-out",
        f"{prefix}server.csr",
        "-subj",
        "/CN=lockstep test registry",
    )
    openssl(
        dest,
        "x509",
        "-req",
        "-in",
        f"{prefix}server.csr",
        "-CA",
        f"{prefix}ca.pem",
        "-CAkey",
        f"{prefix}ca.key",
        "-set_serial",
        "0x" + "5a" * 8,
        "-days",
        "2",
        "-out",
        f"{prefix}server.pem",
        "-extfile",
        cnf,
        "-extensions",
        "server",
    )
    return TlsFiles(
        dest / f"{prefix}server.pem", dest / f"{prefix}server.key", dest / f"{prefix}ca.pem"
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory, pki: TlsFiles) -> Iterator[OciRegistry]:
    require(
        find_registry() is not None,
        "docker-registry is not installed (Debian package docker-registry)",
    )
    registry = OciRegistry.start_new(tmp_path_factory.mktemp("tls-registry"), tls=pki)
    try:
        yield registry
    finally:
        registry.close()  # stops the process it started, by pid


# -- helpers -------------------------------------------------------------------------


def no_docker_config(dest: Path) -> dict[str, str]:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps({"auths": {}}))
    return {"DOCKER_CONFIG": str(dest)}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("lockstep: error:")]


def skopeo(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    require(shutil.which("skopeo") is not None, "skopeo is not installed (Debian package skopeo)")
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert (proc.returncode == 0) == ok, proc.stderr
    return proc


@pytest.fixture
def untrusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the system's CA store, whatever the caller's environment says."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@dataclass
class Released:
    root: Path
    registry: OciRegistry
    out: dict[str, Any]
    stderr: str


@pytest.fixture(scope="module")
def tls_released(
    tmp_path_factory: pytest.TempPathFactory,
    tls_registry: OciRegistry,
    pki: TlsFiles,
    built: Built,
    cache_dir: Path,
) -> Released:
    """One release over TLS, the CA trusted through SSL_CERT_FILE. ``built`` warms the
    session cache, so only the stamped layer is new."""
    root = make_repo(tmp_path_factory.mktemp("tls-released"))
    env = {**no_docker_config(root.parent / "docker"), "SSL_CERT_FILE": str(pki.ca)}
    proc = lockstep(
        ["release", VERSION, "--registry", f"{tls_registry.address}/team", "--json"],
        cwd=root,
        cache=cache_dir,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Released(root, tls_registry, json.loads(proc.stdout), proc.stderr)


# -- the registry really is TLS-only -------------------------------------------------


@pytest.mark.registry
def test_the_registry_serves_only_verified_tls(tls_registry: OciRegistry, pki: TlsFiles) -> None:
    assert tls_registry.get("/v2/")[0] == 200  # over HTTPS, trusting our CA
    conn = http.client.HTTPConnection("127.0.0.1", tls_registry.port, timeout=5)
    try:
        conn.request("GET", "/v2/")
        resp = conn.getresponse()
        assert resp.status == 400 and b"HTTPS server" in resp.read()
    finally:
        conn.close()
    untrusting = http.client.HTTPSConnection(
        "127.0.0.1", tls_registry.port, timeout=5, context=ssl.create_default_context(cafile=None)
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        untrusting.request("GET", "/v2/")
    untrusting.close()


# -- a release over TLS --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.registry
def test_release_over_tls_with_the_ca_trusted(tls_released: Released) -> None:
    host = tls_released.registry.address
    assert f"lockstep: pushing to {host}/team (https)" in tls_released.stderr
    out = tls_released.out
    assert out["registry"] == f"{host}/team"
    for role in ROLES:
        assert out["images"][role]["reference"] == (
            f"{host}/team/lockstep-{role}@{out['images'][role]['digest']}"
        )
    # per role its 2 platform manifests and the index by digest and by tag; per platform
    # image 2 artifacts and the referrers index
    assert out["tagged"] is True and out["push"]["manifests_put"] == 2 * 4 + 4 * 3
    root = tls_released.root
    assert (root / "release" / f"{VERSION}.json").is_file()
    assert git(root, "tag", "--list") == f"v{VERSION}"
    # The registry's own log: every request came over TLS (none was plain HTTP).
    log = tls_released.registry.log_path.read_text(errors="replace")
    assert "http.request.method=PUT" in log and "Client sent an HTTP request" not in log


@pytest.mark.slow
@pytest.mark.registry
def test_skopeo_verifying_tls_reports_our_digests(
    tls_released: Released, pki: TlsFiles, tmp_path: Path
) -> None:
    certs = tmp_path / "certs.d"
    certs.mkdir()
    shutil.copy(pki.ca, certs / "ca.crt")  # a *.crt in --cert-dir is a trusted root
    for role in ROLES:
        image = tls_released.out["images"][role]
        ref = f"docker://{image['reference']}"
        info = json.loads(
            skopeo("inspect", "--tls-verify=true", "--cert-dir", str(certs), ref).stdout
        )
        assert info["Digest"] == image["digest"]
        assert info["Labels"]["io.lockstep.build-id"] == tls_released.out["build_id"]
        by_tag = json.loads(
            skopeo(
                "inspect",
                "--tls-verify=true",
                "--cert-dir",
                str(certs),
                f"docker://{tls_released.registry.address}/team/lockstep-{role}:{VERSION}",
            ).stdout
        )
        assert by_tag["Digest"] == image["digest"]
    # And skopeo without the CA refuses the registry: TLS verification is real.
    empty = tmp_path / "empty.d"
    empty.mkdir()
    proc = skopeo(
        "inspect",
        "--tls-verify=true",
        "--cert-dir",
        str(empty),
        f"docker://{tls_released.out['images']['worker']['reference']}",
        ok=False,
    )
    assert "x509" in proc.stderr or "certificate" in proc.stderr


@pytest.mark.slow
@pytest.mark.registry
def test_verify_registry_over_tls(tls_released: Released, pki: TlsFiles, cache_dir: Path) -> None:
    proc = lockstep(
        ["verify", f"release/{VERSION}.json", "--registry"],
        cwd=tls_released.root,
        cache=cache_dir,
        env={"SSL_CERT_FILE": str(pki.ca)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lockstep: the registry serves exactly the released indexes and manifests" in proc.stderr
    assert proc.stdout.count("rebuilt; served by the registry") == 2


@pytest.mark.slow
@pytest.mark.registry
def test_untrusted_ca_is_exit_3_one_line_and_no_release(
    tls_registry: OciRegistry, built: Built, cache_dir: Path, tmp_path: Path, untrusted: None
) -> None:
    root = make_repo(tmp_path)
    host = tls_registry.address
    proc = lockstep(
        ["release", VERSION, "--registry", f"{host}/untrusted"],
        cwd=root,
        cache=cache_dir,
        env=no_docker_config(tmp_path / "docker"),
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert error_lines(proc.stderr) == [
        f"lockstep: error: registry {host}: its TLS certificate is signed by a CA this machine "
        "does not trust (unable to get local issuer certificate); trust that CA "
        "(SSL_CERT_FILE=/path/to/ca.pem for one run, or add it to the system store, e.g. "
        "update-ca-certificates), then run the command again"
    ]
    assert "Traceback" not in proc.stderr
    assert f"pushing to {host}/untrusted (https)" in proc.stderr  # never downgraded to http
    release_dir = root / "release"
    assert sorted(p.name for p in release_dir.iterdir()) == ["README.md"]
    assert git(root, "tag", "--list") == ""
    status, _, body = tls_registry.get("/v2/_catalog")
    assert status == 200 and not any(
        name.startswith("untrusted/") for name in json.loads(body)["repositories"]
    )


@pytest.mark.slow
@pytest.mark.registry
def test_client_reaches_the_tls_registry_as_localhost(
    tls_released: Released, pki: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    image = tls_released.out["images"]["runner"]
    client = RegistryClient(f"localhost:{tls_released.registry.port}")
    try:
        assert client.scheme == "https"
        assert client.has_manifest("team/lockstep-runner", image["digest"], (INDEX_MEDIA_TYPE,))
    finally:
        client.close()


# -- how the client chooses https or http for a loopback host ------------------------


class _Quiet(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def plain_http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _serve(sock: socket.socket, handle: Any) -> threading.Thread:
    def loop() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    try:
        yield sock
    finally:
        sock.close()


def _address(sock: socket.socket) -> str:
    return f"127.0.0.1:{sock.getsockname()[1]}"


def test_loopback_plain_http_server_gets_http(plain_http_server: str) -> None:
    client = RegistryClient(plain_http_server)
    assert client.scheme == "http"
    assert client.request("GET", "/v2/", scope=[]).status == 200
    client.close()


def test_loopback_server_silent_to_a_client_hello_gets_http(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    held: list[socket.socket] = []
    _serve(listener, held.append)  # accepts, never answers
    monkeypatch.setattr(transport, "PROBE_SECONDS", 0.3)
    assert RegistryClient(_address(listener)).scheme == "http"


def test_loopback_tls_server_gets_https_and_a_name_mismatch_is_one_clear_error(
    listener: socket.socket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_pki(tmp_path, names="DNS:registry.example.com")  # not 127.0.0.1
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(other.cert, other.key)

    def handshake(conn: socket.socket) -> None:
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    _serve(listener, handshake)
    monkeypatch.setenv("SSL_CERT_FILE", str(other.ca))
    host = _address(listener)
    client = RegistryClient(host)
    assert client.scheme == "https"
    with pytest.raises(ServiceFailed) as failed:
        client.request("GET", "/v2/", scope=[])
    client.close()
    assert failed.value.exit_code == 3
    assert str(failed.value) == (
        f"registry {host}: its TLS certificate is not for 127.0.0.1 (IP address mismatch, "
        "certificate is not valid for '127.0.0.1'.); name the registry in --registry as its "
        "certificate does, or give it a certificate with 127.0.0.1 in its subjectAltName"
    )


def test_loopback_nothing_listening_did_not_answer(listener: socket.socket) -> None:
    host = _address(listener)
    listener.close()
    with pytest.raises(ServiceFailed, match=rf"^registry {host} did not answer \("):
        _ = RegistryClient(host).scheme


def test_non_loopback_is_https_and_plain_http_is_asked_for() -> None:
    # No probe: neither of these touches the network.
    assert RegistryClient("registry.invalid:5000").scheme == "https"
    assert RegistryClient("registry.invalid:5000", plain_http=True).scheme == "http"
    assert RegistryClient("127.0.0.1:1", plain_http=True).scheme == "http"
