"""The build: the input values → the runner and worker images, their SBOMs and provenance,
as values (orchestration only).

``read_inputs`` reads the declared inputs once into a ``BuildInputs``;
``Builder.build`` makes the layers (``layers``), the build manifest, each role's
image (``configs``) and the documents (``documents``) and returns them in a
``BuildResult``. It writes no output: the archives, an OCI layout and the
documents' files are sinks (``sinks``), a registry is another (``release``).
Runner and worker share every layer but the wheels of a role's own lock (the runner's
pyarrow), which sit above the app in that role's image only, and differ in their config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lockstep.assembly import compress, configs, documents, layout, oci
from lockstep.assembly.entries import Entry, make_layer
from lockstep.assembly.layercache import LayerRecord
from lockstep.assembly.layers import LayerMaker
from lockstep.core.progress import Progress, quiet
from lockstep.core.store import Cache
from lockstep.inputs.build_inputs import BuildInputs
from lockstep.inputs.build_inputs import read_inputs as read_declared
from lockstep.manifest import BUILDER, BuildManifest, Stamp
from lockstep.project import ROLES, Project


@dataclass(frozen=True)
class BuiltImage:
    role: str
    image: oci.Image
    ref: str  # its name in an archive and a layout: ``lockstep-worker:0.1.0-<id>``
    sbom: bytes  # its SPDX document

    @property
    def digest(self) -> str:
        return self.image.digest

    @property
    def config(self) -> str:
        return self.image.config_digest


@dataclass(frozen=True)
class BuildResult:
    """What one build made, as values: nothing here has been written anywhere."""

    manifest: BuildManifest
    images: Mapping[str, BuiltImage]
    # base, python:…, app, <role>:… (one role's own wheels), manifest: every blob is cached
    layers: Mapping[str, LayerRecord]
    base: oci.Image  # the base-only image value (its digest: base.digest)
    created: str  # the images' ``created``: the epoch, or the stamped commit's time
    provenance: bytes  # the in-toto statement of the images

    @property
    def build_id(self) -> str:
        return self.manifest.build_id


def builder_identity() -> str:
    """What the manifest's ``inputs.builder`` says: format version and compressor."""
    return f"{BUILDER} {compress.IDENTITY}"


def read_inputs(project: Project, stamp: Stamp | None = None) -> BuildInputs:
    """The build inputs of ``project`` for this builder, read once."""
    return read_declared(project, builder_identity(), stamp=stamp)


class Builder:
    """Builds images from input values, using and filling a content-addressed cache."""

    def __init__(self, cache: Cache, progress: Progress = quiet) -> None:
        self.cache = cache
        self.maker = LayerMaker(cache, progress)
        self.layers = self.maker.layers
        self.progress = progress

    def blob(self, digest: str) -> bytes:
        """A layer blob of a build, from the cache (what the sinks write)."""
        return self.layers.blob(digest)

    def build(self, inputs: BuildInputs, roles: Sequence[str] = ROLES) -> BuildResult:
        """The images of ``roles``, their SBOMs and the provenance, as values."""
        project = inputs.project
        base_record = self.maker.base_layer(inputs.debian, inputs.mirror)
        third_party = self.maker.python_layers(inputs.python, base_record)
        app_record = self.maker.app_layer(inputs, base_record, list(third_party.values()))
        manifest = BuildManifest(
            name=project.name,
            version=project.version,
            inputs=inputs.digests,
            executors=tuple(project.executors),
            python=str(base_record.facts["python"]),
            stamp=inputs.stamp,
        )
        top = make_layer(
            [
                Entry.file(layout.MANIFEST_FILE, manifest.to_json()),
                Entry.file(layout.PYTHON_LOCK_FILE, inputs.python.raw),
                Entry.file(layout.PLATFORM_FILE, inputs.complete_platform),
            ]
        )
        self.cache.put_blob(top.blob)
        shared = {"base": base_record, **third_party, "app": app_record}
        own = {role: self.maker.role_layers(inputs, role, base_record) for role in roles}
        top_record = LayerRecord(top.digest, top.diff_id, top.size)
        records = {**shared, **{n: r for layers in own.values() for n, r in layers.items()}}
        records["manifest"] = top_record
        created = inputs.created or layout.EPOCH
        base = configs.base_image(project.name, inputs.debian, base_record)
        images = {}
        for role in roles:
            stack = {**shared, **own[role], "manifest": top_record}
            history = [
                configs.layer_history(inputs, name, record, manifest)
                for name, record in stack.items()
            ]
            refs = [r.ref() for r in stack.values()]
            images[role] = configs.role_image(inputs, role, manifest, refs, history, created, base)
        digests = {role: image.digest for role, image in images.items()}
        found = documents.inventory(inputs, self.layers, base_record, self.progress)
        sboms = documents.sbom_documents(inputs, manifest, digests, created, found)
        statement = documents.provenance_statement(inputs, manifest, digests, sboms, created, found)
        built = {
            role: BuiltImage(
                role,
                image,
                layout.archive_name(project.name, role, project.version, manifest.short_id),
                sboms[role],
            )
            for role, image in images.items()
        }
        return BuildResult(manifest, built, records, base, created, statement)
