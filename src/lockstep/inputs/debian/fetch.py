"""Every locked ``.deb``, from the cache or the mirror, verified against the lock."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

from lockstep.core.errors import CheckFailed, LockstepError, ServiceFailed
from lockstep.core.http import NotFound
from lockstep.core.progress import Progress, quiet
from lockstep.core.settings import DEBIAN_MIRROR
from lockstep.core.store import Cache
from lockstep.inputs.debian.lock import RELOCK_HINT, DebianLock, DebPackage
from lockstep.inputs.debian.mirror import archive_url, http_get

FETCH_WORKERS = 4


def deb_url(mirror: str, pkg: DebPackage) -> str:
    return f"{archive_url(mirror, pkg.archive)}/{pkg.filename}"


def _check(pkg: DebPackage, data: bytes, origin: str) -> str | None:
    """None if ``data`` is ``pkg``'s bytes, else what is wrong."""
    if len(data) != pkg.size:
        got = f"more than {pkg.size}" if len(data) > pkg.size else str(len(data))
        return f"size {got} bytes, expected {pkg.size} ({origin})"
    actual = hashlib.sha256(data).hexdigest()
    if actual != pkg.sha256:
        return f"sha256 {actual}, expected {pkg.sha256} ({origin})"
    return None


def _download_deb(mirror: str, pkg: DebPackage) -> bytes:
    url = deb_url(mirror, pkg)
    try:
        data = http_get(url, max_bytes=pkg.size)
    except NotFound as exc:
        raise ServiceFailed(
            f"Debian package {pkg.name} {pkg.version}: {url} not found (HTTP {exc.code}); "
            f"the mirror no longer serves this version: re-lock ({RELOCK_HINT}) or point "
            f"{DEBIAN_MIRROR} at a snapshot mirror"
        ) from exc
    problem = _check(pkg, data, f"downloaded from {url}")
    if problem:
        raise CheckFailed(
            f"Debian package {pkg.name} {pkg.version}: {problem}; nothing was "
            f"cached: check the mirror, or {RELOCK_HINT} if the lock is stale"
        )
    return data


def fetch(
    lock: DebianLock, mirror: str, cache: Cache, progress: Progress = quiet
) -> dict[str, bytes]:
    """Every locked ``.deb``, by package name, verified against the lock.

    Each ``.deb`` is looked up in ``cache`` by its sha256 first. Every read from
    the cache is verified (size and sha256); an entry that fails is treated as
    a cache fault, not as input: it is deleted, reported through ``progress``,
    and the ``.deb`` is downloaded again, so tampered bytes are never used and
    the cache heals itself. If the download fails too, the error says the cache
    entry was corrupt. Downloads are verified before they are written to the
    cache: a size or sha256 mismatch is a CheckFailed naming the package, the
    expected and the actual value, and nothing is cached. A ``.deb`` the mirror
    no longer serves (404) is a ServiceFailed that says to re-lock or use a
    snapshot mirror.
    """
    result: dict[str, bytes] = {}
    missing: list[tuple[DebPackage, str]] = []
    for pkg in lock.packages:
        path = cache.blob_path(pkg.digest)
        existed = path.exists()
        data = cache.get_blob(pkg.digest)  # verifies sha256, removes a corrupt entry
        if data is not None and _check(pkg, data, "cache") is None:
            result[pkg.name] = data
            continue
        if existed:
            path.unlink(missing_ok=True)
            progress(
                f"cache entry for {pkg.name} {pkg.version} ({path}) was corrupt: "
                "discarded, downloading again"
            )
            missing.append((pkg, f" (its cache entry {path} was corrupt and was discarded)"))
        else:
            missing.append((pkg, ""))

    def one(item: tuple[DebPackage, str]) -> bytes:
        pkg, note = item
        try:
            return _download_deb(mirror, pkg)
        except LockstepError as exc:
            exc.message += note
            exc.args = (exc.message,)
            raise

    if missing:
        with ThreadPoolExecutor(max_workers=FETCH_WORKERS) as pool:
            for (pkg, _), data in zip(missing, pool.map(one, missing), strict=True):
                cache.put_blob(data)
                result[pkg.name] = data
                progress(f"fetched {pkg.name} {pkg.version} ({pkg.size} bytes)")
    return {p.name: result[p.name] for p in lock.packages}
