"""HTTP to one registry host: HTTPS or plain HTTP, decided once, kept-alive connections.

The transport under the distribution client (``oci/client.py``): no auth, no
API, only requests and the TLS decision.

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
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import ssl
import sys
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lockstep.core.errors import ServiceFailed
from lockstep.oci.reference import is_loopback

log = logging.getLogger(__name__)

# ``lockstep`` is always imported before its ``core`` (core imports nothing above it).
USER_AGENT = f"lockstep/{getattr(sys.modules.get('lockstep'), '__version__', '0')}"
PROBE_SECONDS = 5.0  # how long a loopback server may take to answer a ClientHello
_TLS_RECORD_TYPES = range(20, 25)  # change_cipher_spec, alert, handshake, data, heartbeat
# OpenSSL's verify codes for "signed by a CA that is not in the trust store".
_UNTRUSTED_ISSUER = {2, 18, 19, 20, 21}
_NAME_MISMATCH = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


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


def down(netloc: str, exc: BaseException) -> ServiceFailed:
    """One line for a registry that did not answer."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return ServiceFailed(
        f"registry {netloc} did not answer ({reason}); check that it is "
        "running and that --registry names it, then run the command again"
    )


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
class Transport:
    """One registry host's connections; HTTPS or plain HTTP as the module doc says
    (``scheme``). Usable from several threads: each keeps its own connections."""

    host: str
    plain_http: bool = False
    timeout: float = 120.0
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
            raise down(self.host, exc) from exc
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

    def raw(
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
                    raise down(parts.netloc, exc) from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop(parts.scheme, parts.netloc)
                raise down(parts.netloc, exc) from exc
        raise AssertionError("unreachable")

    def stream(
        self, url: str, headers: Mapping[str, str], feed: Callable[[bytes], None], piece: int
    ) -> Response:
        """``GET url``: a 200's body goes to ``feed`` in pieces of up to ``piece`` bytes as
        it arrives (the returned body is empty); any other answer is read whole."""
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn = self._conn(parts.scheme, parts.netloc)
        try:
            conn.request("GET", target, headers={"User-Agent": USER_AGENT, **headers})
            resp = conn.getresponse()
            found = {k.lower(): v for k, v in resp.getheaders()}
            if resp.status != 200:
                return Response(resp.status, found, resp.read())
            while data := resp.read(piece):  # read(n) closes the response at its end
                feed(data)
            return Response(resp.status, found, b"")
        except ssl.SSLError as exc:
            self._drop(parts.scheme, parts.netloc)
            raise tls_failed(parts.netloc, exc) from exc
        except (OSError, http.client.HTTPException) as exc:
            self._drop(parts.scheme, parts.netloc)
            raise down(parts.netloc, exc) from exc
        except BaseException:
            self._drop(parts.scheme, parts.netloc)  # the body was not read to its end
            raise

    def _drop(self, scheme: str, netloc: str) -> None:
        conn = self._conns.pop((threading.get_ident(), scheme, netloc), None)
        if conn is not None:
            conn.close()
