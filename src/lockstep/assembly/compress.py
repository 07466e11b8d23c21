"""Layer compression that does not depend on the host: pinned deflate, fixed blocks, both cores.

Python's ``gzip`` uses the host's zlib, and deflate implementations differ in
their bytes (stock zlib vs zlib-ng, Fedora 40's system zlib): the same layer
would get another digest on another host. So layers are compressed with the
deflate of ``zlib-ng`` as bundled by the PyPI package ``zlib-ng`` (pinned in
the build's locks); its name and version are part of the builder's identity
(``IDENTITY``, in every build id and layer key), so a change of compressor is a
new build, never a silent change of digests.

The data is cut into fixed 1 MiB blocks, each compressed on its own (primed
with the previous 32 KiB of input, as pigz does, so the ratio stays that of
one stream) and ended with a sync flush; the blocks join into one deflate
stream in one gzip member (mtime 0, no name, OS 255, as Python's ``gzip``
writes). The blocks are independent, so they are compressed in parallel and
the bytes do not depend on how many threads did it.
"""

from __future__ import annotations

import os
import zlib

from lockstep.core.errors import BadInput

try:
    import zlib_ng as python_zlib_ng
    from zlib_ng import zlib_ng
except ImportError as exc:  # pragma: no cover - lockstep's dependencies pin it
    raise BadInput(
        "the layer compressor zlib-ng is not installed; install lockstep "
        "(make does, from requirements/)"
    ) from exc

LEVEL = 6
BLOCK = 1 << 20
WINDOW = 32 << 10  # deflate's window: what a block may refer back to
HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # gzip, deflate, no flags, mtime 0, OS 255
IDENTITY = f"zlib-ng/{zlib_ng.ZLIBNG_VERSION} (python-zlib-ng {python_zlib_ng.__version__})"
THREADS = max(1, min(4, os.cpu_count() or 1))


def _block(data: memoryview, index: int, last: bool, level: int) -> bytes:
    start = index * BLOCK
    prime = bytes(data[max(0, start - WINDOW) : start])
    args = (level, zlib_ng.DEFLATED, -15, 8, zlib_ng.Z_DEFAULT_STRATEGY)
    c = zlib_ng.compressobj(*args, prime) if prime else zlib_ng.compressobj(*args)
    out = c.compress(data[start : start + BLOCK])
    return out + c.flush(zlib_ng.Z_FINISH if last else zlib_ng.Z_SYNC_FLUSH)


def gzip_bytes(data: bytes, level: int = LEVEL, threads: int = THREADS) -> bytes:
    """``data`` as one gzip member, the same bytes on every host and for any ``threads``."""
    view = memoryview(data)
    count = max(1, -(-len(data) // BLOCK))
    if threads <= 1 or count == 1:
        parts = [_block(view, i, i == count - 1, level) for i in range(count)]
    else:
        from concurrent.futures import ThreadPoolExecutor  # here: a no-op build compresses nothing

        with ThreadPoolExecutor(min(threads, count), thread_name_prefix="deflate") as pool:
            parts = list(pool.map(lambda i: _block(view, i, i == count - 1, level), range(count)))
    trailer = (zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "little") + (
        len(data) & 0xFFFFFFFF
    ).to_bytes(4, "little")
    return HEADER + b"".join(parts) + trailer
