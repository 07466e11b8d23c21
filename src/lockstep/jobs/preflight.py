"""Preflight: every reference of a job spec checked before the first task is submitted.

The incident (docs/design.md §1) was a spec naming a target function that did not
exist; nothing looked before the simulations ran. ``preflight`` checks, and
reports every problem at once (``PreflightFailed``, one line each, with the
file and the name it is about):

1. the spec's schema (``lockstep.jobs.spec``);
2. the bundle: it exists, holds only regular files, every ``.py`` compiles,
   and no top-level name hides a standard or installed module; if it declares
   requirements, its lock exists, matches them, reads clean (wheels for the
   image's platform, none of the image's projects, not edited by hand) and
   names the cluster's Python lock, and the executor is not ``direct``; with a
   scheduler, the lock has a part for the platform of every worker that may run
   the job (a mixed cluster needs a lock of each of its platforms);
3. the model and target import and are callables that accept
   ``model(params, seed)`` and ``target(results)`` — in an isolated
   interpreter (``lockstep.bundles.probe``), so the bundle's import side
   effects never touch the runner;
4. with a scheduler: the handshake (``connect``), ready workers running the
   executor the job needs, and the same import check on one of them, in a
   fresh process of the worker's image with the bundle it was shipped (and, for
   a bundle with dependencies, in its environment there, made from the wheels
   the runner sent: only there, as the runner installs nothing).

No task is submitted: the cluster checks use lockstep's pickle-free handlers.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.bundles.format import (
    Bundle,
    dependency_problems,
    load_bundle,
    shadowing_problems,
    syntax_problems,
)
from lockstep.bundles.lockfile import LOCK_FILE, platforms_problem
from lockstep.bundles.probe import DEFAULT_TIMEOUT, run_probe
from lockstep.bundles.ship import ShipFailed, check_on_worker, ship_bundle
from lockstep.core.entrypoints import registered
from lockstep.core.errors import BadInput, LockstepError
from lockstep.core.settings import EXECUTOR as EXECUTOR_ENV
from lockstep.core.settings import MANIFEST as MANIFEST_ENV
from lockstep.jobs.spec import JobSpec, PreflightFailed, Problem, read_spec, spec_from_fields
from lockstep.manifest import BuildManifest, load_manifest
from lockstep.runtime.identity import Member

log = logging.getLogger(__name__)

MODEL_ARGS = ("params", "seed")
TARGET_ARGS = ("results",)
POLL_SECONDS = 0.2


@dataclass
class Checked:
    """A job that passed preflight. With a scheduler, ``client`` is connected and
    ``workers`` are the ready workers running the job's executor; close it after use."""

    spec: JobSpec
    bundle: Bundle
    address: str | None = None
    client: Any = None
    manifest: BuildManifest | None = None
    workers: tuple[str, ...] = ()
    shipped: Any = None  # ``ship.Shipped`` of the import check on a worker, if it ran

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def entry_checks(fields: dict[str, Any]) -> list[dict[str, Any]]:
    """The probe's checks for the model and the target the spec names (those that are valid)."""
    checks = []
    if "model" in fields:
        checks.append({"role": "model", "ref": fields["model"], "args": list(MODEL_ARGS)})
    if "target" in fields:
        checks.append({"role": "target", "ref": fields["target"], "args": list(TARGET_ARGS)})
    return checks


