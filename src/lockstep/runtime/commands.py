"""``lockstep scheduler``, ``lockstep worker``, ``lockstep runner``: the images' entry points.

``scheduler`` and ``worker`` are Dask's own ``dask scheduler`` and
``dask worker`` with lockstep's preload put first; every argument passes
through to Dask (``lockstep worker --help`` shows Dask's options). Each checks
its settings before Dask starts, so a bad manifest or executor is one line on
stderr and exit 2. With ``LOCKSTEP_TLS_*`` set, both get Dask's
``--tls-ca-file/--tls-cert/--tls-key`` (and the scheduler ``--protocol tls``),
with encryption required, so they speak mutual TLS only. Without TLS they
listen on loopback only unless ``--insecure`` is given (``runtime/protected.py``). Dask's
HTTP server (dashboard, ``/health``, ``/info``…) is off: bound to loopback and closed by
the preload once the process runs, unless the command line asks for it
(``--dashboard`` or ``--dashboard-address``: opt-in, plain HTTP without
authentication). A worker's ``--memory-limit`` and ``--nthreads`` come from
its container's limits (``runtime.sizing``) unless given. ``runner``
connects, runs the handshake and prints the cluster's table. ``doctor``
shows the live cluster behind a scheduler (``lockstep.runtime.doctor``).
Imports stay lazy so ``lockstep --help`` does not load Dask.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

from lockstep.core.limits import count_option, seconds_option

log = logging.getLogger(__name__)

SCHEDULER_PRELOAD = "lockstep.runtime.preload_scheduler"
WORKER_PRELOAD = "lockstep.runtime.preload_worker"
NANNY_PRELOAD = "lockstep.runtime.preload_nanny"
HELP = frozenset({"--help", "--version"})  # Dask answers these itself: nothing to check


def add_commands(sub: Any) -> None:
    """Add the runtime subcommands to the CLI's subparsers."""
    # prefix_chars="+": argparse treats every "-…" as a plain argument, so all of
    # Dask's options (and --help) reach Dask's own parser untouched.
    scheduler = sub.add_parser(
        "scheduler",
        prefix_chars="+",
        add_help=False,
        help="run a Dask scheduler that admits only workers of this build "
        "(Dask's `dask scheduler` options pass through)",
    )
    scheduler.add_argument("dask_args", nargs=argparse.REMAINDER)
    scheduler.set_defaults(func=run_scheduler)

    worker = sub.add_parser(
        "worker",
        prefix_chars="+",
        add_help=False,
        help="run a Dask worker configured from its own environment (LOCKSTEP_EXECUTOR); "
        "`dask worker` options pass through, e.g. tcp://host:8786 --nthreads 1",
    )
    worker.add_argument("dask_args", nargs=argparse.REMAINDER)
    worker.set_defaults(func=run_worker)

    runner = sub.add_parser(
        "runner",
        help="connect to a scheduler, check that it and its workers are this build, "
        "and print the cluster's table",
    )
    runner.add_argument("scheduler", help="scheduler address, e.g. tcp://scheduler:8786")
    runner.add_argument(
        "--workers",
        type=count_option("--workers"),
        default=1,
        metavar="N",
        help="wait for at least N ready workers of this build (default 1)",
    )
    runner.add_argument(
        "--timeout",
        type=seconds_option("--timeout"),
        default=30.0,
        metavar="SECONDS",
        help="give up after this long (default 30)",
    )
    runner.add_argument(
        "--probe",
        action="store_true",
        help="also ask every worker directly, not only the scheduler's record",
    )
    runner.set_defaults(func=run_runner)

    doctor = sub.add_parser(
        "doctor",
        help="show the live cluster behind a scheduler as a table (address, role, "
        "version, build id, executor, image, status); exit 1 unless it is all "
        "one build",
    )
    doctor.add_argument(
        "--scheduler",
        required=True,
        metavar="ADDR",
        help="scheduler address, e.g. tcp://scheduler:8786",
    )
    doctor.add_argument(
        "--timeout",
        type=seconds_option("--timeout"),
        default=30.0,
        metavar="SECONDS",
        help="give up after this long (default 30)",
    )
    doctor.add_argument("--json", action="store_true", help="print the table as JSON")
    doctor.set_defaults(func=run_doctor)

    check = sub.add_parser(
        "self-check",
        help="inside an image: import every executor its manifest lists, then print the manifest",
    )
    check.set_defaults(func=run_self_check)


