"""The layers of the images, each made from its inputs once and kept in the layer cache.

Bottom to top: the Debian base (the Debian lock's packages, the standard
library compiled by the image's own python); the locked third-party packages,
one ``python:<name>`` layer per ``WheelGroup``; the app (the declared sources,
checked by the executor check); in one role's image only, the wheels of that role's
own lock, grouped the same way (``runner:<name>``). Each is cached under a key made of what it
depends on (``layercache``), so a change to ``src/`` rewrites only the app.
Every input comes from the values of ``lockstep.inputs.build_inputs``: no lock file
is read or hashed here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from lockstep.assembly import app, base, executor_check, layout, pycompile, thirdparty
from lockstep.assembly.entries import Entry, make_layer
from lockstep.assembly.layercache import LayerCache, LayerRecord
from lockstep.assembly.stage import StagedPython, materialize
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


class LayerMaker:
    """Makes (or finds in the cache) each layer of the images from the build's input values."""

    def __init__(self, cache: Cache, progress: Progress = quiet) -> None:
        self.cache = cache
        self.layers = LayerCache(cache)
        self.progress = progress

    def base_layer(self, debian: DebianInput, mirror: str) -> LayerRecord:
        """The Debian base; a missing ``.deb`` is fetched from ``mirror`` (sha256-checked)."""
        key = self.layers.key("base", debian_lock=debian.digest)
        cached = self.layers.get("base", key)
        if cached:
            return cached
        debs = fetch.fetch(debian.lock, mirror, self.cache, self.progress)
        entries = base.base_entries(debian.lock, debs)
        self.progress("compiling the standard library with the image's python")
        with tempfile.TemporaryDirectory(prefix="lockstep-base-") as tmp:
            materialize(entries, Path(tmp))
            staged_python = StagedPython(Path(tmp))
            pycs = pycompile.compile_pycs(staged_python, entries)
            version = python_version(staged_python)
        return self.layers.put("base", key, make_layer([*entries, *pycs]), {"python": version})

    def wheel_plan(self, wheels: Sequence[LockedWheel], **lock: str) -> list[thirdparty.WheelGroup]:
        """The third-party layers of ``wheels``, from the lock(s) whose digests ``lock``
        names (remembered per those digests, so a no-op build neither reads nor hashes a
        wheel)."""
        key = self.layers.key("wheel-plan", **lock)
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

    def python_layers(
        self, python: PythonInput, base_record: LayerRecord
    ) -> dict[str, LayerRecord]:
        """The shared third-party layers: one per ``WheelGroup`` (``python:<name>``)."""
        plan = self.wheel_plan(python.wheels, python_lock=python.digest)
        return self._wheel_layers(plan, base_record, "python")

    def role_layers(
        self, inputs: BuildInputs, role: str, base_record: LayerRecord
    ) -> dict[str, LayerRecord]:
        """The layers of the wheels only ``role``'s image has (``<role>:<name>``), grouped
        apart from the shared ones so that those stay the same layers in both images."""
        own = inputs.roles.get(role)
        if own is None or not own.wheels:
            return {}
        plan = self.wheel_plan(own.wheels, python_lock=inputs.python.digest, role_lock=own.digest)
        return self._wheel_layers(plan, base_record, role)

    def _wheel_layers(
        self, plan: Sequence[thirdparty.WheelGroup], base_record: LayerRecord, prefix: str
    ) -> dict[str, LayerRecord]:
        """One layer per ``WheelGroup`` (``<prefix>:<name>``), each cached under its wheels'
        sha256s and the base it was compiled with: a changed wheel remakes only its layer."""
        out: dict[str, LayerRecord] = {}
        for group in plan:
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
            out[f"{prefix}:{group.name}"] = cached
        return out

    def app_layer(
        self, inputs: BuildInputs, base_record: LayerRecord, third_party: Sequence[LayerRecord]
    ) -> LayerRecord:
        """The app: the declared sources, after the executor check passed on them."""
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
        staged_python = StagedPython(self.layers.staged(base_record))
        with tempfile.TemporaryDirectory(prefix="lockstep-app-") as tmp:
            materialize(entries, Path(tmp))
            executor_check.check_executors(
                inputs.project,
                self.layers,
                staged_python,
                Path(tmp) / layout.SITE_DIR,
                third_party,
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

    def complete_platform(self, debian: DebianInput, mirror: str) -> bytes:
        """The platform file of the image's python, asked in the (cached) base layer."""
        staged = StagedPython(self.layers.staged(self.base_layer(debian, mirror)))
        self.progress("inspecting the image's python for its markers and wheel tags")
        staged.check()
        return platform.complete_platform(staged.argv(), staged.env(), self.cache.root)
