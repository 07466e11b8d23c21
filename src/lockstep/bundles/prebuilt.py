"""A bundle's environment made once, where the bundle is shipped from: one reproducible layer.

``env_layer`` turns a bundle's lock into the layer a worker extracts
(``bundles/env_layer.py`` says its format and what the worker checks): every
wheel checked as the worker's own installer checks it (``env_install.plan_all``,
``core.wheels.read_members``: safe paths, the ``RECORD``'s hashes, no two wheels
writing one file, nothing shadowing the standard library, the size budget), then
compiled by the tasks' Python with the image builder's deterministic ``.pyc``
(``assembly.pycompile``, the wheels' test directories left as sources) and written
as the image builder writes a layer (``assembly.entries.make_layer``: sorted, mtime 0,
the pinned deflate). The same lock and interpreter give the same bytes on any host.

One layer per platform and Python cache tag: the wheels the lock has for that
platform (any platform's: nothing of a wheel runs here), compiled by ``python``: the
image's interpreter (``StagedPython`` of a build's base layer), or by default the
running one (``RunningPython``) — on the runner image it is the workers' own. A
``.pyc`` is the same bytes whatever machine compiled it (the image builder compiles
every platform's once, natively), so this host makes the arm64 layer too. The lock
names the image's Python by its wheel tags (``image_tag``: ``cp311`` →
``cpython-311``); a ``python`` with another cache tag is refused with one line
before anything is compiled. A worker whose tag differs is sent the wheels instead.

Kept in the runner's cache (``core.store``) under the lock's digest, the tag, the
platform and the compressor: made once per lock, read back by later runs.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lockstep.assembly import compress
from lockstep.assembly.entries import Entry, make_layer
from lockstep.assembly.pycompile import compile_pycs
from lockstep.assembly.stage import StagedPython
from lockstep.bundles.env_install import WheelRefused, plan_all
from lockstep.bundles.env_layer import INDEX, INDEX_SCHEMA, host_platform, host_tag
from lockstep.bundles.lockfile import BundleLock, LockedWheel
from lockstep.core.digests import canonical_json, sha256_digest
from lockstep.core.errors import BadInput
from lockstep.core.store import Cache
from lockstep.core.wheels import WheelRejected, in_test_dir, read_members

NAMESPACE = "env-layer"


class RunningPython(StagedPython):
    """The running interpreter, driven like a ``StagedPython`` (what ``compile_pycs`` runs)."""

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-s", "-S", *args]

    def env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "LC_ALL": "C.UTF-8",
        }


def running_python() -> RunningPython:
    return RunningPython(Path(sys.prefix))


@dataclass(frozen=True)
class EnvLayer:
    """A prebuilt environment layer in the runner's cache: its digest, size and target."""

    digest: str
    size: int
    tag: str  # the Python cache tag its .pyc files are for
    platform: str
    lock: str  # the lock's digest


def cache_tag(python: StagedPython) -> str:
    """The ``sys.implementation.cache_tag`` of ``python`` (the running one's without
    starting another: every shipment asks)."""
    if isinstance(python, RunningPython):  # it runs sys.executable: this interpreter
        return host_tag()
    proc = python.run(
        ["-c", "import sys; print(sys.implementation.cache_tag)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return str(proc.stdout).strip()


def image_tag(lock: BundleLock) -> str | None:
    """The cache tag of the Python the lock was made for (the image's): from the first of
    its wheel tags that names a CPython (``cp311-…`` → ``cpython-311``); None if none does
    (a lock of pure wheels only, for any Python 3)."""
    for wheel_tag in (t for part in lock.platforms.values() for t in part.platform_tags):
        interpreter = wheel_tag.split("-", 1)[0]
        if interpreter.startswith("cp") and interpreter[2:].isdigit():
            return f"cpython-{interpreter[2:]}"
    return None


def env_layer(
    lock: BundleLock,
    wheel: Callable[[LockedWheel], bytes],
    cache: Cache,
    python: StagedPython | None = None,
    platform: str | None = None,
) -> EnvLayer:
    """The layer of ``lock``'s environment on ``platform`` (default: this host's) for
    ``python``, from ``cache`` or made now from the wheels' bytes (``wheel``: a wheel's,
    checked against its sha256); ``WheelRefused`` naming the wheel if one is unsafe or
    dishonest; ``BadInput`` if ``python`` is not the Python the lock was made for
    (``image_tag``); ``KeyError`` if the lock has no part for ``platform``."""
    python = python or running_python()
    tag, platform = cache_tag(python), platform or host_platform()
    part = lock.on(platform)
    if part is None:
        raise KeyError(platform)
    wanted = image_tag(lock)
    if wanted is not None and wanted != tag:
        raise BadInput(
            f"the bundle's lock is for the image's Python ({wanted}, from its wheel tags), "
            f"this Python is {tag}: a prebuilt environment holds .pyc for the tasks' Python "
            f"only; run with the image's Python (the runner image) or leave out --prebuilt"
        )
    key = sha256_digest(
        canonical_json(
            {
                "schema": INDEX_SCHEMA,
                "lock": lock.digest,
                "tag": tag,
                "platform": platform,
                "compressor": compress.IDENTITY,
            }
        )
    )
    known = cache.get_key(NAMESPACE, key)
    if known is not None:
        return EnvLayer(known, cache.blob_path(known).stat().st_size, tag, platform, lock.digest)
    blob = layer_blob(lock, {w.digest: wheel(w) for w in part.wheels}, python, tag, platform)
    digest = cache.put_blob(blob)
    cache.put_key(NAMESPACE, key, digest)
    return EnvLayer(digest, len(blob), tag, platform, lock.digest)


def layer_blob(
    lock: BundleLock, wheels: dict[str, bytes], python: StagedPython, tag: str, platform: str
) -> bytes:
    """The layer's bytes: ``LAYER.json``, then ``site/`` with the files of every wheel the
    lock has for ``platform`` (checked against their ``RECORD``) and their ``.pyc``."""
    part = lock.platforms[platform]
    plans = plan_all([(wheels[w.digest], w.filename, w.project) for w in part.wheels])
    entries, files = [], []
    for filename, plan in plans:
        try:
            for m in read_members(plan):
                entries.append(
                    Entry.file(f"site/{m.target}", m.content, 0o755 if m.executable else 0o644)
                )
                files.append([f"site/{m.target}", m.sha256, len(m.content), m.executable])
        except WheelRejected as exc:
            raise WheelRefused(f"wheel {filename}: {exc}; refused, no layer is made") from None
    pycs = compile_pycs(python, entries, lambda path: in_test_dir(path[5:]))
    files += [[e.path, hashlib.sha256(e.data).hexdigest(), len(e.data), False] for e in pycs]
    files.sort()
    index = {"schema": INDEX_SCHEMA, "lock": lock.digest, "tag": tag, "platform": platform,
             "wheels": [w.filename for w in part.wheels], "files": files}  # fmt: skip
    return make_layer([Entry.file(INDEX, canonical_json(index)), *entries, *pycs]).blob
