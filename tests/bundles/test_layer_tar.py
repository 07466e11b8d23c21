"""The lean tar reader of a prebuilt environment layer (``bundles/layer_tar.py``), against
``tarfile`` on the same bytes: what the image builder's writer emits reads the same, in
any chunking; what it never emits is returned by type for the caller to refuse, or is
``TarBroken``."""

from __future__ import annotations

import io
import random
import tarfile
from collections.abc import Callable, Iterator

import pytest

from lockstep.assembly.entries import Entry, tar_bytes
from lockstep.bundles import layer_tar

LONG = "site/" + "/".join(["a_rather_long_directory_name"] * 5) + "/module_with_a_long_name.py"


def chunks(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    pos, i = 0, 0
    while pos < len(data):
        yield data[pos : pos + sizes[i % len(sizes)]]
        pos += sizes[i % len(sizes)]
        i += 1


def reader(data: bytes, sizes: list[int] | None = None) -> layer_tar.Reader:
    it = chunks(data, sizes or [len(data)])
    return layer_tar.Reader(lambda: next(it, None))


Row = tuple[str, bytes, int, int, bytes]  # name, type, size, mode, bytes


def read_all(tar: layer_tar.Reader, piece: int = 1 << 20) -> list[Row]:
    out = []
    while (m := tar.next()) is not None:
        data = b"".join(tar.pieces(piece)) if m.size > piece else tar.data()
        out.append((m.name, m.kind, m.size, m.mode, data))
    tar.drain()
    return out


def by_tarfile(data: bytes) -> list[Row]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        for m in tar:
            handle = tar.extractfile(m) if m.isreg() else None
            out.append((m.name, m.type, m.size, m.mode, handle.read() if handle else b""))
    return out


def checksummed(block: bytearray) -> bytearray:
    """``block``'s first header with its checksum made right again (in place)."""
    block[148:156] = b" " * 8
    block[148:155] = f"{sum(block[:512]):06o}\0".encode()
    return block


def sample() -> bytes:
    rng = random.Random(7)
    entries = [
        Entry.file("LAYER.json", b'{"schema": "x"}'),
        Entry.file("site/small.py", b"x = 1\n", 0o644),
        Entry.file("site/tool", b"#!/bin/sh\n", 0o755),
        Entry.file("site/empty.txt", b"", 0o644),
        Entry.file("site/big.so", rng.randbytes(3 * 1024 * 1024 + 17), 0o755),
        Entry.file(LONG, b"VALUE = 42\n", 0o644),
        Entry.file("site/pkg/caf\u00e9.py", b"# utf-8 name\n", 0o644),
    ]
    return tar_bytes(entries)


@pytest.mark.parametrize("sizes", [None, [1], [7, 513, 4096], [512], [100_000, 3]])
def test_the_writers_tar_reads_as_tarfile_reads_it_in_any_chunking(sizes: list[int] | None) -> None:
    data = sample()
    ours = read_all(reader(data, sizes), piece=1 << 20)
    assert ours == by_tarfile(data)
    assert {name for name, *_ in ours} >= {LONG, "site/pkg/caf\u00e9.py", "site"}
    assert any(kind == layer_tar.DIRECTORY for _, kind, *_ in ours)


def test_members_skipped_unread_and_read_in_pieces() -> None:
    data = sample()
    tar = reader(data, [4096])
    names = []
    while (m := tar.next()) is not None:  # nothing read: each member skipped whole
        names.append(m.name)
    assert names == [n for n, *_ in by_tarfile(data)]
    tar = reader(data)
    while (m := tar.next()) is not None and m.name != "site/big.so":
        pass
    assert m is not None
    pieces = list(tar.pieces(1 << 20))
    assert [len(p) for p in pieces] == [1 << 20] * 3 + [17]


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda b: b.__setitem__(0, b[0] ^ 0x01), "checksum does not add up"),
        (lambda b: b.__setitem__(slice(124, 136), b"9" * 11 + b"\0"), "size is not octal"),
        (lambda b: b.__setitem__(124, 0x80), "base-256"),
        # int() takes these; a negative size would send the reader back over its header
        (lambda b: b.__setitem__(slice(124, 136), b"-1".rjust(11) + b"\0"), "not octal"),
        (lambda b: b.__setitem__(slice(124, 136), b"0o17".rjust(11) + b"\0"), "not octal"),
        (lambda b: b.__setitem__(slice(124, 136), b"1_7".rjust(11) + b"\0"), "not octal"),
    ],
)
def test_a_broken_header_is_tar_broken(mutate: Callable[[bytearray], None], why: str) -> None:
    data = bytearray(sample())
    mutate(data)
    if "checksum" not in why:  # keep the checksum right: the field itself is what is wrong
        checksummed(data)
    with pytest.raises(layer_tar.TarBroken, match=why):
        read_all(reader(bytes(data)))


def test_a_stream_that_ends_inside_a_member_or_after_a_long_name() -> None:
    data = sample()
    with pytest.raises(layer_tar.TarBroken, match="ends inside a member"):
        read_all(reader(data[: len(data) // 2], [999]))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(LONG)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    assert out.getvalue()[156:157] == layer_tar.LONG_NAME
    cut = out.getvalue()[: 2 * 512]  # the long name's header and its name, then nothing
    with pytest.raises(layer_tar.TarBroken, match="ends inside a member"):
        read_all(reader(cut))
    with pytest.raises(layer_tar.TarBroken, match="not followed by its member"):
        read_all(reader(cut + bytes(1024)))


def test_what_the_writer_never_emits_comes_back_by_type() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("site/" + "p" * 120)  # a pax header ('x') carries the name
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
        link = tarfile.TarInfo("site/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    kinds = [kind for _, kind, *_ in read_all(reader(out.getvalue()))]
    assert kinds[0] == tarfile.XHDTYPE and tarfile.SYMTYPE in kinds


def _header(name: bytes, kind: bytes, size: int) -> bytes:
    """One raw header block with a right checksum."""
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\0"
    block[124:136] = f"{size:011o}\0".encode()
    block[156:157] = kind
    return bytes(checksummed(block))


def test_a_long_name_over_its_bound_or_twice_in_a_row_is_tar_broken() -> None:
    """A GNU long name is at most ``MAX_LONG_NAME`` bytes (never read past that), and names
    the member after it, which is not another long name."""
    huge = layer_tar.MAX_LONG_NAME + 1
    data = _header(b"././@LongLink", layer_tar.LONG_NAME, huge) + bytes(huge + 1024)
    with pytest.raises(layer_tar.TarBroken, match=f"a long name of {huge} bytes"):
        read_all(reader(data))
    name = b"site/x.py\0".ljust(512, b"\0")
    twice = (_header(b"././@LongLink", layer_tar.LONG_NAME, 10) + name) * 2
    member = _header(b"site/x.py", b"0", 0)
    with pytest.raises(layer_tar.TarBroken, match="not followed by its member"):
        read_all(reader(twice + member + bytes(1024)))
    once = _header(b"././@LongLink", layer_tar.LONG_NAME, 10) + name + member + bytes(1024)
    assert [row[0] for row in read_all(reader(once))] == ["site/x.py"]
