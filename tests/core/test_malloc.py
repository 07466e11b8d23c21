"""core.malloc: glibc's thresholds are fixed and `lockstep run` fixes them (the memory
goal itself is measured in bench/bench_results.py, not here)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# In a fresh interpreter: free a 4 MiB block (glibc's dynamic threshold would rise to
# 4 MiB), then ask for 1 MiB: mapped on its own (hblks + 1) only if the threshold is fixed.
PROBE = """
import ctypes
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    ).split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(4 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(1 << 20)
print("mapped" if libc.mallinfo2().hblks == before + 1 else "heap")
libc.free(block)
"""


def probe(setup: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", setup + PROBE], capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


@pytest.fixture(autouse=True)
def glibc() -> None:
    from lockstep.core import malloc

    if malloc._glibc() is None:
        pytest.skip("not glibc")


def test_settle_fixes_the_mmap_threshold() -> None:
    assert probe("") == "heap"  # glibc's own behaviour: the threshold rose
    assert probe("from lockstep.core import malloc; assert malloc.settle()\n") == "mapped"


def test_trim_gives_back_free_pages() -> None:
    """Blocks freed below a live one stay in the heap; ``trim`` releases them."""
    setup = (
        "import ctypes\n"
        "from lockstep.core import malloc\n"
        "c = ctypes.CDLL('libc.so.6'); c.malloc.restype = ctypes.c_void_p\n"
        "c.free.argtypes = [ctypes.c_void_p]\n"
        "assert malloc.settle()\n"
        "blocks = [c.malloc(64 << 10) for _ in range(64)]\n"
        "top = c.malloc(64)\n"
        "for b in blocks: c.free(b)\n"
        "print(malloc.trim())\n"
    )
    assert probe(setup).splitlines()[0] == "True"


def test_lockstep_run_settles_before_anything(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`lockstep run` fixes the thresholds first: even a run refused at once did so."""
    setup = (
        "from lockstep.cli import main\n"
        f"code = main(['run', {str(tmp_path / 'missing.toml')!r}, '--scheduler', "
        "'tcp://127.0.0.1:1'])\n"
        "assert code != 0, code\n"
    )
    assert probe(setup) == "mapped"
