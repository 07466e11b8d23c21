"""Compile ``.py`` entries to ``.pyc`` entries with the image's own interpreter.

The pycs are *unchecked-hash* pycs (PEP 552): they embed a hash of the source,
not its mtime, and the import system trusts them without rereading the
source, which is right for an immutable image. Each code object's file name is
the path inside the image (``"/" + entry.path``), and the sources reach the
interpreter on its stdin (no file of this machine is named), so the same entries
give the same bytes on any machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lockstep.assembly.entries import Entry
from lockstep.assembly.stage import StagedPython
from lockstep.core.errors import CheckFailed

DRIVER = Path(__file__).with_name("pyc_driver.py")  # run by the image's python
# Sources per driver process (at most); the chunks run on every core.
CHUNK = 200
MIN_CHUNK = 32
WIDTH = 2  # a layer of a few hundred sources (the app) still uses two cores
WORKERS = max(1, min(4, os.cpu_count() or 1))


def _source_of(entry: Entry, by_path: dict[str, Entry]) -> Entry | None:
    """The file entry a ``.py`` entry stands for (following a few in-tree symlinks)."""
    seen = 0
    while entry.kind == "symlink" and seen < 8:
        if entry.target.startswith("/"):
            return None
        path = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), entry.target))
        nxt = by_path.get(path)
        if nxt is None:
            return None
        entry, seen = nxt, seen + 1
    return entry if entry.kind == "file" else None


def pyc_path(source_path: str, tag: str) -> str:
    """``a/b/c.py`` → ``a/b/__pycache__/c.<tag>.pyc``."""
    head, _, name = source_path.rpartition("/")
    stem = name[:-3]
    return f"{head + '/' if head else ''}__pycache__/{stem}.{tag}.pyc"


Memo = dict[str, tuple[str, Entry]]  # source path -> (sha256 of its bytes, its .pyc entry)


def compile_pycs(
    python: StagedPython,
    entries: Sequence[Entry],
    skip: Callable[[str], bool] | None = None,
    memo: Memo | None = None,
) -> list[Entry]:
    """One ``.pyc`` entry per ``.py`` entry that compiles, made by ``python``: the sources
    in path order, ``CHUNK`` at a time, each chunk by a process of its own, on every core.

    Symlinked ``.py`` files whose target is in ``entries`` are compiled under
    the link's name; ``skip(path)`` leaves a source uncompiled. Sources that do not
    compile (Python 2 test data in some packages) are skipped. CheckFailed if the
    interpreter itself fails. ``memo``: ``.pyc`` entries made before for the same
    path and source bytes, reused, and updated with the ones made now (a one-line
    change compiles one file). A ``.pyc``'s bytes depend only on its source, its
    path and the interpreter, not on what else its process compiled (a test holds
    this).
    """
    by_path = {e.path: e for e in entries}
    sources: list[tuple[str, bytes]] = []
    for entry in sorted(entries, key=lambda e: e.path):
        if not entry.path.endswith(".py") or entry.kind == "dir":
            continue
        if skip is not None and skip(entry.path):
            continue
        src = _source_of(entry, by_path)
        if src is not None:
            sources.append((entry.path, src.data))
    found: dict[str, Entry] = {}
    todo: list[tuple[str, bytes]] = []
    digests: dict[str, str] = {}
    for path, data in sources:
        if memo is not None:
            digests[path] = hashlib.sha256(data).hexdigest()
            known = memo.get(path)
            if known is not None and known[0] == digests[path]:
                found[path] = known[1]
                continue
        todo.append((path, data))
    chunks = chunked(todo)
    if chunks:
        with ThreadPoolExecutor(min(len(chunks), WORKERS), thread_name_prefix="pyc") as pool:
            for part in pool.map(lambda c: _compile_chunk(python, c), chunks):
                for path, entry in part:
                    found[path] = entry
                    if memo is not None:
                        memo[path] = (digests[path], entry)
    return [found[path] for path, _ in sources if path in found]


def chunked(sources: Sequence[tuple[str, bytes]]) -> list[Sequence[tuple[str, bytes]]]:
    """``sources`` cut into consecutive chunks: as many as ``CHUNK`` needs, and at least
    ``WIDTH`` when there are enough (``MIN_CHUNK`` each) to share."""
    n = len(sources)
    if n == 0:
        return []
    parts = max(-(-n // CHUNK), min(WIDTH, n // MIN_CHUNK), 1)
    size = -(-n // parts)
    return [sources[i : i + size] for i in range(0, n, size)]


def _compile_chunk(
    python: StagedPython, sources: Sequence[tuple[str, bytes]]
) -> list[tuple[str, Entry]]:
    """``sources`` compiled by one fresh process of ``python``, in their order: ``(source
    path, .pyc entry)`` for each that compiled. The sources go in on its stdin and the
    ``.pyc`` come back on its stdout: no file is written (thousands of small files made
    and removed cost the file system more than compiling them)."""
    header = json.dumps([["/" + path, len(data)] for path, data in sources]).encode()
    proc = python.run(
        ["-P", str(DRIVER)],
        input=b"".join([header, b"\n", *(data for _, data in sources)]),
        capture_output=True,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()[-1:]
        raise CheckFailed(f"compiling .pyc with the image's python failed: {tail}")
    out = bytes(proc.stdout)
    line, _, body = out.partition(b"\n")
    try:
        result = json.loads(line)
        tag = str(result["tag"])
        sizes = [int(n) for n in result["sizes"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckFailed(f"compiling .pyc: unexpected driver output {line[:200]!r}") from exc
    if len(sizes) != len(sources) or sum(n for n in sizes if n > 0) != len(body):
        raise CheckFailed("compiling .pyc: the driver's output does not match its jobs")
    found: list[tuple[str, Entry]] = []
    at = 0
    for (path, _), size in zip(sources, sizes, strict=True):
        if size < 0:
            continue
        found.append((path, Entry.file(pyc_path(path, tag), body[at : at + size], 0o644)))
        at += size
    return found
