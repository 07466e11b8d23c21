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
  (``lockstep.jobs.stream``: they are followed like unfinished tasks), while
  the bundle is shipped (the run waits for compatible workers as above), or
  when the scheduler goes: the cluster failed, not a task (``ClusterFailed``,
  exit 3).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lockstep.bundles.probe import DEFAULT_TIMEOUT
from lockstep.bundles.ship import ShipFailed, Shipped, ship_bundle
from lockstep.core.errors import ServiceFailed
from lockstep.jobs import stored
from lockstep.jobs.preflight import Checked, preflight
from lockstep.jobs.result import STORED, Ran, default_store, result_head
from lockstep.jobs.simulate import JobFailed, check_ran_right, failure_line, simulate_missing
from lockstep.jobs.stream import Call, Outcome, TaskWindow, cluster_failure
from lockstep.jobs.study import Study, Tally
from lockstep.manifest import BuildManifest
from lockstep.results.keys import Inputs
from lockstep.results.store import ResultStore

log = logging.getLogger(__name__)
AGGREGATE = "lockstep.jobs.entry:aggregate"


POLL_SECONDS = 1.0  # how often the runner looks at the cluster while tasks run
# The client keeps its last N message batches under 1 MB for debugging (1000 by default):
# a run's graphs and key releases, so its memory would grow with the study's first ~10⁵
# simulations. A run keeps 20.
CLIENT_CONFIG = {"distributed.admin.low-level-log-length": 20}


class WorkersLost(ServiceFailed):
    """No worker running the job's executor was left, nor came back in time (exit 3)."""


class ClusterFailed(ServiceFailed):
    """The cluster failed under a task: the scheduler went away, or a worker's answer
    could not be read (exit 3)."""


def run_job(spec_path: Path, address: str, **options: Any) -> dict[str, Any]:
    """Run the job at ``spec_path`` on the cluster at ``address``; the result document,
    every stored simulation in it (``run_study`` streams them instead)."""
    with run_study(spec_path, address, **options) as ran:
        return {**ran.head, "simulations": [json.loads(t) for t in ran.study.simulations()]}


