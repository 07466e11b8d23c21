"""A build's record of what it wrote, so that the same build again answers at once.

After writing its outputs, ``lockstep build`` records in ``<out>/.lockstep-build.json``
the key of what it built, the ``stat`` of every file it wrote (device, inode, size,
mtime and ctime: ``core.stamps.Stamp``), what it printed, and its *recipe*: where its
inputs are, as the project file said (that file, the declared-source globs, the two
locks, the project's platforms). The next build reads the record first (``answer``): if
the project file is byte for byte the recipe's, it digests the inputs the recipe names
as the full build does (the declared files' tree digest, each lock's sha256) without
parsing the project or the locks or loading the builder, and if that key is the
record's and every file ``stat``s as recorded, prints what the record holds
(docs/design.md §4.2, "A no-op build").

The key (``key``) covers everything a build's outputs depend on: the project file's
digest (names, versions, the images' settings), the declared files' tree digest, each
lock's digest, the platforms, the builder's identity and code digest, lockstep's
version, the roles and the output options and paths. Any write to an output file
changes its ctime or its inode, and no process can set a ctime back; a file whose last
change lies within ``RACY_NS`` of the recording is not vouched for (git's "racily
clean" rule), so a build right after another goes the full way once. Whatever does not
match (the key, a file, the record itself) means the full build runs and re-checks
every output, as it always did. A stamped build (``--stamp``: git facts the inputs do
not hold) never takes this path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockstep.core.atomic import remove_leftovers, write_bytes
from lockstep.core.digests import canonical_json, sha256_digest
from lockstep.core.stamps import Stamp, stampable

if TYPE_CHECKING:
    from lockstep.inputs.build_inputs import BuildInputs
    from lockstep.project import Project

RECORD = ".lockstep-build.json"
FORMAT = 1


def key(
    digests: Mapping[str, str],
    platforms: Sequence[str],
    roles: Sequence[str],
    options: Mapping[str, object],
) -> str:
    """The digest of what a build's outputs depend on: the inputs' ``digests`` (project file,
    declared files, locks), the ``platforms`` and ``roles`` built, the output ``options``,
    and the running builder (its identity and code digest, lockstep's version)."""
    from lockstep import __version__
    from lockstep.assembly.identity import builder_code_digest, builder_identity

    return sha256_digest(
        canonical_json(
            {
                "format": FORMAT,
                "inputs": dict(digests),
                "platforms": list(platforms),
                "roles": list(roles),
                "options": dict(options),
                "builder": [builder_identity(), builder_code_digest(), __version__],
            }
        )
    )


def recipe(project: Project) -> dict[str, Any]:
    """Where ``project``'s build inputs are, as its project file says."""
    return {
        "pyproject": str(project.pyproject),
        "root": str(project.root),
        "sources": list(project.sources),
        "debian_lock": str(project.debian_lock),
        "python_lock": str(project.python_lock),
        "platforms": list(project.platforms),
    }


def digests_of(project: Project, inputs: Mapping[str, BuildInputs]) -> dict[str, str]:
    """The inputs' digests of a build that read ``inputs`` (the same on every platform)."""
    first = next(iter(inputs.values()))
    return {
        "pyproject": sha256_digest(project.pyproject.read_bytes()),
        "sources": first.sources,
        "debian_lock": first.debian.digest,
        "python_lock": first.python.digest,
    }


def digests_read(made: Mapping[str, Any]) -> dict[str, str]:
    """The digests ``digests_of`` gives, from the files ``made`` (a ``recipe``) names: read
    and hashed, not parsed (``BadInput`` or ``OSError`` if they cannot be read)."""
    from lockstep.core.digests import tree_digest
    from lockstep.inputs import declared

    return {
        "pyproject": sha256_digest(Path(made["pyproject"]).read_bytes()),
        "sources": tree_digest(declared.load(Path(made["root"]), made["sources"])),
        "debian_lock": sha256_digest(Path(made["debian_lock"]).read_bytes()),
        "python_lock": sha256_digest(Path(made["python_lock"]).read_bytes()),
    }


def answer(
    out: Path,
    pyproject: Path,
    platforms: Sequence[str] | None,
    roles: Sequence[str],
    options: Mapping[str, object],
    form: str,
) -> str | None:
    """What the build of ``roles`` on ``platforms`` (None: the project's) printed in
    ``form``, if ``out``'s record is of that build from these inputs and ``out`` holds its
    files unchanged (a killed build's temporaries there are then removed, as the full
    build removes them); else None: the build must run."""
    from lockstep.core.errors import LockstepError

    data = _read(out)
    try:
        made = data["recipe"]
        if data["format"] != FORMAT or made["pyproject"] != str(pyproject):
            return None
        if made["root"] != str(pyproject.parent):  # the tree to select from: the project's
            return None
        names = list(platforms) if platforms else made["platforms"]
        if key(digests_read(made), names, roles, options) != data["key"]:
            return None
        printed, files = data["printed"][form], data["files"]
        if not isinstance(printed, str) or not files:
            return None
        if any(_stat(Path(path)) != kept for path, kept in files.items()):
            return None
    except (LockstepError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    remove_leftovers(out)
    return printed


def changed(out: Path) -> frozenset[Path]:
    """The files ``out``'s record names whose ``stat`` is no longer the recorded one: they
    changed after the build that wrote them, which the build then writes again (a change
    inside a layer, its size kept, is not visible otherwise). Empty without a record."""
    try:
        files = _read(out)["files"]
        return frozenset(Path(p) for p, kept in files.items() if _stat(Path(p)) != kept)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return frozenset()


def _read(out: Path) -> Any:
    """``out``'s record as JSON, or None (no record, or not JSON): the callers' checks of
    its shape then fail, and the build runs in full."""
    try:
        return json.loads((out / RECORD).read_bytes())
    except (OSError, ValueError):
        return None


def _stat(path: Path) -> dict[str, int] | None:
    try:
        return asdict(Stamp.of(path.stat()))
    except OSError:
        return None


def forget(out: Path) -> None:
    """Drop the record before ``out`` is written: no record ever describes a half-written
    ``out``."""
    (out / RECORD).unlink(missing_ok=True)


def record(
    out: Path,
    key_: str,
    made: Mapping[str, Any],
    files: Iterable[Path],
    printed: Mapping[str, str],
) -> bool:
    """Record that ``out`` holds build ``key_``'s ``files`` (as they ``stat`` now), made as
    ``made`` (a ``recipe``) says, and what it printed (form -> text); False, and nothing
    recorded, if a file changed too recently to be vouched for or is gone already (another
    build's temporary in a shared layout): the next build then checks everything."""
    began = time.time_ns()
    stamps = {}
    for path in files:
        try:
            stamp = Stamp.of(path.stat())
        except OSError:
            return False
        if not stampable(stamp, began):
            return False
        stamps[str(path)] = asdict(stamp)
    data = {
        "format": FORMAT,
        "key": key_,
        "recipe": dict(made),
        "files": stamps,
        "printed": dict(printed),
    }
    write_bytes(out / RECORD, canonical_json(data))
    return True
