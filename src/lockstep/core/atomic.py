"""Write outputs under a temporary name and rename them into place; clean up after a
run that was killed.

Every temporary is a hidden sibling named ``.<name>.<pid>.<random>.tmp``, so
the next run can tell whose it is: one whose process is gone is a leftover
and is removed (``remove_stale``) before anything new is written there. A large
output rewritten often (an image archive) can instead keep its previous content as
a *spare* (``.<name>.spare``), swapped out atomically and overwritten in place next
time: no blocks freed and allocated again (``open_spare``, ``replace_keeping``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
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
    return _remove_dead(directory, lambda name: temp_owner(name, stem))


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
    return _remove_dead(directory, temp_pid)


def _remove_dead(directory: Path, owner: Callable[[str], int | None]) -> list[Path]:
    """Remove each entry of ``directory`` that ``owner`` names a temporary of a process
    that is gone (read-only trees too); the removed ones."""
    removed: list[Path] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        pid = owner(name)
        if pid is None or _alive(pid):
            continue
        with contextlib.suppress(OSError):  # another process removing it too
            remove_read_only(directory / name)
            removed.append(directory / name)
    return removed


@contextlib.contextmanager
def scratch_dir(stem: str, parent: Path | None = None) -> Iterator[Path]:
    """A temporary directory in ``parent`` (the system's temporary directory by default),
    removed after the block; the leftovers of ``stem`` from killed processes are removed
    first."""
    parent = Path(tempfile.gettempdir()) if parent is None else parent
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


def write_if_changed(path: Path, data: bytes) -> Path:
    """``write_bytes`` unless ``path`` already holds ``data`` (its file, times and all, left
    as it is); ``path``."""
    try:
        same = path.read_bytes() == data
    except OSError:
        same = False
    if not same:
        write_bytes(path, data)
    return path


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


SPARE = ".spare"
_RENAME_EXCHANGE = 2  # renameat2(2)
_AT_FDCWD = -100


def spare_of(final: Path) -> Path:
    """Where ``final``'s previous content is kept: ``.<name>.spare`` beside it."""
    return final.parent / f".{final.name}{SPARE}"


@functools.cache
def _renameat2() -> Any:
    import ctypes  # here only: a no-op build, which writes nothing, does not load it

    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not glibc 2.28+: no swap
        return None


def exchange(a: Path, b: Path) -> bool:
    """Swap the files ``a`` and ``b`` in one step (``renameat2`` ``RENAME_EXCHANGE``):
    readers of either name see one file or the other, never none. False, with nothing
    changed, where the system or the file system cannot (or ``b`` does not exist)."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if done == 0:
        return True
    import ctypes

    code = ctypes.get_errno()
    if code in (errno.ENOENT, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def open_spare(final: Path) -> tuple[int, Path]:
    """A file open for writing ``final``'s next content (fd, path): its spare, to be
    overwritten from the start, if no process has that open or mapped (a write lease is
    granted only then: a reader still on an old archive keeps its bytes) and it has no
    other name (a hard link a user kept keeps its bytes); else a new
    temporary (``temp_file``), and a spare in use is let go. Truncate it to what was
    written, then ``replace_keeping``."""
    spare = spare_of(final)
    try:
        fd = os.open(spare, os.O_WRONLY | os.O_NOFOLLOW)
    except OSError:
        return temp_file(final)
    try:
        if os.fstat(fd).st_nlink != 1:  # another name (a user's `ln` of an old archive)
            raise OSError(errno.EMLINK, "the spare has another name")
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    except OSError:  # open elsewhere, linked elsewhere, or no leases here: never overwrite it
        os.close(fd)
        spare.unlink(missing_ok=True)
        return temp_file(final)
    return fd, spare


def replace_keeping(written: Path, final: Path) -> None:
    """Put ``written`` (from ``open_spare``) at ``final`` atomically; ``final``'s old
    content becomes its spare where the file system can swap two files, else it is
    replaced."""
    spare = spare_of(final)
    if exchange(written, final):
        if written != spare:
            os.replace(written, spare)
    else:
        os.replace(written, final)
