"""A prebuilt environment arriving as one layer: extracted while it streams in, used only
once its digest matched.

A prebuilt environment (made on the runner's side by ``bundles/prebuilt.py``) is one
gzip'd tar: first ``LAYER.json`` (``INDEX``: the lock it was made from, the Python
cache tag and platform it was compiled for, and every file with its sha256, size and
exec bit), then ``site/…``: the wheels' files, already checked against their
``RECORD``, and their ``.pyc`` files. Every check a wheel needs was made where the
layer was made; here the one check is the layer's digest.

``LayerSink`` takes the bytes in order (``feed``: hashed and inflated by the receiving
thread) and a thread reads the tar as it comes, writing its files into a temporary
directory under the worker's ``envs/`` with a few writer threads (creating files is most
of the cost); ``finish`` checks
that the bytes were exactly ``size`` long with the digest they were sent as, that
the index is for this lock, tag and platform, and that every file extracted is the
index's, with its size. Only then does the store rename the directory into place
(``EnvStore.adopt``); anything else removes it, and nothing of it is ever used.

Refused, each with one line, the directory removed: a member that is not a plain
relative path under ``site/`` (``..``, absolute, ``\\``, NUL), a link, a device, a
FIFO, a hard link, one member twice, a file under a file, a layer over
``MAX_LAYER_BYTES`` or unpacking to more than ``env_install.MAX_ENV_BYTES`` or
``MAX_MEMBERS`` files, a truncated or over-long stream, a digest mismatch.

Worker's side: the standard library and zlib-ng (a dependency of lockstep and of its
images), which inflates the layer in about half the time of the system's zlib.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import platform
import sys
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zlib_ng import zlib_ng

from lockstep.bundles import layer_tar
from lockstep.bundles.env_install import MAX_ENV_BYTES, MAX_MEMBERS, WheelRefused
from lockstep.core.atomic import remove_read_only

INDEX = "LAYER.json"
INDEX_SCHEMA = "lockstep.env-layer/v1"
MAX_LAYER_BYTES = 2 << 30  # one layer, compressed, as sent
MAX_INDEX_BYTES = 64 << 20
_COPY = 1 << 20
_INFLATE_IN = 256 << 10  # compressed bytes inflated at a time (about 1 MB out, under _COPY)
_BATCH = 32  # small files one writer thread writes in one go (fewer thread hand-offs)
_IN_FLIGHT = 8  # batches read and not yet written (each at most _COPY bytes, about)
PIPE_BYTES = 16 << 20  # inflated bytes queued for the extracting thread, at most
WRITERS = 3
# zlib-ng's error class (its stub declares an instance, not a class)
_INFLATE_ERROR: type[Exception] = zlib_ng.error  # type: ignore[assignment]
_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


Written = tuple[str, int, int]  # a file written: its path, size and mtime_ns


class LayerRefused(WheelRefused):
    """An environment layer that is not what it claims, or not safe to extract."""


def host_platform() -> str:
    """This worker's platform as an OCI platform (``linux/amd64``, ``linux/arm64``)."""
    machine = platform.machine().lower()
    return f"{sys.platform}/{_MACHINES.get(machine, machine)}"


def host_tag() -> str:
    """The cache tag of this worker's interpreter (what a layer's ``.pyc`` must be for)."""
    return str(sys.implementation.cache_tag)


@dataclass(frozen=True)
class Extracted:
    """A layer extracted and verified: its digest, its index and ``ENV.json``'s rows."""

    digest: str
    index: dict[str, Any]
    rows: tuple[tuple[str, str, int, int], ...]  # path, sha256, size, mtime_ns


