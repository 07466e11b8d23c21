"""``lockstep preflight`` and ``lockstep run``: job specs against a cluster.

Parse arguments, call ``lockstep.jobs.preflight``/``run``, print. Progress
goes to stderr; the result JSON to ``--out`` (written atomically) or stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lockstep.bundles.probe import DEFAULT_TIMEOUT
from lockstep.core.limits import count_option, seconds_option
from lockstep.core.progress import to_stderr as progress


def add_commands(sub: Any) -> None:
    """Add the job subcommands to the CLI's subparsers."""
    pre = sub.add_parser(
        "preflight",
        help="check a job spec before anything runs: its schema, bundle, model "
        "and target (imported in an isolated process) and, with --scheduler, "
        "the cluster; every problem at once, exit 1",
    )
    pre.add_argument("job", type=Path, help="the job spec (TOML)")
    _cluster_options(pre, required=False)
    pre.set_defaults(func=run_preflight)

    run = sub.add_parser(
        "run",
        help="preflight a job, ship its bundle, run its simulations on the cluster, "
        "aggregate with its target, and write the result as JSON",
    )
    run.add_argument("job", type=Path, help="the job spec (TOML)")
    _cluster_options(run, required=True)
    run.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="write the result JSON here (atomically); default: stdout",
    )
    run.add_argument(
        "--store",
        type=Path,
        metavar="DIR",
        help="the result store: each simulation's result is kept there as it arrives, and "
        "a rerun computes only what it lacks (default: JOB's stem + .results beside it)",
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        help="compute every simulation again, reusing nothing stored (still storing them)",
    )
    run.add_argument(
        "--deadline",
        type=seconds_option("--deadline"),
        metavar="SECONDS",
        help="fail the run (exit 1) if it has not finished after this long "
        "(default: the spec's run_deadline, else none). --timeout also "
        "bounds the wait for a compatible worker when none is left (exit 3)",
    )
    run.add_argument(
        "--prebuilt",
        action="store_true",
        help="ship a local bundle's environment as one layer unpacked and compiled by this "
        "Python (made once per lock, kept in the cache) to the workers running the same "
        "Python, instead of its wheels",
    )
    run.set_defaults(func=run_run)


def _cluster_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--scheduler",
        required=required,
        metavar="ADDR",
        help="scheduler address, e.g. tcp://scheduler:8786"
        + ("" if required else "; also check the cluster"),
    )
    parser.add_argument(
        "--workers",
        type=count_option("--workers"),
        default=1,
        metavar="N",
        help="wait for at least N ready workers running the job's executor (default 1)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds_option("--timeout"),
        default=30.0,
        metavar="SECONDS",
        help="give up on the cluster after this long (default 30)",
    )
    parser.add_argument(
        "--import-timeout",
        type=seconds_option("--import-timeout"),
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"limit for importing the model and target (default {DEFAULT_TIMEOUT:g})",
    )


def run_preflight(args: argparse.Namespace) -> int:
    from lockstep.jobs.preflight import preflight

    checked = preflight(
        args.job,
        args.scheduler,
        n_workers=args.workers,
        timeout=args.timeout,
        probe_timeout=args.import_timeout,
    )
    checked.close()
    spec, bundle = checked.spec, checked.bundle
    lines = [
        f"preflight ok: {args.job}",
        f"  bundle    {bundle.digest}  {bundle.reference or bundle.root} "
        f"({len(bundle.files)} files)",
        f"  model     {spec.model}(params, seed)",
        f"  target    {spec.target}(results)",
        f"  runs      {len(spec.params)} parameter set(s) x {len(spec.seeds)} seed(s)",
        f"  executor  {spec.executor}",
    ]
    if args.scheduler:
        assert checked.manifest is not None
        lines += [
            f"  cluster   {args.scheduler}: build {checked.manifest.build_id}, "
            f"{len(checked.workers)} worker(s) running {spec.executor}; "
            f"the bundle imports on {checked.workers[0]}"
        ]
    print("\n".join(lines))
    return 0


def run_run(args: argparse.Namespace) -> int:
    from lockstep.core import malloc
    from lockstep.core.atomic import write_chunks
    from lockstep.jobs.result import describe_processes, document_chunks
    from lockstep.jobs.run import run_study

    malloc.settle()  # before Dask's threads start: they pick their arenas then
    with run_study(
        args.job,
        args.scheduler,
        n_workers=args.workers,
        timeout=args.timeout,
        probe_timeout=args.import_timeout,
        deadline=args.deadline,
        store=args.store,
        fresh=args.fresh,
        progress=progress,
        prebuilt=args.prebuilt,
    ) as ran:
        chunks = (text.encode() for text in document_chunks(ran))
        if args.out is None:
            for chunk in chunks:
                sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        else:
            write_chunks(args.out, chunks)
            head = ran.head
            progress(
                f"wrote {args.out}: build {head['build_id']}, bundle {head['bundle']}, "
                f"executor {head['executor']}, {describe_processes(head['processes'])}"
            )
    return 0
