"""Compile ``.py`` entries to ``.pyc`` entries with the image's own interpreter.

The pycs are *unchecked-hash* pycs (PEP 552): they embed a hash of the source,
not its mtime, and the import system trusts them without rereading the
source, which is right for an immutable image. Each code object's file name is
the path inside the image (``dfile="/" + entry.path``), so the temporary
directory used for compiling never appears in the bytes, and the same entries
give the same bytes on any machine.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lockstep.assembly.entries import Entry
from lockstep.assembly.stage import StagedPython
from lockstep.core.errors import CheckFailed

DRIVER = Path(__file__).with_name("pyc_driver.py")  # run by the image's python
# Sources per driver process: a fixed number, so which process compiled a file (and so
# the bytes) never depends on how many cores this machine has; the chunks run on all.
CHUNK = 200
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


def compile_pycs(
    python: StagedPython, entries: Sequence[Entry], skip: Callable[[str], bool] | None = None
) -> list[Entry]:
    """One ``.pyc`` entry per ``.py`` entry that compiles, made by ``python``: the sources
    in path order, ``CHUNK`` at a time, each chunk by a process of its own, on every core.

    Symlinked ``.py`` files whose target is in ``entries`` are compiled under
    the link's name; ``skip(path)`` leaves a source uncompiled. Sources that do not
    compile (Python 2 test data in some packages) are skipped. CheckFailed if the
    interpreter itself fails.
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
    if not sources:
        return []
    chunks = [sources[i : i + CHUNK] for i in range(0, len(sources), CHUNK)]
    with ThreadPoolExecutor(min(len(chunks), WORKERS), thread_name_prefix="pyc") as pool:
        return [e for part in pool.map(lambda c: _compile_chunk(python, c), chunks) for e in part]


def _compile_chunk(python: StagedPython, sources: Sequence[tuple[str, bytes]]) -> list[Entry]:
    """``sources`` compiled by one fresh process of ``python``, in their order."""
    with tempfile.TemporaryDirectory(prefix="lockstep-pyc-") as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        (root / "out").mkdir()
        jobs = []
        for i, (path, data) in enumerate(sources):
            src_file = root / "src" / f"{i}.py"
            src_file.write_bytes(data)
            jobs.append([str(src_file), "/" + path, str(root / "out" / f"{i}.pyc")])
        (root / "jobs.json").write_text(json.dumps({"jobs": jobs}), encoding="utf-8")
        proc = python.run(
            ["-P", str(DRIVER), str(root / "jobs.json")], capture_output=True, text=True
        )
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            raise CheckFailed(f"compiling .pyc with the image's python failed: {tail}")
        try:
            result = json.loads(str(proc.stdout).strip().splitlines()[-1])
            tag = str(result["tag"])
            failed = {int(i) for i in result["failed"]}
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise CheckFailed(f"compiling .pyc: unexpected driver output {proc.stdout!r}") from exc
        out: list[Entry] = []
        for i, (path, _) in enumerate(sources):
            if i in failed:
                continue
            data = (root / "out" / f"{i}.pyc").read_bytes()
            out.append(Entry.file(pyc_path(path, tag), data, 0o644))
    return out
