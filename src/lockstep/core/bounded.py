"""Reading a file a user names: only a regular file, and only up to a bound.

A FIFO would block a reader for ever and ``/dev/zero`` would fill its memory, so
every file lockstep reads from a user (manifest, job spec, bundle lock, key) goes
through ``read_regular``: it opens without blocking, refuses anything but a regular
file, and reads at most ``limit`` bytes, refusing a larger file after ``limit + 1``.
Refusals are ``OSError`` with a ``strerror`` that says what is wrong, so callers keep
their one line (``cannot read the manifest (not a regular file …)``).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

MANIFEST_MAX = 1 << 20  # bytes: a manifest is < 1 KiB
SPEC_MAX = 4 << 20  # a job spec
LOCK_MAX = 64 << 20  # a lock file (bundle lock, pyproject, requirements)
KEY_MAX = 1 << 20  # a PEM key or certificate


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes; else
    ``OSError`` (``strerror`` says why)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(
                errno.EINVAL,
                "not a regular file (a FIFO, device or directory); give a file",
                str(path),
            )
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        raise OSError(errno.EFBIG, f"larger than {limit} bytes; give a smaller file", str(path))
    finally:
        os.close(fd)
