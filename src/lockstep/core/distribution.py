"""A small client for the OCI distribution API: the calls a push and a pull need.

Used by ``lockstep release`` and by job bundles (pushed by the runner, pulled by
workers), so it lives in ``core``: standard library only, nothing of the build.

Blobs go up as ``POST /v2/NAME/blobs/uploads/`` then ``PUT <location>?digest=``
(distribution 2.8 has no single-request upload); a blob the repository
already has (``HEAD``) is skipped, and one that another repository of this
push holds is mounted instead of uploaded. Manifests go up with their media
type. Every digest the registry reports (``Docker-Content-Digest``) must equal
ours: the registry stores our exact bytes or the push fails.

HTTPS or plain HTTP, decided once per registry host:

* ``--plain-http`` (``plain_http=True``): plain HTTP;
* any other non-loopback host: HTTPS, always; a server that answers plain
  HTTP there is an error that names ``--plain-http``;
* a loopback host (``localhost``, ``127.0.0.0/8``, ``[::1]``): HTTPS if the
  server speaks TLS, else plain HTTP, as Docker and containerd treat
  ``localhost``. Before the first request one ClientHello is sent (no
  credentials, nothing else); a TLS record back means HTTPS, anything else
  (an HTTP ``400``, a close, or silence for ``PROBE_SECONDS``) means plain
  HTTP. A loopback registry that speaks TLS is never downgraded: a
  certificate it cannot verify fails the command.

HTTPS verifies the certificate chain and the host name with
``ssl.create_default_context()``: the system's CA store, or the bundle named
by ``SSL_CERT_FILE`` / the directory named by ``SSL_CERT_DIR`` (OpenSSL's
variables), e.g. for a registry with a private CA.

A 401 is answered once, with basic auth or a bearer token from the
challenge's realm, using credentials from Docker's config.json (never
logged).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import ipaddress
import json
import logging
import re
import socket
import ssl
import sys
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lockstep.core.docker_auth import Credentials, docker_config_path
from lockstep.core.errors import BadInput, CheckFailed, ServiceFailed

log = logging.getLogger(__name__)

MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
# ``lockstep`` is always imported before its ``core`` (core imports nothing above it).
USER_AGENT = f"lockstep/{getattr(sys.modules.get('lockstep'), '__version__', '0')}"
PROBE_SECONDS = 5.0  # how long a loopback server may take to answer a ClientHello
_TLS_RECORD_TYPES = range(20, 25)  # change_cipher_spec, alert, handshake, data, heartbeat
# OpenSSL's verify codes for "signed by a CA that is not in the trust store".
_UNTRUSTED_ISSUER = {2, 18, 19, 20, 21}
_NAME_MISMATCH = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``name[:port]`` or ``[v6]:port``) is a loopback address."""
    name = host
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_host_port(host: str, default_port: int) -> tuple[str, int]:
    """``name:port``, ``[v6]:port``, ``name`` → (name, port)."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, int(rest[1:]) if rest.startswith(":") else default_port
    name, sep, port = host.rpartition(":")
    return (name, int(port)) if sep and port.isdigit() else (host, default_port)


def tls_failed(netloc: str, exc: ssl.SSLError) -> ServiceFailed:
    """One line for a failed TLS connection: what is wrong, and what to do."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        problem = exc.verify_message or exc.reason or str(exc)
        if exc.verify_code in _UNTRUSTED_ISSUER:
            return ServiceFailed(
                f"registry {netloc}: its TLS certificate is signed by a CA this machine does "
                f"not trust ({problem}); trust that CA (SSL_CERT_FILE=/path/to/ca.pem for "
                "one run, or add it to the system store, e.g. update-ca-certificates), "
                "then run the command again"
            )
        if exc.verify_code in _NAME_MISMATCH:
            name = split_host_port(netloc, 443)[0]
            return ServiceFailed(
                f"registry {netloc}: its TLS certificate is not for {name} ({problem}); "
                "name the registry in --registry as its certificate does, or give it a "
                f"certificate with {name} in its subjectAltName"
            )
        return ServiceFailed(
            f"registry {netloc}: its TLS certificate failed verification "
            f"({problem}); fix the registry's certificate"
        )
    return ServiceFailed(
        f"registry {netloc}: TLS failed ({exc.reason or exc}); if it serves "
        "plain HTTP on a trusted network, pass --plain-http"
    )


