"""The layers of the images, each made from its inputs once and kept in the layer cache.

Bottom to top: the Debian base (the Debian lock's packages, the standard
library compiled by the image's own python); the locked third-party packages,
one ``python:<name>`` layer per ``WheelGroup``; the app (the declared sources,
checked by the executor check); in one role's image only, the wheels of that role's
own lock, grouped the same way (``runner:<name>``). Each is cached under a key made of what it
depends on (``layercache``), so a change to ``src/`` rewrites only the app.
Every input comes from the values of ``lockstep.inputs.build_inputs``: no lock file
is read or hashed here.

A build of several platforms compiles every ``.pyc`` once, with one python: the
``Compiler`` (the base of the host's platform where the build has it, else of its
first). ``.pyc`` files do not depend on the architecture, so the layers made only of
Python (the app, the pure wheels) are the same blobs on every platform, and another
platform's python runs (under emulation) only to say its tags (``lock platform``): its
version is the compiler's, the Debian lock holding the same python package for both.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from lockstep.assembly import app, base, executor_check, layout, pycompile, thirdparty
from lockstep.assembly.entries import Entry, make_layer
from lockstep.assembly.layercache import LayerCache, LayerRecord
from lockstep.assembly.schedule import Schedule, done
from lockstep.assembly.stage import StagedPython, materialize
from lockstep.core.atomic import scratch_dir
from lockstep.core.digests import of_hex, sha256_digest
from lockstep.core.errors import BadInput
from lockstep.core.platforms import Platform, by_deb_arch
from lockstep.core.progress import Progress, quiet
from lockstep.core.store import Cache
from lockstep.core.wheels import in_test_dir
from lockstep.inputs.build_inputs import BuildInputs, DebianInput, PythonInput
from lockstep.inputs.debian import fetch
from lockstep.inputs.python import fetch as pyfetch
from lockstep.inputs.python import platform
from lockstep.inputs.python.lock import LockedWheel


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


@dataclass(frozen=True)
class Compiler:
    """The base layer whose python compiles every ``.pyc`` of a build, and its platform."""

    base: LayerRecord
    platform: Platform

    @property
    def python_deb(self) -> str:
        """The version of the Debian package that ships its python."""
        return str(self.base.facts.get("python_deb"))


@dataclass(frozen=True)
class CompilerToBe:
    """A build's ``Compiler`` while its base is still being made (another platform's base is
    fetched and unpacked meanwhile): its platform and python package are known already,
    ``made`` gives it once made (cancelled if making it failed)."""

    platform: Platform
    python_deb: str
    made: Future[Compiler]


def python_deb(debian: DebianInput) -> str:
    """The locked version of the package that ships the image's python."""
    try:
        return debian.lock.get(layout.PYTHON_PACKAGE).version
    except KeyError:
        raise BadInput(
            f"{debian.path}: {layout.PYTHON_PACKAGE} is not locked for {debian.lock.arch}; "
            "add python3.11 to [tool.lockstep] debian_packages and run `lockstep lock debian`"
        ) from None


