"""Every locked wheel, from the cache or its URL, verified against the lock's sha256.

The same rules as the Debian fetch: the cache is looked up by digest and every
read is verified (hashed, or trusted by the stamp of a hash: ``core/stamps.py``); a
download is checked before it is cached; a wheel the index no longer serves is a
clear error that says to re-lock. Nothing is resolved here: the lock is the whole
truth (pex only makes the lock). Layer planning needs only sizes (``wheel_sizes``).
"""

from __future__ import annotations

import threading
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


def wheel_sizes(
    wheels: Sequence[LockedWheel], cache: Cache, progress: Progress = quiet
) -> dict[str, int]:
    """Each wheel's size in bytes by its sha256 (hex), verified: of a cached wheel whose
    stamp holds without reading it, else hashed (once per build) or downloaded."""

    def one(wheel: LockedWheel) -> int | None:
        return cache.size_of(of_hex(wheel.sha256))

    with ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="wheel") as pool:
        known = dict(zip((w.sha256 for w in wheels), pool.map(one, wheels), strict=True))
    fetched = fetch_wheels([w for w in wheels if known[w.sha256] is None], cache, progress)
    return {h: len(fetched[h]) if n is None else n for h, n in known.items()}


def download_missing(
    wheels: Sequence[LockedWheel],
    cache: Cache,
    progress: Progress = quiet,
    stop: threading.Event | None = None,
) -> dict[str, int]:
    """The wheels of ``wheels`` missing from the cache, downloaded, verified and cached; their
    sizes by sha256 (hex). Their bytes are not kept: at most ``FETCH_WORKERS`` wheels are in
    memory at once. Once ``stop`` is set, the wheels not yet started are skipped (and left
    out): a build that failed elsewhere does not wait for them."""
    missing = [w for w in wheels if not cache.blob_path(of_hex(w.sha256)).exists()]
    if missing:
        progress(f"downloading {len(missing)} wheel(s)")

    def one(wheel: LockedWheel) -> int | None:
        if stop is not None and stop.is_set():
            return None
        return len(fetch_verified(cache, wheel.url, wheel.sha256, wheel.filename, LOCK_HINT))

    with ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="wheel") as pool:
        sizes = dict(zip((w.sha256 for w in missing), pool.map(one, missing), strict=True))
    return {sha: size for sha, size in sizes.items() if size is not None}
