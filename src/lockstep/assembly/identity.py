"""The builder's identity: its format version and compressor, in every build id
(``builder_identity``), and the digest of its own code, in every layer key
(``builder_code_digest``).

Light on purpose: a no-op build reads both before (and without) loading the builder
(``assembly.uptodate``).
"""

from __future__ import annotations

import functools
from pathlib import Path

from lockstep.assembly import compress
from lockstep.core.digests import canonical_json, sha256_digest
from lockstep.manifest import BUILDER

# The builder's own code: what every layer key covers besides the layer's inputs.
CODE_PACKAGES = ("assembly", "inputs", "core")
CODE_MODULES = ("manifest.py",)


def builder_identity() -> str:
    """What the manifest's ``inputs.builder`` says: format version and compressor."""
    return f"{BUILDER} {compress.IDENTITY}"


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
