"""``lockstep self-check``: run inside an image, prove it is what its manifest says.

Imports every executor the manifest lists through the image's own entry-point
registry, checks the registry lists exactly those, and prints the manifest.
"""

from __future__ import annotations

from lockstep.core import entrypoints
from lockstep.core.errors import CheckFailed
from lockstep.manifest import BuildManifest, load_manifest


def self_check() -> BuildManifest:
    """The validated manifest; CheckFailed if the image's executors differ from it."""
    manifest = load_manifest()
    found = entrypoints.registered()
    if sorted(found) != list(manifest.executors):
        raise CheckFailed(
            f"this image registers executors {sorted(found)} but its manifest "
            f"lists {list(manifest.executors)}; rebuild the image"
        )
    errors = entrypoints.import_errors({name: found[name] for name in manifest.executors})
    for name, message in sorted(errors.items()):
        raise CheckFailed(f"executor {name!r} does not import in this image: {message}")
    return manifest
