"""The Bazel front end's entry points: ``python -m lockstep.assembly.bazel COMMAND``.

Bazel (``images/BUILD``, ``images/image.bzl``) calls this module, and only
through the public builder API, so ``bazel build //images:worker`` and
``lockstep build`` make the same bytes:

``describe``
    Run by the repository rule ``@lockstep_project`` on the host: reads
    ``pyproject.toml`` with ``load_project`` and prints the Starlark facts
    Bazel needs (declared source globs per package, lock labels, roles, the
    builder's python). Nothing about the images is written twice.
``images``
    The image action, in Bazel's sandbox: builds every role of every platform
    from the declared inputs in the working directory (the sandbox's exec root)
    into ``--out``: the files ``outputs`` names (each platform's archives, SBOMs,
    provenance and a small JSON per image; in a project of several platforms
    each role's image index as an OCI layout ``<role>.oci`` and its JSON) and
    ``build.json`` (the ``lockstep build --json`` contract, paths relative to
    that file).
``base``
    Every platform's base layer alone, made as ``lockstep build`` makes them
    (``Builder.bases``), into ``--out``: the files ``base_outputs`` names, each
    platform's gzip blob and a JSON with its digests.

Locked ``.deb``s and wheels come from the content-addressed cache
``$LOCKSTEP_CACHE_DIR`` (every read verified by sha256) or, on a miss, are
fetched by their pinned sha256 and verified before they are cached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockstep.core.atomic import open_atomic, write_bytes
from lockstep.core.errors import BadInput, CheckFailed, LockstepError
from lockstep.core.progress import to_stderr as progress
from lockstep.core.settings import CACHE_DIR as CACHE_ENV

if TYPE_CHECKING:
    from lockstep.project import Project

BUILD_FILES = ("BUILD.bazel", "BUILD")
# What the CLI never counts as a source (lockstep.inputs.declared), as Bazel glob excludes.
_GLOB_CHARS = frozenset("*?[")


# --------------------------------------------------------------------------- describe


def package_of(root: Path, rel: str) -> str:
    """The Bazel package holding ``rel``: its deepest literal directory with a BUILD file."""
    parts = rel.split("/")[:-1]
    package = ""
    for i, part in enumerate(parts):
        if _GLOB_CHARS & set(part):
            break
        candidate = "/".join(parts[: i + 1])
        if any((root / candidate / name).is_file() for name in BUILD_FILES):
            package = candidate
    return package


def bazel_pattern(pattern: str, where: str) -> None:
    """BadInput unless Bazel's ``glob`` means the same as ``pathlib`` for ``pattern``."""
    for part in pattern.split("/"):
        if "?" in part or "[" in part:
            raise BadInput(
                f"{where}: source pattern {pattern!r} uses ? or [...], which Bazel's "
                "glob does not support; use * and ** only"
            )
        if "**" in part and part != "**":
            raise BadInput(
                f"{where}: source pattern {pattern!r}: ** must be a whole path "
                "segment for Bazel's glob"
            )


def subpackages_below(root: Path, pattern: str) -> list[str]:
    """BUILD files under the literal prefix of a ``**`` pattern: Bazel's glob stops at each."""
    parts = pattern.split("/")
    if "**" not in parts:
        return []
    from lockstep.inputs import declared as sources

    prefix = root.joinpath(*parts[: parts.index("**")])
    found = []
    for dirpath, dirnames, filenames in os.walk(prefix):
        dirnames[:] = sorted(d for d in dirnames if d not in sources.EXCLUDED_DIRS)
        here = Path(dirpath)
        if here != prefix and any(name in filenames for name in BUILD_FILES):
            found.append(here.relative_to(root).as_posix())
    return found


def glob_excludes() -> list[str]:
    """Bazel glob excludes for what ``lockstep.inputs.declared`` never counts."""
    from lockstep.inputs import declared as sources

    dirs = [f"**/{d}/**" for d in sources.EXCLUDED_DIRS]
    return sorted([*dirs, "**/*.egg-info/**", *(f"**/*{s}" for s in sources.EXCLUDED_SUFFIXES)])


def label(root: Path, path: Path) -> str:
    """The Bazel label of a file under ``root``."""
    rel = path.relative_to(root).as_posix()
    package = package_of(root, rel)
    name = rel[len(package) + 1 :] if package else rel
    return f"//{package}:{name}"


