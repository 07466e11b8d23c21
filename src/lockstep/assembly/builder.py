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

from lockstep.assembly import app, base, layout, oci, provenance, pycompile, sbom, thirdparty
from lockstep.assembly.entries import Entry, make_layer
from lockstep.assembly.layercache import LayerCache, LayerRecord, builder_code_digest
from lockstep.assembly.stage import StagedPython, materialize
from lockstep.core import registry, settings, vcs
from lockstep.core.atomic import write_bytes
from lockstep.core.digests import TreeFile, canonical_json, of_hex, sha256_digest
from lockstep.core.errors import BadInput
from lockstep.core.progress import Progress, quiet
from lockstep.core.store import Cache
from lockstep.inputs import declared
from lockstep.inputs.debian import fetch
from lockstep.inputs.debian import lock as debian_lock
from lockstep.inputs.python import pex, platform
from lockstep.inputs.python.lock import read_lock as read_python_lock
from lockstep.manifest import BuildManifest, Stamp
from lockstep.project import ROLES, Project

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltImage:
    role: str
    image: oci.Image
    path: Path
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
    layers: Mapping[str, LayerRecord]  # base, python, app, manifest: every blob is in the cache
    base: oci.Image | None = None  # the base-only image value (its digest: base.digest)
    created: str = layout.EPOCH  # the images' ``created``: the epoch, or the stamped commit's time
    provenance: Path | None = None  # provenance.intoto.json beside the archives

    @property
    def build_id(self) -> str:
        return self.manifest.build_id

    def to_json(self) -> dict[str, Any]:
        """The ``lockstep build --json`` contract (docs/design.md)."""
        extra = {"provenance": str(self.provenance)} if self.provenance else {}
        return {
            **extra,
            "build_id": self.build_id,
            "images": {
                role: {
                    "digest": b.digest,
                    "config": b.config,
                    "path": str(b.path),
                    **({"sbom": str(b.sbom)} if b.sbom else {}),
                }
                for role, b in sorted(self.images.items())
            },
        }


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

    def python_layer(self, base_record: LayerRecord) -> LayerRecord:
        lock_path = self.project.python_lock
        platform_path = self.project.complete_platform
        key = self.layers.key(
            "python",
            base=base_record.digest,
            python_lock=declared.lock_digest(lock_path, pex.RELOCK),
            platform=declared.lock_digest(platform_path, pex.RELOCK),
        )
        cached = self.layers.get("python", key)
        if cached:
            return cached
        self.progress("installing the locked Python packages (pex)")
        entries = thirdparty.install_entries(
            lock_path, platform_path, self.cache.root, self.progress
        )
        pycs = pycompile.compile_pycs(StagedPython(self.layers.staged(base_record)), entries)
        return self.layers.put("python", key, make_layer([*entries, *pycs]))

    def app_layer(
        self,
        base_record: LayerRecord,
        third_party: LayerRecord,
        files: Sequence[TreeFile],
        sources_digest: str,
    ) -> LayerRecord:
        key = self.layers.key(
            "app", base=base_record.digest, python=third_party.digest, sources=sources_digest
        )
        cached = self.layers.get("app", key)
        if cached:
            return cached
        entries = app.app_entries(self.project, files)
        staged_python = StagedPython(self.layers.staged(base_record))
        with tempfile.TemporaryDirectory(prefix="lockstep-app-") as tmp:
            materialize(entries, Path(tmp))
            self.check_executors(staged_python, Path(tmp), self.layers.staged(third_party))
        pycs = pycompile.compile_pycs(staged_python, entries)
        return self.layers.put("app", key, make_layer([*entries, *pycs]))

    def check_executors(
        self, staged_python: StagedPython, app_root: Path, third_party_root: Path
    ) -> None:
        """Import every registered executor from the image's own files, with its python
        (``lockstep.core.registry`` run as a script)."""
        site = layout.SITE_DIR
        proc = staged_python.run(
            ["-P", registry.__file__, str(app_root / site), str(third_party_root / site)],
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
        self, roles: Sequence[str] = ROLES, out_dir: Path | None = None, stamp: bool | Stamp = False
    ) -> BuildResult:
        """Build ``roles`` into ``out_dir``. ``stamp``: False for none, True for the git
        facts of the work tree, or an exact ``Stamp`` (a release names its future tag)."""
        project = self.project
        files = declared.load(project.root, project.sources)
        inputs = declared.build_inputs(project, files)
        stamp_value = (
            stamp if isinstance(stamp, Stamp) else (git_stamp(project.root) if stamp else None)
        )
        base_record = self.base_layer()
        third_party = self.python_layer(base_record)
        app_record = self.app_layer(base_record, third_party, files, inputs["sources"])
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
            "python": third_party,
            "app": app_record,
            "manifest": LayerRecord(top.digest, top.diff_id, top.size),
        }
        refs = [r.ref() for r in records.values()]
        history = [self.layer_history(name, manifest.inputs, manifest.build_id) for name in records]
        created = commit_time(project.root, stamp_value.commit) if stamp_value else layout.EPOCH
        base_image = self.base_image(base_record)
        out = out_dir or project.root / "out"
        built = {
            role: BuiltImage(
                role,
                self.image(role, manifest, refs, history, created, base_image),
                out / f"{role}.tar",
            )
            for role in roles
        }
        outs = []
        for role, b in built.items():
            name = layout.archive_name(project.name, role, project.version, manifest.short_id)
            outs.append(oci.ArchiveOut(b.path, b.image, name, (name,)))
        oci.write_archives(outs, self.layers.blob)
        built = self.write_sboms(built, manifest, base_record, created)
        statement = self.provenance(built, manifest, base_record, created)
        provenance_path = out / provenance.FILE_NAME
        if not (provenance_path.exists() and provenance_path.read_bytes() == statement):
            write_bytes(provenance_path, statement)
        return BuildResult(
            manifest=manifest,
            images=built,
            layers=records,
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
                read_python_lock(project.python_lock), pex.pex_root(self.cache.root)
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
    ) -> dict[str, BuiltImage]:
        """Each image's SPDX document as ``<role>.spdx.json`` beside its archive."""
        project = self.project
        inventory = self.sbom_inventory(base_record)
        out = {}
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
            path = b.path.parent / f"{role}.spdx.json"
            data = sbom.document(facts, inventory)
            if not (path.exists() and path.read_bytes() == data):
                write_bytes(path, data)
            out[role] = BuiltImage(role, b.image, b.path, path)
        return out

    def layer_history(self, name: str, inputs: Mapping[str, str], build_id: str = "") -> str:
        """The ``created_by`` of one layer: what it is, by the inputs it was made from."""
        project = self.project
        if name == "base":
            count = len(debian_lock.read_lock(project.debian_lock).packages)
            return (
                f"lockstep: Debian bookworm base, {count} packages of "
                f"{project.debian_lock.name} {inputs['debian_lock']}"
            )
        if name == "python":
            count = len(read_python_lock(project.python_lock))
            return (
                f"lockstep: {count} locked wheels of {project.python_lock.name} "
                f"{inputs['python_lock']} (pex venv --layout flat)"
            )
        if name == "app":
            return (
                f"lockstep: the app, {project.name} {project.version} (sources {inputs['sources']})"
            )
        if name == "manifest":
            return f"lockstep: the build manifest /{layout.MANIFEST_FILE} (build {build_id})"
        return f"lockstep: layer {name}"

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
            history=[self.layer_history("base", {"debian_lock": lock_digest})],
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
