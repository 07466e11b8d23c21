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
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from lockstep.errors import CheckFailed
from lockstep.jobs.preflight import Checked, preflight
from lockstep.jobs.ship import ship_bundle
from lockstep.manifest import BuildManifest
from lockstep.runtime.probe import DEFAULT_TIMEOUT

log = logging.getLogger(__name__)
RESULT_SCHEMA = "lockstep.result/v1"
SIMULATE = "lockstep.jobs.entry:simulate"
AGGREGATE = "lockstep.jobs.entry:aggregate"


class JobFailed(CheckFailed):
    """A simulation or the target failed, or ran somewhere it must not have (exit 1)."""


def run_job(
    spec_path: Path,
    address: str,
    *,
    n_workers: int = 1,
    timeout: float = 30.0,
    probe_timeout: float = DEFAULT_TIMEOUT,
    manifest: BuildManifest | None = None,
    progress: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Run the job at ``spec_path`` on the cluster at ``address``; the result document.

    ``manifest`` is the runner's own (default: ``$LOCKSTEP_MANIFEST``).

    Raises ``PreflightFailed`` before anything is submitted, ``ShipFailed`` if
    a worker refuses the bundle, ``JobFailed`` if a task fails.
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
        progress(
            f"preflight ok: bundle {bundle.digest} ({len(bundle.files)} files), "
            f"model {spec.model}, target {spec.target}, {len(checked.workers)} worker(s) "
            f"running {spec.executor}"
        )
        shipped = ship_bundle(checked.client, bundle, checked.workers)
        progress(
            f"bundle sent to {len(shipped.sent)} worker(s), {len(shipped.cached)} had it already"
        )
        simulations = _simulate(checked, progress)
        aggregate = _aggregate(checked, simulations)
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


def _submit(checked: Checked, target: str, args: tuple[Any, ...], key: str) -> Any:
    from lockstep.runtime.tasks import submit_task

    return submit_task(
        checked.client,
        target,
        args,
        bundle=checked.bundle.digest,
        workers=list(checked.workers),
        allow_other_workers=False,
        key=key,
    )


def _simulate(checked: Checked, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    from distributed import as_completed

    spec = checked.spec
    runs = spec.runs()
    tag = checked.bundle.digest[7:19]
    futures = {}
    for index, params, seed in runs:
        future = _submit(
            checked,
            SIMULATE,
            (spec.model, params, seed),
            f"lockstep-sim-{tag}-{index}-{seed}-{time.time_ns()}",
        )
        futures[future] = (index, params, seed)
    progress(
        f"submitted {len(runs)} simulation(s): {len(spec.params)} parameter set(s) x "
        f"{len(spec.seeds)} seed(s)"
    )
    done: dict[tuple[int, int], dict[str, Any]] = {}
    shown = -1
    try:
        for future in as_completed(list(futures)):  # type: ignore[no-untyped-call]
            index, params, seed = futures[future]
            what = f"simulation params[{index}] seed {seed} ({spec.model})"
            answer = _result(future, what)
            _check_ran_right(checked, answer, what)
            done[(index, seed)] = {
                "params_index": index,
                "params": params,
                "seed": seed,
                "output": json.loads(answer["value"]),
                "worker": answer["worker"],
                "executor": answer["executor"],
                "pid": answer["pid"],
            }
            step = len(done) * 10 // len(runs)
            if step != shown:
                shown = step
                progress(f"simulations {len(done)}/{len(runs)} done")
    finally:
        for future in futures:
            if not future.done():
                future.cancel()
    return [done[(index, seed)] for index, _, seed in runs]


def _aggregate(checked: Checked, simulations: list[dict[str, Any]]) -> dict[str, Any]:
    spec = checked.spec
    records = [{k: s[k] for k in ("params_index", "params", "seed", "output")} for s in simulations]
    future = _submit(
        checked,
        AGGREGATE,
        (spec.target, json.dumps(records)),
        f"lockstep-aggregate-{checked.bundle.digest[7:19]}-{time.time_ns()}",
    )
    what = f"target {spec.target}"
    answer = _result(future, what)
    _check_ran_right(checked, answer, what)
    return {**answer, "value": json.loads(answer["value"])}


def _result(future: Any, what: str) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = future.result()
    except Exception as exc:
        raise JobFailed(f"{what} failed: {type(exc).__name__}: {exc}; nothing was written") from exc
    return answer


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
