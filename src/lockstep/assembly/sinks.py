"""Where a build's values go on disk: the ``.tar`` archives, an OCI layout directory, and
the SBOM, provenance and build manifest files beside the archives (the registry is the
third sink: ``lockstep.release`` pushes the same values).

Each sink takes the ``PlatformsResult`` value (one ``BuildResult`` per platform) and
writes only what differs (a current
archive, a present blob or an unchanged document is left alone), every file under a
temporary name renamed into place. ``build_json`` is the ``lockstep build --json``
contract (docs/design.md §4.2): the values and where they were written. In a project of
several platforms every file name says its platform (``worker-arm64.tar``,
``worker-arm64.spdx.json``, ``provenance-arm64.intoto.json``) and a layout names each
role's image index.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockstep.assembly import oci, ocidir, provenance, sbom
from lockstep.assembly.builder import BuildResult, PlatformsResult, compiler_platform
from lockstep.core.atomic import write_if_changed
from lockstep.core.settings import MANIFEST_PATH

# The build manifest beside the archives, under the name it has in the images: what
# LOCKSTEP_MANIFEST names for a scheduler, worker or runner run outside a container.
MANIFEST_NAME = Path(MANIFEST_PATH).name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Written:
    """Where the sinks put a build's values."""

    # platform -> role -> path; platform -> the provenance
    archives: Mapping[str, Mapping[str, Path]] = field(default_factory=dict)
    layout: Path | None = None
    sboms: Mapping[str, Mapping[str, Path]] = field(default_factory=dict)
    provenance: Mapping[str, Path] = field(default_factory=dict)
    # <out>/manifest.json: the /etc/lockstep/manifest.json of the host's platform's images
    # (else the build's first platform's)
    manifest: Path | None = None

    def files(self) -> list[Path]:
        """Every file these outputs are: the archives, the documents, the manifest and
        every file of the layout (its index, marker and blobs)."""
        found = [
            *(p for by_role in self.archives.values() for p in by_role.values()),
            *(p for by_role in self.sboms.values() for p in by_role.values()),
            *self.provenance.values(),
            *([self.manifest] if self.manifest is not None else []),
        ]
        if self.layout is not None:
            found += [Path(d) / f for d, _, names in os.walk(self.layout) for f in names]
        return sorted(set(found))


def write_archives(
    result: BuildResult,
    out: Path,
    copy: oci.BlobCopy,
    names: Mapping[str, str] | None = None,
    changed: Collection[Path] = frozenset(),
) -> dict[str, Path]:
    """Each image as ``out/<role><suffix>.tar`` (or ``names[role]``), loaded under its ref
    (written unless current and not in ``changed``); role -> path."""
    names = names or {role: f"{role}{b.suffix}.tar" for role, b in result.images.items()}
    paths = {role: out / names[role] for role in result.images}
    oci.write_archives(
        [
            oci.ArchiveOut(paths[role], b.image, b.ref, (b.ref,))
            for role, b in result.images.items()
        ],
        copy,
        changed,
    )
    return paths


def write_layout(
    result: PlatformsResult,
    root: Path,
    copy: oci.BlobCopy,
    roles: Sequence[str] | None = None,
    changed: Collection[Path] = frozenset(),
) -> Path:
    """The images of ``roles`` (default: all) into the OCI layout at ``root`` (only new blobs
    are written, and those in ``changed``): each image by its ref in a build of one
    platform, else each role's image index by its ref."""
    one = result.single
    named: dict[str, oci.Image | oci.ImageIndex] = (
        {b.ref: b.image for role, b in one.images.items() if roles is None or role in roles}
        if one is not None
        else {
            result.refs[role]: index
            for role, index in result.indexes.items()
            if roles is None or role in roles
        }
    )
    added = ocidir.write_layout(root, named, copy, changed)
    log.info("%s: %d new blob(s)", root, len(added))
    return root


def write_documents(result: BuildResult, out: Path) -> tuple[dict[str, Path], Path]:
    """Each image's SBOM (``<role><suffix>.spdx.json``) and the provenance statement in ``out``."""
    sboms = {
        role: write_if_changed(out / sbom.file_name(role + b.suffix), b.sbom)
        for role, b in result.images.items()
    }
    return sboms, write_if_changed(out / provenance.file_name(result.suffix), result.provenance)


def write_manifest(result: PlatformsResult, out: Path) -> Path:
    """The build manifest as ``out/manifest.json``: the bytes the images of the host's
    platform hold (else of the build's first platform), for a process run outside a
    container on this machine; every platform's names the same build id."""
    here = result.results[compiler_platform(list(result.results))]
    return write_if_changed(out / MANIFEST_NAME, here.manifest.to_json())


def write_outputs(
    result: PlatformsResult,
    out: Path,
    copy: oci.BlobCopy,
    *,
    archives: bool = True,
    layout: Path | None = None,
    names: Mapping[str, str] | None = None,
    changed: Collection[Path] = frozenset(),
) -> Written:
    """What ``lockstep build`` writes: each platform's archives (unless not ``archives``;
    ``names``: role -> file name, for a build of one platform) and documents in ``out``,
    and with ``layout`` that OCI layout. A file in ``changed`` (it changed since a build
    wrote it: ``uptodate.changed``) is written again, however current it looks."""
    paths = {
        p: write_archives(r, out, copy, names, changed) if archives else {}
        for p, r in result.results.items()
    }
    layout_dir = write_layout(result, layout, copy, changed=changed) if layout else None
    documents = {p: write_documents(r, out) for p, r in result.results.items()}
    return Written(
        paths,
        layout_dir,
        {p: d[0] for p, d in documents.items()},
        {p: d[1] for p, d in documents.items()},
        write_manifest(result, out),
    )


def _images_json(result: BuildResult, written: Written) -> dict[str, Any]:
    paths, sboms = written.archives.get(result.platform, {}), written.sboms.get(result.platform, {})
    return {
        role: {
            "digest": b.digest,
            "config": b.config,
            "path": str(paths[role]) if role in paths else None,
            "ref": b.ref,
            **({"sbom": str(sboms[role])} if role in sboms else {}),
        }
        for role, b in sorted(result.images.items())
    }


def build_json(result: PlatformsResult, written: Written) -> dict[str, Any]:
    """The ``lockstep build --json`` contract (docs/design.md §4.2): a build of one platform
    names its images (and its ``platform``); a build of several names each role's index
    (``digest``, ``ref``) and, under ``platforms``, each platform's images."""
    out: dict[str, Any] = {"build_id": result.build_id}
    one = result.single
    if one is not None:
        out["platform"] = one.platform
        out["images"] = _images_json(one, written)
        if one.platform in written.provenance:
            out["provenance"] = str(written.provenance[one.platform])
    else:
        out["images"] = {
            role: {"digest": index.digest, "ref": result.refs[role]}
            for role, index in sorted(result.indexes.items())
        }
        out["platforms"] = {
            p: {
                "images": _images_json(r, written),
                **({"provenance": str(written.provenance[p])} if p in written.provenance else {}),
            }
            for p, r in result.results.items()
        }
    if written.layout is not None:
        out["layout"] = str(written.layout)
    if written.manifest is not None:
        out["manifest"] = str(written.manifest)
    return out
