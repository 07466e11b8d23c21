"""CLI subcommands of the build: ``build``, ``load``, ``lock``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lockstep.core.errors import BadInput
from lockstep.core.progress import to_stderr as progress
from lockstep.project import ROLES, add_project_arg

if TYPE_CHECKING:
    from lockstep.assembly.builder import PlatformsResult
    from lockstep.assembly.sinks import Written

# What `lockstep build TARGET` builds: every role, one role, or one by its Bazel label.
TARGETS = {
    "all": ROLES,
    **{role: (role,) for role in ROLES},
    **{f"//images:{role}": (role,) for role in ROLES},
}


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("build", help="build the runner and worker images (no daemon needed)")
    p.add_argument(
        "target",
        nargs="?",
        default="all",
        choices=list(TARGETS),
        help="which image(s) to build (default: all)",
    )
    p.add_argument("--out", type=Path, help="output directory (default: PROJECT/out)")
    p.add_argument(
        "--layout",
        type=Path,
        metavar="DIR",
        help="also write both images into this OCI layout directory (one shared blobs/; "
        "only new blobs are written)",
    )
    p.add_argument(
        "--no-archives",
        action="store_true",
        help="do not write the .tar archives (with --layout: the incremental output only)",
    )
    p.add_argument(
        "--stamp", action="store_true", help="add git commit, tag and dirty flag to the manifest"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--platform",
        action="append",
        metavar="OS/ARCH",
        help="build only this platform (repeatable; default: every platform of "
        "[tool.lockstep] platforms), e.g. linux/arm64",
    )
    add_project_arg(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser(
        "load", help="load an image archive, or one image of an OCI layout, into Docker"
    )
    p.add_argument("archive", type=Path, help="IMAGE.tar, or a layout directory (--layout)")
    p.add_argument(
        "--image",
        metavar="REF|ROLE",
        help="which image of a layout directory: its ref name, or runner / worker",
    )
    p.add_argument(
        "--platform",
        metavar="OS/ARCH",
        help="of a layout's image index, which platform's image (default: this host's)",
    )
    p.set_defaults(func=cmd_load)

    p = sub.add_parser(
        "lock",
        help="refresh a lock, for every platform of the project: python (pex, for each "
        "platform's complete-platform file), debian (the base packages, one snapshot of the "
        "mirror), or platform (each complete-platform file, from that platform's python; "
        "another architecture's runs under qemu)",
    )
    p.add_argument("which", choices=["python", "debian", "platform"])
    add_project_arg(p)
    p.set_defaults(func=cmd_lock)


def cmd_build(args: argparse.Namespace) -> int:
    from lockstep.assembly import uptodate
    from lockstep.project import find_root

    root = find_root(args.project)
    out = args.out.resolve() if args.out else root / "out"
    if args.layout and args.layout.exists() and not args.layout.is_dir():
        raise BadInput(f"--layout {args.layout}: exists and is not a directory; name a directory")
    if args.no_archives and not args.layout:
        raise BadInput("--no-archives needs --layout DIR: a build must write its images somewhere")
    layout = args.layout.resolve() if args.layout else None
    roles = TARGETS[args.target]
    options = {
        "out": str(out),
        "layout": str(layout) if layout else None,
        "archives": not args.no_archives,
    }
    form = "json" if args.json else "text"
    if not args.stamp:  # git facts the inputs do not hold: always the full build
        pyproject = root / "pyproject.toml"
        printed = uptodate.answer(out, pyproject, args.platform, roles, options, form)
        if printed is not None:  # out holds this build's files, unchanged
            print(printed, end="")
            return 0
    texts = _build(args, root, out, layout, roles, options)
    print(texts[form], end="")
    return 0


def _build(
    args: argparse.Namespace,
    root: Path,
    out: Path,
    layout: Path | None,
    roles: Sequence[str],
    options: Mapping[str, object],
) -> dict[str, str]:
    """The full build: read the inputs, make (or find) every layer, write what differs and
    (unstamped) record it; what it prints, as text and as JSON."""
    from lockstep.assembly import sinks, uptodate
    from lockstep.assembly.builder import Builder, read_inputs
    from lockstep.core.store import Cache, default_cache_dir
    from lockstep.project import load_project

    project = load_project(root)
    if args.stamp:
        from lockstep.inputs.stamp import git_stamp

        inputs = read_inputs(project, git_stamp(project.root), args.platform)
    else:
        inputs = read_inputs(project, None, args.platform)
    builder = Builder(Cache(default_cache_dir()), progress)
    result = builder.build_platforms(inputs, roles)
    changed = uptodate.changed(out)  # since the last build wrote them: written again
    uptodate.forget(out)  # no record describes an out/ being written
    written = sinks.write_outputs(
        result, out, builder.layers.copy_blob, archives=not args.no_archives, layout=layout,
        changed=changed,
    )  # fmt: skip
    texts = {
        "json": json.dumps(sinks.build_json(result, written), indent=2, sort_keys=True) + "\n",
        "text": "".join(line + "\n" for line in _text_lines(result, written)),
    }
    if not args.stamp:
        digests = uptodate.digests_of(project, inputs)
        key = uptodate.key(digests, list(inputs), roles, options)
        uptodate.record(out, key, uptodate.recipe(project), written.files(), texts)
    return texts


def _text_lines(result: PlatformsResult, written: Written) -> list[str]:
    lines = [f"build_id {result.build_id}"]
    several = result.single is None
    for name, one in result.results.items():
        for role, image in sorted(one.images.items()):
            # a layout of several platforms names each role's index, not its images
            named = result.refs[role] if several else image.ref
            where = written.archives.get(name, {}).get(role) or f"{written.layout} {named}"
            label = f"{role} {name}" if several else role
            lines.append(f"{label:<7} {image.digest}  {where}")
    if several:
        for role, index in sorted(result.indexes.items()):
            lines.append(f"{role} index {index.digest}  {result.refs[role]}")
    if written.manifest is not None:  # LOCKSTEP_MANIFEST for processes outside images
        lines.append(f"manifest {written.manifest}")
    return lines


def cmd_load(args: argparse.Namespace) -> int:
    from lockstep.assembly.engine import load_archive
    from lockstep.core.platforms import platform

    chosen = platform(args.platform, "--platform") if args.platform else None
    image_id = load_archive(args.archive, image=args.image, platform=chosen)
    print(image_id)
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    from lockstep.core.platforms import platform as platform_of
    from lockstep.core.store import default_cache_dir
    from lockstep.project import find_root, load_project

    project = load_project(find_root(args.project))
    if args.which == "python":
        from lockstep.inputs.python.lock import lock

        for written in lock(project, default_cache_dir(), progress):
            print(written)
    elif args.which == "platform":
        from lockstep.assembly.builder import compiler_platform
        from lockstep.assembly.layers import Compiler, LayerMaker
        from lockstep.core.atomic import write_bytes
        from lockstep.core.store import Cache
        from lockstep.inputs.build_inputs import DebianInput

        maker = LayerMaker(Cache(default_cache_dir()), progress)
        debian = DebianInput.read_all(project.debian_lock, project.platforms)
        first = compiler_platform(project.platforms)
        compiler = Compiler(maker.base_layer(debian[first], project.mirror()), platform_of(first))
        for name in project.platforms:
            found = maker.complete_platform(
                debian[name], project.mirror(), None if name == first else compiler
            )
            write_bytes(project.complete_platform_of(name), found)
            print(project.complete_platform_of(name))
    elif args.which == "debian":
        from lockstep.inputs.debian import lock as debian_lock
        from lockstep.inputs.debian.resolve import resolve

        arches = [platform_of(name).deb_arch for name in project.platforms]
        resolved = resolve(project.mirror(), project.debian_packages, arches)
        debian_lock.write_lock(project.debian_lock, resolved)
        counts = ", ".join(f"{len(lk.packages)} for {lk.arch}" for lk in resolved.locks)
        print(f"{project.debian_lock}: {counts} packages")
    else:  # pragma: no cover - argparse restricts the choices
        raise BadInput(f"unknown lock {args.which!r}")
    return 0
