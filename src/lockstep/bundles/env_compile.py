"""Compiling an environment's ``.py`` files, after it is already in use.

An environment is usable as soon as its wheels are unpacked and checked:
a task that comes before its ``.pyc`` files imports from source (numpy +
scipy.special: 0.9 s instead of 0.4 s) and writes nothing (task processes run
with ``-B``). Compiling scipy and numpy takes longer than unpacking them
(1.6 s on two cores), so the environment's maker does it afterwards, in the
background (``EnvStore`` in ``bundle_env`` seals the result into ``ENV.json``).

This module is the compile itself and what it may leave: ``.pyc`` files in
``__pycache__`` directories and their temporaries; ``seal`` keeps only the
``.pyc`` files whose bytes the compile wrote and lists them for ``ENV.json``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import marshal
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from lockstep.core.atomic import write_bytes
from lockstep.core.reap import supervised
from lockstep.core.wheels import TEST_DIRS

log = logging.getLogger(__name__)
_PYC = re.compile(r"(^|/)__pycache__/[^/]+\.pyc$")
# a .pyc being written: core.atomic's temporary (``.<name>.<pid>.<random>.tmp``, this
# compiler's) or importlib's (``<name>.<id>``, a python that writes bytecode)
_PYC_TEMP = re.compile(r"(^|/)__pycache__/(\.[^/]+\.pyc\.\d+\.[^/]+\.tmp|[^/]+\.pyc\.\d+)$")


def is_pyc(rel: str) -> bool:
    """Whether ``rel`` (a path under an environment) is a compiled module in ``__pycache__``."""
    return bool(_PYC.search(rel))


def is_pyc_temp(rel: str) -> bool:
    """Whether ``rel`` is a ``.pyc`` being written (or left by a compile that was killed)."""
    return bool(_PYC_TEMP.search(rel))


def file_sha256(path: Path) -> str:
    """The sha256 (hex) of the file at ``path``."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def seal(site: Path, marker: dict[str, Any], written: dict[str, str]) -> dict[str, Any] | None:
    """``marker`` with the ``.pyc`` files the compile ``written`` under ``site`` added (each
    made read-only; any other unlisted ``.pyc``, or one whose bytes are not what was
    written, and a killed compile's temporaries removed) and ``"compiled": true``, every
    directory made read-only; None if a file other than a ``.pyc`` is not listed.
    Paths, in ``marker`` and ``written``, are relative to ``site``'s parent."""
    listed = {str(row[0]) for row in marker["files"]}
    added = []
    for dirpath, _dirs, filenames in os.walk(site, followlinks=False):
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(site.parent).as_posix()
            if rel in listed:
                continue
            if not (is_pyc(rel) or is_pyc_temp(rel)) or path.is_symlink():
                log.warning("lockstep environment at %s holds %s, not listed", site.parent, rel)
                return None
            if is_pyc_temp(rel) or written.get(rel) != file_sha256(path):
                path.unlink()  # not what this compile wrote: a task imports from source
                continue
            path.chmod(0o444)
            st = path.stat()
            added.append([rel, written[rel], st.st_size, st.st_mtime_ns])
    for dirpath, dirnames, _files in os.walk(site, topdown=False):
        for name in dirnames:
            (Path(dirpath) / name).chmod(0o555)
    site.chmod(0o555)
    return {**marker, "compiled": True, "files": sorted(marker["files"] + added)}