@contextlib.contextmanager
def run_study(
    spec_path: Path,
    address: str,
    *,
    n_workers: int = 1,
    timeout: float = 30.0,
    probe_timeout: float = DEFAULT_TIMEOUT,
    manifest: BuildManifest | None = None,
    deadline: float | None = None,
    store: Path | None = None,
    fresh: bool = False,
    progress: Callable[[str], None] = log.info,
    prebuilt: bool = False,
) -> Iterator[Ran]:
    """Run the job at ``spec_path`` on the cluster at ``address``: the simulations the
    store lacks, then the target over every stored one; yields the result. If the store
    holds every simulation and the target's answer over them, that is the result, and
    no cluster is contacted (``lockstep.jobs.stored``).

    ``manifest`` is the runner's own (default: ``$LOCKSTEP_MANIFEST``).
    ``deadline``: seconds the whole run may take (default: the spec's
    ``run_deadline``, else none). ``timeout`` also bounds how long the run
    waits for a compatible worker when none is left. ``store``: the result
    store (default ``default_store``); ``fresh``: compute every simulation,
    reusing none. ``prebuilt``: a local bundle's environment goes to the workers as
    one prebuilt layer (``bundles/ship_layer.py``).

    Raises ``PreflightFailed`` before anything is submitted, ``ShipFailed`` if
    a worker refuses the bundle, ``JobFailed`` if more simulations fail than
    the spec tolerates, the target fails or the deadline passes,
    ``WorkersLost`` if no compatible worker is left. Whatever happens, every
    result that reached the runner is in the store.
    """
    started = time.monotonic()
    where = store if store is not None else default_store(spec_path)
    early = None if fresh else stored.read_first(spec_path, where, manifest)
    if early is not None and (ran := stored.answer(early, address, started, progress)):
        try:
            yield ran
        finally:
            early.study.close()
        return
    import dask
    import distributed  # noqa: F401 - its config defaults first: the set below restores them

    try:
        with dask.config.set(CLIENT_CONFIG):  # read when the client connects
            checked = preflight(
                spec_path,
                address,
                n_workers=n_workers,
                timeout=timeout,
                probe_timeout=probe_timeout,
                manifest=manifest,
                prebuilt=prebuilt,
            )
    except BaseException:
        if early is not None:
            early.study.close()
        raise
    study = None
    try:
        spec, bundle = checked.spec, checked.bundle
        assert checked.manifest is not None
        results = ResultStore.open(where)
        inputs = Inputs(checked.manifest.build_id, bundle.digest, spec.executor, spec.model)
        if early is not None and early.inputs == inputs:  # read before the cluster was asked
            study, tally, early = early.study, early.tally, None
        else:
            study, tally = Study(spec, inputs, results), None
        seconds = deadline if deadline is not None else spec.run_deadline
        tasks_of = _Tasks(
            checked, progress, timeout, None if seconds is None else (started + seconds, seconds)
        )
        tasks_of.kept = lambda: (
            f"{study.done} of {study.total} simulation(s) are stored in {where}; run it "
            "again to resume"
        )
        progress(
            f"preflight ok: bundle {bundle.digest} ({len(bundle.files)} files), "
            f"model {spec.model}, target {spec.target}, {len(checked.workers)} worker(s) "
            f"running {spec.executor}"
        )
        shipped = _ship(tasks_of, progress)
        if tally is None:
            tally = Tally() if fresh else study.read()
        if (line := tally.corrupt_line(results)) is not None:
            progress(line)
        todo = study.total - study.done
        reused = f"; {study.done} stored in {where} reused" if study.done else ""
        progress(
            f"submitted {todo} simulation(s): {len(spec.params)} parameter set(s) x "
            f"{len(spec.seeds)} seed(s){reused}"
        )
        failures = simulate_missing(
            tasks_of, study, results.writer(), spec.max_failures, progress, tasks_of.kept
        )
        if failures:
            shown = "; ".join(f.cause for f in failures[:3])
            progress(
                f"{len(failures)} simulation(s) failed (tolerated: max_failures = "
                f"{spec.max_failures}), recorded in {where} and run again next time: {shown}"
            )
        aggregate = _aggregate(tasks_of, study)
        progress(
            f"aggregated by {spec.target} on {aggregate['worker']} "
            f"({aggregate['executor']} pid {aggregate['pid']})"
        )
        checked.close()
        head = result_head(
            study,
            version=checked.manifest.version,
            bundle_reference=bundle.reference,
            environment=shipped.env,
            address=address,
            store=where,
            reused=tally.reused,
            computed=todo,
            failures=failures,
            aggregate=aggregate,
            aggregate_reused=False,
            started=started,
        )
        yield Ran(head, study)
    finally:
        checked.close()
        for left in (study, early.study if early is not None else None):
            if left is not None:
                left.close()


