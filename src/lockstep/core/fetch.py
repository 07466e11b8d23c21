"""Locked artifacts by URL and sha256, through the content-addressed cache.

``fetch_verified`` returns the bytes of a locked artifact: from the cache
(``lockstep.core.store.Cache``, verified on read) or downloaded once and
checked against the lock's sha256 before anything keeps it. The build (the
image's wheels), ``lockstep bundle lock`` and the runner (which sends a
bundle's wheels to its workers) use it; a worker never downloads anything.
"""

from __future__ import annotations

import hashlib

from lockstep.core.errors import CheckFailed, ServiceFailed
from lockstep.core.http import NotFound, Unreachable, get
from lockstep.core.settings import SSL_CERT_FILE
from lockstep.core.store import Cache

MAX_ARTIFACT_BYTES = 1 << 30  # 1 GiB: a larger wheel is refused (and never held in memory)


def fetch_verified(cache: Cache, url: str, sha256_hex: str, what: str, hint: str) -> bytes:
    """The artifact at ``url`` whose sha256 is ``sha256_hex``; cached by its digest.

    ``CheckFailed`` if the downloaded bytes differ from the sha256 (nothing is
    kept), ``ServiceFailed`` if the download fails. ``hint`` says how to fix a
    mismatch (re-lock).
    """
    digest = "sha256:" + sha256_hex
    cached = cache.get_blob(digest)
    if cached is not None:
        return cached
    try:
        data = get(url, MAX_ARTIFACT_BYTES)
    except NotFound as exc:
        raise ServiceFailed(
            f"{what}: {url} not found (HTTP {exc.code}); the index no longer serves it; {hint}"
        ) from exc
    except Unreachable as exc:
        raise ServiceFailed(
            f"{what}: {exc}; check the network or proxy (the CA bundle is {SSL_CERT_FILE}'s) "
            "and retry"
        ) from exc
    if len(data) > MAX_ARTIFACT_BYTES:
        raise CheckFailed(f"{what}: {url} is larger than {MAX_ARTIFACT_BYTES} bytes; refusing it")
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256_hex:
        raise CheckFailed(
            f"{what}: {url} has sha256 {actual}, the lock says {sha256_hex}: the lock "
            f"was edited or the index serves other bytes; refusing it; {hint}"
        )
    cache.put_blob(data)
    return data