class _Pipe:
    """A bounded queue of the inflated bytes ``put`` adds, taken chunk by chunk (``next``)
    by the extracting thread. ``put`` waits while ``PIPE_BYTES`` are queued (the receiving
    side slows down rather than the worker holding a whole environment in memory);
    ``close`` ends the stream, ``stop_reading`` drops what is queued and all later bytes."""

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._held = 0
        self._cond = threading.Condition()
        self._closed = False
        self._dropping = False

    def put(self, chunk: bytes) -> None:
        with self._cond:
            while self._held >= PIPE_BYTES and not (self._dropping or self._closed):
                self._cond.wait()
            if self._dropping or self._closed:
                return
            self._chunks.append(chunk)
            self._held += len(chunk)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def stop_reading(self) -> None:
        with self._cond:
            self._dropping = True
            self._chunks.clear()
            self._held = 0
            self._cond.notify_all()

    def next(self) -> bytes | None:
        """The next chunk, waiting for it; None once the stream is closed and empty."""
        with self._cond:
            while not self._chunks and not self._closed and not self._dropping:
                self._cond.wait()
            if not self._chunks:
                return None
            chunk = self._chunks.popleft()
            self._held -= len(chunk)
            self._cond.notify_all()
            return chunk


class LayerSink:
    """Extracts the layer ``digest`` (``size`` bytes) into ``tmp`` (new, empty) as its bytes
    arrive; made for ``lock`` (a lock digest), this worker's tag and ``platform`` (default:
    this host's)."""

    def __init__(
        self, tmp: Path, digest: str, size: int, lock: str, platform: str | None = None
    ) -> None:
        if not 0 < size <= MAX_LAYER_BYTES:
            raise LayerRefused(
                f"environment layer {digest} is {size} bytes; a layer is 1 to "
                f"{MAX_LAYER_BYTES} bytes; refused, nothing written"
            )
        self.tmp, self.digest, self.size, self.lock = tmp, digest, size, lock
        self.platform = platform or host_platform()
        self.received = 0
        self._hash = hashlib.sha256()
        self._pipe = _Pipe()
        self._inflate = zlib_ng.decompressobj(wbits=31)  # one gzip member
        self._error: str | None = None
        self._index: dict[str, Any] | None = None
        self._files: dict[str, tuple[int, int, bool]] = {}  # path -> size, mtime_ns, exec
        self._dirs: list[str] = []
        self._dir_set: set[str] = set()
        # the kernel's file creation is most of an extraction: a few threads do it at once
        self._writers = ThreadPoolExecutor(WRITERS, thread_name_prefix="lockstep-layer-write")
        self._pending: collections.deque[Future[list[Written]]] = collections.deque()
        self._batch: list[tuple[Path, bytes]] = []
        self._batch_bytes = 0
        self._thread = threading.Thread(
            target=self._extract, name=f"lockstep-layer-{digest[7:19]}", daemon=True
        )
        self._thread.start()

    def feed(self, data: bytes) -> None:
        """The next bytes of the layer; ``LayerRefused`` (the sink aborted) if extraction
        failed already or the layer is longer than sent."""
        if self._error is not None:
            self._fail(self._error)
        self.received += len(data)
        if self.received > self.size:
            self._fail(f"more than the {self.size} bytes it was sent as")
        self._hash.update(data)
        view = memoryview(data)
        try:  # inflated here, written by the extracting thread: two cores at work
            for start in range(0, len(view), _INFLATE_IN):  # small inputs: no tail copied
                raw = self._inflate.decompress(view[start : start + _INFLATE_IN], _COPY)
                while True:  # in bounded pieces: the pipe holds at most PIPE_BYTES
                    if raw:
                        self._pipe.put(raw)
                    if not self._inflate.unconsumed_tail:
                        break
                    raw = self._inflate.decompress(self._inflate.unconsumed_tail, _COPY)
        except _INFLATE_ERROR as exc:
            self._fail(f"it does not inflate ({exc})")

    def finish(self) -> Extracted:
        """The extracted layer, once every byte arrived, the digest matched and the index
        agrees with what was extracted; ``LayerRefused`` (the directory removed) if not."""
        self._pipe.close()
        self._thread.join()
        if self.received == self.size and not self._inflate.eof:
            self._fail("its gzip stream ends early")
        if self.received != self.size:
            self._fail(f"truncated: {self.received} of its {self.size} bytes arrived")
        found = "sha256:" + self._hash.hexdigest()
        if found != self.digest:
            self._fail(f"its bytes have the digest {found}")
        if self._error is not None:
            self._fail(self._error)
        index = self._index
        if index is None:
            self._fail(f"it has no {INDEX}")
        assert index is not None
        problem = _index_problem(index, self.lock, self.platform, self._files)
        if problem:
            self._fail(problem)
        for rel, (_size, _mtime, executable) in self._files.items():
            if executable:  # chmod keeps the mtime ENV.json records
                os.chmod(self.tmp / rel, 0o555)
        for rel in reversed(self._dirs):  # children before parents, as the seal does
            os.chmod(self.tmp / rel, 0o555)
        rows = tuple(
            (f"{p}", str(sha), self._files[p][0], self._files[p][1])
            for p, sha, _size, _x in index["files"]
        )
        return Extracted(self.digest, index, rows)

    def abort(self) -> None:
        """Stop and remove what was extracted (the sender went, or another error)."""
        if self._error is None:
            self._error = "aborted"
        self._pipe.close()
        self._thread.join()
        remove_read_only(self.tmp)

    def _fail(self, what: str) -> None:
        self.abort()
        raise LayerRefused(
            f"environment layer {self.digest}: {what}; refused, nothing of it is used"
        )

    # --- the extracting thread ----------------------------------------------------------

    def _extract(self) -> None:
        try:
            tar = layer_tar.Reader(self._pipe.next)
            total = 0
            while (member := tar.next()) is not None:
                if self._error is not None:
                    return
                total += member.size
                if total > MAX_ENV_BYTES or len(self._files) >= MAX_MEMBERS:
                    raise LayerRefused(
                        f"it unpacks to more than {MAX_ENV_BYTES} bytes or {MAX_MEMBERS} files"
                    )
                self._member(tar, member)
            self._flush(0)
            tar.drain()
        except LayerRefused as exc:
            self._error = str(exc)
        except OSError as exc:
            if self._error is None:
                self._error = f"extracting it failed ({exc.strerror or exc})"
        except (layer_tar.TarBroken, ValueError) as exc:
            if self._error is None:
                self._error = f"it does not read as a tar ({exc})"
        except Exception as exc:  # a bug, not the layer: refused all the same, and the
            if self._error is None:  # receiving side freed (never left waiting on the pipe)
                self._error = f"extracting it failed ({type(exc).__name__}: {exc})"
        finally:
            self._writers.shutdown(wait=True, cancel_futures=True)
            if self._error is not None:  # the feeder's bytes are dropped from here on
                self._pipe.stop_reading()

    def _member(self, tar: layer_tar.Reader, member: layer_tar.Member) -> None:
        name = member.name
        if name == INDEX and member.kind in layer_tar.REGULAR and self._index is None:
            if self._files or self._dirs:
                raise LayerRefused(f"its {INDEX} is not its first member")
            if member.size > MAX_INDEX_BYTES:
                raise LayerRefused(f"its {INDEX} is {member.size} bytes")
            try:
                index = json.loads(tar.data())
            except ValueError as exc:
                raise LayerRefused(f"its {INDEX} does not read ({exc})") from None
            if not isinstance(index, dict):
                raise LayerRefused(f"its {INDEX} is not an object")
            self._index = index
            return
        parts = name.split("/")
        if (
            parts[0] != "site"
            or "\\" in name
            or "\0" in name
            or any(p in ("", ".", "..") for p in parts)
        ):
            raise LayerRefused(f"it holds {name!r}, not a plain relative path under site/")
        if member.kind == layer_tar.DIRECTORY:
            if name in self._dir_set or name in self._files:
                raise LayerRefused(f"it holds {name!r} twice")
            if name != "site" and name.rpartition("/")[0] not in self._dir_set:
                raise LayerRefused(f"its directory {name!r} comes before its parent")
            try:
                os.mkdir(self.tmp / name, 0o755)
            except FileExistsError:
                raise LayerRefused(f"it holds {name!r} twice") from None
            except (FileNotFoundError, NotADirectoryError):
                raise LayerRefused(f"its directory {name!r} comes before its parent") from None
            self._dirs.append(name)
            self._dir_set.add(name)
            return
        if member.kind not in layer_tar.REGULAR:
            kind = "a link" if member.kind in (b"1", b"2", b"K") else "not a regular file"
            raise LayerRefused(f"it holds {name!r}, {kind}")
        parent = name.rpartition("/")[0]
        if name in self._files or name in self._dir_set:
            raise LayerRefused(f"it holds {name!r} twice")
        if parent not in self._dir_set:
            raise LayerRefused(f"it holds {name!r} below no directory of its own")
        self._files[name] = (member.size, 0, bool(member.mode & 0o100))
        if member.size > _COPY:  # a large file: copied here, piece by piece
            self._done(_write(self.tmp / name, tar.pieces(_COPY)))
            return
        data = tar.data()  # a small one: written by a writer thread, while this reads on
        self._batch.append((self.tmp / name, data))
        self._batch_bytes += len(data)
        if len(self._batch) >= _BATCH or self._batch_bytes >= _COPY:
            self._flush(_IN_FLIGHT)

    def _flush(self, keep: int) -> None:
        """Hand the batch to a writer; wait for the oldest until ``keep`` are in flight."""
        if self._batch:
            self._pending.append(self._writers.submit(_write_all, self._batch))
            self._batch, self._batch_bytes = [], 0
        while len(self._pending) > keep:
            for written in self._pending.popleft().result():
                self._done(written)

    def _done(self, written: Written) -> None:
        path, size, mtime_ns = written
        name = path[len(str(self.tmp)) + 1 :]
        want, _, executable = self._files[name]
        if size != want:
            raise LayerRefused(f"{name!r} is cut short")
        self._files[name] = (size, mtime_ns, executable)


