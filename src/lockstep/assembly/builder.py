"""The build: the input values → the runner and worker images of every platform, their
SBOMs and provenance, as values (orchestration only).

``read_platforms`` reads the declared inputs once into one ``BuildInputs`` per
platform; ``Builder.build_platforms`` makes the layers (``layers``), each
platform's build manifest, each role's image (``configs``) and the documents
(``documents``) and returns them in a ``PlatformsResult`` (one ``BuildResult`` per
platform, and each role's image index). It writes no output: the archives, an
OCI layout and the documents' files are sinks (``sinks``), a registry is another
(``release``). Runner and worker share every layer but the wheels of a role's own
lock (the runner's pyarrow), which sit above the app in that role's image only, and
differ in their config; the platforms of a build share one build id and every pure
layer (the app, the pure wheels: compiled once, by the ``Compiler``), which
``shared_layers`` asserts by digest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any

from lockstep.assembly import configs, documents, layout, oci, pycompile
from lockstep.assembly.entries import Entry, make_layer
from lockstep.assembly.identity import builder_identity
from lockstep.assembly.layercache import LayerRecord
from lockstep.assembly.layers import Compiler, CompilerToBe, LayerMaker, python_deb
from lockstep.assembly.schedule import Schedule, done
from lockstep.core import platforms
from lockstep.core.errors import CheckFailed
from lockstep.core.progress import Progress, quiet
from lockstep.core.store import Cache
from lockstep.inputs.build_inputs import BuildInputs, DebianInput
from lockstep.inputs.build_inputs import read_platforms as read_declared
from lockstep.inputs.python.lock import LockedWheel
from lockstep.manifest import BuildManifest, Stamp
from lockstep.project import ROLES, Project


@dataclass(frozen=True)
class BuiltImage:
    role: str
    image: oci.Image
    ref: str  # its name in an archive and a layout: ``lockstep-worker:0.1.0-<id>``
    sbom: bytes  # its SPDX document
    suffix: str = ""  # "-<arch>" in a project of several platforms: its files' names say it

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
    suffix: str = ""  # "-<arch>" in a project of several platforms (file names say it)

    @property
    def build_id(self) -> str:
        return self.manifest.build_id

    @property
    def platform(self) -> str:
        return self.manifest.platform


@dataclass(frozen=True)
class PlatformsResult:
    """A build of one or more platforms: each platform's result (in the build's order) and,
    for each role, the image index over them."""

    results: Mapping[str, BuildResult]  # platform name -> its images, layers, documents
    indexes: Mapping[str, oci.ImageIndex]  # role -> one manifest per platform
    refs: Mapping[str, str]  # role -> the index's name: ``lockstep-worker:0.1.0-<id>``

    @property
    def build_id(self) -> str:
        return next(iter(self.results.values())).build_id

    @property
    def single(self) -> BuildResult | None:
        """The one platform's result of a single-platform build, else None."""
        return next(iter(self.results.values())) if len(self.results) == 1 else None


def read_inputs(
    project: Project, stamp: Stamp | None = None, platforms_: Sequence[str] | None = None
) -> dict[str, BuildInputs]:
    """The build inputs of ``project`` for this builder, read once, per platform (default:
    the project's platforms)."""
    names = tuple(platforms_) if platforms_ else None
    return read_declared(project, builder_identity(), stamp=stamp, platforms=names)


def compiler_platform(names: Sequence[str]) -> str:
    """The platform whose python compiles a build's ``.pyc``: the host's if the build has
    it (native speed), else the build's first (under emulation)."""
    here = platforms.host()
    return here.name if here is not None and here.name in names else names[0]


def wanted_wheels(by_platform: Mapping[str, BuildInputs]) -> list[LockedWheel]:
    """Every wheel a build of ``by_platform`` reads (each platform's shared lock, then each
    role's own), once each, in that order: what the build downloads first."""
    wheels = {
        w.sha256: w
        for i in by_platform.values()
        for w in [*i.python.wheels, *(w for own in i.roles.values() for w in own.wheels)]
    }
    return list(wheels.values())


