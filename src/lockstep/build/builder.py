"""The build: declared inputs → the runner and worker images.

Layers, bottom to top: the Debian base; the locked third-party packages; the
app; the build manifest. Each of the first three is cached under a key made
of what it depends on, so a change to ``src/`` rewrites only the app and
manifest layers. Runner and worker share every layer and differ only in
their config. Nothing is written to the output directory until both images
are complete, and then only by rename.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockstep.atomic import staging_dir
from lockstep.build import oci, sources
from lockstep.build.cache import Cache, hex_of
from lockstep.build.layers import Entry, Layer, make_layer
from lockstep.errors import BadInput
from lockstep.manifest import (
    BUILDER,
    MANIFEST_PATH,
    BuildManifest,
    Stamp,
    canonical_json,
    sha256_digest,
)
from lockstep.project import ROLES, Project

if TYPE_CHECKING:
    from lockstep.build.stage import StagedPython

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class LayerRecord:
    """A cached layer: its blob's digests, plus facts learned while making it."""

    digest: str
    diff_id: str
    size: int
    facts: Mapping[str, Any] = field(default_factory=dict)

    def ref(self) -> oci.LayerRef:
        return oci.LayerRef(self.digest, self.diff_id, self.size)


@dataclass(frozen=True)
class BuiltImage:
    role: str
    image: oci.Image
    path: Path

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
    layers: Mapping[str, LayerRecord]

    @property
    def build_id(self) -> str:
        return self.manifest.build_id

    def to_json(self) -> dict[str, Any]:
        """The ``lockstep build --json`` contract (DESIGN.md §4)."""
        return {
            "build_id": self.build_id,
            "images": {
                role: {"digest": b.digest, "config": b.config, "path": str(b.path)}
                for role, b in sorted(self.images.items())
            },
        }


def builder_code_digest() -> str:
    """Digest of the running builder's own code: part of every layer cache key."""
    import lockstep

    pkg = Path(lockstep.__file__).parent
    files = sorted([*(pkg / "build").glob("*.py"), pkg / "manifest.py", pkg / "atomic.py"])
    rows = [
        [f.relative_to(pkg).as_posix(), hashlib.sha256(f.read_bytes()).hexdigest()] for f in files
    ]
    return sha256_digest(canonical_json(rows))


def lock_digest(path: Path, command: str) -> str:
    """``sha256:`` of a lock file; BadInput naming it and the command that makes it."""
    try:
        return sha256_digest(path.read_bytes())
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot read the lock ({exc.strerror}); run `{command}` to create it"
        ) from exc


def entries_from_tar(raw: bytes) -> list[Entry]:
    """Entries of an uncompressed layer tar we wrote ourselves."""
    out: list[Entry] = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for info in tar:
            name = info.name.rstrip("/")
            if info.isdir():
                out.append(Entry.dir(name, info.mode))
            elif info.issym():
                out.append(Entry.symlink(name, info.linkname))
            elif info.isfile():
                f = tar.extractfile(info)
                assert f is not None
                out.append(Entry.file(name, f.read(), info.mode))
    return out


def git_stamp(root: Path) -> Stamp:
    """Commit, tag at HEAD and dirty flag of the work tree holding ``root``."""
    try:
        import git
    except ImportError as exc:
        raise BadInput("--stamp needs gitpython; install lockstep[build]") from exc
    try:
        repo = git.Repo(root, search_parent_directories=True)
        commit = repo.head.commit.hexsha
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError) as exc:
        raise BadInput(f"{root}: --stamp needs a git work tree with at least one commit") from exc
    tags = sorted(t.name for t in repo.tags if t.commit.hexsha == commit)
    return Stamp(
        commit=commit, tag=tags[-1] if tags else None, dirty=repo.is_dirty(untracked_files=False)
    )


