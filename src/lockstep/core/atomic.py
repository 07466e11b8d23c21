"""Write outputs under a temporary name and rename them into place; clean up after a
run that was killed.

Every temporary is a hidden sibling named ``.<name>.<pid>.<random>.tmp``, so
the next run can tell whose it is: one whose process is gone is a leftover
and is removed (``remove_stale``) before anything new is written there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

SUFFIX = ".tmp"


def temp_prefix(stem: str) -> str:
    """The prefix of this process's temporaries for ``stem``: ``.<stem>.<pid>.``."""
    return f".{stem}.{os.getpid()}."


def temp_owner(name: str, stem: str) -> int | None:
    """The pid whose temporary of ``stem`` the file ``name`` is, or None if it is none."""
    head = f".{stem}."
    if not (name.startswith(head) and name.endswith(SUFFIX)):
        return None
    pid = name[len(head) :].split(".", 1)[0]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale(directory: Path, stem: str) -> list[Path]:
    """Remove the temporaries of ``stem`` in ``directory`` whose process is gone; them."""
    removed: list[Path] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        pid = temp_owner(name, stem)
        if pid is None or _alive(pid):
            continue
        path = directory / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
    return removed


def temp_pid(name: str) -> int | None:
    """The pid whose temporary (of any stem) ``name`` is, or None if it is none."""
    if not (name.startswith(".") and name.endswith(SUFFIX)):
        return None
    parts = name[1 : -len(SUFFIX)].rsplit(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def temp_dir(parent: Path, stem: str, kind: str = "") -> Path:
    """A new temporary directory in ``parent`` named by the rule: ``.<stem>.<pid>.<kind>…``."""
    return Path(tempfile.mkdtemp(dir=parent, prefix=temp_prefix(stem) + kind, suffix=SUFFIX))


def remove_leftovers(directory: Path) -> list[Path]:
    """Remove every temporary in ``directory`` (whatever its stem) whose process is gone,
    read-only trees too; them. What the next run or worker does for a killed one."""
    removed: list[Path] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        pid = temp_pid(name)
        if pid is None or _alive(pid):
            continue
        with contextlib.suppress(OSError):  # another process removing it too
            remove_read_only(directory / name)
            removed.append(directory / name)
    return removed


@contextlib.contextmanager
def scratch_dir(stem: str) -> Iterator[Path]:
    """A temporary directory in the system's temporary directory, removed after the block;
    the leftovers of ``stem`` from killed processes are removed first."""
    parent = Path(tempfile.gettempdir())
    remove_stale(parent, stem)
    path = temp_dir(parent, stem)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def temp_file(final: Path) -> tuple[int, Path]:
    """An open temporary sibling of ``final`` (fd, path); stale ones are removed first."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final.parent, final.name)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=temp_prefix(final.name), suffix=SUFFIX)
    return fd, Path(name)


def write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically: readers see the old file or the whole new one."""
    write_chunks(path, (data,), mode)


def write_chunks(path: Path, chunks: Iterable[bytes], mode: int = 0o644) -> None:
    """``write_bytes`` of the concatenated ``chunks``, never all in memory at once."""
    with open_atomic(path, mode) as out:
        for chunk in chunks:
            out.write(chunk)


@contextlib.contextmanager
def open_atomic(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A file to write ``path``'s new content to: a temporary sibling, renamed onto
    ``path`` only if the block succeeds (else removed)."""
    fd, tmp = temp_file(path)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """A temporary sibling of ``final``; renamed onto it only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final.parent, final.name)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=temp_prefix(final.name), suffix=SUFFIX))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_read_only(path: Path) -> None:
    """Remove ``path`` (a file, a link or a tree whose files and directories were made
    read-only, as the workers' caches are); nothing if it is gone already."""

    def unlock(func: Any, name: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), 0o700)
            os.chmod(name, 0o700)
        func(name)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=unlock)
