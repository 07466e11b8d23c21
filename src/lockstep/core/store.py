"""A content-addressed store: blobs named by their sha256, written atomically.

The build's download and layer cache. Anything read back is verified against
its name, so a tampered or truncated entry is never used: hashed, or trusted by
the verified stamp of its last hash (``lockstep.core.stamps``), so an unchanged
blob is hashed once, not on every read.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from lockstep.core import settings
from lockstep.core.atomic import write_bytes
from lockstep.core.digests import PREFIX, hex_of, sha256_digest
from lockstep.core.stamps import Stamp, StampBook

CHUNK = 1 << 20  # what a hashing copy reads at a time


def default_cache_dir() -> Path:
    """``$LOCKSTEP_CACHE_DIR``, else ``$XDG_CACHE_HOME/lockstep``, else ``~/.cache/lockstep``."""
    if os.environ.get(settings.CACHE_DIR):
        return Path(os.environ[settings.CACHE_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lockstep"


def write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to the file open as ``fd`` (``os.write`` may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def copy_range(src: int, dst: int, size: int) -> None:
    """``size`` bytes from ``src``'s position to ``dst``'s, in the kernel where it can
    (``copy_file_range``: no read into this process; a reflink where the file system
    shares blocks), else by reading and writing."""
    left = size
    try:
        while left:
            done = os.copy_file_range(src, dst, left)
            if done == 0:
                raise OSError(errno.EIO, f"the source ended {left} bytes early")
            left -= done
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while left:
        chunk = os.read(src, min(CHUNK, left))
        if not chunk:
            raise OSError(errno.EIO, f"the source ended {left} bytes early")
        write_all(dst, chunk)
        left -= len(chunk)


@dataclass(frozen=True)
class Cache:
    """Blobs under ``root/blobs/sha256/<hex>``, keyed entries under ``root/keys/<ns>/<key>``,
    the blobs' verified stamps under ``root/stamps/<hex>``."""

    root: Path
    stamps: StampBook = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stamps", StampBook(self.root / "stamps"))

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / hex_of(digest)

    def _corrupt(self, digest: str) -> None:
        self.blob_path(digest).unlink(missing_ok=True)
        self.stamps.forget(digest)

    def get_blob(self, digest: str) -> bytes | None:
        """The blob named ``digest``, or None if absent or corrupt (a corrupt one is removed):
        trusted by its stamp, else hashed."""
        began = time.time_ns()
        try:
            with open(self.blob_path(digest), "rb") as f:
                before = Stamp.of(os.fstat(f.fileno()))
                data = f.read()
                after = Stamp.of(os.fstat(f.fileno()))
        except FileNotFoundError:
            return None
        if after == before and self.stamps.trusts(digest, before):
            return data
        if sha256_digest(data) != digest:
            self._corrupt(digest)
            return None
        if after == before:
            self.stamps.hashed(digest, before, began)
        return data

    def size_of(self, digest: str) -> int | None:
        """The size of the blob named ``digest`` (None if absent or corrupt), without
        reading it when its stamp holds."""
        try:
            st = os.stat(self.blob_path(digest))
        except FileNotFoundError:
            return None
        if self.stamps.trusts(digest, Stamp.of(st)):
            return st.st_size
        data = self.get_blob(digest)
        return None if data is None else len(data)

    def copy_blob(self, digest: str, out: int) -> bool:
        """Append the blob named ``digest`` to the file open as ``out`` (at its position):
        copied in the kernel when its stamp holds before and after, else hashed as it is
        copied. False if it is absent or corrupt (removed; nothing appended)."""
        start = os.lseek(out, 0, os.SEEK_CUR)
        began = time.time_ns()
        try:
            src = os.open(self.blob_path(digest), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            before = Stamp.of(os.fstat(src))
            if self.stamps.trusts(digest, before):
                copy_range(src, out, before.size)
                if Stamp.of(os.fstat(src)) == before:
                    return True
                os.lseek(src, 0, os.SEEK_SET)  # it changed while copied: hash it after all
                os.ftruncate(out, start)
                os.lseek(out, start, os.SEEK_SET)
            h = hashlib.sha256()
            while chunk := os.read(src, CHUNK):
                h.update(chunk)
                write_all(out, chunk)
            after = Stamp.of(os.fstat(src))
        finally:
            os.close(src)
        if PREFIX + h.hexdigest() != digest:
            os.ftruncate(out, start)
            os.lseek(out, start, os.SEEK_SET)
            self._corrupt(digest)
            return False
        if after == before:
            self.stamps.hashed(digest, before, began)
        return True

    def put_blob(self, data: bytes) -> str:
        digest = sha256_digest(data)
        path = self.blob_path(digest)
        if not path.exists():
            write_bytes(path, data)
            self.stamps.wrote(digest, Stamp.of(path.stat()))
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
