"""Identity tokens (config.json ``identitytoken``) against docker-registry's own token auth.

docker-registry 2.8 runs on 127.0.0.1 with ``auth: token`` (realm, service,
issuer, rootcertbundle): it accepts only JWTs signed by a key whose certificate
is in its bundle. The token service is a small real HTTP server in this test,
doing what the distribution spec's OAuth2 token authentication documents: ``POST
/token`` with ``grant_type=refresh_token``, ``client_id``, ``service``, ``scope``
and ``refresh_token`` answers ``{"access_token": …}`` — here an ES256 JWT with the
asked access and an ``x5c`` header the registry checks against its bundle. It
refuses any other grant and a GET with basic auth, so only the OAuth2 flow passes.
"""

from __future__ import annotations

import base64
import datetime
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lockstep.core.digests import canonical_json, sha256_digest
from lockstep.oci.auth import credentials_for
from lockstep.oci.client import PushStats, RegistryClient
from tests.fixtures.build import lockstep
from tests.fixtures.registry import OciRegistry, find_registry
from tests.fixtures.support import require
from tests.release.test_release import docker_config, error_lines

pytestmark = pytest.mark.registry

SERVICE = "lockstep-token-test"
ISSUER = "lockstep-test-token-service"
REFRESH = "refresh-token-of-ci-0b7e"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService(ThreadingHTTPServer):
    """The token endpoint on 127.0.0.1; signs access tokens with its own key."""

    def __init__(self, root: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        super().__init__(("127.0.0.1", 0), TokenHandler)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.bundle = root / "token-ca.pem"
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[dict[str, str]] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/token"

    def token(self, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {
            "iss": ISSUER,
            "sub": "ci",
            "aud": SERVICE,
            "exp": now + 600,
            "nbf": now - 60,
            "iat": now,
            "jti": f"t{len(self.requests)}-{now}",
            "access": access,
        }
        signing_input = f"{b64url(canonical_json(header))}.{b64url(canonical_json(claims))}"
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class TokenHandler(BaseHTTPRequestHandler):
    server: TokenService

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # the basic-auth flow: not offered here
        self.reply(401, {"error": "unauthorized", "error_description": "use the OAuth2 flow"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        self.server.requests.append(form)
        if self.headers.get("Content-Type") != "application/x-www-form-urlencoded":
            return self.reply(400, {"error": "invalid_request"})
        if form.get("grant_type") != "refresh_token" or not form.get("client_id"):
            return self.reply(400, {"error": "unsupported_grant_type"})
        if form.get("service") != SERVICE or form.get("refresh_token") != REFRESH:
            return self.reply(401, {"error": "invalid_grant"})
        scopes = form.get("scope", "").split()
        self.reply(200, {"access_token": self.server.token(scopes), "expires_in": 600})


class TokenRegistry(OciRegistry):
    """docker-registry trusting the token service's certificate (``auth: token``)."""

    service: TokenService  # set before start

    def __init__(self, root: Path, port: int, binary: str) -> None:
        super().__init__(root, port, binary)
        config = json.loads(self.config_path.read_text())
        config["auth"] = {
            "token": {
                "realm": self.service.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(self.service.bundle),
            }
        }
        self.config_path.write_text(json.dumps(config))

    def get(
        self, path: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, dict[str, str], bytes]:
        bearer = {"Authorization": f"Bearer {self.service.token([])}"}
        return super().get(path, {**bearer, **(headers or {})}, method)


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    require(
        find_registry() is not None,
        "docker-registry is not installed (Debian package docker-registry)",
    )
    root = tmp_path_factory.mktemp("token-registry")
    service = TokenService(root)
    TokenRegistry.service = service
    try:
        registry = TokenRegistry.start_new(root)
        assert isinstance(registry, TokenRegistry)
        try:
            yield registry
        finally:
            registry.close()
    finally:
        service.close()


def test_an_identity_token_pushes_and_pulls_through_the_oauth2_flow(
    token_registry: TokenRegistry, tmp_path: Path, cache_dir: Path
) -> None:
    host = token_registry.address
    # The registry itself checks the tokens: one it did not get from its service is refused.
    assert token_registry.get("/v2/", {"Authorization": "Bearer a.b.c"})[0] == 401
    assert token_registry.get("/v2/")[0] == 200
    env = docker_config(tmp_path / "ok", {host: {"auth": "", "identitytoken": REFRESH}})
    credentials = credentials_for(host, env)
    assert credentials is not None and credentials.identity_token == REFRESH
    assert REFRESH not in repr(credentials)
    before = len(token_registry.service.requests)
    client = RegistryClient(host, credentials, plain_http=True)
    try:
        blob = b'{"hello":"token"}'
        stats = PushStats()
        client.push_blob("tok/app", sha256_digest(blob), blob, stats)
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/vnd.lockstep.test+json",
                "config": {
                    "mediaType": "application/vnd.oci.empty.v1+json",
                    "digest": sha256_digest(b"{}"),
                    "size": 2,
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.lockstep.test+json",
                        "digest": sha256_digest(blob),
                        "size": len(blob),
                    }
                ],
            }
        )
        client.push_blob("tok/app", sha256_digest(b"{}"), b"{}", stats)
        digest = sha256_digest(manifest)
        media = "application/vnd.oci.image.manifest.v1+json"
        client.put_manifest("tok/app", digest, manifest, media, digest, stats)
        assert client.get_manifest("tok/app", digest) == manifest
    finally:
        client.close()
    asked = token_registry.service.requests[before:]
    assert asked, "no token was asked for"
    for form in asked:
        assert form["grant_type"] == "refresh_token"
        assert form["client_id"] == "lockstep" and form["service"] == SERVICE
        assert form["scope"].startswith("repository:tok/app:")

    # The CLI, reading config.json as a user has it: a right token inspects the artifact...
    reference = f"{host}/tok/app@{digest}"
    proc = lockstep(["inspect", reference, "--json"], cwd=tmp_path, cache=cache_dir, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["digest"] == digest
    # ... a wrong one is a clear refusal, the token never printed.
    wrong = docker_config(tmp_path / "wrong", {host: {"identitytoken": "not-the-token"}})
    proc = lockstep(["inspect", reference], cwd=tmp_path, cache=cache_dir, env=wrong)
    assert proc.returncode == 2, proc.stderr
    (line,) = error_lines(proc.stderr)
    assert line == (
        f"lockstep: error: registry {host} rejected the identitytoken from "
        f"{tmp_path}/wrong/config.json; run `docker login {host}` or fix that file"
    )
    assert "not-the-token" not in proc.stderr + proc.stdout
