"""Every locked wheel, from the cache or its URL, verified against the lock's sha256.

The same rules as the Debian fetch: the cache is looked up by digest and every
read is verified; a download is checked before it is cached; a wheel the index
no longer serves is a clear error that says to re-lock. Nothing is resolved
here: the lock is the whole truth (pex only makes the lock).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from lockstep.core.digests import of_hex
from lockstep.core.fetch import fetch_verified
from lockstep.core.progress import Progress, quiet
from lockstep.core.store import Cache
from lockstep.inputs.python.lock import LockedWheel
from lockstep.inputs.python.pex import LOCK_HINT

FETCH_WORKERS = 4


def fetch_wheels(
    wheels: Sequence[LockedWheel], cache: Cache, progress: Progress = quiet
) -> dict[str, bytes]:
    """Each wheel's bytes by its sha256 (hex), verified; from ``cache`` when it has them."""
    missing = [w for w in wheels if not cache.blob_path(of_hex(w.sha256)).exists()]
    if missing:
        progress(f"downloading {len(missing)} wheel(s)")

    def one(wheel: LockedWheel) -> bytes:
        return fetch_verified(cache, wheel.url, wheel.sha256, wheel.filename, LOCK_HINT)

    with ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="wheel") as pool:
        return {w.sha256: data for w, data in zip(wheels, pool.map(one, wheels), strict=True)}
