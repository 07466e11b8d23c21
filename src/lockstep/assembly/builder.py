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

from lockstep.assembly import (
    app,
    base,
    compress,
    executor_check,
    layout,
    oci,
    ocidir,
    provenance,
    pycompile,
    sbom,
    thirdparty,
)
from lockstep.assembly.entries import Entry, make_layer
from lockstep.assembly.layercache import LayerCache, LayerRecord, builder_code_digest
from lockstep.assembly.stage import StagedPython, materialize
from lockstep.core import settings, vcs
from lockstep.core.atomic import write_bytes
from lockstep.core.digests import TreeFile, canonical_json, of_hex, sha256_digest
from lockstep.core.progress import Progress, quiet
from lockstep.core.store import Cache
from lockstep.core.wheels import in_test_dir
from lockstep.inputs import declared
from lockstep.inputs.debian import fetch
from lockstep.inputs.debian import lock as debian_lock
from lockstep.inputs.python import fetch as pyfetch
from lockstep.inputs.python import lock as pylock
from lockstep.inputs.python import pex, platform
from lockstep.inputs.python.lock import read_lock as read_python_lock
from lockstep.manifest import BUILDER, BuildManifest, Stamp
from lockstep.project import ROLES, Project

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltImage:
    role: str
    image: oci.Image
    path: Path | None  # its .tar archive, if one was written
    ref: str  # its name in the archive and the layout: ``lockstep-worker:0.1.0-<id>``
    sbom: Path | None = None  # <role>.spdx.json beside the archive

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
    layout_dir: Path | None = None  # the OCI layout directory, if one was written
    base: oci.Image | None = None  # the base-only image value (its digest: base.digest)
    created: str = layout.EPOCH  # the images' ``created``: the epoch, or the stamped commit's time
    provenance: Path | None = None  # provenance.intoto.json beside the archives

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
                    **({"sbom": str(b.sbom)} if b.sbom else {}),
                }
                for role, b in sorted(self.images.items())
            },
        }
        if self.layout_dir is not None:
            out["layout"] = str(self.layout_dir)
        if self.provenance is not None:
            out["provenance"] = str(self.provenance)
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