def _with_tls(args: list[str], scheduler: bool) -> list[str]:
    """``args`` plus Dask's TLS options if ``LOCKSTEP_TLS_*`` are set; ``BadInput`` if bad."""
    import dask

    from lockstep.core.errors import BadInput
    from lockstep.runtime.config import tls_from_env

    tls = tls_from_env()
    if tls is None:
        return args
    plain = [a for a in args if a.startswith("tcp://")]
    if plain:
        raise BadInput(
            f"{plain[0]}: {tls.names()} are set, so the cluster speaks mutual TLS "
            "only; write the scheduler address like tls://host:8786"
        )
    if any(a.startswith("--tls-") for a in args):
        raise BadInput(
            f"Dask's --tls-* options and {tls.names()} both given; use only the "
            "LOCKSTEP_TLS_* settings"
        )
    dask.config.set({"distributed.comm.require-encryption": True})
    protocol = (
        ["--protocol", "tls"]
        if scheduler and not any(a == "--protocol" or a.startswith("--protocol=") for a in args)
        else []
    )
    return [*tls.dask_args(), *protocol, *args]


DASHBOARD_OPTIONS = ("--dashboard", "--dashboard-address")


def _without_dashboard(args: list[str]) -> list[str]:
    """``args`` with Dask's HTTP server on loopback and marked for closing, unless the
    command line opts in to it (``--dashboard`` or ``--dashboard-address``)."""
    import dask

    from lockstep.runtime.health import HTTP_CONFIG

    if any(a == o or a.startswith(o + "=") for a in args for o in DASHBOARD_OPTIONS):
        log.warning(
            "lockstep: Dask's dashboard is on as asked (%s): plain HTTP without "
            "authentication, beside the TLS port",
            " ".join(a for a in args if a.startswith(DASHBOARD_OPTIONS)),
        )
        dask.config.set({HTTP_CONFIG: True})
        return args
    dask.config.set({HTTP_CONFIG: False})
    return ["--no-dashboard", "--dashboard-address", "127.0.0.1:0", *args]


