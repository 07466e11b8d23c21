"""The runner's waiting: every wait on the cluster bounded by the run deadline and the
worker checks, whatever Dask does with the futures.

``Tasks`` submits a stage's tasks and yields their answers as they finish. It never
blocks on Dask without a bound: it waits for a future for at most ``POLL_SECONDS``,
reads a finished one's result for at most ``POLL_SECONDS`` at first (doubling for a
result still being sent), and between waits checks the run deadline and the workers.
A result whose worker died before the runner read it is lost: Dask makes its future
pending again, and restricted to the dead worker it would never run again, so it is
treated like any unfinished task (moved to the compatible workers there are now, or
``WorkersLost`` after ``--timeout``). Shipping the bundle to workers that have gone is
the same case: the run waits for compatible workers (bounded the same way) and ships
to them. A task that fails in its own process is ``JobFailed`` (exit 1); losing the
scheduler or a worker's data is the cluster's failure: ``ClusterFailed`` (exit 3).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from lockstep.bundles.ship import ShipFailed, Shipped, ship_bundle
from lockstep.core.errors import CheckFailed, ServiceFailed
from lockstep.jobs.preflight import Checked

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0  # how often the runner looks at the cluster while tasks run

Calls = dict[str, tuple[str, str, tuple[Any, ...]]]  # key -> (what, target, args)


class JobFailed(CheckFailed):
    """A simulation or the target failed, or ran somewhere it must not have, or the run
    deadline passed (exit 1)."""


class WorkersLost(ServiceFailed):
    """No worker running the job's executor was left, nor came back in time (exit 3)."""


class ClusterFailed(ServiceFailed):
    """The cluster failed under a task: the scheduler went away, or a worker's answer
    could not be read (exit 3)."""


class Tasks:
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

    def ship(self) -> Shipped:
        """Ship the bundle to the run's workers; if some are gone meanwhile, to the
        compatible workers there are (waiting for one as ``run`` does)."""
        while True:
            try:
                return ship_bundle(self.checked.client, self.checked.bundle, self.workers)
            except ShipFailed:
                current = self._compatible_workers()
                if set(self.workers) <= set(current):
                    raise  # every worker is there: it refused
            self.workers = self._await_workers(current, "the bundle not shipped")

    def _await_workers(self, current: list[str], pending: str) -> list[str]:
        """``current`` if not empty, else the compatible workers once there are some,
        polling every ``POLL_SECONDS`` up to the deadline and ``worker_wait``."""
        while not current:
            self._check_deadline([pending], 1)
            self._lost(time.monotonic(), pending)
            time.sleep(POLL_SECONDS)
            current = self._compatible_workers()
        self._lost_since = None
        return current

    def submit(self, target: str, args: tuple[Any, ...], key: str) -> Any:
        from lockstep.runtime.tasks import submit_task

        checked = self.checked
        return submit_task(
            checked.client,
            target,
            args,
            bundle=checked.bundle.digest,
            timeout=checked.spec.task_timeout,
            workers=list(self.workers),
            allow_other_workers=False,
            key=f"{key}-{time.time_ns()}",
        )

    def run(self, calls: Calls) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yields ``(key, answer)`` as the tasks of ``calls`` finish."""
        from distributed import wait
        from distributed.client import FuturesCancelledError

        futures = {self.submit(target, args, key): key for key, (_, target, args) in calls.items()}
        reading: dict[str, float] = {}  # key -> how long its result may take to read
        try:
            while futures:
                try:
                    done, _ = wait(
                        list(futures),
                        timeout=POLL_SECONDS,  # type: ignore[no-untyped-call]
                        return_when="FIRST_COMPLETED",
                    )
                except TimeoutError:
                    done = set()
                except FuturesCancelledError as exc:  # not by us: the scheduler went
                    raise self._cluster_failed(ConnectionError("connection lost")) from exc
                for future in done:
                    key = futures[future]
                    bound = reading.get(key, POLL_SECONDS)
                    try:
                        answer = _result(future, calls[key][0], bound)
                    except TimeoutError:
                        if future.status == "finished":  # still being sent: longer next time
                            reading[key] = 2 * bound
                        continue  # lost with its worker: pending again, followed below
                    del futures[future]
                    yield key, answer
                if futures:
                    self._check_deadline([calls[k][0] for k in futures.values()], len(calls))
                    futures = self._follow_workers(futures, calls)
        finally:
            for future in futures:
                future.cancel()

    def _check_deadline(self, pending: list[str], total: int) -> None:
        if self.deadline is None or time.monotonic() < self.deadline[0]:
            return
        shown = "; ".join(pending[:3]) + (
            f"; and {len(pending) - 3} more" if len(pending) > 3 else ""
        )
        raise JobFailed(
            f"run deadline of {self.deadline[1]:g} s passed with "
            f"{total - len(pending)} of {total} task(s) of this stage done; not "
            f"done: {shown}; nothing was written"
        )

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
                f"{self.worker_wait:g} s (--timeout) for one; {pending}; nothing was written"
            )

    def _follow_workers(self, futures: dict[Any, str], calls: Calls) -> dict[Any, str]:
        """Resubmit ``futures`` to the compatible workers there are if none of theirs is left;
        ``WorkersLost`` once none has been there for ``worker_wait`` seconds."""
        now = time.monotonic()
        if now - self._checked_at < POLL_SECONDS:
            return futures
        self._checked_at = now
        current = self._compatible_workers()
        if set(self.workers) & set(current):
            self._lost_since = None
            return futures
        if not current:
            self._lost(now, f"{len(futures)} task(s) not done")
            return futures
        gone = [w for w in self.workers if w not in self._gone]
        self._gone += gone
        self._lost_since = None
        self.workers = current
        self.ship()
        self.progress(
            f"worker(s) {', '.join(gone) or 'of the run'} gone; sending {len(futures)} "
            f"unfinished task(s) to {', '.join(self.workers)}"
        )
        moved = {}
        for future, key in futures.items():
            future.cancel()
            _, target, args = calls[key]
            moved[self.submit(target, args, key)] = key
        return moved

    def _cluster_failed(self, exc: BaseException) -> ClusterFailed:
        cause = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
        return ClusterFailed(
            f"the cluster failed during the run: lost the scheduler {self.checked.address} "
            f"({cause}); no task failed; check the scheduler (lockstep doctor) and run "
            "again; nothing was written"
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


def _result(future: Any, what: str, bound: float) -> dict[str, Any]:
    """The task's answer, read within ``bound`` s (``TimeoutError`` otherwise); ``JobFailed``
    in one line naming it, the cause and the process; ``ClusterFailed`` if the cluster
    failed under it."""
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    from lockstep.runtime.executors import TaskError

    try:
        answer: dict[str, Any] = future.result(timeout=bound)
    except TimeoutError:
        raise
    except TaskError as exc:
        process = (
            f"{exc.executor} process {exc.pid}"
            if exc.pid is not None
            else f"{exc.executor} executor"
        )
        raise JobFailed(
            f"{what} failed: {exc.cause} ({process} on worker "
            f"{exc.worker or '?'}); nothing was written"
        ) from exc
    except (CommClosedError, OSError, FutureCancelledError, KilledWorker) as exc:
        cause = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ClusterFailed(
            f"the cluster failed while {what} ran, not the task: {cause}; "
            "check the scheduler and workers (lockstep doctor); nothing was written"
        ) from exc
    except Exception as exc:
        cause = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise JobFailed(f"{what} failed: {cause}; nothing was written") from exc
    return answer
