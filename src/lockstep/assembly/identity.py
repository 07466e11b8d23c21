"""The builder's identity: its format version and compressor, in every build id
(``builder_identity``, and so in the inputs it reads: ``read_inputs``), and the digest of
its own code, in every layer key (``builder_code_digest``).

Light on purpose: a no-op build reads all three before it loads the builder
(``assembly.uptodate``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from lockstep.assembly import compress
from lockstep.core.digests import canonical_json, sha256_digest
from lockstep.inputs.build_inputs import BuildInputs
from lockstep.inputs.build_inputs import read_platforms as read_declared
from lockstep.manifest import BUILDER, Stamp
from lockstep.project import Project

# The builder's own code: what every layer key covers besides the layer's inputs.
CODE_PACKAGES = ("assembly", "inputs", "core")
CODE_MODULES = ("manifest.py",)


def builder_identity() -> str:
    """What the manifest's ``inputs.builder`` says: format version and compressor."""
    return f"{BUILDER} {compress.IDENTITY}"


def read_inputs(
    project: Project, stamp: Stamp | None = None, platforms_: Sequence[str] | None = None
) -> dict[str, BuildInputs]:
    """The build inputs of ``project`` for this builder, read once, per platform (default:
    the project's platforms)."""
    names = tuple(platforms_) if platforms_ else None
    return read_declared(project, builder_identity(), stamp=stamp, platforms=names)


@functools.cache
def builder_code_digest() -> str:
    """Digest of the running builder's own code: part of every layer key (read once per
    process: the code a process runs does not change under it)."""
    import lockstep

    pkg = Path(lockstep.__file__).parent
    files = sorted(
        [
            *(f for name in CODE_PACKAGES for f in (pkg / name).rglob("*.py")),
            *(pkg / name for name in CODE_MODULES),
        ]
    )
    rows = [[f.relative_to(pkg).as_posix(), sha256_digest(f.read_bytes())] for f in files]
    return sha256_digest(canonical_json(rows))