def preflight(
    spec_path: Path,
    address: str | None = None,
    *,
    n_workers: int = 1,
    timeout: float = 30.0,
    probe_timeout: float = DEFAULT_TIMEOUT,
    manifest: BuildManifest | None = None,
    prebuilt: bool = False,
) -> Checked:
    """Check the job at ``spec_path`` (and the cluster at ``address``); ``PreflightFailed``.

    ``BadInput`` only if the spec file cannot be read. On success with an
    ``address``, the returned ``Checked`` holds the connected client.
    """
    where = str(spec_path)
    fields, problems = read_spec(spec_path, registered())
    bundle: Bundle | None = None
    if isinstance(fields.get("bundle"), str):  # HOST/REPO@sha256:…, checked in its registry
        from lockstep.bundles.remote import resolve

        try:
            bundle, found = resolve(fields["bundle"])
        except LockstepError as exc:
            problems.append(Problem(fields["bundle"], "bundle", exc.message, exc.exit_code))
            found = []
        if bundle is not None:
            found += syntax_problems(bundle) + shadowing_problems(bundle)
        problems += [Problem(file, "bundle", message) for file, message in found]
    elif "bundle" in fields:
        bundle, found = load_bundle(fields["bundle"])
        if bundle is not None and prebuilt:
            bundle = dataclasses.replace(bundle, prebuilt=True)
        if bundle is not None:
            found += syntax_problems(bundle) + shadowing_problems(bundle)
        problems += [Problem(file, "bundle", message) for file, message in found]
    own = manifest
    if own is None and address is not None:
        try:
            own = load_manifest()
        except BadInput:
            own = None  # reported by the cluster check
    has_deps = False
    if bundle is not None:
        deps = dependency_problems(
            bundle, fields.get("executor"), own.inputs["python_lock"] if own else None
        )
        problems += [Problem(file, "dependencies", message, code) for file, message, code in deps]
        lock = bundle.lock()
        has_deps = bool(lock and lock.wheels) or bool(deps)
    checks = entry_checks(fields)
    local_ok = False
    if bundle is not None and checks and has_deps:
        # Its dependencies are installed only on workers: the import is checked there.
        log.debug("preflight: the bundle has dependencies; model and target import on a worker")
        local_ok = True
    elif bundle is not None and checks:
        results = run_probe([str(bundle.root)], checks, probe_timeout)
        failed = [r for r in results if not r["ok"]]
        problems += [Problem(where, f"{r['role']} {r['ref']}", str(r["problem"])) for r in failed]
        local_ok = not failed
    checked = (
        Checked(spec_from_fields(spec_path, fields), bundle)
        if not problems and bundle is not None
        else None
    )

    client = None
    if address is not None:
        client, members, own, cluster_problems = _check_cluster(
            address, fields.get("executor"), n_workers, timeout, own
        )
        problems += cluster_problems
        workers = [m.address for m in members]
        if bundle is not None:
            problems += _platform_problems(bundle, members)
        shipped: list[Any] = []
        if client is not None and workers and bundle is not None and local_ok and not problems:
            problems += _check_import_on_worker(
                client, workers[0], bundle, checks, probe_timeout, shipped
            )
        elif client is not None and workers and not local_ok:
            log.info("preflight: not checking the import on a worker: it failed here already")
        if checked is not None:
            checked.address, checked.client, checked.manifest = address, client, own
            checked.workers = tuple(workers)
            checked.shipped = shipped[0] if shipped else None
    if problems:
        if client is not None:
            client.close()
        raise PreflightFailed(spec_path, problems)
    assert checked is not None
    return checked


def _platform_problems(bundle: Bundle, workers: Sequence[Member]) -> list[Problem]:
    """The bundle's lock must have a part for the platform of every worker that may run
    its tasks (as each worker's manifest names it; one that names none is not judged)."""
    lock = bundle.lock()
    if lock is None:
        return []
    needed: dict[str, list[str]] = {}
    for worker in workers:
        if worker.platform != "-":
            needed.setdefault(worker.platform, []).append(worker.address)
    problem = platforms_problem(lock, needed, bundle.root)
    return [Problem(str(bundle.root / LOCK_FILE), "dependencies", problem, 2)] if problem else []


def _check_cluster(
    address: str,
    executor: str | None,
    n_workers: int,
    timeout: float,
    manifest: BuildManifest | None,
) -> tuple[Any, list[Member], BuildManifest | None, list[Problem]]:
    """``(client or None, ready workers running executor, runner manifest, problems)``."""
    from lockstep.runtime.cluster import check_cluster, connect

    try:
        own = manifest or load_manifest()
    except BadInput as exc:
        return None, [], None, [Problem(MANIFEST_ENV, "runner manifest", exc.message, 2)]
    try:
        client = connect(address, n_workers=n_workers, timeout=timeout, manifest=own)
    except LockstepError as exc:
        summary = getattr(exc, "summary", exc.message)
        return None, [], own, [Problem(address, "handshake", summary, exc.exit_code)]
    if executor is None:
        return client, [], own, []
    deadline = time.monotonic() + timeout
    while True:
        try:
            report = check_cluster(client, own, n_workers=0, timeout=timeout, log_ready=False)
        except LockstepError as exc:
            summary = getattr(exc, "summary", exc.message)
            return client, [], own, [Problem(address, "handshake", summary, exc.exit_code)]
        workers = [w for w in report.workers if w.ok and w.executor == executor]
        if len(workers) >= n_workers or time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    if len(workers) >= max(n_workers, 1):
        return client, workers, own, []
    running = ", ".join(f"{w.address} runs {w.executor}" for w in report.workers) or "none"
    return (
        client,
        workers,
        own,
        [
            Problem(
                address,
                f"executor {executor}",
                f"the job needs {max(n_workers, 1)} ready worker(s) running executor "
                f"{executor}, the cluster has {len(workers)} (workers: {running}); "
                f"start workers with {EXECUTOR_ENV}={executor} or change `executor` in the "
                "job spec",
            )
        ],
    )


def _check_import_on_worker(
    client: Any,
    worker: str,
    bundle: Bundle,
    checks: list[dict[str, Any]],
    timeout: float,
    shipped: list[Any],
) -> list[Problem]:
    try:
        shipped.append(ship_bundle(client, bundle, [worker]))
        results = check_on_worker(client, worker, bundle.digest, checks, timeout)
    except ShipFailed as exc:
        return [Problem(str(bundle.root), "bundle", line, exc.exit_code) for line in exc.lines]
    except LockstepError as exc:
        return [Problem(worker, "bundle", exc.message, exc.exit_code)]
    return [
        Problem(worker, f"{r['role']} {r['ref']}", f"on the worker: {r['problem']}")
        for r in results
        if not r["ok"]
    ]