def shared_layers(results: Mapping[str, BuildResult]) -> None:
    """CheckFailed unless every platform has the same pure layers (the app and each pure
    wheel group: same names, same digests), as one build promises."""
    pure = {
        p: {
            name: r.digest
            for name, r in result.layers.items()
            if name == "app" or r.facts.get("pure")  # shared wheels' and a role's own
        }
        for p, result in results.items()
    }
    (first, expected), *others = pure.items()
    for p, found in others:
        for name in sorted(set(expected) | set(found)):
            if expected.get(name) != found.get(name):
                raise CheckFailed(
                    f"the pure layer {name} differs between {first} "
                    f"({expected.get(name, 'absent')}) and {p} ({found.get(name, 'absent')}): "
                    "one build's Python-only layers must be the same bytes on every "
                    "platform; check that both resolves of the Python lock hold the same "
                    "pure wheels (`lockstep lock python`)"
                )


class Builder:
    """Builds images from input values, using and filling a content-addressed cache."""

    def __init__(self, cache: Cache, progress: Progress = quiet) -> None:
        self.cache = cache
        self.maker = LayerMaker(cache, progress)
        self.layers = self.maker.layers
        self.progress = progress

    def build(self, inputs: BuildInputs, roles: Sequence[str] = ROLES) -> BuildResult:
        """The images of one platform's ``roles``, their SBOMs and provenance, as values."""
        return self.build_platforms({inputs.platform.name: inputs}, roles).results[
            inputs.platform.name
        ]

    def build_platforms(
        self, by_platform: Mapping[str, BuildInputs], roles: Sequence[str] = ROLES
    ) -> PlatformsResult:
        """Every platform's images of ``roles`` (one build id), each role's image index, and
        each platform's SBOMs and provenance, as values. The layers are made as the jobs
        of one ``Schedule``; their results are taken in the order a one-at-a-time build
        makes them (bases, downloads, wheel layers, app, a role's own, inventories)."""
        names = list(by_platform)
        first = by_platform[compiler_platform(names)]
        with Schedule() as run:
            fetched = run.background(self.maker.download, wanted_wheels(by_platform), run.stop)
            debian = {p: i.debian for p, i in by_platform.items()}
            compiler, based = self._bases(first.platform.name, debian, first.mirror, run)
            try:
                sizes = fetched.result()
            except Exception:  # (an interrupt is not waited on)
                for job in based.values():  # a base's error first, as one at a time
                    job.result()
                raise
            plans = [
                plan
                for i in by_platform.values()
                for plan in [
                    ("python", self.maker.python_plan(i.python, sizes)),
                    *((role, self.maker.role_plan(i, role, sizes)) for role in roles),
                ]
            ]
            made = iter(self.maker.wheel_layers(plans, compiler, run, sizes))
            bases = {p: based[p].result() for p in [first.platform.name, *by_platform]}
            compiler = Compiler(bases[first.platform.name], first.platform)
            layers = {p: [next(made) for _ in (None, *roles)] for p in by_platform}
            found = run.submit(self._inventories, by_platform, bases)
            third = {p: {n: f.result() for n, f in layers[p][0].items()} for p in by_platform}
            app = self.maker.app_layer(first, compiler, list(third[first.platform.name].values()))
            results = {}
            for p, i in by_platform.items():
                role_layers = {
                    role: {n: f.result() for n, f in made_.items()}
                    for role, made_ in zip(roles, layers[p][1:], strict=True)
                }
                results[p] = self._platform(
                    i, roles, bases[p], third[p], app, role_layers, found.result()[p]
                )
        shared_layers(results)
        indexes = {
            role: oci.ImageIndex.of(
                [r.images[role].image for r in results.values()],
                {"io.lockstep.build-id": results[names[0]].build_id},
            )
            for role in roles
        }
        project, short = first.project, results[names[0]].manifest.short_id
        refs = {
            role: layout.archive_name(project.name, role, project.version, short) for role in roles
        }
        return PlatformsResult(results, indexes, refs)

    def bases(self, debian: Mapping[str, DebianInput], mirror: str) -> dict[str, LayerRecord]:
        """Every platform's base alone (``debian``: each platform's view of the Debian lock;
        a missing ``.deb`` fetched from ``mirror``), made as ``build_platforms`` makes them:
        the same layers, every standard library compiled by ``compiler_platform``'s python."""
        names = list(debian)
        compiler = compiler_platform(names)
        with Schedule() as run:
            _, based = self._bases(compiler, debian, mirror, run)
            made = {p: based[p].result() for p in [compiler, *names]}
        return {p: made[p] for p in names}

    def _bases(
        self, name: str, debian: Mapping[str, DebianInput], mirror: str, run: Schedule
    ) -> tuple[Compiler | CompilerToBe, dict[str, Future[LayerRecord]]]:
        """Every platform's base as a job ``run`` starts ``first``, and the compiler (the
        base of platform ``name``). If that base is cached, the compiler is known now;
        else it is a ``CompilerToBe``, and the other platforms' ``.deb``s are fetched and
        unpacked beside it, their standard library's ``.pyc`` the compiler's own
        (``memo``: the same Debian python, so the same bytes)."""
        own = platforms.platform(name)
        cached = self.maker.cached_base(debian[name])
        if cached is not None:
            compiler = Compiler(cached, own)
            jobs = {
                p: done(cached)
                if p == name
                else run.first(self.maker.base_layer, d, mirror, compiler)
                for p, d in debian.items()
            }
            return compiler, jobs
        memo: pycompile.Memo = {}
        made: Future[Compiler] = Future()
        run.cancel_on_failure(made)  # the build failed elsewhere: the waiting jobs end

        def compiler_base() -> LayerRecord:
            try:
                record = self.maker.base_layer(debian[name], mirror, memo=memo)
            except BaseException:
                made.cancel()  # the jobs waiting for it end (CancelledError); this is raised
                raise
            with contextlib.suppress(InvalidStateError):  # cancelled: the build failed
                made.set_result(Compiler(record, own))
            return record

        to_be = CompilerToBe(own, python_deb(debian[name]), made)
        jobs = {name: run.first(compiler_base)}
        for p, d in debian.items():
            if p != name:
                jobs[p] = run.first(self.maker.base_layer, d, mirror, to_be, memo)
        return to_be, jobs

    def _inventories(
        self, by_platform: Mapping[str, BuildInputs], bases: Mapping[str, LayerRecord]
    ) -> dict[str, dict[str, Any]]:
        """Each platform's package inventory, one after the other in one job: the licence
        parser (``license_expression``) is not safe to use from two threads at once (two
        inventories side by side failed inside it)."""
        return {
            p: documents.inventory(i, self.layers, bases[p], self.progress)
            for p, i in by_platform.items()
        }

    def _platform(
        self,
        inputs: BuildInputs,
        roles: Sequence[str],
        base_record: LayerRecord,
        third_party: Mapping[str, LayerRecord],
        app_record: LayerRecord,
        own: Mapping[str, Mapping[str, LayerRecord]],
        found: Mapping[str, Any],
    ) -> BuildResult:
        project = inputs.project
        manifest = BuildManifest(
            name=project.name,
            version=project.version,
            inputs=inputs.digests,
            executors=tuple(project.executors),
            python=str(base_record.facts["python"]),
            stamp=inputs.stamp,
            platform=inputs.platform.name,
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
        top_record = LayerRecord(top.digest, top.diff_id, top.size)
        records = {**shared, **{n: r for layers in own.values() for n, r in layers.items()}}
        records["manifest"] = top_record
        created = inputs.created or layout.EPOCH
        base = configs.base_image(project.name, inputs.debian, base_record, inputs.platform)
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
        sboms = documents.sbom_documents(inputs, manifest, digests, created, found)
        statement = documents.provenance_statement(inputs, manifest, digests, sboms, created, found)
        suffix = layout.platform_suffix(inputs.platform.architecture, len(project.platforms))
        arch = suffix.removeprefix("-")
        built = {
            role: BuiltImage(
                role,
                image,
                layout.archive_name(project.name, role, project.version, manifest.short_id, arch),
                sboms[role],
                suffix,
            )
            for role, image in images.items()
        }
        return BuildResult(manifest, built, records, base, created, statement, suffix)
