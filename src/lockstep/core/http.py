"""One HTTP GET for locked artifacts (Debian mirror, package index), with clear errors.

TLS uses Python's default context: the CA bundle of ``$SSL_CERT_FILE``, else
OpenSSL's, the same the registry client and pex are given.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request

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


def get(url: str, max_bytes: int | None = None) -> bytes:
    """The body at ``url``; ``NotFound`` for 404/410, ``Unreachable`` otherwise.

    With ``max_bytes`` it reads at most one byte more, so an oversized answer is
    noticed without reading it all.
    """
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            data: bytes = resp.read() if max_bytes is None else resp.read(max_bytes + 1)
            return data
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            raise NotFound(url, exc.code) from exc
        raise Unreachable(url, f"HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise Unreachable(url, str(getattr(exc, "reason", None) or exc)) from exc
