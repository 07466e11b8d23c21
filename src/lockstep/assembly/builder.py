"""The build: declared inputs → the runner and worker images (orchestration only).

Layers, bottom to top: the Debian base; the locked third-party packages; the
app; the build manifest. Each of the first three is cached under a key made
of what it depends on (``layercache``), so a change to ``src/`` rewrites only
the app and manifest layers. Runner and worker share every layer and differ
only in their config. Nothing is written to the output directory until both
images are complete, and then only by rename (``oci.write_archives``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.assembly import app, base, compress, layout, oci, ocidir, pycompile, thirdparty
from lockstep.assembly.entries import Entry, make_layer
from lockstep.assembly.layercache import LayerCache, LayerRecord
from lockstep.assembly.stage import StagedPython, materialize
from lockstep.core import registry, vcs
from lockstep.core.atomic import write_bytes
from lockstep.core.digests import TreeFile
from lockstep.core.errors import BadInput
from lockstep.core.progress import Progress, quiet
from lockstep.core.store import Cache
from lockstep.inputs import declared
from lockstep.inputs.debian import fetch
from lockstep.inputs.debian import lock as debian_lock
from lockstep.inputs.python import fetch as pyfetch
from lockstep.inputs.python import lock as pylock
from lockstep.inputs.python import pex, platform
from lockstep.manifest import BUILDER, BuildManifest, Stamp
from lockstep.project import ROLES, Project

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltImage:
    role: str
    image: oci.Image
    path: Path | None  # its .tar archive, if one was written
    ref: str  # its name in the archive and the layout: ``lockstep-worker:0.1.0-<id>``

    @property
    def digest(self) -> str:
        return self.image.digest

    @property
    def config(self) -> str:
        return self.image.config_digest


@dataclass(frozen=True)
class BuildResult:
    manifest: BuildManifest
    images: Mapping[str, BuiltImage]
    layers: Mapping[str, LayerRecord]  # base, python:…, app, manifest: every blob is cached
    layout: Path | None = None  # the OCI layout directory, if one was written

    @property
    def build_id(self) -> str:
        return self.manifest.build_id

    def to_json(self) -> dict[str, Any]:
        """The ``lockstep build --json`` contract (docs/design.md §4.2)."""
        out: dict[str, Any] = {
            "build_id": self.build_id,
            "images": {
                role: {
                    "digest": b.digest,
                    "config": b.config,
                    "path": str(b.path) if b.path else None,
                    "ref": b.ref,
                }
                for role, b in sorted(self.images.items())
            },
        }
        if self.layout is not None:
            out["layout"] = str(self.layout)
        return out


def builder_identity() -> str:
    """What the manifest's ``inputs.builder`` says: format version and compressor."""
    return f"{BUILDER} {compress.IDENTITY}"


def git_stamp(root: Path) -> Stamp:
    """Commit, newest tag at HEAD and dirty flag of the work tree holding ``root``."""
    repo = vcs.open_repo(root, "--stamp")
    commit = vcs.head_commit(repo)
    tags = vcs.tags_at(repo, commit)
    return Stamp(commit=commit, tag=tags[-1] if tags else None, dirty=vcs.is_dirty(repo))


