"""Helpers for the Debian tests: crafted .debs, a loopback HTTP mirror, the real base."""

from __future__ import annotations

import functools
import http.server
import io
import lzma
import tarfile
import threading
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------ crafted .debs


@dataclass(frozen=True)
class M:
    """One crafted tar member: kind is file, dir, symlink, hardlink, fifo or chardev."""

    name: str
    kind: str = "file"
    data: bytes = b""
    target: str = ""
    mode: int = 0o644


def ar_archive(members: Sequence[tuple[str, bytes]]) -> bytes:
    """A System V ``ar`` archive, as ``dpkg-deb`` writes it."""
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        header = (f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}").encode() + b"`\n"
        assert len(header) == 60
        out += header + data
        if len(data) % 2:
            out += b"\n"
    return bytes(out)


def tar_xz(members: Sequence[M]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.mode = m.mode
            if m.kind == "file":
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
                "chardev": tarfile.CHRTYPE,
            }[m.kind]
            info.linkname = m.target
            tar.addfile(info)
    return lzma.compress(buf.getvalue())


def make_deb(members: Sequence[M], control: bytes = b"Package: demo\nVersion: 1.0\n") -> bytes:
    control_tar = tar_xz([M("./control", data=control)])
    return ar_archive(
        [
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", control_tar),
            ("data.tar.xz", tar_xz([M("./", "dir", mode=0o755), *members])),
        ]
    )


# ------------------------------------------------------------------ loopback mirror


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class LoopbackMirror:
    """``http.server`` on 127.0.0.1 serving ``root``; ``.mirror`` is ``…/debian``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def mirror(self) -> str:
        return f"http://127.0.0.1:{self.port}/debian"

    def put(self, relpath: str, data: bytes) -> None:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def mirror_reachable(mirror: str) -> bool:
    try:
        req = urllib.request.Request(f"{mirror}/dists/bookworm/Release", method="HEAD")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False
