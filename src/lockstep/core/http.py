"""One HTTP GET for locked artifacts (Debian mirror, package index), with clear errors.

TLS uses Python's default context: the CA bundle of ``$SSL_CERT_FILE``, else
OpenSSL's, the same the registry client and pex are given.

A host's address is looked up once per process (``resolve``): a build fetches
dozens of files from one mirror, and a resolver that drops a query costs its
whole timeout (5 s, measured on CI machines) each time. Proxies from the
environment still apply (``urllib``'s handlers); only the connecting is ours.
"""

from __future__ import annotations

import http.client
import socket
import threading
import urllib.error
import urllib.request
from typing import Any

USER_AGENT = "lockstep (locked artifacts)"
TIMEOUT = 60.0


class NotFound(Exception):
    """The server says the file is not there (404, 410): for a lock, it has aged."""

    def __init__(self, url: str, code: int) -> None:
        super().__init__(url)
        self.url = url
        self.code = code


class Unreachable(Exception):
    """Any other failure, as one phrase for the caller's message."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"GET {url} failed: {reason}")
        self.url = url
        self.reason = reason


_addresses: dict[tuple[str, int], list[Any]] = {}
_addresses_lock = threading.Lock()


def resolve(host: str, port: int) -> list[Any]:
    """``socket.getaddrinfo`` for a TCP connection to ``host:port``, asked once per process."""
    with _addresses_lock:
        known = _addresses.get((host, port))
    if known is None:
        known = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        with _addresses_lock:
            _addresses[(host, port)] = known
    return known


def _open_tcp(conn: http.client.HTTPConnection) -> None:
    """``conn``'s socket, connected to an address from ``resolve`` (and through its proxy
    tunnel, if it has one), as ``HTTPConnection.connect`` would."""
    error: OSError | None = None
    timeout = conn.timeout if isinstance(conn.timeout, int | float) else None
    for family, kind, proto, _name, addr in resolve(conn.host, conn.port):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(addr)
            if family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            error = exc
            sock.close()
            continue
        conn.sock = sock
        if conn._tunnel_host:  # type: ignore[attr-defined]
            conn._tunnel()  # type: ignore[attr-defined]
        return
    raise error or OSError(f"no address for {conn.host}")


class _HTTPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        _open_tcp(self)


class _HTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        _open_tcp(self)  # then TLS to the host's name, not its address
        host = self._tunnel_host or self.host  # type: ignore[attr-defined]
        self.sock = self._context.wrap_socket(self.sock, server_hostname=host)  # type: ignore[attr-defined]


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPSConnection, req, context=self._context)  # type: ignore[attr-defined]


_opener = urllib.request.build_opener(_HTTPHandler, _HTTPSHandler)


def get(url: str, max_bytes: int | None = None) -> bytes:
    """The body at ``url``; ``NotFound`` for 404/410, ``Unreachable`` otherwise.

    With ``max_bytes`` it reads at most one byte more, so an oversized answer is
    noticed without reading it all.
    """
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with _opener.open(req, timeout=TIMEOUT) as resp:
            data: bytes = resp.read() if max_bytes is None else resp.read(max_bytes + 1)
            return data
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            raise NotFound(url, exc.code) from exc
        raise Unreachable(url, f"HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise Unreachable(url, str(getattr(exc, "reason", None) or exc)) from exc