def python_version(staged_python: StagedPython) -> str:
    """The image interpreter's ``platform.python_version()`` (what the manifest records)."""
    staged_python.check()
    proc = staged_python.run(
        ["-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return str(proc.stdout).strip()


class Builder:
    """Builds one project's images, using and filling a content-addressed cache."""

    def __init__(self, project: Project, cache: Cache, progress: Progress = quiet) -> None:
        self.project = project
        self.cache = cache
        self.layers = LayerCache(cache)
        self.progress = progress

    # -- the layers ------------------------------------------------------------------

    def base_layer(self) -> LayerRecord:
        lock_path = self.project.debian_lock
        key = self.layers.key(
            "base", debian_lock=declared.lock_digest(lock_path, debian_lock.RELOCK)
        )
        cached = self.layers.get("base", key)
        if cached:
            return cached
        lock = debian_lock.read_lock(lock_path)
        debs = fetch.fetch(lock, self.project.mirror(), self.cache, self.progress)
        entries = base.base_entries(lock, debs)
        self.progress("compiling the standard library with the image's python")
        with tempfile.TemporaryDirectory(prefix="lockstep-base-") as tmp:
            materialize(entries, Path(tmp))
            staged_python = StagedPython(Path(tmp))
            pycs = pycompile.compile_pycs(staged_python, entries)
            version = python_version(staged_python)
        return self.layers.put("base", key, make_layer([*entries, *pycs]), {"python": version})

    def wheel_plan(self) -> list[thirdparty.WheelGroup]:
        """The third-party layers of the Python lock (remembered per lock digest, so a no-op
        build neither reads nor hashes a wheel)."""
        lock_path = self.project.python_lock
        wheels = pylock.read_lock(lock_path)
        key = self.layers.key("wheel-plan", python_lock=declared.lock_digest(lock_path, pex.RELOCK))
        by_sha = {w.sha256: w for w in wheels}
        known = self.layers.get_fact("wheel-plan", key)
        if isinstance(known, list):
            return [
                thirdparty.WheelGroup(str(g["name"]), tuple(by_sha[h] for h in g["wheels"]))
                for g in known
            ]
        data = pyfetch.fetch_wheels(wheels, self.cache, self.progress)
        plan = thirdparty.plan_layers(wheels, {h: len(b) for h, b in data.items()})
        self.layers.put_fact(
            "wheel-plan",
            key,
            [{"name": g.name, "wheels": [w.sha256 for w in g.wheels]} for g in plan],
        )
        return plan

    def python_layers(self, base_record: LayerRecord) -> dict[str, LayerRecord]:
        """One layer per ``WheelGroup`` (``python:<name>``), each cached under its wheels'
        sha256s and the base it was compiled with: a changed wheel remakes only its layer."""
        out: dict[str, LayerRecord] = {}
        for group in self.wheel_plan():
            key = self.layers.key(
                "wheels", base=base_record.digest, wheels=",".join(w.sha256 for w in group.wheels)
            )
            cached = self.layers.get("wheels", key)
            if cached is None:
                self.progress(f"installing {group.describe()}")
                data = pyfetch.fetch_wheels(group.wheels, self.cache, self.progress)
                entries = [
                    e for w in group.wheels for e in thirdparty.wheel_entries(w, data[w.sha256])
                ]
                pycs = pycompile.compile_pycs(
                    StagedPython(self.layers.staged(base_record)), entries
                )
                cached = self.layers.put(
                    "wheels", key, make_layer([*entries, *pycs]), {"holds": group.describe()}
                )
            out[f"python:{group.name}"] = cached
        return out

    def app_layer(
        self,
        base_record: LayerRecord,
        third_party: Sequence[LayerRecord],
        files: Sequence[TreeFile],
        sources_digest: str,
    ) -> LayerRecord:
        key = self.layers.key(
            "app",
            base=base_record.digest,
            python=",".join(r.digest for r in third_party),
            sources=sources_digest,
        )
        cached = self.layers.get("app", key)
        if cached:
            return cached
        entries = app.app_entries(self.project, files)
        staged_python = StagedPython(self.layers.staged(base_record))
        with tempfile.TemporaryDirectory(prefix="lockstep-app-") as tmp:
            materialize(entries, Path(tmp))
            sites = [self.layers.staged(r) / layout.SITE_DIR for r in third_party]
            self.check_executors(staged_python, [Path(tmp) / layout.SITE_DIR, *sites])
        pycs = pycompile.compile_pycs(staged_python, entries)
        return self.layers.put("app", key, make_layer([*entries, *pycs]))

    def check_executors(self, staged_python: StagedPython, sites: Sequence[Path]) -> None:
        """Import every registered executor from the image's own files (``sites``: the app's
        site directory first, then the third-party layers'), with its python
        (``lockstep.core.registry`` run as a script)."""
        proc = staged_python.run(
            ["-P", registry.__file__, *map(str, sites)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise BadInput(
                f"executor check failed to run in the image's python: "
                f"{proc.stderr.strip().splitlines()[-1:] or proc.returncode}"
            )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        expected = dict(self.project.executors)
        if result["found"] != expected:
            raise BadInput(
                f"{self.project.pyproject}: the image's executor registry "
                f"{sorted(result['found'])} differs from the declared "
                f"{sorted(expected)}"
            )
        for name, message in sorted(result["errors"].items()):
            raise BadInput(
                f"{self.project.pyproject}: executor {name!r} does not import from "
                f"the image's own files ({message}); fix the module or remove the "
                "entry point"
            )

    def complete_platform(self) -> bytes:
        """The platform file of the image's python, asked in the cached base layer."""
        staged = StagedPython(self.layers.staged(self.base_layer()))
        self.progress("inspecting the image's python for its markers and wheel tags")
        staged.check()
        return platform.complete_platform(staged.argv(), staged.env(), self.cache.root)

    # -- the build -------------------------------------------------------------------

    def build(
        self,
        roles: Sequence[str] = ROLES,
        out_dir: Path | None = None,
        stamp: bool | Stamp = False,
        *,
        layout_dir: Path | None = None,
        archives: bool = True,
    ) -> BuildResult:
        """Build ``roles`` into ``out_dir`` (``<role>.tar``; none if not ``archives``) and,
        with ``layout_dir``, into that OCI layout (only new blobs are written). ``stamp``:
        False for none, True for the git facts of the work tree, or an exact ``Stamp`` (a
        release names its future tag)."""
        project = self.project
        files = declared.load(project.root, project.sources)
        inputs = declared.build_inputs(project, files, builder_identity())
        stamp_value = (
            stamp if isinstance(stamp, Stamp) else (git_stamp(project.root) if stamp else None)
        )
        base_record = self.base_layer()
        third_party = self.python_layers(base_record)
        app_record = self.app_layer(
            base_record, list(third_party.values()), files, inputs["sources"]
        )
        manifest = BuildManifest(
            name=project.name,
            version=project.version,
            inputs=inputs,
            executors=tuple(project.executors),
            python=str(base_record.facts["python"]),
            stamp=stamp_value,
        )
        top = make_layer([Entry.file(layout.MANIFEST_FILE, manifest.to_json())])
        self.cache.put_blob(top.blob)
        records = {
            "base": base_record,
            **third_party,
            "app": app_record,
            "manifest": LayerRecord(top.digest, top.diff_id, top.size),
        }
        refs = [r.ref() for r in records.values()]
        created_by = [self.describe_layer(name, r, manifest) for name, r in records.items()]
        out = out_dir or project.root / "out"
        ref_name = layout.ref_name(project.version, manifest.short_id)
        built = {
            role: BuiltImage(
                role,
                self.image(role, manifest, refs, created_by),
                out / f"{role}.tar" if archives else None,
                f"{layout.image_name(project.name, role)}:{ref_name}",
            )
            for role in roles
        }
        outs = [
            oci.ArchiveOut(b.path, b.image, ref_name, (b.ref,))
            for b in built.values()
            if b.path is not None
        ]
        oci.write_archives(outs, self.layers.blob)
        if layout_dir is not None:
            added = ocidir.write_layout(
                layout_dir, {b.ref: b.image for b in built.values()}, self.layers.blob
            )
            log.info("%s: %d new blob(s)", layout_dir, len(added))
        return BuildResult(manifest=manifest, images=built, layers=records, layout=layout_dir)

    def describe_layer(self, name: str, record: LayerRecord, manifest: BuildManifest) -> str:
        """One layer's history entry: ``lockstep <name>: <what it holds>``."""
        if name == "base":
            count = len(debian_lock.read_lock(self.project.debian_lock).packages)
            what = f"Debian bookworm, {count} locked packages, python {manifest.python}"
        elif name.startswith("python:"):
            what = str(record.facts.get("holds", "locked wheels"))
        elif name == "app":
            what = f"{self.project.name} {self.project.version}, its sources and entry points"
        else:
            what = f"the build manifest {layout.MANIFEST_FILE}, build {manifest.short_id}"
        return f"lockstep {name}: {what}"

    def image(
        self,
        role: str,
        manifest: BuildManifest,
        refs: Sequence[oci.LayerRef],
        created_by: Sequence[str] = (),
    ) -> oci.Image:
        """One role's image: the shared layers with its own config."""
        project = self.project
        spec = project.images[role]
        labels = layout.labels(
            project_name=project.name,
            version=project.version,
            source_url=project.source_url,
            role=role,
            build_id=manifest.build_id,
            executors=manifest.executors,
            revision=manifest.stamp.commit if manifest.stamp else None,
        )
        return oci.make_image(
            layers=refs,
            entrypoint=spec.entrypoint,
            cmd=spec.cmd,
            env=layout.image_env(role),
            labels=labels,
            created_by=created_by,
        )


def write_complete_platform(project: Project, cache: Cache, progress: Progress = quiet) -> Path:
    """Write ``images/complete-platform.json`` from the image's own python (Debian lock)."""
    path = project.complete_platform
    write_bytes(path, Builder(project, cache, progress).complete_platform())
    return path
