"""Verified stamps: what ``stat`` said of a file when its bytes were last hashed.

A blob of the content-addressed cache is hashed when it is downloaded or made and
whenever it is read without a valid stamp; after that its stamp (device, inode,
size, mtime and ctime, in nanoseconds) stands for the hash: a read whose ``stat``
equals the stamp trusts the bytes without hashing them again. Any write,
truncation or replacement of the file changes its ctime (which no process can set
back: ``utime`` changes it too) or its inode, so the next read hashes again.

What a stamp cannot see (docs/design.md §4.2, "What is re-verified when"): a
change that bypasses the file system's metadata (bit rot, a write to the raw block
device, a restored disk snapshot) and a change within the same clock tick as the
change the stamp recorded. The last is why a stamp is kept on disk only when the
file's ctime lies ``RACY_NS`` before its hashing began (``stampable``; git's "racily
clean" rule): a later change gets a later ctime. Within one process, a blob it
wrote or hashed is trusted while its ``stat`` is unchanged (``StampBook.seen``).
A stamp is no defence against whoever can write the cache: they can rewrite the
stamp as they can rewrite the layer records.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lockstep.core.atomic import write_bytes
from lockstep.core.digests import canonical_json, hex_of

# Twice the coarsest file-system clock kept here (whole seconds): a change after the
# hashing began gets a ctime after the stamp's, whatever the tick.
RACY_NS = 2_000_000_000


@dataclass(frozen=True)
class Stamp:
    """The ``stat`` facts that any change to a file's bytes changes."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @staticmethod
    def of(st: os.stat_result) -> Stamp:
        return Stamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def stampable(stamp: Stamp, hashed_from_ns: int) -> bool:
    """Whether ``stamp`` may stand for a hash that began at ``hashed_from_ns`` (wall clock):
    the file's last change lies at least ``RACY_NS`` earlier, so any change since then
    has another ctime."""
    return hashed_from_ns - stamp.ctime_ns >= RACY_NS


@dataclass(frozen=True)
class StampBook:
    """The stamps of the blobs under one cache: on disk, ``root/<hex>`` (canonical JSON),
    and those this process wrote or hashed itself (``seen``)."""

    root: Path
    seen: dict[str, Stamp] = field(default_factory=dict, compare=False, repr=False)

    def path(self, digest: str) -> Path:
        return self.root / hex_of(digest)

    def trusts(self, digest: str, stamp: Stamp) -> bool:
        """Whether ``stamp`` (a ``stat`` of the blob now) is the one its bytes were hashed at."""
        if self.seen.get(digest) == stamp:
            return True
        try:
            kept = json.loads(self.path(digest).read_bytes())
            return bool(Stamp(**kept) == stamp)
        except (OSError, ValueError, TypeError):
            return False

    def hashed(self, digest: str, stamp: Stamp, hashed_from_ns: int) -> None:
        """The blob's bytes had ``digest`` when hashed from ``hashed_from_ns`` on, and
        ``stat`` said ``stamp`` before and after: trusted by this process, and kept on disk
        when ``stampable``."""
        self.seen[digest] = stamp
        if stampable(stamp, hashed_from_ns):
            write_bytes(self.path(digest), canonical_json(asdict(stamp)))

    def wrote(self, digest: str, stamp: Stamp) -> None:
        """This process wrote the blob from bytes it hashed: trusted by this process only
        (a change within the write's clock tick would look the same; the next process
        hashes it once)."""
        self.seen[digest] = stamp

    def forget(self, digest: str) -> None:
        self.seen.pop(digest, None)
        self.path(digest).unlink(missing_ok=True)
