"""Compiling an environment's ``.py`` files, after it is already in use.

An environment is usable as soon as its wheels are unpacked and checked:
a task that comes before its ``.pyc`` files imports from source (numpy +
scipy.special: 0.9 s instead of 0.4 s) and writes nothing (task processes run
with ``-B``). Compiling scipy and numpy takes longer than unpacking them
(1.6 s on two cores), so the environment's maker does it afterwards, in the
background (``EnvStore`` in ``bundle_env`` seals the result into ``ENV.json``).

This module is the compile itself and what it may leave: ``.pyc`` files in
``__pycache__`` directories, and the temporaries ``importlib`` writes them
through.
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import re
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from lockstep.core.reap import supervised
from lockstep.core.wheels import TEST_DIRS

_PYC = re.compile(r"(^|/)__pycache__/[^/]+\.pyc$")
_PYC_TEMP = re.compile(r"(^|/)__pycache__/[^/]+\.pyc\.\d+$")  # importlib's _write_atomic


def is_pyc(rel: str) -> bool:
    """Whether ``rel`` (a path under an environment) is a compiled module in ``__pycache__``."""
    return bool(_PYC.search(rel))


def is_pyc_temp(rel: str) -> bool:
    """Whether ``rel`` is a ``.pyc`` being written (or left by a compile that was killed)."""
    return bool(_PYC_TEMP.search(rel))


def compile_site(site: Path) -> None:
    """Compile the ``.py`` files under ``site`` with this interpreter (unchecked-hash
    ``.pyc``: task processes import without compiling, and write nothing), but for the
    wheels' test directories and the modules a wheel ships a ``.pyc`` for (what a wheel
    installed is never overwritten); ``OSError`` if the compile itself fails. Run under
    ``core.reap``: if this process dies, the compile dies with it."""
    proc = subprocess.run(
        supervised([sys.executable, "-I", "-m", "lockstep.runtime.env_compile", str(site)]),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        raise OSError(f"compiling failed with code {proc.returncode}: {proc.stderr[-500:]}")


def sources(site: Path) -> list[str]:
    """The ``.py`` files under ``site`` to compile: not in a ``test``/``tests`` directory
    (a wheel's own test suites: never imported by a task, many files), and with no
    ``.pyc`` there yet."""
    found = []
    for dirpath, dirnames, filenames in os.walk(site):
        dirnames[:] = sorted(d for d in dirnames if d not in TEST_DIRS and d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                if not os.path.exists(importlib.util.cache_from_source(path)):
                    found.append(path)
    return found


def _compile(paths: list[str]) -> int:
    """Compile ``paths``; how many did not compile (a wheel's test data, Python 2 code)."""
    failed = 0
    for path in paths:
        done = py_compile.compile(
            path,
            doraise=False,
            quiet=2,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
        failed += done is None
    return failed


def main(argv: list[str]) -> int:
    """``python -m lockstep.runtime.env_compile SITE``: compile with every core."""
    if len(argv) != 1:
        print("usage: python -m lockstep.runtime.env_compile SITE", file=sys.stderr)
        return 2
    paths = sources(Path(argv[0]))
    cores = os.cpu_count() or 1
    chunks = [paths[i :: cores * 4] for i in range(cores * 4)]
    with ProcessPoolExecutor(cores) as pool:
        sum(pool.map(_compile, [c for c in chunks if c]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
