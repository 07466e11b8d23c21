"""A build's record of what it wrote, so that the same build again answers at once.

After writing its outputs, ``lockstep build`` records in ``<out>/.lockstep-build.json``
the key of what it built, the ``stat`` of every file it wrote (device, inode, size,
mtime and ctime: ``core.stamps.Stamp``) and what it printed. The next build whose key
is the same, and whose files all ``stat`` as recorded, prints that again and writes
nothing, without loading the builder (docs/design.md §4.2, "What is re-verified when").

The key (``key``) covers everything a build's outputs depend on: each platform's build
inputs (their digests, as the build id has them) and ``pyproject.toml`` (names, versions,
the images' settings), the builder's identity and code digest, lockstep's version, the
roles and the output options and paths. Any write to an output file changes its ctime or
its inode, and no process can set a ctime back; a file whose last change lies within
``RACY_NS`` of the recording is not vouched for (git's "racily clean" rule), so a build
right after another goes the full way once. Whatever does not match (the key, a file, the
record itself) means the full build runs and re-checks every output, as it always did.
A stamped build (``--stamp``: git facts the inputs do not hold) never takes this path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from lockstep.core.atomic import remove_leftovers, write_bytes
from lockstep.core.digests import canonical_json, sha256_digest
from lockstep.core.stamps import Stamp, stampable

RECORD = ".lockstep-build.json"
FORMAT = 1


def key(
    inputs: Mapping[str, Mapping[str, str]],
    identity: Mapping[str, str],
    roles: Sequence[str],
    options: Mapping[str, object],
) -> str:
    """The digest of what a build's outputs depend on: ``inputs`` (platform -> its input
    digests, in the build's order), ``identity`` (the builder's, lockstep's version, the
    project file's digest), the ``roles`` built and the output ``options``."""
    return sha256_digest(
        canonical_json(
            {
                "format": FORMAT,
                "inputs": [[name, dict(digests)] for name, digests in inputs.items()],
                "identity": dict(identity),
                "roles": list(roles),
                "options": dict(options),
            }
        )
    )


def changed(out: Path) -> frozenset[Path]:
    """The files ``out``'s record names whose ``stat`` is no longer the recorded one: they
    changed after the build that wrote them, which the build then writes again (a change
    inside a layer, its size kept, is not visible otherwise). Empty without a record."""
    try:
        files = json.loads((out / RECORD).read_bytes())["files"]
        return frozenset(Path(p) for p, kept in files.items() if _stat(Path(p)) != kept)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return frozenset()


def _stat(path: Path) -> dict[str, int] | None:
    try:
        return asdict(Stamp.of(path.stat()))
    except OSError:
        return None


def forget(out: Path) -> None:
    """Drop the record before ``out`` is written: no record ever describes a half-written
    ``out``."""
    (out / RECORD).unlink(missing_ok=True)


def record(out: Path, key_: str, files: Iterable[Path], printed: Mapping[str, str]) -> bool:
    """Record that ``out`` holds build ``key_``'s ``files`` (as they ``stat`` now) and what
    it printed (form -> text); False, and nothing recorded, if a file changed too recently
    to be vouched for."""
    began = time.time_ns()
    stamps = {}
    for path in files:
        stamp = Stamp.of(path.stat())
        if not stampable(stamp, began):
            return False
        stamps[str(path)] = asdict(stamp)
    data = {"format": FORMAT, "key": key_, "files": stamps, "printed": dict(printed)}
    write_bytes(out / RECORD, canonical_json(data))
    return True


def replay(out: Path, key_: str, form: str) -> str | None:
    """What build ``key_`` printed in ``form``, if ``out`` holds its files unchanged (and a
    killed build's temporaries there are removed, as the full build removes them); else
    None (the build must run)."""
    try:
        data = json.loads((out / RECORD).read_bytes())
        if data["format"] != FORMAT or data["key"] != key_:
            return None
        printed = data["printed"][form]
        files = data["files"]
        if any(_stat(Path(path)) != kept for path, kept in files.items()):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(printed, str) or not files:
        return None
    remove_leftovers(out)
    return printed