@dataclass(frozen=True)
class Outputs:
    """What one Bazel target of the images names: files, and directories (OCI layouts)."""

    files: tuple[str, ...]
    dirs: tuple[str, ...] = ()

    def to_starlark(self) -> dict[str, list[str]]:
        return {"files": list(self.files), "dirs": list(self.dirs)}


def layout_dir(role: str) -> str:
    """The OCI layout holding ``role``'s image index (a project of several platforms)."""
    return f"{role}.oci"


def outputs(project: Project) -> dict[str, Outputs]:
    """Each target of ``images/BUILD`` and the files the image action writes for it, named
    by the sinks' own rules: ``<role>_<arch>`` (that platform's archive, JSON and SBOM),
    ``<role>`` (its image index's layout and JSON; in a project of one platform, that
    platform's files) and ``images`` (all of them, each platform's provenance, the build
    manifest and ``build.json``)."""
    from lockstep.assembly import provenance, sbom
    from lockstep.assembly.layout import platform_suffix
    from lockstep.assembly.sinks import MANIFEST_NAME
    from lockstep.core.platforms import platform
    from lockstep.project import ROLES

    count = len(project.platforms)
    targets: dict[str, Outputs] = {}
    statements = []
    for name in project.platforms:
        arch = platform(name).architecture
        suffix = platform_suffix(arch, count)
        statements.append(provenance.file_name(suffix))
        for role in ROLES:
            stem = role + suffix
            targets[f"{role}_{arch}"] = Outputs(
                (f"{stem}.tar", f"{stem}.json", sbom.file_name(stem))
            )
    for role in ROLES:
        targets[role] = (
            Outputs((f"{role}.json",), (layout_dir(role),))
            if count > 1
            else targets[f"{role}_{platform(project.platforms[0]).architecture}"]
        )
    files = sorted({f for t in targets.values() for f in t.files})
    targets["images"] = Outputs(
        (*files, *statements, MANIFEST_NAME, "build.json"),
        tuple(sorted({d for t in targets.values() for d in t.dirs})),
    )
    return targets


BASE = "base"  # the base action's target, and its files' stem


def base_files(architecture: str, platforms: int) -> tuple[str, str]:
    """One platform's base layer files in a project of ``platforms``: its gzip blob and its
    JSON, ``base.tar.gz`` and ``base.json`` (of several, ``base-<arch>.…``, as the
    archives say their platform)."""
    from lockstep.assembly.layout import platform_suffix

    stem = BASE + platform_suffix(architecture, platforms)
    return f"{stem}.tar.gz", f"{stem}.json"


def base_outputs(project: Project) -> dict[str, Outputs]:
    """The targets of the base action: ``base_<arch>`` (that platform's base layer) and
    ``base`` (every platform's)."""
    from lockstep.core.platforms import platform

    count = len(project.platforms)
    targets = {
        f"{BASE}_{arch}": Outputs(base_files(arch, count))
        for arch in (platform(name).architecture for name in project.platforms)
    }
    targets[BASE] = Outputs(tuple(sorted(f for t in targets.values() for f in t.files)))
    return targets


def loads(project: Project) -> dict[str, dict[str, Any]]:
    """The ``bazel run`` targets: ``load_<role>`` (the host's platform's image: of the index's
    layout, picked by ``lockstep load`` at run time) and ``load_<role>_<arch>`` (that
    platform's archive), each as the target, file and arguments of ``lockstep load``."""
    from lockstep.core.platforms import platform
    from lockstep.project import ROLES

    targets = outputs(project)
    found: dict[str, dict[str, Any]] = {}
    for role in ROLES:
        for name in project.platforms:
            target = f"{role}_{platform(name).architecture}"
            (archive,) = [f for f in targets[target].files if f.endswith(".tar")]
            found[f"load_{target}"] = {"target": target, "file": archive, "args": []}
        found[f"load_{role}"] = (
            {"target": role, "file": layout_dir(role), "args": ["--image", role]}
            if len(project.platforms) > 1
            else {**found[f"load_{role}_{platform(project.platforms[0]).architecture}"]}
        )
    return found


