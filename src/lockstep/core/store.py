"""A content-addressed store: blobs named by their sha256, written atomically.

The build's download and layer cache. Anything read back is verified against
its name, so a tampered or truncated entry is never used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lockstep.core import settings
from lockstep.core.atomic import write_bytes
from lockstep.core.digests import hex_of, sha256_digest


def default_cache_dir() -> Path:
    """``$LOCKSTEP_CACHE_DIR``, else ``$XDG_CACHE_HOME/lockstep``, else ``~/.cache/lockstep``."""
    if os.environ.get(settings.CACHE_DIR):
        return Path(os.environ[settings.CACHE_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lockstep"


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
        if sha256_digest(data) != digest:
            path.unlink(missing_ok=True)
            return None
        return data

    def put_blob(self, data: bytes) -> str:
        digest = sha256_digest(data)
        path = self.blob_path(digest)
        if not path.exists():
            write_bytes(path, data)
        return digest

    def key_path(self, namespace: str, key: str) -> Path:
        return self.root / "keys" / namespace / hex_of(key)

    def get_key(self, namespace: str, key: str) -> str | None:
        """The digest recorded for ``key``, if its blob is still present."""
        try:
            digest = self.key_path(namespace, key).read_text().strip()
        except FileNotFoundError:
            return None
        return digest if self.blob_path(digest).exists() else None

    def put_key(self, namespace: str, key: str, digest: str) -> None:
        write_bytes(self.key_path(namespace, key), digest.encode())
