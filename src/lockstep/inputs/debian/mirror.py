"""The Debian mirror over HTTP: archive URLs and one GET with clear errors."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.parse
import urllib.request

from lockstep.core.errors import BadInput, ServiceFailed
from lockstep.core.settings import DEBIAN_MIRROR
from lockstep.inputs.debian.lock import RELOCK_HINT

USER_AGENT = "lockstep (debian base)"
HTTP_TIMEOUT = 60.0


def security_mirror(mirror: str) -> str:
    """The security archive next to ``mirror``: its last ``debian`` path part becomes
    ``debian-security`` (``http://deb.debian.org/debian`` → ``…/debian-security``)."""
    parts = urllib.parse.urlsplit(mirror.rstrip("/"))
    segs = parts.path.split("/")
    for i in range(len(segs) - 1, -1, -1):
        if segs[i] == "debian":
            segs[i] = "debian-security"
            return urllib.parse.urlunsplit(parts._replace(path="/".join(segs)))
    return mirror.rstrip("/") + "-security"


def archive_url(mirror: str, archive: str) -> str:
    """The base URL of ``archive`` ("debian" or "debian-security") for ``mirror``."""
    if archive == "debian":
        return mirror.rstrip("/")
    if archive == "debian-security":
        return security_mirror(mirror)
    raise BadInput(f"unknown Debian archive {archive!r} in the lock; {RELOCK_HINT}")


class NotFound(Exception):
    def __init__(self, url: str, code: int) -> None:
        super().__init__(url)
        self.url = url
        self.code = code


def http_get(url: str, max_bytes: int | None = None) -> bytes:
    """GET ``url``; ``NotFound`` for 404/410, ServiceFailed naming the URL otherwise.

    With ``max_bytes`` it reads at most one byte more, so an oversized answer is
    noticed without reading it all.
    """
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            data: bytes = resp.read() if max_bytes is None else resp.read(max_bytes + 1)
            return data
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            raise NotFound(url, exc.code) from exc
        raise ServiceFailed(
            f"Debian mirror: GET {url} failed: HTTP {exc.code} {exc.reason}; "
            f"check the mirror or {DEBIAN_MIRROR}"
        ) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ServiceFailed(
            f"Debian mirror: GET {url} failed: {reason}; check the network, "
            f"the mirror or {DEBIAN_MIRROR}"
        ) from exc
