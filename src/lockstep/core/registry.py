"""The executor registry: the ``lockstep.executors`` entry-point group, and ``module:attr``.

One place for the group's name, for listing what an installation registers,
and for resolving a ``module:qualified.name`` reference. The build's executor
check runs this file with the *image's* python against the image's own files
(``python registry.py SITE…`` prints ``{"found": …, "errors": …}``); the
worker, ``lockstep self-check``, the executors and jobs import it.

Standard library only: it runs as a script in a Python that has nothing else.
"""

from __future__ import annotations

import importlib
import json
import sys
from importlib import metadata
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


def main(argv: list[str]) -> int:
    """Put ``argv`` first on ``sys.path``; print the registry and its import errors as JSON."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != here]
    sys.path[:0] = argv
    importlib.invalidate_caches()
    found = registered()
    print(json.dumps({"found": found, "errors": import_errors(found)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
