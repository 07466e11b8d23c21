"""Every locked wheel, from the cache or its URL, verified against the lock's sha256.

The same rules as the Debian fetch: the cache is looked up by digest and every
read is verified; a download is checked before it is cached; a wheel the index
no longer serves is a clear error that says to re-lock. Nothing is resolved
here: the lock is the whole truth (pex only makes the lock).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from lockstep.core.digests import of_hex
from lockstep.core.errors import CheckFailed, ServiceFailed
from lockstep.core.progress import Progress, quiet
from lockstep.core.settings import SSL_CERT_FILE
from lockstep.core.store import Cache
from lockstep.inputs.http import NotFound, Unreachable, get
from lockstep.inputs.python.lock import LockedWheel
from lockstep.inputs.python.pex import LOCK_HINT

FETCH_WORKERS = 4
MAX_WHEEL_BYTES = 2 << 30  # 2 GiB: no wheel we lock is near it; a bigger answer is wrong


def _download(wheel: LockedWheel) -> bytes:
    try:
        data = get(wheel.url, MAX_WHEEL_BYTES)
    except NotFound as exc:
        raise ServiceFailed(
            f"{wheel.filename}: {wheel.url} not found (HTTP {exc.code}); the index no longer "
            f"serves it: {LOCK_HINT}"
        ) from exc
    except Unreachable as exc:
        raise ServiceFailed(
            f"{wheel.filename}: {exc}; check the network or proxy (the CA bundle is "
            f"{SSL_CERT_FILE}'s) and retry"
        ) from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != wheel.sha256:
        raise CheckFailed(
            f"{wheel.filename}: downloaded from {wheel.url} with sha256 {actual}, the lock says "
            f"{wheel.sha256}; nothing was cached: the index serves other bytes or the lock was "
            f"edited; {LOCK_HINT} to re-lock"
        )
    return data


def fetch_wheels(
    wheels: Sequence[LockedWheel], cache: Cache, progress: Progress = quiet
) -> dict[str, bytes]:
    """Each wheel's bytes by its sha256 (hex), verified; from ``cache`` when it has them."""
    found: dict[str, bytes] = {}
    missing: list[LockedWheel] = []
    for wheel in wheels:
        data = cache.get_blob(of_hex(wheel.sha256))  # verified; a corrupt entry is removed
        if data is None:
            missing.append(wheel)
        else:
            found[wheel.sha256] = data
    if missing:
        progress(f"downloading {len(missing)} wheel(s)")
        with ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="wheel") as pool:
            for wheel, data in zip(missing, pool.map(_download, missing), strict=True):
                cache.put_blob(data)
                found[wheel.sha256] = data
                progress(f"fetched {wheel.filename} ({len(data)} bytes)")
    return found