def describe(root: Path, python: str) -> str:
    """The generated ``project.bzl``: what Bazel needs from ``pyproject.toml``, as Starlark."""
    from lockstep.core.platforms import platform
    from lockstep.inputs.python.pex import pex3_argv
    from lockstep.project import ROLES, load_project

    pex3_argv()  # the builder's environment must have the pinned pex
    project = load_project(root)
    where = f"{project.pyproject} [tool.lockstep] sources"
    by_package: dict[str, list[str]] = {}
    for pattern in project.sources:
        bazel_pattern(pattern, where)
        below = subpackages_below(root, pattern)
        if below:
            raise BadInput(
                f"{where}: pattern {pattern!r} reaches into the Bazel package "
                f"//{below[0]} ({below[0]}/BUILD); Bazel's glob stops there, so its "
                "files would be missing from the build; remove that BUILD file or "
                "narrow the pattern"
            )
        package = package_of(root, pattern)
        rel = pattern[len(package) + 1 :] if package else pattern
        by_package.setdefault(package, []).append(rel)
    facts: dict[str, Any] = {
        "PYTHON": python,
        "NAME": project.name,
        "VERSION": project.version,
        "ROLES": list(ROLES),
        "SOURCES": by_package,
        "SOURCE_EXCLUDES": glob_excludes(),
        "PYPROJECT": label(root, project.pyproject),
        "PYTHON_LOCK": label(root, project.python_lock),
        "DEBIAN_LOCK": label(root, project.debian_lock),
        "PLATFORMS": [
            {
                "name": name,
                "arch": platform(name).architecture,
                "complete_platform": label(root, project.complete_platform_of(name)),
            }
            for name in project.platforms
        ],
        "OUTPUTS": {name: o.to_starlark() for name, o in outputs(project).items()},
        "BASES": {name: o.to_starlark() for name, o in base_outputs(project).items()},
        "LOADS": loads(project),
    }
    lines = [
        "# Generated from pyproject.toml by `python -m lockstep.assembly.bazel describe`",
        "# (repository rule @lockstep_project, images/repo.bzl). Do not edit.",
    ]
    lines += [f"{key} = {json.dumps(value, sort_keys=True)}" for key, value in facts.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- in the sandbox


def check_sandbox(root: Path) -> None:
    """CheckFailed unless the builder's own code is the declared copy under ``root``.

    ``PYTHONPATH=src`` puts the exec root's declared ``src`` first; an editable
    install of lockstep elsewhere must never stand in for a file the action did
    not declare.
    """
    import lockstep

    here = Path(os.path.abspath(lockstep.__file__))
    if not here.is_relative_to(Path(os.path.abspath(root))):
        raise CheckFailed(
            f"the builder's code was imported from {here.parent}, outside the "
            f"action's declared inputs in {root}; declare src/lockstep/** "
            "(//:builder) as inputs of the action"
        )


def check_declared(root: Path, patterns: Sequence[str], files: Sequence[Path]) -> None:
    """BadInput naming the first source pattern or project file missing from ``root``.

    In Bazel's sandbox ``root`` holds only the action's declared inputs, so a
    miss here is a file the rules did not declare (or one that does not exist).
    """
    hint = (
        "the file is missing, or the Bazel rules do not declare it (each package's "
        "declared_sources() globs pyproject.toml's patterns; images/image.bzl declares "
        "the locks and the platform file named there)"
    )
    for pattern in patterns:
        if not any(path.is_file() for path in root.glob(pattern)):
            raise BadInput(
                f"{root / 'pyproject.toml'}: [tool.lockstep] sources pattern "
                f"{pattern!r} matches none of the action's declared inputs; {hint}"
            )
    for path in files:
        if not path.is_file():
            raise BadInput(
                f"{path.relative_to(root)} is not among the action's declared inputs; {hint}"
            )


def sandbox_cache(environ: Mapping[str, str] | None = None) -> Path:
    """``$LOCKSTEP_CACHE_DIR``, which must be set and writable inside the sandbox."""
    env = os.environ if environ is None else environ
    value = env.get(CACHE_ENV, "")
    fix = (
        "run bazel through the workspace launcher tools/bazel (the bazel command does that "
        f"when it finds it), or pass --action_env={CACHE_ENV}=DIR "
        "--sandbox_writable_path=DIR"
    )
    if not value or not os.path.isabs(value):
        raise BadInput(
            f"{CACHE_ENV} is {'not an absolute path' if value else 'not set'} in the "
            f"Bazel action; {fix}"
        )
    root = Path(value)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".bazel-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BadInput(
            f"{root}: the lockstep cache is not writable in Bazel's sandbox ({exc.strerror}); {fix}"
        ) from exc
    return root


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _relative(value: Any, out: Path) -> Any:
    """``value`` with every path under ``out`` made relative to it (Bazel's sandbox paths
    are gone after the action; the JSON files sit beside what they name)."""
    if isinstance(value, dict):
        return {k: _relative(v, out) for k, v in value.items()}
    if isinstance(value, str) and value.startswith(f"{out}/"):
        return value[len(str(out)) + 1 :]
    return value


