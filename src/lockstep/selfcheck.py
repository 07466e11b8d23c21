"""``lockstep self-check``: run inside an image, prove it is what its manifest says.

Imports every executor the manifest lists through the image's own entry-point
registry, checks the registry lists exactly those, and prints the manifest.
"""

from __future__ import annotations

import importlib
from importlib import metadata

from lockstep.errors import CheckFailed
from lockstep.manifest import BuildManifest, load_manifest
from lockstep.project import EXECUTOR_GROUP


def self_check() -> BuildManifest:
    """The validated manifest; CheckFailed if the image's executors differ from it."""
    manifest = load_manifest()
    registry = {e.name: e.value for e in metadata.entry_points(group=EXECUTOR_GROUP)}
    if sorted(registry) != list(manifest.executors):
        raise CheckFailed(
            f"this image registers executors {sorted(registry)} but its manifest "
            f"lists {list(manifest.executors)}; rebuild the image"
        )
    for name in manifest.executors:
        module, _, attr = registry[name].partition(":")
        try:
            obj: object = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:
            raise CheckFailed(
                f"executor {name!r} ({registry[name]}) does not import in this "
                f"image: {type(exc).__name__}: {exc}"
            ) from exc
    return manifest
