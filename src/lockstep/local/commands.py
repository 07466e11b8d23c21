"""CLI subcommands of the local cluster: ``up`` and ``down``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lockstep.core.limits import count_option, seconds_option
from lockstep.project import add_project_arg

DEFAULT_NAME = "lockstep"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, help="the build's output directory (default: PROJECT/out)"
    )
    parser.add_argument(
        "--name",
        default=DEFAULT_NAME,
        help=f"the cluster's name: its containers' prefix and label value (default {DEFAULT_NAME})",
    )
    add_project_arg(parser)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "up",
        help="start a local cluster on the Docker engine from the built worker image: a "
        "scheduler and N workers per executor, locked down as deployed",
    )
    _common(p)
    p.add_argument(
        "--workers",
        type=count_option("--workers"),
        default=1,
        metavar="N",
        help="workers per executor (default 1)",
    )
    p.add_argument(
        "--executor",
        action="append",
        metavar="NAME",
        help="only workers of this executor (repeatable; default: every executor of the build)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=8786,
        help="the scheduler's port on 127.0.0.1 (default 8786; 0: any free port)",
    )
    p.add_argument(
        "--timeout",
        type=seconds_option("--timeout"),
        default=120.0,
        metavar="SECONDS",
        help="give up (and remove what was made) if not all ready after this long (default 120)",
    )
    p.add_argument(
        "--cpus",
        metavar="QUANTITY",
        help='every worker\'s CPU limit, in cores ("2") or millicores ("500m") (default: as '
        "deployed: the limit of the worker group of its executor in [tool.lockstep.deploy]; "
        "the scheduler always gets the deployed scheduler's)",
    )
    p.add_argument(
        "--memory",
        metavar="QUANTITY",
        help='every worker\'s memory limit, with a unit ("768Mi", "2Gi"), no swap beyond it '
        "(default: as deployed, like --cpus)",
    )
    p.add_argument("--json", action="store_true", help="print the cluster's state as JSON")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser(
        "down",
        help="remove the local cluster: every container, network and volume `up` made "
        "(by its label) and its state file",
    )
    _common(p)
    p.set_defaults(func=cmd_down)


def _out(args: argparse.Namespace) -> Path:
    from lockstep.project import find_root

    return args.out.resolve() if args.out else find_root(args.project) / "out"


def cmd_up(args: argparse.Namespace) -> int:
    from lockstep.core.errors import BadInput
    from lockstep.deployment import cpu_millis, memory_bytes
    from lockstep.local.cluster import Plan, up
    from lockstep.project import find_root, load_project

    if not 0 <= args.port <= 65535:
        raise BadInput(f"--port {args.port}: not a port; give 0 to 65535")
    plan = Plan(
        _out(args),
        args.name,
        args.workers,
        tuple(args.executor or ()),
        args.port,
        args.timeout,
        load_project(find_root(args.project)).deploy,
        cpu_millis(args.cpus, "--cpus", "lockstep up") if args.cpus else None,
        memory_bytes(args.memory, "--memory", "lockstep up") if args.memory else None,
    )
    state = up(plan)
    if args.json:
        print(json.dumps(state, indent=2, sort_keys=True))
    else:
        print(f"cluster {state['name']} up: scheduler {state['scheduler']}, workers "
              f"{', '.join(n for n in state['containers'] if '-worker-' in n)}")  # fmt: skip
        print(f"run a job: LOCKSTEP_MANIFEST={state['manifest']} lockstep run JOB.toml "
              f"--scheduler {state['scheduler']}")  # fmt: skip
        print(f"stop it:   lockstep down --name {state['name']} --out {plan.out}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from lockstep.local.cluster import down

    removed = down(args.name, _out(args))
    print(
        f"cluster {args.name} down: {removed['containers']} container(s), "
        f"{removed['networks']} network(s), {removed['volumes']} volume(s) removed"
    )
    return 0