def _ship(tasks: _Tasks, progress: Callable[[str], None]) -> Any:
    checked = tasks.checked
    bundle = checked.bundle
    shipped = tasks.ship()
    if bundle.reference is not None:
        progress(
            f"bundle {bundle.reference} pulled by {len(shipped.sent)} worker(s) from the "
            f"registry, {len(shipped.cached)} had it already"
        )
    else:
        progress(
            f"bundle sent to {len(shipped.sent)} worker(s), {len(shipped.cached)} had it already"
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
    return shipped


class _Tasks:
    """Submits a job's tasks and waits for them, re-checking the cluster (see the module)."""

    def __init__(
        self,
        checked: Checked,
        progress: Callable[[str], None],
        worker_wait: float,
        deadline: tuple[float, float] | None,
    ) -> None:
        self.checked = checked
        self.progress = progress
        self.worker_wait = worker_wait
        self.deadline = deadline  # (monotonic time, seconds as given)
        self.workers = list(checked.workers)
        self._checked_at = time.monotonic()
        self._lost_since: float | None = None
        self._gone: list[str] = []
        self.kept: Callable[[], str] = lambda: "nothing was written"

    def window(self) -> TaskWindow:
        """A window for one stage's tasks, sent to the run's current workers."""
        from lockstep.runtime.tasks import map_tasks

        checked = self.checked

        def submit(calls: Sequence[Call], keys: Sequence[str]) -> list[Any]:
            return map_tasks(
                checked.client,
                [(c.target, c.args) for c in calls],
                keys,
                bundle=checked.bundle.digest,
                timeout=checked.spec.task_timeout,
                workers=list(self.workers),
                allow_other_workers=False,
            )

        def gather(futures: list[Any], seconds: float) -> list[Any]:
            from distributed.client import FutureCancelledError

            client = checked.client

            async def read() -> list[Any]:
                try:
                    answers: list[Any] = await client.gather(futures, asynchronous=True)
                except FutureCancelledError as exc:  # a BaseException, which Dask's sync
                    # loses (UnboundLocalError): the cluster forgot a finished task
                    raise ConnectionError(f"cancelled by the cluster: {exc}") from None
                return answers

            result: list[Any] = client.sync(read, callback_timeout=seconds)
            return result

        return TaskWindow(submit, gather)

    def ship(self) -> Shipped:
        """Ship the bundle to the run's workers; if some are gone meanwhile, to the
        compatible workers there are (waiting for one as ``stream`` does)."""
        while True:
            try:
                return ship_bundle(self.checked.client, self.checked.bundle, self.workers)
            except ShipFailed:
                current = self._compatible_workers()
                if set(self.workers) <= set(current):
                    raise  # every worker is there: it refused
            while not current:
                self._check_deadline(["the bundle not shipped"], None)
                self._lost(time.monotonic(), "the bundle not shipped")
                time.sleep(POLL_SECONDS)
                current = self._compatible_workers()
            self._lost_since = None
            self.workers = current

    def stream(self, window: TaskWindow, calls: Iterator[Call]) -> Iterator[list[Outcome]]:
        """Keep ``window`` full from ``calls``; yield each batch of finished tasks. The
        window is cancelled when the caller stops early (or on an error)."""
        window.fill(calls)
        try:
            while len(window):
                try:
                    outcomes = window.done(POLL_SECONDS)
                except OSError as exc:  # the comm closed under a read: the scheduler went
                    raise self._cluster_failed(exc) from exc
                lost = [o for o in outcomes if o.error is not None and cluster_failure(o.error)]
                if lost:  # what did finish is kept first
                    outcomes = [o for o in outcomes if all(o is not x for x in lost)]
                window.fill(calls)
                if outcomes:
                    yield outcomes
                if lost:
                    error = lost[0].error
                    assert error is not None
                    raise self._cluster_failed(error)
                if len(window):
                    self._check_deadline([c.what for c in window.calls()], None)
                    self._follow_workers(window)
        finally:
            window.cancel()

    def run(self, call: Call) -> dict[str, Any]:
        """Run one task (the target) to its answer; ``JobFailed`` if it fails."""
        for outcomes in self.stream(self.window(), iter([call])):
            [outcome] = outcomes
            if outcome.error is not None:
                raise JobFailed(f"{failure_line(outcome.error, call.what)}; {self.kept()}")
            assert outcome.answer is not None
            return outcome.answer
        raise JobFailed(f"{call.what} did not run; {self.kept()}")  # pragma: no cover

    def _check_deadline(self, pending: list[str], _total: None) -> None:
        if self.deadline is None or time.monotonic() < self.deadline[0]:
            return
        shown = "; ".join(pending[:3]) + (
            f"; and {len(pending) - 3} more" if len(pending) > 3 else ""
        )
        raise JobFailed(
            f"run deadline of {self.deadline[1]:g} s passed with {len(pending)} task(s) "
            f"in flight; not done: {shown}; {self.kept()}"
        )

    def _follow_workers(self, window: TaskWindow) -> None:
        """Resubmit ``window``'s tasks to the compatible workers there are if none of theirs
        is left; ``WorkersLost`` once none has been there for ``worker_wait`` seconds."""
        now = time.monotonic()
        if now - self._checked_at < POLL_SECONDS:
            return
        self._checked_at = now
        current = self._compatible_workers()
        if set(self.workers) & set(current):
            self._lost_since = None
            return
        if not current:
            self._lost(now, f"{len(window)} task(s) not done")
            return
        gone = [w for w in self.workers if w not in self._gone]
        self._gone += gone
        self._lost_since = None
        self.workers = current
        self.ship()
        self.progress(
            f"worker(s) {', '.join(gone) or 'of the run'} gone; sending {len(window)} "
            f"unfinished task(s) to {', '.join(self.workers)}"
        )
        window.resubmit()

    def _lost(self, now: float, pending: str) -> None:
        """No compatible worker now: say so once; ``WorkersLost`` after ``worker_wait``."""
        gone = [w for w in self.workers if w not in self._gone]
        self._gone += gone
        if self._lost_since is None:
            self._lost_since = now
            self.progress(
                f"worker(s) {', '.join(gone) or ', '.join(self.workers)} gone: "
                f"no worker running {self.checked.spec.executor} is left; "
                f"waiting up to {self.worker_wait:g} s for one"
            )
        if now - self._lost_since >= self.worker_wait:
            raise WorkersLost(
                f"no worker running executor {self.checked.spec.executor} of build "
                f"{self._build()} is left (gone: {', '.join(self._gone)}); waited "
                f"{self.worker_wait:g} s (--timeout) for one; {pending}; {self.kept()}"
            )

    def _cluster_failed(self, exc: BaseException) -> ClusterFailed:
        cause = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
        return ClusterFailed(
            f"the cluster failed during the run, not a task: lost the scheduler "
            f"{self.checked.address} or a worker's answer ({cause}); check the cluster "
            f"(lockstep doctor) and run again; {self.kept()}"
        )

    def _compatible_workers(self) -> list[str]:
        """Ready workers of the runner's build running the job's executor, per the scheduler
        (whose gate admits only workers of its build); [] if it cannot be asked."""
        from lockstep.core.errors import LockstepError
        from lockstep.runtime.cluster import check_cluster

        assert self.checked.manifest is not None
        status = str(getattr(self.checked.client, "status", "running"))
        if status not in ("running", "newly-created"):
            raise self._cluster_failed(ConnectionError(f"client {status}"))
        try:
            report = check_cluster(
                self.checked.client,
                self.checked.manifest,
                n_workers=0,
                timeout=max(POLL_SECONDS, 5.0),
                log_ready=False,
            )
        except (LockstepError, OSError, TimeoutError) as exc:
            log.info("run: cannot check the cluster now: %s", exc)
            return []
        return [
            w.address for w in report.workers if w.ok and w.executor == self.checked.spec.executor
        ]

    def _build(self) -> str:
        assert self.checked.manifest is not None
        return self.checked.manifest.build_id


def _aggregate(tasks: _Tasks, study: Study) -> dict[str, Any]:
    """The target's answer over the stored results, kept in the store under their digest."""
    checked = tasks.checked
    spec = checked.spec
    what = f"target {spec.target}"
    results, digest = study.target_input()
    answer = tasks.run(Call(None, what, AGGREGATE, (spec.target, results)))
    check_ran_right(_expected(checked), answer, what)
    aggregate = {**answer, "value": json.loads(answer["value"])}
    key = study.inputs.aggregate_key(spec.target, digest)
    study.store.put_aggregate(key, {k: aggregate.get(k) for k in STORED})
    return aggregate


def _expected(checked: Checked) -> dict[str, str]:
    assert checked.manifest is not None
    return {
        "build_id": checked.manifest.build_id,
        "executor": checked.spec.executor,
        "bundle": checked.bundle.digest,
    }
