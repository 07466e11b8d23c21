"""What a third-party layer records for the build's executor check (which layers to stage)."""

from __future__ import annotations

from lockstep.assembly.entries import Entry
from lockstep.assembly.executor_check import importable
from lockstep.assembly.layout import SITE_DIR
from lockstep.core import entrypoints


def test_a_layer_records_what_it_offers_to_imports() -> None:
    def f(path: str, data: bytes = b"") -> Entry:
        return Entry.file(f"{SITE_DIR}/{path}", data, 0o644)

    plain = [
        f("numpy/__init__.py"),
        f("six.py"),
        f("_cffi.cpython-311-x86_64-linux-gnu.so"),
        f("numpy-2.dist-info/entry_points.txt", b"[console_scripts]\nf2py = x:y\n"),
    ]
    assert importable(plain) == {
        "tops": ["_cffi", "numpy", "numpy-2.dist-info", "six"],
        "executors": False,
    }
    registers = [
        f("ext-1.dist-info/entry_points.txt", f"[{entrypoints.GROUP}]\nx = ext:X\n".encode())
    ]
    assert importable(registers)["executors"] is True
