"""``core.http.get`` against servers on 127.0.0.1: a host is looked up once per process,
TLS is still checked against the host's name, a 404 is ``NotFound``."""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lockstep.core import http as lhttp
from tests.oci.test_client_tls import make_pki

BODY = b"locked bytes " * 1000


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/file":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: Any) -> None:
        pass


def _serve(context: ssl.SSLContext | None = None) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def plain() -> Iterator[int]:
    yield from _serve()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(lhttp, "_addresses", {})
    asked: list[str] = []
    real = socket.getaddrinfo

    def counting(host: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    return asked


def test_a_host_is_looked_up_once_for_many_files(plain: int, lookups: list[str]) -> None:
    for _ in range(5):
        assert lhttp.get(f"http://localhost:{plain}/file") == BODY
    assert lookups == ["localhost"]
    with pytest.raises(lhttp.NotFound):
        lhttp.get(f"http://localhost:{plain}/other")
    assert lhttp.get(f"http://localhost:{plain}/file", max_bytes=10) == BODY[:11]


def test_tls_is_checked_against_the_name_not_the_address(
    tmp_path: Path, lookups: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    good = make_pki(tmp_path / "good", names="DNS:localhost")
    wrong = make_pki(tmp_path / "wrong", names="DNS:elsewhere.invalid")
    for files, ok in ((good, True), (wrong, False)):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(files.cert, files.key)
        monkeypatch.setenv("SSL_CERT_FILE", str(files.ca))
        for port in _serve(context):
            if ok:
                assert lhttp.get(f"https://localhost:{port}/file") == BODY
            else:
                with pytest.raises(lhttp.Unreachable, match="certificate"):
                    lhttp.get(f"https://localhost:{port}/file")
    assert set(lookups) == {"localhost"}
