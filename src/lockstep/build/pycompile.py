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
import posixpath
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lockstep.build.layers import Entry
from lockstep.build.stage import StagedPython
from lockstep.errors import CheckFailed

# Runs inside the image's python: argv[1] is a JSON job file
# {"jobs": [[source, dfile, output], ...]}; prints {"tag": …, "failed": [index, …]}.
_DRIVER = r"""
import json, py_compile, sys, warnings
warnings.simplefilter("ignore")
jobs = json.load(open(sys.argv[1], encoding="utf-8"))["jobs"]
failed = []
for i, (src, dfile, out) in enumerate(jobs):
    try:
        py_compile.compile(src, cfile=out, dfile=dfile, doraise=True, optimize=0,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except Exception:
        failed.append(i)
print(json.dumps({"tag": sys.implementation.cache_tag, "failed": failed}))
"""


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


def compile_pycs(python: StagedPython, entries: Sequence[Entry]) -> list[Entry]:
    """One ``.pyc`` entry per ``.py`` entry that compiles, made by ``python`` in one process.

    Symlinked ``.py`` files whose target is in ``entries`` are compiled under
    the link's name. Sources that do not compile (Python 2 test data in some
    packages) are skipped. CheckFailed if the interpreter itself fails.
    """
    by_path = {e.path: e for e in entries}
    sources: list[tuple[str, bytes]] = []
    for entry in sorted(entries, key=lambda e: e.path):
        if not entry.path.endswith(".py") or entry.kind == "dir":
            continue
        src = _source_of(entry, by_path)
        if src is not None:
            sources.append((entry.path, src.data))
    if not sources:
        return []
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
        proc = python.run(["-c", _DRIVER, str(root / "jobs.json")], capture_output=True, text=True)
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
