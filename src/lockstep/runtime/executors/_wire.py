"""Frames between a worker and its executor processes, and running one call.

A frame is a 9-byte header (kind, pid, length) and a payload. The worker
pickles ``(target, args, kwargs)`` into a call payload; the ``cold`` template
forwards those bytes to a forked child without unpickling them, so no task
module (nor any class in the arguments) is ever imported into the template.
Kept free of Dask and other heavy imports: child processes import this.
"""

from __future__ import annotations

import importlib
import os
import pickle
import struct
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

HEADER = struct.Struct(">cII")
READY = b"R"  # child -> worker: started; pid is the child's
CALL = b"C"  # worker -> child: payload is pickle((target, args, kwargs, paths))
OK = b"O"  # child -> worker: payload is pickle(value)
ERROR = b"E"  # child -> worker: payload is pickle((exception or None, repr, traceback text))
CRASHED = b"X"  # template -> worker: the task's child died; payload is a UTF-8 description


def write_frame(fd: int, kind: bytes, pid: int, payload: bytes = b"") -> None:
    data = memoryview(HEADER.pack(kind, pid, len(payload)) + payload)
    while data:
        data = data[os.write(fd, data) :]


def read_exact(fd: int, n: int) -> bytes:
    """``n`` bytes from ``fd``; ``EOFError`` if it closes first."""
    chunks: list[bytes] = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> tuple[bytes, int, bytes]:
    """``(kind, pid, payload)``; ``EOFError`` if the other end closed."""
    kind, pid, length = HEADER.unpack(read_exact(fd, HEADER.size))
    return kind, pid, read_exact(fd, length)


_active_paths: tuple[str, ...] = ()
_paths_lock = threading.Lock()


def use_paths(paths: tuple[str, ...]) -> None:
    """Put ``paths`` (bundle directories) first on ``sys.path`` for the next imports.

    Directories put there for an earlier call but not wanted now are taken off
    again, and the modules imported from them are forgotten, so that a process
    reused across jobs (``direct``, ``isolated_warm``) never runs one bundle's
    code for another bundle of the same module names.
    """
    global _active_paths
    paths = tuple(paths)
    with _paths_lock:
        if paths == _active_paths:
            return
        gone = [p for p in _active_paths if p not in paths]
        for path in gone:
            while path in sys.path:
                sys.path.remove(path)
        if gone:
            prefixes = tuple(os.path.join(p, "") for p in gone)
            for name, module in list(sys.modules.items()):
                origin = getattr(module, "__file__", None) or ""
                if origin.startswith(prefixes):
                    del sys.modules[name]
        for path in reversed(paths):
            if path in sys.path:
                sys.path.remove(path)
            sys.path.insert(0, path)
        _active_paths = paths
        importlib.invalidate_caches()


def resolve(target: str) -> Callable[..., Any]:
    """The callable named ``module:qualified.name``, importing its module here."""
    module_name, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj  # type: ignore[no-any-return]


def execute(payload: bytes) -> tuple[bytes, bytes]:
    """Run one call payload in this process; ``(OK, pickled value)`` or ``(ERROR, …)``."""
    try:
        target, args, kwargs, paths = pickle.loads(payload)
        use_paths(paths)
        value = resolve(target)(*args, **kwargs)
        return OK, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:  # everything goes back to the worker
        text = traceback.format_exc()
        try:
            data = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.loads(data)  # it must rebuild on the other side too
            pickled: bytes | None = data
        except Exception:  # an exception that does not travel: send its text
            pickled = None
        return ERROR, pickle.dumps((pickled, repr(exc), text))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
