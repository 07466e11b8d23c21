"""Frames between a worker and its executor processes, and running one call.

A frame is a 9-byte header (kind, pid, length) and a payload. The worker
pickles ``(target, args, kwargs, paths)`` into a call payload, after an 8-byte
header of the call's limit on the size of its answer; the ``cold`` template
forwards those bytes to a forked child without unpickling them, so no task
module (nor any class in the arguments) is ever imported into the template.

What comes back from a task process cannot run code when the worker reads it:
a value is pickled but read with ``safe_loads`` (an unpickler that looks up no
class but a few plain builtins), and is refused where it was made if it is not
plain data or larger than the limit; an exception is JSON (its type name,
message and traceback text), never a pickled object.

Kept free of Dask and other heavy imports: child processes import this.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import pickle
import struct
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from lockstep.core import entrypoints

HEADER = struct.Struct(">cII")
LIMIT = struct.Struct(">Q")  # a call payload starts with the answer's size limit, in bytes
READY = b"R"  # child -> worker: started; pid is the child's
CALL = b"C"  # worker -> child: LIMIT + pickle((target, args, kwargs, paths))
STARTED = b"S"  # template -> worker: forked the task's process; pid is its pid (and group)
KILL = b"K"  # worker -> template: kill the running task's process group (its deadline passed)
PING = b"P"  # worker -> child: are you well? The child answers READY (a health check)
# worker -> a child that has no environment and has run no call: payload is an environment's
# site directory (os.fsencode); the child puts it first on sys.path and answers READY
SERVE = b"V"
OK = b"O"  # child -> worker: payload is pickle(value), plain data only (``safe_loads``)
ERROR = b"E"  # child -> worker: payload is JSON {"type", "message", "traceback", "refused"}
CRASHED = b"X"  # template -> worker: the task's child died; payload is a UTF-8 description
ANSWERS = (OK, ERROR)
MAX_MESSAGE = 2000  # characters of an exception's message that travel
MAX_TRACEBACK = 20000  # characters of a traceback that travel (its end)

# Classes a value may hold besides what pickle writes without naming a class
# (None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset).
_PLAIN = {("builtins", n) for n in ("complex", "bytearray", "set", "frozenset", "range", "slice")}
PLAIN_TYPES = (
    "None, bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set, frozenset"
)


class NotPlainData(pickle.UnpicklingError):
    """A pickle names a class ``safe_loads`` does not read."""


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN:
            return super().find_class(module, name)
        raise NotPlainData(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise NotPlainData("a persistent id")


def safe_loads(data: bytes) -> Any:
    """Unpickle plain data only; ``NotPlainData`` naming the first class it would import."""
    return _SafeUnpickler(io.BytesIO(data)).load()


class ResultRefused(Exception):
    """A task's value cannot cross to the worker: not plain data, or over the size limit."""