class Builder:
    """Builds one project's images, using and filling a content-addressed cache."""

    def __init__(self, project: Project, cache: Cache, progress: Progress = _quiet) -> None:
        self.project = project
        self.cache = cache
        self.progress = progress
        self._code = builder_code_digest()
        self._staged: dict[str, Path] = {}

    # -- cached layers ---------------------------------------------------------------

    def _key(self, kind: str, **parts: str) -> str:
        return sha256_digest(canonical_json({"kind": kind, "code": self._code, **parts}))

    def _cached(self, kind: str, key: str) -> LayerRecord | None:
        record_digest = self.cache.get_key(kind, key)
        if record_digest is None:
            return None
        raw = self.cache.get_blob(record_digest)
        if raw is None:
            return None
        data = json.loads(raw)
        record = LayerRecord(data["digest"], data["diff_id"], data["size"], data["facts"])
        return record if self.cache.blob_path(record.digest).exists() else None

    def _store(self, kind: str, key: str, layer: Layer, facts: Mapping[str, Any]) -> LayerRecord:
        self.cache.put_blob(layer.blob)
        record = LayerRecord(layer.digest, layer.diff_id, layer.size, dict(facts))
        record_digest = self.cache.put_blob(
            canonical_json(
                {
                    "digest": record.digest,
                    "diff_id": record.diff_id,
                    "size": record.size,
                    "facts": record.facts,
                }
            )
        )
        self.cache.put_key(kind, key, record_digest)
        return record

    def _blob(self, digest: str) -> bytes:
        data = self.cache.get_blob(digest)
        if data is None:
            raise BadInput(
                f"{self.cache.blob_path(digest)}: cached layer is missing or corrupt; "
                "run the build again (it will be remade)"
            )
        return data

    def staged(self, record: LayerRecord) -> Path:
        """The layer's files on disk under the cache (made once per layer digest)."""
        if record.digest in self._staged:
            return self._staged[record.digest]
        path = self.cache.root / "staged" / hex_of(record.digest)
        if not (path / ".complete").exists():
            import gzip

            from lockstep.build.stage import materialize

            entries = entries_from_tar(gzip.decompress(self._blob(record.digest)))
            with staging_dir(path) as tmp:
                materialize(entries, tmp)
                (tmp / ".complete").write_text(record.digest)
        self._staged[record.digest] = path
        return path

    def base_layer(self) -> LayerRecord:
        lock_path = self.project.debian_lock
        lock_sha = lock_digest(lock_path, "lockstep lock debian")
        key = self._key("base", debian_lock=lock_sha)
        cached = self._cached("base", key)
        if cached:
            return cached
        from lockstep.build import debian, pycompile
        from lockstep.build.stage import StagedPython, materialize

        lock = debian.read_lock(lock_path)
        debs = debian.fetch(lock, self.project.mirror(), self.cache, self.progress)
        entries = debian.base_entries(lock, debs)
        self.progress("compiling the standard library with the image's python")
        with tempfile.TemporaryDirectory(prefix="lockstep-base-") as tmp:
            materialize(entries, Path(tmp))
            staged_python = StagedPython(Path(tmp))
            pycs = pycompile.compile_pycs(staged_python, entries)
            version = python_version(staged_python)
        layer = make_layer([*entries, *pycs])
        return self._store("base", key, layer, {"python": version})

    def python_layer(self, base: LayerRecord) -> LayerRecord:
        lock_path = self.project.python_lock
        lock_sha = lock_digest(lock_path, "lockstep lock python")
        platform = self.project.complete_platform
        key = self._key(
            "python",
            base=base.digest,
            python_lock=lock_sha,
            platform=lock_digest(platform, "lockstep lock python"),
        )
        cached = self._cached("python", key)
        if cached:
            return cached
        from lockstep.build import pycompile, python
        from lockstep.build.stage import StagedPython

        self.progress("installing the locked Python packages (pex)")
        entries = python.install_entries(lock_path, platform, self.cache.root, self.progress)
        pycs = pycompile.compile_pycs(StagedPython(self.staged(base)), entries)
        return self._store("python", key, make_layer([*entries, *pycs]), {})

    def app_layer(
        self,
        base: LayerRecord,
        third_party: LayerRecord,
        files: Sequence[sources.SourceFile],
        sources_digest: str,
    ) -> LayerRecord:
        key = self._key("app", base=base.digest, python=third_party.digest, sources=sources_digest)
        cached = self._cached("app", key)
        if cached:
            return cached
        from lockstep.build import app, pycompile
        from lockstep.build.stage import StagedPython, materialize

        entries = app.app_entries(self.project, files)
        staged_python = StagedPython(self.staged(base))
        with tempfile.TemporaryDirectory(prefix="lockstep-app-") as tmp:
            materialize(entries, Path(tmp))
            self.check_executors(staged_python, Path(tmp), self.staged(third_party))
        pycs = pycompile.compile_pycs(staged_python, entries)
        return self._store("app", key, make_layer([*entries, *pycs]), {})

    def check_executors(
        self, staged_python: StagedPython, app_root: Path, third_party_root: Path
    ) -> None:
        """Import every registered executor from the image's own files, with its python."""
        from lockstep.build.app import SITE_DIR as site

        script = (
            "import importlib, importlib.metadata as md, json, sys\n"
            "sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
            "found = {e.name: e.value for e in md.entry_points(group='lockstep.executors')}\n"
            "errors = {}\n"
            "for name, target in sorted(found.items()):\n"
            "    module, _, attr = target.partition(':')\n"
            "    try:\n"
            "        obj = importlib.import_module(module)\n"
            "        for part in attr.split('.'):\n"
            "            obj = getattr(obj, part)\n"
            "    except BaseException as exc:\n"
            "        errors[name] = f'{target}: {type(exc).__name__}: {exc}'\n"
            "print(json.dumps({'found': found, 'errors': errors}))\n"
        )
        proc = staged_python.run(
            ["-c", script, str(app_root / site), str(third_party_root / site)],
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

    # -- the build -------------------------------------------------------------------

    def build(
        self, roles: Sequence[str] = ROLES, out_dir: Path | None = None, stamp: bool | Stamp = False
    ) -> BuildResult:
        """Build ``roles`` into ``out_dir``. ``stamp``: False for none, True for the git
        facts of the work tree, or an exact ``Stamp`` (a release names its future tag)."""
        project = self.project
        files = sources.load(project.root, project.sources)
        sources_digest = sources.tree_digest(files)
        inputs = {
            "builder": BUILDER,
            "debian_lock": lock_digest(project.debian_lock, "lockstep lock debian"),
            "python_lock": lock_digest(project.python_lock, "lockstep lock python"),
            "sources": sources_digest,
        }
        stamp_value = (
            stamp if isinstance(stamp, Stamp) else (git_stamp(project.root) if stamp else None)
        )
        base = self.base_layer()
        third_party = self.python_layer(base)
        app_record = self.app_layer(base, third_party, files, sources_digest)
        manifest = BuildManifest(
            name=project.name,
            version=project.version,
            inputs=inputs,
            executors=tuple(project.executors),
            python=str(base.facts["python"]),
            stamp=stamp_value,
        )
        top = make_layer([Entry.file(MANIFEST_PATH.lstrip("/"), manifest.to_json())])
        records = {
            "base": base,
            "python": third_party,
            "app": app_record,
            "manifest": LayerRecord(top.digest, top.diff_id, top.size),
        }
        refs = [r.ref() for r in records.values()]
        out = out_dir or project.root / "out"
        built = {
            role: BuiltImage(role, self._image(role, manifest, refs), out / f"{role}.tar")
            for role in roles
        }
        self._write_all(built, records, top, manifest)
        return BuildResult(manifest=manifest, images=built, layers=records)

    def _image(self, role: str, manifest: BuildManifest, refs: Sequence[oci.LayerRef]) -> oci.Image:
        project = self.project
        spec = project.images[role]
        labels = {
            "io.lockstep.build-id": manifest.build_id,
            "io.lockstep.executors": ",".join(manifest.executors),
            "io.lockstep.role": role,
            "org.opencontainers.image.title": f"{project.name}-{role}",
            "org.opencontainers.image.version": project.version,
        }
        if project.source_url:
            labels["org.opencontainers.image.source"] = project.source_url
        if manifest.stamp:
            labels["org.opencontainers.image.revision"] = manifest.stamp.commit
        return oci.make_image(
            layers=refs,
            entrypoint=spec.entrypoint,
            cmd=spec.cmd,
            env=image_env(role),
            labels=labels,
        )

    def _write_all(
        self,
        built: Mapping[str, BuiltImage],
        records: Mapping[str, LayerRecord],
        top: Layer,
        manifest: BuildManifest,
    ) -> None:
        """Write every archive that is not already current under a temporary name, then
        rename them all into place."""
        ref_name = f"{self.project.version}-{manifest.short_id}"

        def tags(role: str) -> list[str]:
            return [f"{self.project.name}-{role}:{ref_name}"]

        stale = {
            role: b
            for role, b in built.items()
            if not oci.archive_is_current(b.path, b.image, ref_name, tags(role))
        }
        if not stale:
            return
        blobs = {r.digest: self._blob(r.digest) for r in records.values() if r.digest != top.digest}
        blobs[top.digest] = top.blob
        temps: list[tuple[Path, Path]] = []
        try:
            for role, b in stale.items():
                b.path.parent.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(
                    dir=b.path.parent, prefix=f".{b.path.name}.", suffix=".tmp"
                )
                temps.append((Path(name), b.path))
                with os.fdopen(fd, "wb") as f:
                    oci.write_tar(f, oci.archive_members(b.image, blobs, ref_name, tags(role)))
                os.chmod(name, 0o644)
            for temp, final in temps:
                os.replace(temp, final)
        finally:
            for temp, _ in temps:
                temp.unlink(missing_ok=True)


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


def image_env(role: str) -> dict[str, str]:
    return {
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "LOCKSTEP_ROLE": role,
        "PATH": "/usr/local/bin:/usr/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
    }
