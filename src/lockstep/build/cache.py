"""A content-addressed cache: blobs named by their sha256, written atomically.

Anything read back is verified against its name, so a tampered or truncated
cache entry is never used.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from lockstep.atomic import write_bytes

CACHE_ENV = "LOCKSTEP_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$LOCKSTEP_CACHE_DIR``, else ``$XDG_CACHE_HOME/lockstep``, else ``~/.cache/lockstep``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lockstep"


def hex_of(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64:
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return hexpart


@dataclass(frozen=True)
class Cache:
    """Blobs under ``root/blobs/sha256/<hex>``, keyed entries under ``root/keys/<ns>/<key>``."""

    root: Path

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / hex_of(digest)

    def get_blob(self, digest: str) -> bytes | None:
        """The blob named ``digest``, or None if absent or corrupt (a corrupt one is removed)."""
        path = self.blob_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            path.unlink(missing_ok=True)
            return None
        return data

    def put_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not path.exists():
            write_bytes(path, data)
        return digest

    def key_path(self, namespace: str, key: str) -> Path:
        return self.root / "keys" / namespace / hex_of(key)

    def get_key(self, namespace: str, key: str) -> str | None:
        """The digest recorded for ``key``, if its blob is still present and intact."""
        try:
            digest = self.key_path(namespace, key).read_text().strip()
        except FileNotFoundError:
            return None
        return digest if self.blob_path(digest).exists() else None

    def put_key(self, namespace: str, key: str, digest: str) -> None:
        write_bytes(self.key_path(namespace, key), digest.encode())