def plain_value(value: Any, max_bytes: int, what: str = "the task") -> bytes:
    """``value`` pickled, if it is plain data of at most ``max_bytes``; ``ResultRefused``."""
    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise ResultRefused(
            f"{what} returned a {type(value).__name__} that does not pickle "
            f"({type(exc).__name__}: {exc}); return plain data "
            f"({PLAIN_TYPES})"
        ) from None
    if len(data) > max_bytes:
        raise ResultRefused(
            f"{what} returned {len(data)} bytes, over the limit of {max_bytes} "
            "(LOCKSTEP_RESULT_MAX_BYTES); return less, or write it to storage "
            "and return its name"
        )
    try:
        safe_loads(data)
    except NotPlainData as exc:
        raise ResultRefused(
            f"{what} returned a {type(value).__name__} holding {exc}, which "
            f"is not plain data; return only {PLAIN_TYPES}"
        ) from None
    return data


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` with its whitespace runs (newlines too) made one space, cut to ``limit``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def encode_error(exc: BaseException, text: str, refused: bool = False) -> bytes:
    """An exception as JSON: qualified type name, message, traceback text. Never pickled."""
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    try:
        message = str(exc)
    except BaseException:  # a hostile __str__
        message = "(its message could not be read)"
    return json.dumps(
        {
            "type": one_line(name, 200),
            "message": one_line(message),
            "traceback": text[-MAX_TRACEBACK:],
            "refused": refused,
        }
    ).encode()


def decode_error(data: bytes) -> dict[str, Any]:
    """``encode_error``'s fields; made-up ones naming the problem if ``data`` is not that."""
    try:
        found = json.loads(data.decode())
        if isinstance(found, dict):
            return {
                "type": one_line(str(found.get("type", "?")), 200),
                "message": one_line(str(found.get("message", ""))),
                "traceback": str(found.get("traceback", ""))[-MAX_TRACEBACK:],
                "refused": found.get("refused") is True,
            }
    except (UnicodeDecodeError, ValueError, RecursionError):
        pass
    return {
        "type": "MalformedAnswer",
        "message": f"the task process sent {len(data)} bytes that are not an error report",
        "traceback": "",
        "refused": False,
    }


def call_payload(
    target: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    paths: tuple[str, ...],
    max_bytes: int,
) -> bytes:
    return LIMIT.pack(max_bytes) + pickle.dumps(
        (target, args, kwargs, paths), protocol=pickle.HIGHEST_PROTOCOL
    )


def payload_limit(payload: bytes) -> int:
    """The answer size limit at the start of a call payload (read without unpickling)."""
    return int(LIMIT.unpack_from(payload)[0])


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


class FrameTooLarge(Exception):
    """A frame header announced more bytes than the reader accepts."""

    def __init__(self, kind: bytes, pid: int, length: int) -> None:
        super().__init__(f"frame {kind!r} of {length} bytes")
        self.kind, self.pid, self.length = kind, pid, length


class FrameReader:
    """Frames from ``fd`` read a little at a time (after ``select``), so a reader never
    blocks on a half-written frame. ``max_payload`` bounds a frame's announced size."""

    def __init__(self, fd: int, max_payload: int) -> None:
        self.fd = fd
        self.max_payload = max_payload
        self._buffer = bytearray()
        self.eof = False

    def feed(self) -> None:
        """Read what is there (call when ``fd`` is readable); sets ``eof`` at end of input."""
        want = HEADER.size
        if len(self._buffer) >= HEADER.size:
            want += HEADER.unpack_from(self._buffer)[2]
        chunk = os.read(self.fd, max(min(want - len(self._buffer), 1 << 20), 1 << 16))
        if not chunk:
            self.eof = True
        self._buffer += chunk

    def frame(self) -> tuple[bytes, int, bytes] | None:
        """The next complete frame, if it has arrived; ``FrameTooLarge`` if it announces
        more than ``max_payload`` bytes."""
        if len(self._buffer) < HEADER.size:
            return None
        kind, pid, length = HEADER.unpack_from(self._buffer)
        if length > self.max_payload:
            raise FrameTooLarge(kind, pid, length)
        end = HEADER.size + length
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[HEADER.size : end])
        del self._buffer[:end]
        return kind, pid, payload


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
    obj: Any = entrypoints.resolve(target)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj  # type: ignore[no-any-return]


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except BaseException:  # a task may have closed or replaced them
            pass


def execute(payload: bytes) -> tuple[bytes, bytes]:
    """Run one call payload in this process; ``(OK, plain pickled value)`` or ``(ERROR, JSON)``.

    Every exception is caught, ``SystemExit`` and ``KeyboardInterrupt`` too: a
    task that exits fails, the process that ran it carries on.
    """
    max_bytes = payload_limit(payload)
    target = "?"
    try:
        target, args, kwargs, paths = pickle.loads(payload[LIMIT.size :])
        use_paths(paths)
        value = resolve(target)(*args, **kwargs)
        return OK, plain_value(value, max_bytes, target)
    except ResultRefused as exc:
        return ERROR, encode_error(exc, "", refused=True)
    except BaseException as exc:  # everything goes back to the worker, as text
        try:
            text = traceback.format_exc()
        except BaseException:
            text = f"(no traceback: formatting it failed in {target})"
        return ERROR, encode_error(exc, text)
    finally:
        _flush()
