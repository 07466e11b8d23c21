"""Whether anything in a directory tree changed since a point in time: Linux ``inotify``.

A worker checks an environment before each job: every file's size and mtime
against ``ENV.json`` (3 300 files for numpy + scipy: a walk of tens of ms). A
``TreeWatch`` set up just before such a walk lets the next check be one
non-blocking read instead: the kernel reports every write, attribute change
(``chmod``, ``utime``), creation, removal or rename in any directory of the
tree, whoever makes it (a task, another worker process sharing the bundle
directory). Any event, or an overflowed queue, means "walk again".

Standard library only (``ctypes``); where ``inotify`` is missing or its
per-user watch limit is reached, ``TreeWatch.start`` returns None and the
caller walks every time, as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
MASK = (
    IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
    | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
)  # fmt: skip


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.inotify_init1  # noqa: B018 - present?
        libc.inotify_add_watch  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


class TreeWatch:
    """An ``inotify`` instance watching every directory of one tree."""

    def __init__(self, fd: int, root: Path) -> None:
        self._fd = fd
        self.root = root
        self._changed = False

    @classmethod
    def start(cls, root: Path) -> TreeWatch | None:
        """Watch every directory under ``root`` (``root`` included) from now on; None if
        this system cannot (no ``inotify``, the watch limit reached, ``root`` gone)."""
        if _LIBC is None:
            return None
        fd = _LIBC.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            return None
        watch = cls(fd, root)
        try:
            for dirpath, _dirs, _files in os.walk(root, followlinks=False):
                wd = _LIBC.inotify_add_watch(fd, os.fsencode(dirpath), MASK)
                if wd < 0:
                    err = ctypes.get_errno()
                    log.info("lockstep: not watching %s (%s)", root, os.strerror(err))
                    watch.close()
                    return None
        except OSError:
            watch.close()
            return None
        return watch

    def changed(self) -> bool:
        """Whether anything changed under the tree since ``start`` (once true, stays true)."""
        if self._changed:
            return True
        if self._fd < 0:
            return True
        try:
            if os.read(self._fd, 65536):
                self._changed = True
        except BlockingIOError:
            return False
        except OSError:
            self._changed = True
        return self._changed

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # an inotify instance is a scarce per-user resource
        self.close()
