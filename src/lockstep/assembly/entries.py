"""Filesystem entries → deterministic tar + gzip layer blobs (``compress``: host-independent).

Every entry is normalised (uid/gid 0, no user names, one mtime, explicit
modes), entries are sorted by path, every parent directory is present, and
hardlinks are never written: the same entries always give the same bytes.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from lockstep.assembly import compress
from lockstep.core.digests import sha256_digest
from lockstep.core.errors import BadInput

EntryKind = Literal["file", "dir", "symlink"]
MTIME = 0


@dataclass(frozen=True)
class Entry:
    """One path in a layer. ``path`` is relative and posix (``usr/bin/python3.11``)."""

    path: str
    kind: EntryKind
    mode: int = 0o644
    data: bytes = b""
    target: str = ""

    @staticmethod
    def file(path: str, data: bytes, mode: int = 0o644) -> Entry:
        return Entry(path, "file", mode, data)

    @staticmethod
    def dir(path: str, mode: int = 0o755) -> Entry:
        return Entry(path, "dir", mode)

    @staticmethod
    def symlink(path: str, target: str) -> Entry:
        return Entry(path, "symlink", 0o777, target=target)


@dataclass(frozen=True)
class Layer:
    """A layer blob and its two digests."""

    blob: bytes
    digest: str  # sha256 of the compressed blob: what manifests and registries name
    diff_id: str  # sha256 of the uncompressed tar: what the config's rootfs names

    @property
    def size(self) -> int:
        return len(self.blob)


def clean_path(path: str) -> str:
    """Normalise a layer path; refuse absolute paths and ``..`` components."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if path.startswith("/") or not parts or ".." in parts:
        raise BadInput(f"layer path {path!r} is absolute, empty or escapes the root")
    return "/".join(parts)


def normalize(entries: Iterable[Entry]) -> list[Entry]:
    """Sorted entries with every parent directory present; a later duplicate wins."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        path = clean_path(entry.path)
        by_path[path] = Entry(path, entry.kind, entry.mode & 0o7777, entry.data, entry.target)
    for path in list(by_path):
        parent = path.rpartition("/")[0]
        while parent and parent not in by_path:
            by_path[parent] = Entry.dir(parent)
            parent = parent.rpartition("/")[0]
    return [by_path[p] for p in sorted(by_path)]


def through_symlink(entries: Iterable[Entry]) -> tuple[str, str] | None:
    """The first ``(path, symlink)`` where ``path`` lies below a symlink entry, else None.

    Such a path would be written through the link when materialised, so every
    writer of entries refuses it.
    """
    items = sorted(entries, key=lambda e: e.path)
    links = {e.path for e in items if e.kind == "symlink"}
    for entry in items:
        parent = entry.path.rpartition("/")[0]
        while parent:
            if parent in links:
                return entry.path, parent
            parent = parent.rpartition("/")[0]
    return None


def tar_bytes(entries: Iterable[Entry]) -> bytes:
    """The uncompressed, deterministic tar of ``entries``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for entry in normalize(entries):
            info = tarfile.TarInfo(entry.path + ("/" if entry.kind == "dir" else ""))
            info.mtime = MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = entry.mode
            if entry.kind == "file":
                info.type = tarfile.REGTYPE
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            elif entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.type = tarfile.SYMTYPE
                info.linkname = entry.target
                tar.addfile(info)
    return buf.getvalue()


def make_layer(entries: Iterable[Entry]) -> Layer:
    """Entries → a gzip'd tar layer with its digest and diff id."""
    raw = tar_bytes(entries)
    blob = compress.gzip_bytes(raw)
    return Layer(blob=blob, digest=sha256_digest(blob), diff_id=sha256_digest(raw))


def layer_from_blob(blob: bytes) -> Layer:
    """Rebuild a ``Layer`` from a cached gzip blob (recomputes both digests)."""
    return Layer(
        blob=blob, digest=sha256_digest(blob), diff_id=sha256_digest(gzip.decompress(blob))
    )