def compile_site(site: Path, keep: set[str]) -> dict[str, str]:
    """Compile the ``.py`` files under ``site`` with this interpreter (unchecked-hash
    ``.pyc``: task processes import without compiling, and write nothing), but for the
    wheels' test directories and the modules whose ``.pyc`` is in ``keep`` (paths under
    ``site``: the ones a wheel installed, never overwritten). What was written:
    ``{pyc path under site: sha256 of the bytes written}``. ``OSError`` if the compile
    itself fails. Run under ``core.reap``: if this process dies, the compile dies too."""
    with tempfile.TemporaryDirectory(prefix="lockstep-compile-") as tmp:
        jobs = Path(tmp) / "jobs.json"
        out = Path(tmp) / "written.json"
        jobs.write_text(json.dumps({"site": str(site), "sources": sources(site, keep)}))
        proc = subprocess.run(
            supervised(
                [sys.executable, "-I", "-m", "lockstep.bundles.env_compile", str(jobs), str(out)]
            ),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if proc.returncode != 0:
            raise OSError(f"compiling failed with code {proc.returncode}: {proc.stderr[-500:]}")
        written: dict[str, str] = json.loads(out.read_text())
        return written


def sources(site: Path, keep: set[str]) -> list[str]:
    """The ``.py`` files under ``site`` (paths under it) to compile: not in a wheel's test
    suite (``core.wheels.TEST_DIRS``: never imported by a task, many files), and with no
    ``.pyc`` in ``keep``; shallowest first."""
    found = []
    for dirpath, dirnames, filenames in os.walk(site):
        dirnames[:] = sorted(d for d in dirnames if d not in TEST_DIRS and d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, name), site)
                if os.path.relpath(importlib.util.cache_from_source(rel)) not in keep:
                    found.append(rel)
    # packages' __init__ and shallow modules first: what a first task imports early, so
    # the compile gets ahead of it
    return sorted(found, key=lambda rel: (rel.count("/"), not rel.endswith("__init__.py"), rel))


def pyc_bytes(source: bytes, path: str) -> bytes:
    """An unchecked-hash ``.pyc`` (PEP 552) of ``source``, its code named ``path``; what
    ``py_compile`` writes with ``UNCHECKED_HASH``. ``SyntaxError`` (and others) if the
    source does not compile."""
    code = compile(source, path, "exec", dont_inherit=True)
    flags = 0b01  # hash-based, not checked against the source
    return (
        importlib.util.MAGIC_NUMBER
        + flags.to_bytes(4, "little")
        + importlib.util.source_hash(source)
        + marshal.dumps(code)
    )


def _compile(site: str, paths: list[str]) -> dict[str, str]:
    """Compile ``paths`` (under ``site``); ``{pyc path: sha256}`` of those that compiled
    (a wheel's test data or Python 2 code does not: skipped). Each ``.pyc`` is written to
    a temporary name and renamed into place (``core.atomic``)."""
    written = {}
    for rel in paths:
        path = os.path.join(site, rel)
        try:
            with open(path, "rb") as f:
                data = pyc_bytes(f.read(), path)
        except Exception:  # any source the compiler rejects stays a source
            continue
        pyc_rel = os.path.relpath(importlib.util.cache_from_source(rel))
        target = Path(site, pyc_rel)
        target.parent.mkdir(exist_ok=True)
        write_bytes(target, data)
        written[pyc_rel] = hashlib.sha256(data).hexdigest()
    return written


def main(argv: list[str]) -> int:
    """``python -m lockstep.bundles.env_compile JOBS OUT``: compile with every core."""
    if len(argv) != 2:
        print("usage: python -m lockstep.bundles.env_compile JOBS.json OUT.json", file=sys.stderr)
        return 2
    os.nice(10)  # the tasks that import from source meanwhile come first
    jobs = json.loads(Path(argv[0]).read_text())
    site, paths = str(jobs["site"]), list(jobs["sources"])
    cores = os.cpu_count() or 1
    size = max(1, -(-len(paths) // (cores * 4)))
    chunks = [paths[i : i + size] for i in range(0, len(paths), size)]  # in that order
    written: dict[str, str] = {}
    with ProcessPoolExecutor(cores) as pool:
        for part in pool.map(_compile, [site] * len(chunks), chunks):
            written.update(part)
    Path(argv[1]).write_text(json.dumps(written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
