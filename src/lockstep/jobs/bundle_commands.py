"""``lockstep bundle push|pull|inspect``: bundles in an OCI registry (``jobs/oci_bundle.py``).

The actions this stage adds to the ``bundle`` command (``cli.GROUPS``; its ``lock``
action is the build's, ``assembly/commands.py``); imports stay lazy, as in every
command module.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_bundle_actions(bundle_sub: Any) -> None:
    """``bundle push``, ``pull`` and ``inspect``."""
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
    from lockstep.core.bundle_artifact import ArtifactRefused, parse_target
    from lockstep.core.errors import BadInput
    from lockstep.core.progress import to_stderr as progress
    from lockstep.jobs.oci_bundle import push_bundle

    try:
        host, repository = parse_target(args.registry)
    except ArtifactRefused as exc:
        raise BadInput(str(exc)) from exc
    pushed = push_bundle(args.dir, host, repository, plain_http=args.plain_http, progress=progress)
    print(json.dumps(pushed.to_json(), indent=2) if args.json else pushed.reference)
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from lockstep.jobs.oci_bundle import pull_bundle

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
    from lockstep.jobs.oci_bundle import describe_inspect, inspect_bundle

    info = inspect_bundle(args.ref, args.plain_http)
    print(json.dumps(info, indent=2) if args.json else describe_inspect(info))
    return 0