def _dask_main(
    module: str,
    preload: str,
    args: list[str],
    prog: str,
    before: Callable[[list[str]], None] | None = None,
) -> int:
    """Run Dask's click command ``module.main`` with our preload first; its exit code.
    ``before`` is called with the final arguments once they are checked, before Dask
    starts (not for ``--help``)."""
    import importlib

    from lockstep.core.errors import CheckFailed, ServiceFailed
    from lockstep.runtime import protected
    from lockstep.runtime.config import tls_from_env

    main = importlib.import_module(module).main
    if not HELP & set(args):
        args = protected.check(args, prog, tls_from_env() is not None)
    args = _with_tls(args, scheduler=module.endswith("dask_scheduler"))
    if not HELP & set(args):
        args = _without_dashboard(args)
        if before is not None:
            before(args)
    try:
        first = ["--preload", preload]
        if preload == WORKER_PRELOAD:
            first += ["--preload-nanny", NANNY_PRELOAD]
        main.main(args=[*first, *args], prog_name=prog, standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except Exception as exc:  # Dask lets start-up failures escape its CLI as tracebacks
        refusal = _refusal(exc)
        if refusal:
            raise CheckFailed(refusal.removeprefix("lockstep ")) from exc
        taken = _address_in_use(exc)
        if taken is not None:
            host = protected.option(args, "--host") or "all interfaces"
            port = protected.option(args, "--port") or "?"
            raise ServiceFailed(
                f"{prog} cannot listen on {host}:{port}: address already in use ({taken}); "
                "another process (a second scheduler?) holds that port: stop it or choose "
                "another --port"
            ) from exc
        raise ServiceFailed(
            f"{prog} stopped: {type(exc).__name__}: {exc}; its log above says why"
        ) from exc
    return 0


def _address_in_use(exc: BaseException | None) -> str | None:
    """The text of an ``EADDRINUSE`` ``OSError`` in the chain of ``exc``, if there is one."""
    import errno

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            return str(exc.strerror or exc)
        exc = exc.__cause__ or exc.__context__
    return None


def _refusal(exc: BaseException | None) -> str | None:
    """The text of the scheduler's refusal, if the chain of ``exc`` holds one.

    Dask raises ``ValueError("Unexpected response from register: {response!r}")``,
    the repr of the scheduler's answer, whose ``refusal`` holds the fields of
    an ``identity.Refusal`` (the gate's, ``lockstep.runtime.gate``).
    """
    import ast

    from lockstep.runtime.identity import Refusal

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        _, _, response = str(exc).partition("Unexpected response from register: ")
        try:
            answer = ast.literal_eval(response) if response else None
        except (ValueError, SyntaxError):
            answer = None
        refusal = Refusal.from_wire(answer.get("refusal") if isinstance(answer, dict) else None)
        if refusal is not None:
            return refusal.text
        exc = exc.__cause__ or exc.__context__
    return None


def run_scheduler(args: argparse.Namespace) -> int:
    from lockstep.manifest import load_manifest

    if not HELP & set(args.dask_args):
        manifest = load_manifest()  # BadInput, one line, before Dask starts
        log.info("lockstep scheduler: build %s version %s", manifest.build_id, manifest.version)
    return _dask_main(
        "distributed.cli.dask_scheduler", SCHEDULER_PRELOAD, args.dask_args, "lockstep scheduler"
    )


LOOK_SECONDS = 10.0  # one look at a worker's scheduler when Dask itself waits for it


def _wait_for_scheduler(dask_args: list[str], tls: Any) -> None:
    """Before Dask starts, look at the worker's scheduler address: another server there, or
    a refused certificate, stops the worker at once (exit 3, one line saying what is
    there). When Dask would give up on a scheduler that does not answer — after
    ``--death-timeout``, or with a nanny after its connect timeout, saying only "Nanny
    failed to start" — wait that long here instead, so the line says why (refused,
    unreachable). A worker without a nanny or a death timeout waits as Dask does: alive
    and not ready, until its scheduler comes."""
    import dask
    from dask.utils import parse_timedelta
    from distributed.cli.dask_worker import main

    from lockstep.runtime import reach

    try:
        parsed = main.make_context("lockstep worker", list(dask_args), resilient_parsing=True)
    except Exception:  # Dask's own parse says what is wrong with the options
        return
    address, timeout = parsed.params.get("scheduler"), parsed.params.get("death_timeout")
    if not address:  # --scheduler-file: Dask waits for the file
        return
    connect = float(parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s"))
    if timeout is not None or parsed.params.get("nanny", True):
        seconds = float(parse_timedelta(timeout, "s")) if timeout is not None else connect
        reach.wait_for_scheduler(str(address), seconds, tls, who="this worker")
    else:
        reach.refuse_other_servers(str(address), min(connect, LOOK_SECONDS), tls, "this worker")


def run_worker(args: argparse.Namespace) -> int:
    from lockstep.runtime.config import RuntimeConfig
    from lockstep.runtime.worker import EXIT_RETIRED, EXIT_SCHEDULER_LOST, LOST, RETIRED

    dask_args = list(args.dask_args)
    tls: Any = None
    if not HELP & set(dask_args):
        from lockstep.runtime import sizing

        config = RuntimeConfig.from_env()  # BadInput, one line, before Dask starts (TLS files)
        tls = config.tls
        limits = sizing.read_limits()
        dask_args = sizing.worker_args(dask_args, limits)
        log.info("lockstep worker: %s; dask %s", limits.describe(), " ".join(dask_args))
    code = _dask_main(
        "distributed.cli.dask_worker",
        WORKER_PRELOAD,
        dask_args,
        "lockstep worker",
        # after the argument checks (exit 2): what is at the scheduler's address, exit 3
        before=lambda final: _wait_for_scheduler(final, tls),
    )
    if RETIRED:  # without a nanny: the worker ran in this process
        log.error("lockstep worker retired: %s", RETIRED[0])
        return EXIT_RETIRED
    if LOST:  # noted by the worker's preload, or by the nanny's (preload_nanny)
        log.error("lockstep worker stopped: it lost its scheduler (%s); exit 3", LOST[0])
        return EXIT_SCHEDULER_LOST
    return code


def run_runner(args: argparse.Namespace) -> int:
    from lockstep.manifest import load_manifest
    from lockstep.runtime.cluster import check_cluster
    from lockstep.runtime.cluster_view import open_client

    manifest = load_manifest()
    client = open_client(args.scheduler, args.timeout)
    try:
        report = check_cluster(
            client, manifest, n_workers=args.workers, timeout=args.timeout, probe_workers=args.probe
        )
    finally:
        client.close()
    print(report.table())
    return 0


def run_doctor(args: argparse.Namespace) -> int:
    import json

    from lockstep.core.errors import CheckFailed
    from lockstep.runtime.doctor import diagnose

    diagnosis = diagnose(args.scheduler, args.timeout)
    if args.json:
        print(json.dumps(diagnosis.to_dict(), indent=2))
    else:
        print(diagnosis.table())
    if not diagnosis.ok:
        raise CheckFailed(diagnosis.summary())
    if not args.json:
        print(diagnosis.summary())
    return 0


def run_self_check(args: argparse.Namespace) -> int:
    import json

    from lockstep.runtime.selfcheck import self_check

    manifest = self_check()
    print(json.dumps(manifest.to_dict(), indent=2, sort_keys=True))
    return 0