class LayerMaker:
    """Makes (or finds in the cache) each layer of the images from the build's input values."""

    def __init__(self, cache: Cache, progress: Progress = quiet) -> None:
        self.cache = cache
        self.layers = LayerCache(cache)
        self.progress = progress

    def staged_python(self, compiler: Compiler) -> StagedPython:
        return StagedPython(self.layers.staged(compiler.base), compiler.platform)

    def cached_base(
        self, debian: DebianInput, compiler: Compiler | None = None
    ) -> LayerRecord | None:
        """The base of ``debian``'s platform compiled by ``compiler`` if the cache has it."""
        key = self._base_key(debian, compiler)
        return self.layers.get("base", key)

    def _base_key(self, debian: DebianInput, compiler: Compiler | None) -> str:
        return self.layers.key(
            "base",
            debian_lock=debian.digest,
            arch=debian.lock.arch,
            compiler=compiler.base.digest if compiler else "",
        )

    def base_layer(
        self,
        debian: DebianInput,
        mirror: str,
        compiler: Compiler | CompilerToBe | None = None,
        memo: pycompile.Memo | None = None,
    ) -> LayerRecord:
        """The Debian base of ``debian``'s platform; a missing ``.deb`` is fetched from
        ``mirror`` (sha256-checked). The standard library is compiled by ``compiler``'s
        python, or (None) by the base's own; a ``CompilerToBe`` is waited for only once
        this base's files are unpacked (the two bases' fetching and unpacking overlap).
        ``memo``: ``.pyc`` of the same sources compiled before (the other platform's
        standard library: the same Debian python, so the same bytes), reused and filled."""
        platform = by_deb_arch(debian.lock.arch)
        if not isinstance(compiler, CompilerToBe):
            cached = self.cached_base(debian, compiler)
            if cached:
                return cached
        deb_version = python_deb(debian)
        if compiler and compiler.python_deb != deb_version:
            raise BadInput(
                f"{debian.path}: {layout.PYTHON_PACKAGE} is {deb_version} for {platform.name} "
                f"but {compiler.python_deb} for {compiler.platform.name}; one "
                "build compiles .pyc once, for one python: run `lockstep lock debian`"
            )
        debs = fetch.fetch(debian.lock, mirror, self.cache, self.progress)
        entries = base.base_entries(debian.lock, debs)
        if compiler is None:
            return self._compiler_base(debian, platform, entries, deb_version, memo)
        # Another platform's: compiled by the compiler's python, from the entries in memory
        # (its tree is not written out: a build never runs its python).
        if isinstance(compiler, CompilerToBe):
            compiler = compiler.made.result()
            cached = self.cached_base(debian, compiler)  # made since, by another build
            if cached:
                return cached
        self.progress(
            f"compiling {platform.name}'s standard library with {compiler.platform.name}'s python"
        )
        pycs = pycompile.compile_pycs(self.staged_python(compiler), entries, memo=memo)
        # The same Debian python package: the compiler's version, without running this
        # platform's python (a build needs no emulation).
        return self.layers.put(
            "base",
            self._base_key(debian, compiler),
            make_layer([*entries, *pycs]),
            {"python": str(compiler.base.facts["python"]), "python_deb": deb_version},
        )

    def _compiler_base(
        self,
        debian: DebianInput,
        platform: Platform,
        entries: list[Entry],
        deb_version: str,
        memo: pycompile.Memo | None = None,
    ) -> LayerRecord:
        """A base whose own python compiles its standard library: materialised where the
        cache stages layers, so that once its .pyc are added the tree is the layer's staging
        (its python runs every later compile), not unpacked again."""
        with self.layers.staging() as tmp:
            materialize(entries, tmp)
            by = StagedPython(tmp, platform)
            self.progress(f"compiling {platform.name}'s standard library with its python")
            pycs = pycompile.compile_pycs(by, entries, memo=memo)
            record = self.layers.put(
                "base",
                self._base_key(debian, None),
                make_layer([*entries, *pycs]),
                {"python": python_version(by), "python_deb": deb_version},
            )
            materialize(pycs, tmp, onto=True)
            self.layers.keep_staged(record, tmp)
        return record

    def download(
        self, wheels: Sequence[LockedWheel], stop: threading.Event | None = None
    ) -> dict[str, int]:
        """The wheels of ``wheels`` missing from the cache, downloaded, verified and cached;
        their sizes by sha256 (for the plans and the order the layers are made in). A wheel
        in the cache already is not read here: a step that needs it verifies it (a no-op
        build reads none)."""
        missing = [w for w in wheels if not self.cache.blob_path(of_hex(w.sha256)).exists()]
        return pyfetch.download_missing(missing, self.cache, self.progress, stop)

    def wheel_plan(
        self, wheels: Sequence[LockedWheel], sizes: Mapping[str, int] | None = None, **lock: str
    ) -> list[thirdparty.WheelGroup]:
        """The third-party layers of ``wheels``, from the lock(s) whose digests ``lock``
        names (remembered per those digests, so a no-op build neither reads nor hashes a
        wheel); ``sizes``: the wheels' sizes by sha256 when downloaded already."""
        # A lock holds a resolve per platform: the plan is of this one's wheels.
        key = self.layers.key(
            "wheel-plan",
            **lock,
            wheels=sha256_digest(",".join(w.sha256 for w in wheels).encode()),
        )
        by_sha = {w.sha256: w for w in wheels}
        known = self.layers.get_fact("wheel-plan", key)
        if isinstance(known, list):
            return [
                thirdparty.WheelGroup(str(g["name"]), tuple(by_sha[h] for h in g["wheels"]))
                for g in known
            ]
        known_sizes = dict(sizes or {})
        unsized = [w for w in wheels if w.sha256 not in known_sizes]  # verified here
        known_sizes.update(pyfetch.wheel_sizes(unsized, self.cache, self.progress))
        plan = thirdparty.plan_layers(wheels, known_sizes)
        self.layers.put_fact(
            "wheel-plan",
            key,
            [{"name": g.name, "wheels": [w.sha256 for w in g.wheels]} for g in plan],
        )
        return plan

    def python_plan(
        self, python: PythonInput, sizes: Mapping[str, int] | None = None
    ) -> list[thirdparty.WheelGroup]:
        """The shared third-party layers' plan: one ``WheelGroup`` per ``python:<name>``."""
        return self.wheel_plan(python.wheels, sizes, python_lock=python.digest)

    def role_plan(
        self, inputs: BuildInputs, role: str, sizes: Mapping[str, int] | None = None
    ) -> list[thirdparty.WheelGroup]:
        """The plan of the wheels only ``role``'s image has (``<role>:<name>``), grouped
        apart from the shared ones so that those stay the same layers in both images."""
        own = inputs.roles.get(role)
        if own is None or not own.wheels:
            return []
        return self.wheel_plan(
            own.wheels, sizes, python_lock=inputs.python.digest, role_lock=own.digest
        )

    def wheel_layers(
        self,
        plans: Sequence[tuple[str, Sequence[thirdparty.WheelGroup]]],
        compiler: Compiler | CompilerToBe,
        run: Schedule,
        sizes: Mapping[str, int],
    ) -> list[dict[str, Future[LayerRecord]]]:
        """For each ``(prefix, plan)``, one layer per ``WheelGroup`` (``<prefix>:<name>``,
        in the plan's order): a cached one as it is, the others made as jobs of ``run``,
        the largest first (``sizes``: bytes by sha256, else the cached file's: the order
        changes no byte), each once however many plans hold it (a pure group on every
        platform). With a ``CompilerToBe`` (its base is being made: so are these layers,
        their keys naming it) each job unpacks and checks its wheels before it waits."""

        def size(wheel: LockedWheel) -> int:
            path = self.cache.blob_path(of_hex(wheel.sha256))
            return sizes.get(wheel.sha256) or (path.stat().st_size if path.exists() else 0)

        found: dict[str, Future[LayerRecord]] = {}
        todo: dict[str, tuple[int, thirdparty.WheelGroup]] = {}
        for _, plan in plans:
            for group in plan:
                name = group.identity
                if name in found or name in todo:
                    continue
                cached = (
                    self.layers.get("wheels", self._wheels_key(group, compiler))
                    if isinstance(compiler, Compiler)
                    else None
                )
                if cached is not None:
                    found[name] = done(cached)
                else:
                    todo[name] = (sum(size(w) for w in group.wheels), group)
        for name, (_, group) in sorted(todo.items(), key=lambda item: -item[1][0]):
            found[name] = run.submit(self._wheel_layer, group, compiler)
        return [
            {f"{prefix}:{group.name}": found[group.identity] for group in plan}
            for prefix, plan in plans
        ]

    def _wheels_key(self, group: thirdparty.WheelGroup, compiler: Compiler) -> str:
        """A wheel layer's key: its wheels' sha256s and the base whose python compiles it (a
        changed wheel remakes only its layer; a pure group is one layer on every platform)."""
        return self.layers.key("wheels", base=compiler.base.digest, wheels=group.identity)

    def _wheel_layer(
        self, group: thirdparty.WheelGroup, compiler: Compiler | CompilerToBe
    ) -> LayerRecord:
        """One wheel group's layer: its wheels unpacked and checked, compiled, compressed."""
        self.progress(f"installing {group.describe()}")
        data = pyfetch.fetch_wheels(group.wheels, self.cache, self.progress)
        entries = [e for w in group.wheels for e in thirdparty.wheel_entries(w, data[w.sha256])]
        del data  # the entries hold the files: not the wheels too
        if isinstance(compiler, CompilerToBe):
            compiler = compiler.made.result()
            cached = self.layers.get("wheels", self._wheels_key(group, compiler))
            if cached is not None:  # made since, by another build
                return cached
        pycs = pycompile.compile_pycs(self.staged_python(compiler), entries, in_test_dir)
        return self.layers.put(
            "wheels",
            self._wheels_key(group, compiler),
            make_layer([*entries, *pycs]),
            {"holds": group.describe(), "pure": group.pure, **executor_check.importable(entries)},
        )

    def app_layer(
        self, inputs: BuildInputs, compiler: Compiler, third_party: Sequence[LayerRecord]
    ) -> LayerRecord:
        """The app: the declared sources, after the executor check passed on them with the
        compiler's python and its platform's ``third_party`` layers (one app for every
        platform; each platform's image checks its own at start, ``self-check``)."""
        base_record = compiler.base
        key = self.layers.key(
            "app",
            base=base_record.digest,
            python=",".join(r.digest for r in third_party),
            sources=inputs.sources,
        )
        cached = self.layers.get("app", key)
        if cached:
            return cached
        entries = app.app_entries(inputs.project, inputs.files)
        staged_python = self.staged_python(compiler)
        memo_key = self.layers.key("app-pycs", base=base_record.digest)
        memo = self.pyc_memo(memo_key)
        # The .pyc are compiled while the executor check runs (two processes of the image's
        # python side by side); they are kept only if the check passes.
        with scratch_dir("lockstep-app") as tmp, ThreadPoolExecutor(1, "app-pyc") as pool:
            compiled = pool.submit(pycompile.compile_pycs, staged_python, entries, memo=memo)
            materialize(entries, tmp)
            executor_check.check_executors(
                inputs.project, self.layers, staged_python, tmp / layout.SITE_DIR, third_party
            )
            pycs = compiled.result()
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

    def complete_platform(
        self, debian: DebianInput, mirror: str, compiler: Compiler | None = None
    ) -> bytes:
        """The platform file of the image's python, asked in the (cached) base layer of
        ``debian``'s platform (another architecture's runs under emulation)."""
        platform_ = by_deb_arch(debian.lock.arch)
        staged = StagedPython(
            self.layers.staged(self.base_layer(debian, mirror, compiler)), platform_
        )
        self.progress(f"inspecting {platform_.name}'s python for its markers and wheel tags")
        staged.check()
        return platform.complete_platform(staged.argv(), staged.env(), self.cache.root)
