"""CLI subcommands of releases: ``release``, ``check-pins``, ``verify``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lockstep.core.errors import BadInput, CheckFailed
from lockstep.core.progress import to_stderr as progress
from lockstep.project import add_project_arg


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "release",
        help="build stamped images, push them by digest, write "
        "release/VERSION.json and pinned deployment files, and tag",
    )
    p.add_argument("version", help="the version to release; must equal [project] version")
    p.add_argument(
        "--registry",
        required=True,
        metavar="HOST[:PORT]/REPO",
        help="where to push, e.g. registry.example.com/sim",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="do everything but push and tag (no network)"
    )
    p.add_argument(
        "--plain-http",
        action="store_true",
        help="use plain HTTP, not HTTPS (a loopback registry that does "
        "not speak TLS gets plain HTTP without it)",
    )
    p.add_argument(
        "--sign-key",
        type=Path,
        metavar="KEY.pem",
        help="sign each image and its SBOM and provenance (cosign format) with this "
        "ECDSA P-256 private key (PEM, unencrypted); no signing service is used",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_project_arg(p)
    p.set_defaults(func=cmd_release)

    p = sub.add_parser(
        "check-pins",
        help="fail on any image reference without a digest in YAML, JSON or TOML deployment "
        "files, and on any GitHub Actions `uses:` not pinned to a commit in YAML workflows",
    )
    p.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="files, or directories to search for *.yaml, *.yml, *.json, *.toml",
    )
    p.set_defaults(func=cmd_check_pins)

    p = sub.add_parser(
        "verify", help="rebuild a release from its tag in a fresh worktree and compare the digests"
    )
    p.add_argument("release_file", type=Path, metavar="release/VERSION.json")
    p.add_argument(
        "--registry",
        action="store_true",
        help="also check that the registry serves exactly the released manifests",
    )
    p.add_argument(
        "--plain-http",
        action="store_true",
        help="use plain HTTP, not HTTPS (a loopback registry that does "
        "not speak TLS gets plain HTTP without it)",
    )
    p.add_argument(
        "--public-key",
        type=Path,
        metavar="KEY.pub",
        help="also require the registry to hold a cosign signature by this key (PEM) of "
        "each image and of its SBOM and provenance artifacts",
    )
    add_project_arg(p)
    p.set_defaults(func=cmd_verify)

    add_inspect(sub)


def add_inspect(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "inspect",
        help="show an image: an archive's manifest, layers and executors, or an image in a "
        "registry with its attached SBOM, provenance and signature status",
    )
    p.add_argument("image", help="IMAGE.tar, or HOST/REPO/NAME@sha256:… in a registry")
    p.add_argument(
        "--packages",
        action="store_true",
        help="also list the packages (from the SBOM: beside the archive, or attached)",
    )
    p.add_argument(
        "--public-key",
        type=Path,
        metavar="KEY.pub",
        help="check the image's cosign signature against this key (registry images)",
    )
    p.add_argument("--plain-http", action="store_true", help="a registry on plain HTTP")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    from lockstep.assembly.inspection import describe, inspect_archive
    from lockstep.assembly.sbom import file_name as sbom_file_name
    from lockstep.release import remote

    if "@sha256:" in args.image and not Path(args.image).exists():
        info = remote.inspect_remote(args.image, args.public_key, args.plain_http)
        text = remote.describe(info, args.packages)
    else:
        info = inspect_archive(Path(args.image))
        text = describe(info)
        if args.packages:
            # <role>[-<arch>].spdx.json beside <role>[-<arch>].tar, as the build writes them
            sbom_path = Path(args.image).parent / sbom_file_name(Path(args.image).stem)
            try:
                document = json.loads(sbom_path.read_bytes())
            except (OSError, ValueError) as exc:
                raise BadInput(
                    f"{sbom_path}: no SBOM beside the archive ({exc}); build with "
                    "`lockstep build`, which writes <name>.spdx.json next to <name>.tar"
                ) from exc
            info["packages"] = remote.packages_of(document)
            text += f"\npackages  {len(info['packages'])} (from {sbom_path.name})\n"
            text += "\n".join(remote.package_lines(info["packages"]))
    print(json.dumps(info, indent=2, sort_keys=True) if args.json else text)
    return 0


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def cmd_release(args: argparse.Namespace) -> int:
    from lockstep.core.store import Cache, default_cache_dir
    from lockstep.oci.reference import parse_target
    from lockstep.project import find_root, load_project
    from lockstep.release.release import release

    target = parse_target(args.registry)
    project = load_project(find_root(args.project))
    result = release(
        project,
        args.version,
        target,
        Cache(default_cache_dir()),
        dry_run=args.dry_run,
        plain_http=args.plain_http,
        progress=progress,
        sign_key=args.sign_key,
    )
    record = result.manifest
    if args.json:
        out: dict[str, Any] = {
            **record.to_dict(),
            "manifest_path": str(result.manifest_path),
            "deploy_files": [str(p) for p in result.deploy_files],
            "push": result.stats.to_dict(),
            "tagged": result.tagged,
            "dry_run": result.dry_run,
        }
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    print(f"release {record.version}  build_id {record.build_id}")
    for role, image in sorted(record.images.items()):
        print(f"{role:<7} {image.reference}")
        found = record.attachments.get(role, {})
        for name, platform_image in image.platforms.items():
            kinds = found.get(name, {})
            print(
                f"        {name} {platform_image.digest}"
                + (f"  sbom {kinds['sbom']}  provenance {kinds['provenance']}" if kinds else "")
                + ("  signed" if "signature" in kinds else "")
            )
    stats = result.stats
    if not result.dry_run:
        print(
            f"pushed  {stats.uploaded} blobs ({stats.uploaded_bytes / 1e6:.1f} MB), "
            f"{stats.present} already there, {stats.mounted} mounted"
        )
    print(
        f"wrote   {_relative(result.manifest_path)}, {_relative(result.deploy_dir)}/ "
        f"({', '.join(str(p.relative_to(result.deploy_dir)) for p in result.deploy_files)})"
    )
    if result.tagged:
        print(f"tagged  {record.tag} at {record.commit[:12]}")
    for note in result.notes:
        print(f"note    {note}")
    return 0


def cmd_check_pins(args: argparse.Namespace) -> int:
    from lockstep.release.pins import ACTION, check_pins

    found = check_pins(args.paths)
    bad = [ref for ref in found if ref.problem]
    for ref in bad:
        print(ref)
    files = len({ref.path for ref in found})
    actions = [ref for ref in found if ref.kind == ACTION]
    images = [ref for ref in found if ref.kind != ACTION]
    if not actions:
        if bad:
            raise CheckFailed(
                f"{len(bad)} of {len(found)} image references are not pinned by "
                "digest; pin each as HOST/REPO/NAME@sha256:… (lockstep release "
                "renders such files)"
            )
        print(f"ok: {len(found)} image references in {files} files, all pinned by digest")
        return 0
    bad_actions = sum(1 for ref in actions if ref.problem)
    if bad:
        raise CheckFailed(
            f"{len(bad)} of {len(found)} references are not pinned ({len(bad) - bad_actions} "
            f"of {len(images)} images by digest, {bad_actions} of {len(actions)} actions by "
            "commit); pin images as HOST/REPO/NAME@sha256:… and actions as "
            "owner/repo@<40 hex commit> # vX.Y.Z"
        )
    print(
        f"ok: {len(images)} image references and {len(actions)} action references in "
        f"{files} files, all pinned (images by digest, actions by commit)"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from lockstep.core.store import Cache, default_cache_dir
    from lockstep.release.verify import verify

    root = (args.project or Path.cwd()).resolve()
    result = verify(
        args.release_file.resolve(),
        root,
        Cache(default_cache_dir()),
        registry=args.registry,
        plain_http=args.plain_http,
        progress=progress,
        public_key=args.public_key,
    )
    release = result.release
    print(f"verified {release.tag}  build_id {release.build_id}")
    for role, digest in sorted(result.rebuilt.items()):
        print(
            f"{role:<7} {digest}  rebuilt"
            + ("; served by the registry" if result.registry_checked else "")
            + ("; signed" if result.signatures_checked else "")
        )
    return 0