def commit_time(root: Path, commit: str) -> str:
    """The committer time of ``commit`` in the repository holding ``root`` (RFC 3339, UTC)."""
    return vcs.commit_time(vcs.open_repo(root, "--stamp"), commit)


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
                    StagedPython(self.layers.staged(base_record)), entries, in_test_dir
                )
                cached = self.layers.put(
                    "wheels",
                    key,
                    make_layer([*entries, *pycs]),
                    {"holds": group.describe(), **executor_check.importable(entries)},
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
            executor_check.check_executors(
                self.project, self.layers, staged_python, Path(tmp) / layout.SITE_DIR, third_party
            )
        memo_key = self.layers.key("app-pycs", base=base_record.digest)
        memo = self.pyc_memo(memo_key)
        pycs = pycompile.compile_pycs(staged_python, entries, memo=memo)
        current = {e.path for e in entries}  # this build's sources only are remembered
        self.layers.put_fact(
            "app-pycs",
            memo_key,
            {
                source: [sha, pyc.path, self.cache.put_blob(pyc.data)]
                for source, (sha, pyc) in memo.items()
                if source in current
            },
        )
        return self.layers.put("app", key, make_layer([*entries, *pycs]))

    def pyc_memo(self, key: str) -> pycompile.Memo:
        """The app's ``.pyc`` entries of the last build (with this base and builder), by
        source path: a one-line change compiles one file."""
        known = self.layers.get_fact("app-pycs", key)
        memo: pycompile.Memo = {}
        if not isinstance(known, dict):
            return memo
        for source, row in known.items():
            try:
                sha, path, digest = (str(x) for x in row)
            except (TypeError, ValueError):
                return {}  # not what this builder writes: compile everything
            data = self.cache.get_blob(digest)  # checked against its sha256
            if data is not None:
                memo[source] = (sha, Entry.file(path, data, 0o644))
        return memo

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
        history = [self.layer_history(name, record, manifest) for name, record in records.items()]
        created = commit_time(project.root, stamp_value.commit) if stamp_value else layout.EPOCH
        base_image = self.base_image(base_record)
        out = out_dir or project.root / "out"
        built = {
            role: BuiltImage(
                role,
                self.image(role, manifest, refs, history, created, base_image),
                out / f"{role}.tar" if archives else None,
                layout.archive_name(project.name, role, project.version, manifest.short_id),
            )
            for role in roles
        }
        outs = [oci.ArchiveOut(b.path, b.image, b.ref, (b.ref,)) for b in built.values() if b.path]
        oci.write_archives(outs, self.layers.blob)
        if layout_dir is not None:
            added = ocidir.write_layout(
                layout_dir, {b.ref: b.image for b in built.values()}, self.layers.blob
            )
            log.info("%s: %d new blob(s)", layout_dir, len(added))
        built = self.write_sboms(built, manifest, base_record, created, out)
        statement = self.provenance(built, manifest, base_record, created)
        provenance_path = out / provenance.FILE_NAME
        if not (provenance_path.exists() and provenance_path.read_bytes() == statement):
            write_bytes(provenance_path, statement)
        return BuildResult(
            manifest=manifest,
            images=built,
            layers=records,
            layout_dir=layout_dir,
            base=base_image,
            created=created,
            provenance=provenance_path,
        )

    def provenance(
        self,
        built: Mapping[str, BuiltImage],
        manifest: BuildManifest,
        base_record: LayerRecord,
        created: str,
    ) -> bytes:
        """The in-toto statement (SLSA v1 provenance) of the images in ``built``."""
        project = self.project
        inventory = self.sbom_inventory(base_record)
        facts = provenance.BuildFacts(
            project=project.name,
            version=project.version,
            source_url=project.source_url,
            builder_format=manifest.inputs["builder"],
            builder_code=builder_code_digest(),
            build_id=manifest.build_id,
            inputs=manifest.inputs,
            stamp=manifest.stamp.to_dict() if manifest.stamp else None,
            created=created,
            python_lock=project.python_lock.relative_to(project.root).as_posix(),
            debian_lock=project.debian_lock.relative_to(project.root).as_posix(),
        )
        deps = [
            provenance.Dependency(f"deb:{r['name']}", of_hex(r["sha256"]), r["url"])
            for r in inventory["debian"]
        ] + [
            provenance.Dependency(f"pypi:{r['name']}", of_hex(r["sha256"]), r["url"])
            for r in inventory["python"]
        ]
        subjects = [
            provenance.Subject(layout.image_name(project.name, role), b.digest)
            for role, b in built.items()
        ]
        byproducts = [
            provenance.Dependency(b.sbom.name, sha256_digest(b.sbom.read_bytes()))
            for b in built.values()
            if b.sbom
        ]
        return provenance.statement(facts, subjects, deps, byproducts)

    def sbom_inventory(self, base_record: LayerRecord) -> dict[str, Any]:
        """The packages of both locks with their licences (cached under its inputs' key)."""
        project = self.project
        key = self.layers.key(
            "sbom",
            base=base_record.digest,
            python_lock=declared.lock_digest(project.python_lock, pex.RELOCK),
            mirror=project.debian_mirror,
        )
        cached = self.cache.get_key("sbom", key)
        raw = self.cache.get_blob(cached) if cached else None
        if raw is not None:
            return dict(json.loads(raw))
        inventory = {
            "debian": sbom.debian_inventory(
                debian_lock.read_lock(project.debian_lock),
                project.debian_mirror or settings.DEFAULT_MIRROR,
                self.layers.staged(base_record),
            ),
            "python": sbom.python_inventory(
                wheels := read_python_lock(project.python_lock),
                pyfetch.fetch_wheels(wheels, self.cache, self.progress),
            ),
        }
        self.cache.put_key("sbom", key, self.cache.put_blob(canonical_json(inventory)))
        return inventory

    def write_sboms(
        self,
        built: Mapping[str, BuiltImage],
        manifest: BuildManifest,
        base_record: LayerRecord,
        created: str,
        out: Path,
    ) -> dict[str, BuiltImage]:
        """Each image's SPDX document as ``<role>.spdx.json`` in ``out`` (beside its archive)."""
        project = self.project
        inventory = self.sbom_inventory(base_record)
        documents = {}
        for role, b in built.items():
            facts = sbom.ImageFacts(
                project=project.name,
                version=project.version,
                role=role,
                image_name=layout.image_name(project.name, role),
                digest=b.digest,
                created=created,
                build_id=manifest.build_id,
                sources=manifest.inputs["sources"],
                license=project.license,
                source_url=project.source_url,
                commit=manifest.stamp.commit if manifest.stamp else None,
                dependencies=sbom.requirement_names(project.dependencies),
            )
            path = out / f"{role}.spdx.json"
            data = sbom.document(facts, inventory)
            if not (path.exists() and path.read_bytes() == data):
                write_bytes(path, data)
            documents[role] = BuiltImage(role, b.image, b.path, b.ref, path)
        return documents

    def layer_history(self, name: str, record: LayerRecord, manifest: BuildManifest) -> str:
        """The ``created_by`` of one layer: ``lockstep <name>: <what it holds>``, by the
        inputs it was made from (``lockstep inspect`` shows it)."""
        project = self.project
        inputs = manifest.inputs
        if name == "base":
            what = self._base_holds(inputs["debian_lock"], manifest.python)
        elif name.startswith("python:"):
            what = str(record.facts.get("holds", "locked wheels"))
        elif name == "app":
            what = f"{project.name} {project.version} (sources {inputs['sources']})"
        else:
            what = f"the build manifest /{layout.MANIFEST_FILE} (build {manifest.build_id})"
        return f"lockstep {name}: {what}"

    def _base_holds(self, lock_digest: str, python: str) -> str:
        count = len(debian_lock.read_lock(self.project.debian_lock).packages)
        lock_name = self.project.debian_lock.name
        return f"Debian bookworm, {count} packages of {lock_name} {lock_digest}, python {python}"

    def base_image(self, base_record: LayerRecord) -> oci.Image:
        """The base-only image value: the Debian base layer with the images' env and user,
        so ``org.opencontainers.image.base.digest`` names something anyone can recompute."""
        project = self.project
        lock_digest = declared.lock_digest(project.debian_lock, debian_lock.RELOCK)
        labels = layout.base_labels(
            project_name=project.name,
            base_digest=base_record.digest,
            debian_lock=lock_digest,
            created=layout.EPOCH,
        )
        env = {k: v for k, v in layout.image_env("base").items() if k != settings.ROLE}
        return oci.make_image(
            layers=[base_record.ref()],
            entrypoint=[f"/{layout.PYTHON}"],
            env=env,
            labels=labels,
            history=[
                f"lockstep base: {self._base_holds(lock_digest, str(base_record.facts['python']))}"
            ],
        )

    def image(
        self,
        role: str,
        manifest: BuildManifest,
        refs: Sequence[oci.LayerRef],
        history: Sequence[str] = (),
        created: str = layout.EPOCH,
        base_image: oci.Image | None = None,
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
            created=created,
            description=project.description,
            licenses=project.license,
            base_name=(
                layout.archive_name(project.name, layout.BASE_NAME, "bookworm", _short(base_image))
                if base_image
                else ""
            ),
            base_digest=base_image.digest if base_image else "",
        )
        return oci.make_image(
            layers=refs,
            entrypoint=spec.entrypoint,
            cmd=spec.cmd,
            env=layout.image_env(role),
            labels=labels,
            history=history,
            created=created,
        )


def _short(image: oci.Image) -> str:
    return image.digest.removeprefix("sha256:")[:12]


def write_complete_platform(project: Project, cache: Cache, progress: Progress = quiet) -> Path:
    """Write ``images/complete-platform.json`` from the image's own python (Debian lock)."""
    path = project.complete_platform
    write_bytes(path, Builder(project, cache, progress).complete_platform())
    return path
