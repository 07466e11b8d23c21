"""A prebuilt environment layer's tar, read as it streams in: each member's header, then its
bytes, without ``tarfile``'s objects per member (an environment has thousands of files, and
``tarfile``'s stream mode spends about 0.1 ms on each).

The layer is written by ``assembly.entries.tar_bytes`` (``tarfile``, GNU format), so this
reads that format: a 512-byte header per member (name, mode, size, checksum, type), its
bytes padded to a block, a GNU long name (type ``L``, ``././@LongLink``) before a member
whose name is longer than 100 bytes, and a zero block at the end. A member of any other
type is returned with its type (``Member.kind``) for the caller to refuse; a header that is
not one (a checksum that does not add up, a field that is not octal, a size in GNU's
base-256, a second long name in a row) or a stream that ends inside a member is
``TarBroken``. Nothing here trusts the stream: sizes are checked by the caller's bounds
before it reads a member's bytes, and the layer's digest is checked once it has arrived.

Standard library only, worker's side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
REGULAR = (b"0", b"\0")  # a regular file (``\0``: the old form)
DIRECTORY = b"5"
LONG_NAME = b"L"  # GNU: this member's bytes are the next member's name
MAX_LONG_NAME = 64 * 1024  # bytes a long name may take


class TarBroken(Exception):
    """The stream is not a tar this reader reads."""


@dataclass(frozen=True)
class Member:
    """One member's header: its name (a directory's without the trailing ``/``), its type
    byte, its size and its permission bits."""

    name: str
    kind: bytes
    size: int
    mode: int


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:
        raise TarBroken(f"a header's {what} is in base-256 (over 8 GiB)")
    text = field.split(b"\0", 1)[0].strip() or b"0"
    if text.translate(None, b"01234567"):  # digits only: int() would take "-1", "0o7", "1_0"
        raise TarBroken(f"a header's {what} is not octal ({text[:16]!r})")
    return int(text, 8)


def _name(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


class Reader:
    """Members of the tar whose bytes ``next_chunk`` returns in order (``None`` at the end)."""

    def __init__(self, next_chunk: Callable[[], bytes | None]) -> None:
        self._next_chunk = next_chunk
        self._buf = b""
        self._pos = 0
        self._left = 0  # bytes of the current member not read yet, then its padding
        self._padding = 0

    def _exact(self, n: int) -> bytes:
        """The next ``n`` bytes; ``TarBroken`` if the stream ends first."""
        end = self._pos + n
        if end <= len(self._buf):
            out = self._buf[self._pos : end]
            self._pos = end
            return out
        parts, have = [self._buf[self._pos :]], len(self._buf) - self._pos
        while have < n:
            chunk = self._next_chunk()
            if chunk is None:
                raise TarBroken("it ends inside a member")
            parts.append(chunk)
            have += len(chunk)
        self._buf, self._pos = b"".join(parts), n
        return self._buf[:n]

    def _skip_rest(self) -> None:
        """Past what is left of the current member (its bytes, if unread, and its padding)."""
        while self._left:
            take = min(self._left, 1 << 20)
            self._exact(take)
            self._left -= take
        if self._padding:
            self._exact(self._padding)
            self._padding = 0

    def _header(self) -> tuple[bytes, bytes, int, int] | None:
        """One header block: ``(name field, type, size, mode)``; None at the end marker."""
        block = self._exact(BLOCK)
        if block == ZERO_BLOCK:
            return None
        stored = _octal(block[148:156], "checksum")
        if stored != sum(block[:148]) + 8 * 0x20 + sum(block[156:]):
            raise TarBroken("a header's checksum does not add up")
        size = _octal(block[124:136], "size")
        mode = _octal(block[100:108], "mode")
        return block[:100], block[156:157], size, mode

    def next(self) -> Member | None:
        """The next member's header (the last one's bytes skipped if unread); None at the
        end of the archive."""
        self._skip_rest()
        header = self._header()
        if header is None:
            return None
        long_name = None
        if header[1] == LONG_NAME:
            if header[2] > MAX_LONG_NAME:
                raise TarBroken(f"a long name of {header[2]} bytes")
            long_name = _name(self._exact(header[2]))
            self._exact(-header[2] % BLOCK)
            header = self._header()
            if header is None or header[1] == LONG_NAME:
                raise TarBroken("a long name is not followed by its member")
        field, kind, size, mode = header
        name = long_name if long_name is not None else _name(field)
        if kind == DIRECTORY:
            name = name.rstrip("/") or name
        self._left, self._padding = size, -size % BLOCK
        return Member(name, kind, size, mode & 0o7777)

    def data(self) -> bytes:
        """The current member's bytes, whole (a small member)."""
        out = self._exact(self._left)
        self._left = 0
        return out

    def pieces(self, size: int) -> Iterator[bytes]:
        """The current member's bytes in pieces of at most ``size`` (a large member)."""
        while self._left:
            take = min(self._left, size)
            piece = self._exact(take)
            self._left -= take
            yield piece

    def drain(self) -> None:
        """Read what follows the end marker (the writer's padding) to the end."""
        self._buf, self._pos = b"", 0
        while self._next_chunk() is not None:
            pass