class BlobMismatch(CheckFailed):
    """A blob whose bytes are not those of the digest it was asked for."""


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def error_text(self) -> str:
        """The registry's own error code and message, if the body has them."""
        try:
            errors = json.loads(self.body)["errors"]
            return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors[:2])
        except (ValueError, KeyError, TypeError, AttributeError):
            return self.body[:120].decode(errors="replace").strip()


@dataclass
class PushStats:
    """What a push did: blobs uploaded (and their bytes), found, mounted; manifests put.
    Safe to update from several threads."""

    uploaded: int = 0
    uploaded_bytes: int = 0
    present: int = 0
    mounted: int = 0
    manifests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, what: str, size: int = 0) -> None:
        with self._lock:
            if what == "uploaded":
                self.uploaded += 1
                self.uploaded_bytes += size
            elif what == "present":
                self.present += 1
            elif what == "mounted":
                self.mounted += 1
            elif what == "manifest":
                self.manifests += 1
            else:  # pragma: no cover - a typo in this module
                raise ValueError(what)

    def to_dict(self) -> dict[str, int]:
        return {
            "blobs_uploaded": self.uploaded,
            "bytes_uploaded": self.uploaded_bytes,
            "blobs_present": self.present,
            "blobs_mounted": self.mounted,
            "manifests_put": self.manifests,
        }


