"""``run_job``: preflight, ship the bundle, run every simulation, aggregate, one result.

Every simulation is a task (``run_task`` of ``lockstep.jobs.entry:simulate``)
on a worker that runs the job's executor and holds its bundle. The target
runs the same way, as one more task (``entry:aggregate``) on one of those
workers: the bundle's code never runs in the runner (preflight imported it
only in an isolated process), and the aggregate is computed by the same
image and executor as the simulations. Tasks answer JSON text, so the runner
needs none of the bundle's classes to read them.

The result records which build, bundle and executor ran each simulation and
in which process; a task that reports another build or executor than the job
needs fails the run (the incident's executor fell back silently). A process
is a ``(worker, pid)`` pair: each worker container has its own PID namespace,
so a PID alone does not name a process across workers (``processes``).

A run never waits for ever:

- each task has a timeout (the spec's ``task_timeout``, else the workers'
  ``LOCKSTEP_TASK_TIMEOUT``); a task that fails in any way fails the run
  with one line naming it (parameter set, seed, entry point), the cause and
  the process (executor, pid, worker) — ``JobFailed``, exit 1;
- tasks go to the workers preflight admitted (same build, the job's
  executor). While waiting, the runner re-checks the cluster every second:
  when none of those workers is left, it sends the bundle and the unfinished
  tasks to the compatible workers there are now (a worker a nanny restarted
  at a new address, or another one); if there is none, it waits ``timeout``
  seconds (``--timeout``) for one, then fails (``WorkersLost``, exit 3);
- a run deadline (``--deadline`` or the spec's ``run_deadline``), if set,
  bounds the whole run: past it the run fails (exit 1) naming what had not
  finished. Its tasks still running are cancelled, and their workers end them
  (``lockstep.runtime.cancel``);
- no wait is unbounded, also when a worker dies holding results not yet read
  or the scheduler goes (exit 3): ``lockstep.jobs.follow``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from lockstep.bundles.probe import DEFAULT_TIMEOUT
from lockstep.jobs.follow import ClusterFailed, JobFailed, Tasks, WorkersLost
from lockstep.jobs.preflight import Checked, preflight
from lockstep.manifest import BuildManifest

log = logging.getLogger(__name__)
RESULT_SCHEMA = "lockstep.result/v1"
SIMULATE = "lockstep.jobs.entry:simulate"
AGGREGATE = "lockstep.jobs.entry:aggregate"
__all__ = [
    "ClusterFailed",
    "JobFailed",
    "WorkersLost",
    "describe_processes",
    "processes",
    "run_job",
]


def run_job(
    spec_path: Path,
    address: str,
    *,
    n_workers: int = 1,
    timeout: float = 30.0,
    probe_timeout: float = DEFAULT_TIMEOUT,
    manifest: BuildManifest | None = None,
    deadline: float | None = None,
    progress: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Run the job at ``spec_path`` on the cluster at ``address``; the result document.

    ``manifest`` is the runner's own (default: ``$LOCKSTEP_MANIFEST``).
    ``deadline``: seconds the whole run may take (default: the spec's
    ``run_deadline``, else none). ``timeout`` also bounds how long the run
    waits for a compatible worker when none is left.

    Raises ``PreflightFailed`` before anything is submitted, ``ShipFailed`` if
    a worker refuses the bundle, ``JobFailed`` if a task fails or the deadline
    passes, ``WorkersLost`` if no compatible worker is left.
    """
    started = time.monotonic()
    checked = preflight(
        spec_path,
        address,
        n_workers=n_workers,
        timeout=timeout,
        probe_timeout=probe_timeout,
        manifest=manifest,
    )
    try:
        spec, bundle = checked.spec, checked.bundle
        seconds = deadline if deadline is not None else spec.run_deadline
        tasks_of = Tasks(
            checked, progress, timeout, None if seconds is None else (started + seconds, seconds)
        )
        progress(
            f"preflight ok: bundle {bundle.digest} ({len(bundle.files)} files), "
            f"model {spec.model}, target {spec.target}, {len(checked.workers)} worker(s) "
            f"running {spec.executor}"
        )
        shipped = tasks_of.ship()
        if bundle.reference is not None:
            progress(
                f"bundle {bundle.reference} pulled by {len(shipped.sent)} worker(s) from the "
                f"registry, {len(shipped.cached)} had it already"
            )
        else:
            progress(
                f"bundle sent to {len(shipped.sent)} worker(s), {len(shipped.cached)} had it "
                "already"
            )
        if shipped.env is not None and bundle.reference is not None:
            progress(
                f"environment {shipped.env}: {shipped.wheels_sent} wheel(s) pulled "
                f"({shipped.wheel_bytes / 1e6:.1f} MB), made on {len(shipped.env_built)} "
                f"worker(s), ready on {len(checked.workers)}"
            )
        elif shipped.env is not None:
            early = checked.shipped  # preflight's import check made it on one worker
            sent = shipped.wheels_sent + (early.wheels_sent if early else 0)
            sent_bytes = shipped.wheel_bytes + (early.wheel_bytes if early else 0)
            built = {*shipped.env_built, *(early.env_built if early else ())}
            progress(
                f"environment {shipped.env}: {sent} wheel(s) sent ({sent_bytes / 1e6:.1f} MB), "
                f"made on {len(built)} worker(s), ready on {len(checked.workers)}"
            )
        simulations = _simulate(tasks_of, progress)
        aggregate = _aggregate(tasks_of, simulations)
        progress(
            f"aggregated by {spec.target} on {aggregate['worker']} "
            f"({aggregate['executor']} pid {aggregate['pid']})"
        )
    finally:
        checked.close()
    assert checked.manifest is not None
    tasks = [*simulations, aggregate]
    return {
        "schema": RESULT_SCHEMA,
        "job": spec.to_dict(),
        "build_id": checked.manifest.build_id,
        "version": checked.manifest.version,
        "bundle": bundle.digest,
        "bundle_reference": bundle.reference,
        "environment": shipped.env,
        "executor": spec.executor,
        "scheduler": address,
        "workers": sorted({t["worker"] for t in tasks}),
        "processes": processes(tasks),
        "simulations": simulations,
        "aggregate": aggregate["value"],
        "aggregated_by": {k: aggregate[k] for k in ("worker", "executor", "pid")},
        "elapsed_seconds": round(time.monotonic() - started, 3),
    }