def _write_all(files: list[tuple[Path, bytes]]) -> list[Written]:
    return [_write(path, (data,)) for path, data in files]


def _write(path: Path, pieces: Iterable[bytes]) -> Written:
    """Create ``path`` exclusively, read-only, never through a link, holding ``pieces``;
    ``(path, size, mtime_ns)``. The mode is set after (the exec bit: ``finish``)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o444)  # fmt: skip
    except FileExistsError:
        raise LayerRefused(f"it holds {path.name!r} twice") from None
    except (FileNotFoundError, NotADirectoryError):
        raise LayerRefused(f"it holds {path.name!r} below no directory of its own") from None
    try:
        for piece in pieces:
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view) :]
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return str(path), st.st_size, st.st_mtime_ns


def _index_problem(
    index: dict[str, Any], lock: str, platform: str, files: dict[str, tuple[int, int, bool]]
) -> str:
    """Why ``index`` is not the index of these ``files`` made for ``lock`` on ``platform``
    with this interpreter's tag; "" if it is."""
    if index.get("schema") != INDEX_SCHEMA:
        return f"its {INDEX} is not {INDEX_SCHEMA}"
    if index.get("lock") != lock:
        return f"it was made for the lock {index.get('lock')}, the bundle's is {lock}"
    if index.get("tag") != host_tag() or index.get("platform") != platform:
        return (
            f"it was compiled for {index.get('tag')} on {index.get('platform')}, this worker "
            f"runs {host_tag()} on {platform}"
        )
    try:
        listed = {str(p): (int(n), bool(x)) for p, _sha, n, x in index["files"]}
    except (KeyError, TypeError, ValueError):
        return f"its {INDEX} has no valid file list"
    if len(listed) != len(index["files"]) or listed.keys() != files.keys():
        return f"what it holds is not what its {INDEX} lists"
    for path, (size, executable) in listed.items():
        if files[path][0] != size or files[path][2] != executable:
            return f"{path} is not what its {INDEX} lists"
    return ""
