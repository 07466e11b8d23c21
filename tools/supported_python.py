"""Whether a Python is one this project supports, for `make` (and the tests).

The supported versions are pyproject.toml's `Programming Language :: Python :: 3.X`
classifiers: the one list, which requirements/*.lock.txt must cover (a test checks every
locked file for each) and which the wheel declares. Any Python 3 runs this (no tomllib):

    python3 tools/supported_python.py [NAME]

prints nothing and exits 0 for a supported interpreter; otherwise one line on stderr
naming NAME (what `make` was given as PYTHON), its version and the supported ones, and
exit 2.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
CLASSIFIER = re.compile(r'"Programming Language :: Python :: (3)\.(\d+)"')


def supported(pyproject: Path = PYPROJECT) -> list[tuple[int, int]]:
    """The (major, minor) versions pyproject.toml's classifiers name, in order."""
    return [(int(a), int(b)) for a, b in CLASSIFIER.findall(pyproject.read_text())]


def problem(name: str, version: tuple[int, int], versions: list[tuple[int, int]]) -> str | None:
    """Why ``version`` is refused (one line), or None."""
    if version in versions:
        return None
    listed = ", ".join(f"{a}.{b}" for a, b in versions)
    newest = f"python{versions[-1][0]}.{versions[-1][1]}"
    return (
        f"make: {name} is Python {version[0]}.{version[1]}; the locks are for Python "
        f"{listed}: run make PYTHON={newest} (or another of them)"
    )


def main(argv: list[str]) -> int:
    name = argv[1] if len(argv) > 1 else sys.executable
    found = problem(name, (sys.version_info[0], sys.version_info[1]), supported())
    if found:
        print(found, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