def processes(tasks: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The distinct ``{"worker", "pid"}`` pairs that ran ``tasks``, sorted."""
    pairs = sorted({(str(t["worker"]), int(t["pid"])) for t in tasks})
    return [{"worker": worker, "pid": pid} for worker, pid in pairs]


def describe_processes(found: Iterable[Mapping[str, Any]]) -> str:
    """``processes`` for a progress line: ``N process(es) on W worker(s): ADDR pids 1, 2; …``."""
    by_worker: dict[str, list[int]] = {}
    for p in found:
        by_worker.setdefault(str(p["worker"]), []).append(int(p["pid"]))
    count = sum(len(pids) for pids in by_worker.values())
    named = "; ".join(
        f"{worker} pid{'s' if len(pids) > 1 else ''} {', '.join(map(str, pids))}"
        for worker, pids in sorted(by_worker.items())
    )
    return f"{count} process(es) on {len(by_worker)} worker(s): {named}"


def _simulate(tasks: Tasks, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    checked = tasks.checked
    spec = checked.spec
    runs = spec.runs()
    tag = checked.bundle.digest[7:19]
    calls: dict[str, tuple[str, str, tuple[Any, ...]]] = {}
    where: dict[str, tuple[int, dict[str, Any], int]] = {}
    for index, params, seed in runs:
        key = f"lockstep-sim-{tag}-{index}-{seed}"
        calls[key] = (
            f"simulation params[{index}] seed {seed} ({spec.model})",
            SIMULATE,
            (spec.model, params, seed),
        )
        where[key] = (index, params, seed)
    progress(
        f"submitted {len(runs)} simulation(s): {len(spec.params)} parameter set(s) x "
        f"{len(spec.seeds)} seed(s)"
    )
    done: dict[tuple[int, int], dict[str, Any]] = {}
    shown = -1
    for key, answer in tasks.run(calls):
        index, params, seed = where[key]
        _check_ran_right(checked, answer, calls[key][0])
        done[(index, seed)] = {
            "params_index": index,
            "params": params,
            "seed": seed,
            "output": json.loads(answer["value"]),
            "worker": answer["worker"],
            "executor": answer["executor"],
            "pid": answer["pid"],
            "environment": answer.get("environment"),
        }
        step = len(done) * 10 // len(runs)
        if step != shown:
            shown = step
            progress(f"simulations {len(done)}/{len(runs)} done")
    return [done[(index, seed)] for index, _, seed in runs]


def _aggregate(tasks: Tasks, simulations: list[dict[str, Any]]) -> dict[str, Any]:
    checked = tasks.checked
    spec = checked.spec
    records = [{k: s[k] for k in ("params_index", "params", "seed", "output")} for s in simulations]
    key = f"lockstep-aggregate-{checked.bundle.digest[7:19]}"
    what = f"target {spec.target}"
    [(_, answer)] = list(tasks.run({key: (what, AGGREGATE, (spec.target, json.dumps(records)))}))
    _check_ran_right(checked, answer, what)
    return {**answer, "value": json.loads(answer["value"])}


def _check_ran_right(checked: Checked, answer: dict[str, Any], what: str) -> None:
    """Refuse a result from another build, executor or bundle than the job's."""
    assert checked.manifest is not None
    expected = {
        "build_id": checked.manifest.build_id,
        "executor": checked.spec.executor,
        "bundle": checked.bundle.digest,
    }
    wrong = [
        f"{k} {answer.get(k)} (expected {v})" for k, v in expected.items() if answer.get(k) != v
    ]
    if wrong:
        raise JobFailed(
            f"{what} ran on worker {answer.get('worker')} with "
            + ", ".join(wrong)
            + "; refusing its result"
        )
