"""Where a build's values go on disk: the ``.tar`` archives, an OCI layout directory, and
the SBOM, provenance and build manifest files beside the archives (the registry is the
third sink: ``lockstep.release`` pushes the same values).

Each sink takes the ``BuildResult`` value and writes only what differs (a current
archive, a present blob or an unchanged document is left alone), every file under a
temporary name renamed into place. ``build_json`` is the ``lockstep build --json``
contract (docs/design.md §4.2): the values and where they were written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockstep.assembly import oci, ocidir, provenance, sbom
from lockstep.assembly.builder import BuildResult
from lockstep.core.atomic import write_bytes
from lockstep.core.settings import MANIFEST_PATH

# The build manifest beside the archives, under the name it has in the images: what
# LOCKSTEP_MANIFEST names for a scheduler, worker or runner run outside a container.
MANIFEST_NAME = Path(MANIFEST_PATH).name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Written:
    """Where the sinks put a build's values."""

    archives: Mapping[str, Path] = field(default_factory=dict)  # role -> <role>.tar
    layout: Path | None = None
    sboms: Mapping[str, Path] = field(default_factory=dict)  # role -> <role>.spdx.json
    provenance: Path | None = None
    manifest: Path | None = None  # <out>/manifest.json: the images' /etc/lockstep/manifest.json


def write_archives(result: BuildResult, out: Path, blob: oci.BlobSource) -> dict[str, Path]:
    """Each image as ``out/<role>.tar`` (loaded under its ref); role -> path."""
    paths = {role: out / f"{role}.tar" for role in result.images}
    oci.write_archives(
        [
            oci.ArchiveOut(paths[role], b.image, b.ref, (b.ref,))
            for role, b in result.images.items()
        ],
        blob,
    )
    return paths


def write_layout(result: BuildResult, root: Path, blob: oci.BlobSource) -> Path:
    """Both images into the OCI layout at ``root`` (only new blobs are written)."""
    added = ocidir.write_layout(root, {b.ref: b.image for b in result.images.values()}, blob)
    log.info("%s: %d new blob(s)", root, len(added))
    return root


def _write_if_changed(path: Path, data: bytes) -> Path:
    if not (path.exists() and path.read_bytes() == data):
        write_bytes(path, data)
    return path


def write_documents(result: BuildResult, out: Path) -> tuple[dict[str, Path], Path, Path]:
    """Each image's SBOM (``<role>.spdx.json``), the provenance statement and the build
    manifest (``manifest.json``, the bytes every image holds) in ``out``."""
    sboms = {
        role: _write_if_changed(out / sbom.file_name(role), b.sbom)
        for role, b in result.images.items()
    }
    statement = _write_if_changed(out / provenance.FILE_NAME, result.provenance)
    return sboms, statement, _write_if_changed(out / MANIFEST_NAME, result.manifest.to_json())


def write_outputs(
    result: BuildResult,
    out: Path,
    blob: oci.BlobSource,
    *,
    archives: bool = True,
    layout: Path | None = None,
) -> Written:
    """What ``lockstep build`` writes: the archives (unless not ``archives``) and the
    documents in ``out``, and with ``layout`` that OCI layout."""
    paths = write_archives(result, out, blob) if archives else {}
    layout_dir = write_layout(result, layout, blob) if layout is not None else None
    sboms, statement, manifest = write_documents(result, out)
    return Written(paths, layout_dir, sboms, statement, manifest)


def build_json(result: BuildResult, written: Written) -> dict[str, Any]:
    """The ``lockstep build --json`` contract (docs/design.md §4.2)."""
    out: dict[str, Any] = {
        "build_id": result.build_id,
        "images": {
            role: {
                "digest": b.digest,
                "config": b.config,
                "path": str(written.archives[role]) if role in written.archives else None,
                "ref": b.ref,
                **({"sbom": str(written.sboms[role])} if role in written.sboms else {}),
            }
            for role, b in sorted(result.images.items())
        },
    }
    if written.layout is not None:
        out["layout"] = str(written.layout)
    if written.provenance is not None:
        out["provenance"] = str(written.provenance)
    if written.manifest is not None:
        out["manifest"] = str(written.manifest)
    return out