@dataclass
class RegistryClient:
    """One registry host; HTTPS or plain HTTP as the module doc says (``scheme``).
    Usable from several threads: each keeps its own connections."""

    host: str
    credentials: Credentials | None = None
    plain_http: bool = False
    timeout: float = 120.0
    # What to do when the registry wants credentials this process lacks (a worker has
    # no `docker login`: it is given a config.json); None: run `docker login HOST`.
    login_hint: str | None = None
    _auth: dict[str, str] = field(default_factory=dict)  # scope -> Authorization value
    _conns: dict[tuple[int, str, str], http.client.HTTPConnection] = field(default_factory=dict)
    _scheme: str | None = None
    _scheme_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def scheme(self) -> str:
        """``https`` or ``http``; for a loopback host, found out on first use (one probe)."""
        if self.plain_http:
            return "http"
        if not is_loopback(self.host):
            return "https"
        with self._scheme_lock:
            if self._scheme is None:
                self._scheme = "https" if self._speaks_tls() else "http"
                log.debug("registry %s: %s (loopback probe)", self.host, self._scheme)
            return self._scheme

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}"

    def close(self) -> None:
        for conn in list(self._conns.values()):
            conn.close()
        self._conns.clear()

    # -- transport ----------------------------------------------------------------

    def _speaks_tls(self) -> bool:
        """Send a TLS ClientHello to the host and look at the first byte of the answer:
        a TLS record type means TLS. Nothing else is sent, so a plain HTTP server sees
        one malformed request (and answers ``400``)."""
        name, port = split_host_port(self.host, 443)
        context = ssl.create_default_context()
        context.check_hostname = False  # only the hello goes out; nothing is verified here
        context.verify_mode = ssl.CERT_NONE
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing)
        with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the server
            tls.do_handshake()
        hello = outgoing.read()
        try:
            with socket.create_connection(
                (name, port), timeout=min(PROBE_SECONDS, self.timeout)
            ) as sock:
                sock.sendall(hello)
                first = sock.recv(1)
        except (TimeoutError, ConnectionResetError, BrokenPipeError) as exc:
            log.debug("registry %s: no TLS answer (%s)", self.host, type(exc).__name__)
            return False
        except OSError as exc:
            raise self._down(self.host, exc) from exc
        return bool(first) and first[0] in _TLS_RECORD_TYPES

    def _conn(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        key = (threading.get_ident(), scheme, netloc)
        if key not in self._conns:
            if scheme == "https":
                self._conns[key] = http.client.HTTPSConnection(
                    netloc, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                self._conns[key] = http.client.HTTPConnection(netloc, timeout=self.timeout)
        return self._conns[key]

    def _raw(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> Response:
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        for attempt in (1, 2):  # a kept-alive connection the server closed gets one retry
            conn = self._conn(parts.scheme, parts.netloc)
            try:
                conn.request(
                    method, target, body=body, headers={"User-Agent": USER_AGENT, **headers}
                )
                resp = conn.getresponse()
                data = resp.read()
                return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
            except ssl.SSLError as exc:
                self._drop(parts.scheme, parts.netloc)
                raise tls_failed(parts.netloc, exc) from exc
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop(parts.scheme, parts.netloc)
                if attempt == 2:
                    raise self._down(parts.netloc, exc) from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop(parts.scheme, parts.netloc)
                raise self._down(parts.netloc, exc) from exc
        raise AssertionError("unreachable")

    def _drop(self, scheme: str, netloc: str) -> None:
        conn = self._conns.pop((threading.get_ident(), scheme, netloc), None)
        if conn is not None:
            conn.close()

    @staticmethod
    def _down(netloc: str, exc: BaseException) -> ServiceFailed:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return ServiceFailed(
            f"registry {netloc} did not answer ({reason}); check that it is "
            "running and that --registry names it, then run the command again"
        )

    # -- auth ---------------------------------------------------------------------

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        scope: Sequence[str],
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Response:
        """One request, authenticated for ``scope`` (answering one 401 challenge)."""
        url = path_or_url if "://" in path_or_url else self.base + path_or_url
        key = " ".join(scope)
        all_headers = dict(headers or {})
        if key in self._auth:
            all_headers["Authorization"] = self._auth[key]
        resp = self._raw(method, url, all_headers, body)
        if resp.status != 401:
            self._check_server_error(method, url, resp)
            return resp
        self._auth[key] = self._authenticate(resp.header("www-authenticate") or "", scope)
        all_headers["Authorization"] = self._auth[key]
        resp = self._raw(method, url, all_headers, body)
        if resp.status == 401:
            raise self._rejected()
        self._check_server_error(method, url, resp)
        return resp

    def _denied(self, resp: Response) -> None:
        if resp.status == 403:
            who = repr(self.credentials.username) if self.credentials else "anonymous"
            raise BadInput(
                f"registry {self.host} denied {who} ({resp.error_text()}); ask for "
                "push access to the repository, or `docker login` as a user with it"
            )

    def _check_server_error(self, method: str, url: str, resp: Response) -> None:
        self._denied(resp)
        if resp.status >= 500:
            path = urllib.parse.urlsplit(url).path
            raise ServiceFailed(
                f"registry {self.host} failed: {method} {path} answered "
                f"{resp.status} ({resp.error_text()}); try again later"
            )

    def _rejected(self) -> BadInput:
        where = self.credentials.source if self.credentials else str(docker_config_path())
        if self.credentials is None:
            return BadInput(
                f"registry {self.host} needs credentials and {where} has none "
                f"for it; {self.login_hint or f'run `docker login {self.host}`'}"
            )
        return BadInput(
            f"registry {self.host} rejected the credentials of "
            f"{self.credentials.username!r} from {where}; "
            f"{self.login_hint or f'run `docker login {self.host}` or fix that file'}"
        )

    def _basic(self) -> str:
        if self.credentials is None:
            raise self._rejected()
        pair = f"{self.credentials.username}:{self.credentials.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def _authenticate(self, challenge: str, scope: Sequence[str]) -> str:
        kind, _, rest = challenge.strip().partition(" ")
        params = dict(_CHALLENGE_PARAM.findall(rest))
        if kind.lower() == "basic":
            return self._basic()
        if kind.lower() != "bearer" or "realm" not in params:
            raise ServiceFailed(
                f"registry {self.host} asked for authentication this client "
                f"does not speak ({kind or 'no challenge'}); use a registry "
                "with basic or bearer token auth"
            )
        query = [("service", params["service"])] if "service" in params else []
        query += [("scope", s) for s in scope]
        url = (
            params["realm"]
            + ("&" if "?" in params["realm"] else "?")
            + urllib.parse.urlencode(query)
        )
        headers = {"Authorization": self._basic()} if self.credentials else {}
        resp = self._raw("GET", url, headers)
        if resp.status in (401, 403):
            raise self._rejected()
        if resp.status != 200:
            raise ServiceFailed(
                f"token service {urllib.parse.urlsplit(url).netloc} answered "
                f"{resp.status} ({resp.error_text()}); try again later"
            )
        try:
            data: Any = json.loads(resp.body)
            token = data.get("token") or data.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise ServiceFailed(
                f"token service {urllib.parse.urlsplit(url).netloc} answered "
                "without a token; check the registry's auth setup"
            )
        log.debug("got a bearer token for %s", " ".join(scope))
        return f"Bearer {token}"

    # -- the calls of a push --------------------------------------------------------

    @staticmethod
    def scope(name: str, actions: str = "pull,push") -> str:
        return f"repository:{name}:{actions}"

    def has_blob(self, name: str, digest: str, actions: str = "pull,push") -> bool:
        resp = self.request("HEAD", f"/v2/{name}/blobs/{digest}", scope=[self.scope(name, actions)])
        if resp.status == 200:
            return True
        if resp.status == 404:
            return False
        raise self._unexpected("HEAD", f"blob {digest} in {name}", resp)

    def push_blob(
        self,
        name: str,
        digest: str,
        data: bytes | Callable[[], bytes],
        stats: PushStats,
        mount_from: str | None = None,
    ) -> None:
        """Make ``name`` hold the blob ``digest`` = ``data``: skipped, mounted or uploaded.

        ``data`` may be a callable, asked for the bytes only when they are uploaded."""
        if self.has_blob(name, digest):
            stats.add("present")
            log.debug("blob %s already in %s", digest, name)
            return
        scope = [self.scope(name)]
        path = f"/v2/{name}/blobs/uploads/"
        if mount_from:
            scope.append(self.scope(mount_from, "pull"))
            path += "?" + urllib.parse.urlencode({"mount": digest, "from": mount_from})
        resp = self.request("POST", path, scope=scope, headers={"Content-Length": "0"}, body=b"")
        if resp.status == 201 and mount_from:
            self._check_digest(resp, digest, f"blob mounted into {name}")
            stats.add("mounted")
            log.debug("blob %s mounted into %s from %s", digest, name, mount_from)
            return
        if resp.status != 202 or not resp.header("location"):
            raise self._unexpected("POST", f"upload to {name}", resp)
        location = urllib.parse.urljoin(self.base + path, resp.header("location") or "")
        location += ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})
        data = data() if callable(data) else data
        log.debug("uploading %s to %s (%d bytes)", digest, name, len(data))
        resp = self.request(
            "PUT",
            location,
            scope=scope,
            body=data,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
        )
        if resp.status != 201:
            raise self._unexpected("PUT", f"blob {digest} to {name}", resp)
        self._check_digest(resp, digest, f"blob uploaded to {name}")
        stats.add("uploaded", len(data))

    def put_manifest(
        self,
        name: str,
        reference: str,
        manifest: bytes,
        media_type: str,
        digest: str,
        stats: PushStats,
    ) -> None:
        """PUT the manifest bytes under ``reference`` (a digest or a tag); check the digest."""
        resp = self.request(
            "PUT",
            f"/v2/{name}/manifests/{reference}",
            scope=[self.scope(name)],
            body=manifest,
            headers={"Content-Type": media_type, "Content-Length": str(len(manifest))},
        )
        if resp.status != 201:
            raise self._unexpected("PUT", f"manifest {reference} to {name}", resp)
        sep = "@" if reference.startswith("sha256:") else ":"
        self._check_digest(resp, digest, f"manifest {name}{sep}{reference}")
        stats.add("manifest")

    def has_manifest(self, name: str, digest: str) -> bool:
        """Whether the registry serves ``name@digest``; its reported digest must be ours."""
        resp = self.request(
            "HEAD",
            f"/v2/{name}/manifests/{digest}",
            scope=[self.scope(name, "pull")],
            headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
        )
        if resp.status == 404:
            return False
        if resp.status != 200:
            raise self._unexpected("HEAD", f"manifest {name}@{digest}", resp)
        self._check_digest(resp, digest, f"manifest {name}@{digest}")
        return True

    def get_manifest(self, name: str, digest: str) -> bytes:
        """The exact manifest bytes the registry serves for ``name@digest``."""
        resp = self.request(
            "GET",
            f"/v2/{name}/manifests/{digest}",
            scope=[self.scope(name, "pull")],
            headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
        )
        if resp.status == 404:
            raise CheckFailed(
                f"registry {self.host} does not serve {name}@{digest}; "
                "the release was not pushed there, or was deleted"
            )
        if resp.status != 200:
            raise self._unexpected("GET", f"manifest {name}@{digest}", resp)
        return resp.body

    def get_blob(self, name: str, digest: str, max_bytes: int) -> bytes:
        """The bytes of blob ``digest`` in ``name``, checked against the digest before they
        are returned: ``BlobMismatch`` (nothing kept) if they differ, ``CheckFailed`` if the
        registry does not have it. A redirect (to a storage backend) is followed once."""
        scope = [self.scope(name, "pull")]
        resp = self.request("GET", f"/v2/{name}/blobs/{digest}", scope=scope)
        if resp.status in (301, 302, 303, 307, 308) and resp.header("location"):
            target = urllib.parse.urljoin(self.base + "/", resp.header("location") or "")
            resp = self._raw("GET", target, {})
        if resp.status == 404:
            raise CheckFailed(
                f"registry {self.host} does not have blob {digest} in {name}; "
                "push it again (lockstep bundle push)"
            )
        if resp.status != 200:
            raise self._unexpected("GET", f"blob {digest} in {name}", resp)
        if len(resp.body) > max_bytes:
            raise CheckFailed(
                f"registry {self.host}: blob {digest} in {name} is {len(resp.body)} bytes, "
                f"more than {max_bytes}; refusing it"
            )
        found = "sha256:" + hashlib.sha256(resp.body).hexdigest()
        if found != digest:
            raise BlobMismatch(
                f"registry {self.host} served blob {digest} of {name} with the bytes of "
                f"{found}: refused, nothing kept; the registry's storage is corrupt or "
                "something between rewrote it; push the bundle again"
            )
        return resp.body

    def _check_digest(self, resp: Response, digest: str, what: str) -> None:
        reported = resp.header("docker-content-digest")
        if reported is not None and reported != digest:
            raise CheckFailed(
                f"registry {self.host} reports {reported} for the {what}, but "
                f"its bytes are {digest}; the registry changed them, so this "
                "release cannot be pinned there"
            )

    def _unexpected(self, method: str, what: str, resp: Response) -> ServiceFailed:
        return ServiceFailed(
            f"registry {self.host}: {method} {what} answered {resp.status} ({resp.error_text()})"
        )
