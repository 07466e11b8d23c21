"""The build's executor check: every registered executor imports from the image's own files.

Before the app layer is made, the image's python runs ``lockstep.core.entrypoints``
as a script over the app's site directory and the third-party layers' (staged:
their files written out under the cache). Staging is the slow part of a cold
build (a heavy stack's layers hold ~100 000 files), so a third-party layer is
staged only if the check needs it: a wheel in it registers an executor, or an
import asked for one of its top-level names (``importable``, recorded with the
layer when it is made); the check then runs again with it. lockstep's own
executors import only the standard library and lockstep.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lockstep.assembly import layout
from lockstep.assembly.entries import Entry
from lockstep.assembly.layercache import LayerCache, LayerRecord
from lockstep.assembly.stage import StagedPython
from lockstep.core import entrypoints
from lockstep.core.errors import BadInput
from lockstep.project import Project


def importable(entries: Sequence[Entry]) -> dict[str, Any]:
    """What a third-party layer offers to imports: ``tops``, the top-level names in its
    site directory, and ``executors``, whether a wheel in it registers one (an
    ``entry_points.txt`` with the group)."""
    prefix = layout.SITE_DIR + "/"
    tops: set[str] = set()
    executors = False
    for entry in entries:
        if not entry.path.startswith(prefix):
            continue
        first, sep, _rest = entry.path[len(prefix) :].partition("/")
        tops.add(first if sep else first.split(".")[0])
        if entry.path.endswith(".dist-info/entry_points.txt") and entry.kind == "file":
            executors |= f"[{entrypoints.GROUP}]".encode() in entry.data
    return {"tops": sorted(tops), "executors": executors}


def check_executors(
    project: Project,
    layers: LayerCache,
    python: StagedPython,
    app_site: Path,
    third_party: Sequence[LayerRecord],
) -> None:
    """Import every executor ``project`` declares, with the image's ``python``, from the
    app's site directory and the third-party layers an import needs; BadInput naming the
    one that does not import, or a registry that differs from the declared one."""
    staged: list[LayerRecord] = []
    unstaged: dict[str, list[LayerRecord]] = {}
    for record in third_party:
        tops = record.facts.get("tops")
        if record.facts.get("executors", True) or not isinstance(tops, list):
            staged.append(record)  # registers one (or made before layers said so)
        else:
            for top in tops:
                unstaged.setdefault(str(top), []).append(record)
    while True:
        sites = [app_site, *(layers.staged(r) / layout.SITE_DIR for r in staged)]
        proc = python.run(
            [
                "-P",
                entrypoints.__file__,
                *map(str, sites),
                f"--absent={','.join(sorted(unstaged))}",
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise BadInput(
                f"executor check failed to run in the image's python: "
                f"{proc.stderr.strip().splitlines()[-1:] or proc.returncode}"
            )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        wanted = [r for top in result.get("absent", []) for r in unstaged.pop(top, [])]
        if not wanted:
            break
        staged += [r for r in dict.fromkeys(wanted) if r not in staged]
    expected = dict(project.executors)
    if result["found"] != expected:
        raise BadInput(
            f"{project.pyproject}: the image's executor registry {sorted(result['found'])} "
            f"differs from the declared {sorted(expected)}"
        )
    for name, message in sorted(result["errors"].items()):
        raise BadInput(
            f"{project.pyproject}: executor {name!r} does not import from the image's own "
            f"files ({message}); fix the module or remove the entry point"
        )
