"""Materialise layer entries into a directory, and run the image's own Python from it.

``materialize`` writes entries without ever following a symlink: every
directory is opened relative to its parent with ``O_NOFOLLOW``, files are
created with ``O_EXCL | O_NOFOLLOW``, and symlinks are written last, verbatim
(their targets are never followed while writing).

``StagedPython`` runs the image's ``python3.11`` on the build host without
chroot or a container: through the image's own dynamic loader with the image's
library directory, ``PYTHONHOME`` pointing at the image's ``usr``. Build steps
that must run *the image's* interpreter (compiling ``.pyc``, inspecting
markers) use it so the result matches what runs in the image.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.assembly.entries import Entry, normalize, through_symlink
from lockstep.assembly.layout import CA_BUNDLE, PYTHON
from lockstep.core.errors import BadInput, CheckFailed
from lockstep.core.platforms import AMD64, Platform, emulation_problem

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class _DirChain:
    """The open directories from the root to the last entry's directory, each opened
    relative to its parent with ``O_NOFOLLOW``: the next entry reopens only the part of
    its path that differs (a layer of 20 000 files: 20 000 opens instead of 120 000)."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.chain: list[tuple[str, int]] = []

    def open(self, parts: Sequence[str], path: str) -> int:
        """The fd of ``root/parts…``, refusing a symlink anywhere on the way."""
        same = 0
        while same < min(len(self.chain), len(parts)) and self.chain[same][0] == parts[same]:
            same += 1
        self._close_from(same)
        for part in parts[same:]:
            parent = self.chain[-1][1] if self.chain else self.root_fd
            try:
                fd = os.open(part, _DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                raise BadInput(
                    f"materialize: cannot open the directory of {path!r} without "
                    f"following a symlink ({exc.strerror})"
                ) from exc
            self.chain.append((part, fd))
        return self.chain[-1][1] if self.chain else self.root_fd

    def _close_from(self, depth: int) -> None:
        for _name, fd in self.chain[depth:]:
            os.close(fd)
        del self.chain[depth:]

    def __enter__(self) -> _DirChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_from(0)


def materialize(entries: Iterable[Entry], dest: Path, *, onto: bool = False) -> None:
    """Write ``entries`` under ``dest`` (absent or empty), never following a symlink.

    Directories first (parents before children), then files, then symlinks;
    every mode is applied (directory modes last, so a read-only directory can
    still be filled). An entry whose path passes through a symlink entry is
    refused with BadInput. ``onto``: ``dest`` holds a tree this function wrote
    before (a layer's files, to which its ``.pyc`` are added): a directory that
    exists is kept as it is; a file or link that exists is still an error.
    """
    items = normalize(entries)
    found = through_symlink(items)
    if found:
        raise BadInput(f"materialize: {found[0]!r} passes through the symlink {found[1]!r}")
    dest.mkdir(parents=True, exist_ok=True)
    if not onto and any(dest.iterdir()):
        raise BadInput(f"materialize: {dest} is not empty; use a fresh directory")
    made: set[str] = set()  # the directories made now: only theirs get their modes
    root_fd = os.open(dest, _DIR_FLAGS)
    try:
        for kind in ("dir", "file", "symlink"):
            with _DirChain(root_fd) as chain:  # entries come sorted: siblings share it
                for e in items:
                    if e.kind != kind:
                        continue
                    *parents, name = e.path.split("/")
                    fd = chain.open(parents, e.path)
                    if kind == "dir":
                        try:
                            os.mkdir(name, 0o700, dir_fd=fd)
                        except FileExistsError:
                            if not onto:
                                raise
                            continue
                        made.add(e.path)
                    elif kind == "file":
                        out = os.open(name, _FILE_FLAGS, 0o600, dir_fd=fd)
                        try:
                            view = memoryview(e.data)
                            while view:
                                view = view[os.write(out, view) :]
                            os.fchmod(out, e.mode)
                        finally:
                            os.close(out)
                    else:
                        os.symlink(e.target, name, dir_fd=fd)
        with _DirChain(root_fd) as chain:
            for e in reversed(items):  # children before parents
                if e.kind == "dir" and e.path in made:
                    os.fchmod(chain.open(e.path.split("/"), e.path), e.mode)
    finally:
        os.close(root_fd)


@dataclass(frozen=True)
class StagedPython:
    """The image's ``python3.11`` in a materialised root, run through the image's loader.

    ``ld.so --library-path <root>/usr/lib/<triplet> --inhibit-cache`` (the loader
    and triplet of the root's ``platform``; another architecture's runs under qemu)
    makes the image's libraries win over the host's (the host's ld.so.cache is
    not read; glibc still falls back to the host's default directories for a
    library the image lacks, so this is not a proof that the image is
    complete). ``-s -S`` keep the host's site-packages out; ``PYTHONHOME``,
    ``PYTHONTZPATH``, ``LOCPATH`` and ``SSL_CERT_*`` point into the root.
    Nothing is written into the root (``PYTHONDONTWRITEBYTECODE``).
    """

    root: Path
    platform: Platform = AMD64

    @property
    def python(self) -> Path:
        return self.root / PYTHON

    def argv(self, *args: str) -> list[str]:
        r = self.root
        return [
            str(r / self.platform.loader),
            "--inhibit-cache",
            "--library-path",
            str(r / self.platform.libdir),
            str(r / PYTHON),
            "-s",
            "-S",
            *args,
        ]

    def env(self) -> dict[str, str]:
        r = self.root
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONHOME": str(r / "usr"),
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONTZPATH": str(r / "usr/share/zoneinfo"),
            "LC_ALL": "C.UTF-8",
            "LOCPATH": str(r / "usr/lib/locale"),
            "SSL_CERT_FILE": str(r / CA_BUNDLE),
            "SSL_CERT_DIR": str((r / CA_BUNDLE).parent),
        }
        if (r / "usr/lib/ssl/openssl.cnf").exists():
            env["OPENSSL_CONF"] = str(r / "usr/lib/ssl/openssl.cnf")
        return env

    def run(self, args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """``subprocess.run`` of the staged python with ``args``; ``env=`` adds to ``env()``."""
        env = self.env()
        env.update(kw.pop("env", None) or {})
        return subprocess.run(self.argv(*args), env=env, check=kw.pop("check", False), **kw)

    def check(self) -> str:
        """The interpreter's ``sys.version``; CheckFailed if it does not start (or if this host
        cannot run the platform's binaries: the line says how to make it able to)."""
        problem = emulation_problem(self.platform)
        if problem:
            raise CheckFailed(f"staged python: {problem}")
        for rel in (self.platform.loader, self.platform.libdir, PYTHON):
            if not (self.root / rel).exists():
                raise CheckFailed(
                    f"staged python: {self.root / rel} is missing; "
                    "is the Debian base materialised there?"
                )
        proc = self.run(["-c", "import sys; print(sys.version)"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise CheckFailed(
                f"staged python in {self.root} does not run: "
                f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
            )
        return str(proc.stdout).strip()
