"""``lockstep bundle lock|push|pull|inspect``: a bundle's lock, and bundles in a registry.

The ``bundle`` command (made by ``cli.GROUPS``) is this room's alone: ``lock``
resolves a bundle's requirements (``bundles/lock.py``); ``push``, ``pull`` and
``inspect`` keep bundles in an OCI registry (``bundles/remote.py``). Imports stay
lazy, as in every command module.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lockstep.project import add_project_arg


def add_bundle_actions(bundle_sub: Any) -> None:
    """``bundle lock``, ``push``, ``pull`` and ``inspect``."""
    q = bundle_sub.add_parser(
        "lock",
        help="resolve DIR's pyproject.toml [project] dependencies (or requirements.txt) "
        "for the image's python on every platform it is built for and write "
        "DIR/lockstep.lock.json",
    )
    q.add_argument("dir", type=Path, help="the bundle directory")
    add_project_arg(q)
    against = q.add_mutually_exclusive_group()
    against.add_argument(
        "--image",
        metavar="HOST/REPO@sha256:…",
        help="lock against this worker image, as its registry serves it (no checkout needed)",
    )
    against.add_argument(
        "--release",
        type=Path,
        metavar="RECORD",
        help="lock against the worker image of this release record (release/<version>.json)",
    )
    against.add_argument(
        "--archive",
        type=Path,
        metavar="TAR",
        action="append",
        help="lock against the image(s) in this archive (e.g. out/worker-amd64.tar); "
        "repeat it for each platform's archive of one build",
    )
    q.add_argument(
        "--platform",
        metavar="OS/ARCH",
        action="append",
        help="lock for this platform only (repeatable; default: every platform of the "
        "project, of the index, or of the archives)",
    )
    _plain_http(q)
    q.set_defaults(func=cmd_bundle_lock)

    p = bundle_sub.add_parser(
        "push",
        help="push DIR to a registry as an OCI artifact (code, lock, one blob per wheel); "
        "prints its reference HOST/REPO@sha256:…, which a job spec's `bundle` may name",
    )
    p.add_argument("dir", type=Path, help="the bundle directory")
    p.add_argument(
        "--registry", required=True, metavar="HOST[:PORT]/REPO", help="where the bundle goes"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--prebuilt",
        action="store_true",
        help="also push the environment unpacked and compiled by this Python, one layer "
        "per platform of the lock: a worker running the same Python extracts its "
        "platform's instead of installing the wheels (run it where the runner image's "
        "Python is)",
    )
    _plain_http(p)
    p.set_defaults(func=cmd_push)

    p = bundle_sub.add_parser(
        "pull", help="write the bundle REF (HOST/REPO@sha256:…) into DIR, digests checked"
    )
    p.add_argument("ref", help="HOST/REPO@sha256:…")
    p.add_argument("dir", type=Path, help="a new or empty directory")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _plain_http(p)
    p.set_defaults(func=cmd_pull)

    p = bundle_sub.add_parser(
        "inspect", help="show what the bundle REF holds: files, lock, wheels, sizes, digests"
    )
    p.add_argument("ref", help="HOST/REPO@sha256:…")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _plain_http(p)
    p.set_defaults(func=cmd_inspect)


def _plain_http(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--plain-http",
        action="store_true",
        help="speak plain HTTP to the registry (default: HTTPS; a loopback registry "
        "without TLS is found out by itself)",
    )


def cmd_push(args: argparse.Namespace) -> int:
    from lockstep.bundles.remote import push_bundle
    from lockstep.core.progress import to_stderr as progress
    from lockstep.oci.reference import parse_target

    target = parse_target(args.registry)
    pushed = push_bundle(
        args.dir,
        target.host,
        target.repository,
        plain_http=args.plain_http,
        progress=progress,
        prebuilt=args.prebuilt,
    )
    print(json.dumps(pushed.to_json(), indent=2) if args.json else pushed.reference)
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from lockstep.bundles.remote import pull_bundle

    info = pull_bundle(args.ref, args.dir, args.plain_http)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(
            f"{info['dir']}: bundle {info['bundle']} ({info['files']} files, "
            f"{info['wheels']} wheel(s) in the cache), {info['bytes_fetched']} bytes fetched"
        )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from lockstep.bundles.remote import describe_inspect, inspect_bundle

    info = inspect_bundle(args.ref, args.plain_http)
    print(json.dumps(info, indent=2) if args.json else describe_inspect(info))
    return 0


def cmd_bundle_lock(args: argparse.Namespace) -> int:
    from lockstep.bundles import image_pins
    from lockstep.bundles.lock import describe, lock_bundle
    from lockstep.core.errors import BadInput
    from lockstep.core.progress import to_stderr as progress
    from lockstep.core.store import default_cache_dir
    from lockstep.project import find_root, load_project

    if args.image:
        base = image_pins.from_reference(args.image, args.plain_http)
    elif args.release:
        base = image_pins.from_release(args.release, args.plain_http)
    elif args.archive:
        base = image_pins.from_archives(args.archive)
    else:
        try:
            root = find_root(args.project)
        except BadInput as exc:
            raise BadInput(
                f"{exc.message}, or lock against a released image: --image HOST/REPO@sha256:…, "
                "--release RECORD or --archive TAR"
            ) from exc
        base = image_pins.from_project(load_project(root))
    if args.platform:
        base = base.only(args.platform)
    path = lock_bundle(args.dir, base, default_cache_dir(), progress)
    print(describe(path))
    return 0
