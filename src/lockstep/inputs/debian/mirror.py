"""The Debian mirror over HTTP: archive URLs and one GET with clear errors."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from lockstep.core.errors import BadInput, ServiceFailed
from lockstep.core.http import Unreachable, get
from lockstep.core.settings import DEBIAN_MIRROR
from lockstep.inputs.debian.lock import RELOCK_HINT


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


def http_get(url: str, max_bytes: int | None = None) -> bytes:
    """GET ``url`` from the mirror; ``NotFound`` for 404/410, ServiceFailed naming the URL
    and the setting otherwise."""
    try:
        return get(url, max_bytes)
    except Unreachable as exc:
        raise ServiceFailed(
            f"Debian mirror: {exc}; check the network, the mirror or {DEBIAN_MIRROR}"
        ) from exc
