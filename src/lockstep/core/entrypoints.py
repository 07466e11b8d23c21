"""The executor entry points: the ``lockstep.executors`` group, and ``module:attr``.

One place for the group's name, for listing what an installation registers,
and for resolving a ``module:qualified.name`` reference. The build's executor
check runs this file with the *image's* python against the image's own files
(``python entrypoints.py SITE… [--absent=NAME,…]`` prints ``{"found": …, "errors": …,
"absent": …}``); the worker, ``lockstep self-check``, the executors and jobs import it.

Standard library only: it runs as a script in a Python that has nothing else.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

GROUP = "lockstep.executors"


def split(ref: str) -> tuple[str, str]:
    """``"pkg.mod:Class.attr"`` → ``("pkg.mod", "Class.attr")``; ``ValueError`` if malformed."""
    module, sep, qualname = ref.partition(":") if isinstance(ref, str) else ("", "", "")
    if not sep or not module or not qualname:
        raise ValueError(f"{ref!r} does not read 'module:attribute'")
    return module, qualname


def resolve(ref: str) -> Any:
    """The object named ``module:qualified.name``, importing its module in this process."""
    module, qualname = split(ref)
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def registered() -> dict[str, str]:
    """This installation's executors: name -> ``module:attr``, sorted by name."""
    from importlib import metadata  # here only: the project file names GROUP, at every build

    return dict(sorted((ep.name, ep.value) for ep in metadata.entry_points(group=GROUP)))


def import_errors(found: dict[str, str]) -> dict[str, str]:
    """For each executor that does not resolve here, ``"target: Type: message"``."""
    errors: dict[str, str] = {}
    for name, target in sorted(found.items()):
        try:
            resolve(target)
        except BaseException as exc:  # an executor module may raise anything, even exit
            errors[name] = f"{target}: {type(exc).__name__}: {exc}"
    return errors


class _Absent:
    """A meta path finder that notes each import of a top-level name in ``names`` (modules
    the image holds in layers not put on ``sys.path`` for the check) and finds nothing."""

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.wanted: set[str] = set()

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        top = name.partition(".")[0]
        if top in self.names:
            self.wanted.add(top)


def main(argv: list[str]) -> int:
    """Put the sites in ``argv`` first on ``sys.path``; print the registry and its import
    errors as JSON, and ``absent``: which of the top-level names given as
    ``--absent=NAME,…`` an import asked for (the builder then adds their layers)."""
    here = Path(__file__).resolve().parent
    sites = [a for a in argv if not a.startswith("--absent=")]
    absent = {n for a in argv if a.startswith("--absent=") for n in a[9:].split(",") if n}
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != here]
    sys.path[:0] = sites
    finder = _Absent(absent)
    sys.meta_path.insert(0, finder)
    importlib.invalidate_caches()
    found = registered()
    errors = import_errors(found)
    print(json.dumps({"found": found, "errors": errors, "absent": sorted(finder.wanted)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