def build_images(root: Path, out: Path, cache_root: Path) -> dict[str, Any]:
    """Every role of every platform into ``out``: the files ``outputs`` names; the
    build.json data."""
    from lockstep.assembly import sinks
    from lockstep.assembly.builder import Builder, read_inputs
    from lockstep.core.store import Cache
    from lockstep.project import ROLES, load_project

    project = load_project(root)
    check_declared(
        root,
        project.sources,
        [
            project.python_lock,
            project.debian_lock,
            *(project.complete_platform_of(p) for p in project.platforms),
        ],
    )
    builder = Builder(Cache(cache_root), progress)
    result = builder.build_platforms(read_inputs(project, None), ROLES)
    data = sinks.build_json(result, sinks.write_outputs(result, out, builder.layers.copy_blob))
    if result.single is None:
        for role, index in data["images"].items():
            sinks.write_layout(result, out / layout_dir(role), builder.layers.copy_blob, [role])
            index["layout"] = layout_dir(role)
    data = dict(_relative(data, out))
    by_platform = (
        {p: one["images"] for p, one in data["platforms"].items()}
        if result.single is None
        else {data["platform"]: data["images"]}
    )
    for p, images in by_platform.items():
        for role, image in images.items():
            stem = Path(image["path"]).stem
            _write_json(
                out / f"{stem}.json",
                {"build_id": data["build_id"], "role": role, "platform": p, **image},
            )
    if result.single is None:
        for role, index in data["images"].items():
            _write_json(
                out / f"{role}.json",
                {
                    "build_id": data["build_id"],
                    "role": role,
                    **index,
                    "platforms": {p: images[role] for p, images in by_platform.items()},
                },
            )
    _write_json(out / "build.json", data)
    return data


def build_base(root: Path, out: Path, cache_root: Path) -> dict[str, dict[str, Any]]:
    """Every platform's base layer into ``out`` (the files ``base_outputs`` names: each
    one's gzip blob and a JSON of its digests), made as ``lockstep build`` makes them;
    those JSON objects by platform."""
    from lockstep.assembly.builder import Builder
    from lockstep.core.platforms import platform
    from lockstep.core.store import Cache
    from lockstep.inputs.build_inputs import DebianInput
    from lockstep.project import load_project

    project = load_project(root)
    check_declared(root, (), [project.debian_lock])
    builder = Builder(Cache(cache_root), progress)
    debian = DebianInput.read_all(project.debian_lock, project.platforms)
    found = {}
    for name, record in builder.bases(debian, project.mirror()).items():
        blob, info = base_files(platform(name).architecture, len(project.platforms))
        with open_atomic(out / blob) as f:
            builder.layers.copy_blob(record.digest, f.fileno())
        found[name] = {
            "digest": record.digest,
            "diff_id": record.diff_id,
            "size": record.size,
            "python": record.facts.get("python"),
            "platform": name,
            "path": blob,
        }
        _write_json(out / info, found[name])
    return found


# --------------------------------------------------------------------------- command line


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lockstep.assembly.bazel",
        description="Entry points of lockstep's Bazel rules.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("describe", help="print project.bzl for the repository rule")
    p.add_argument("--project", type=Path, required=True)
    p.add_argument("--python", required=True, help="the builder's python, as Bazel runs it")
    p = sub.add_parser("images", help="build both images (in the action's exec root)")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("base", help="build every platform's base layer alone")
    p.add_argument("--out", type=Path, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        if args.command == "describe":
            sys.stdout.write(describe(args.project.resolve(), args.python))
            return 0
        root = Path.cwd()
        check_sandbox(root)
        cache_root = sandbox_cache()
        if args.command == "images":
            build_images(root, args.out.absolute(), cache_root)
        else:
            build_base(root, args.out.absolute(), cache_root)
    except LockstepError as exc:
        print(f"lockstep: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except FileNotFoundError as exc:
        # In the sandbox this is, almost always, a file the action did not declare.
        print(
            f"lockstep: error: {exc.filename}: no such file among the action's declared "
            f"inputs ({exc.strerror}); declare it ([tool.lockstep] sources in pyproject.toml, "
            "or the rule's srcs in images/image.bzl)",
            file=sys.stderr,
        )
        return BadInput.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
