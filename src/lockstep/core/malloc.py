"""The C allocator's settings for a long-running runner: freed memory goes back to the system.

A runner streams a study's results: each batch of answers arrives as large
buffers (Dask's frames, their JSON texts, the records written to the store)
that live for one batch. glibc's malloc serves a buffer of 128 KiB or more
with its own ``mmap``, unmapped when freed, but it raises that threshold each
time such a buffer is freed (up to 32 MiB), after which these buffers come from
the heap, whose freed middle stays resident: a runner's RSS then creeps up with
the number of simulations although Python's own heap does not (measured in
bench/bench_results.py, docs/figures.md). ``settle`` fixes the threshold (large
buffers stay mapped only while used) and caps the arenas (the runner has three
threads); ``trim`` hands the heap's free pages back (``malloc_trim``), called
by the runner every ``TRIM_EVERY`` stored results. Without glibc (musl, macOS)
both do nothing and say so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, now fixed
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # free memory at the heap's top kept for reuse
ARENAS = 2
TRIM_EVERY = 5000  # stored results between two trims


@functools.cache
def _glibc() -> Any:
    """glibc, or None where the C library is another."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None
    return libc


def settle() -> bool:
    """Fix glibc's mmap and trim thresholds and cap its arenas (see the module); whether
    that was done."""
    libc = _glibc()
    if libc is None:
        return False
    return all(
        libc.mallopt(param, value) == 1
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_ARENA_MAX, ARENAS),
        )
    )


def trim() -> bool:
    """Give the C heap's free pages back to the system; whether glibc did so."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))
