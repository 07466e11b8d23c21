"""A bounded window of tasks in flight: submitted in batches, answered in batches.

The runner never holds a future per simulation, only per task in flight: it
submits up to ``size`` tasks (one ``client.map`` per batch, one scheduler
message), and as tasks finish, their futures reach a queue through Dask's
done callbacks; ``done`` returns what finished, the answers of a batch gathered
in one call, and the caller tops the window up again. A released future is
forgotten by the scheduler and its result by the worker, so memory stays flat
on all three, whatever the number of simulations.

No wait is unbounded: a batch's answers are read within ``read_bound`` seconds
(doubled, up to ``READ_MOST``, each time a result is still being sent). A result whose worker died
before it was read is lost: Dask makes its future pending again, restricted to
the dead worker, so it stays in flight like any unfinished task for the runner
to move (``resubmit``). ``cluster_failure`` tells a task's own failure from the
cluster's (the scheduler gone, a worker's data lost).
"""

from __future__ import annotations

import itertools
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

WINDOW = 2000  # tasks in flight: keeps 2-16 worker threads busy between top-ups
BATCH = 500  # tasks per client.map
GATHER = 1000  # most answers taken at once
READ_SECONDS = 1.0  # the first bound on reading a batch's answers
READ_MOST = 64.0  # the bound never grows past this: the runner's checks come between reads
NOT_DONE = ("pending", "lost")  # a future's states that may still finish


@dataclass(frozen=True)
class Call:
    """One task: ``tag`` names it to the caller, ``what`` to the user."""

    tag: Any
    what: str
    target: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Outcome:
    """A finished task: its answer, or the exception it failed with."""

    call: Call
    answer: dict[str, Any] | None
    error: BaseException | None


class TaskWindow:
    """Tasks in flight for one stage of a run (see the module)."""

    def __init__(
        self,
        submit: Callable[[Sequence[Call], Sequence[str]], list[Any]],
        gather: Callable[[list[Any], float], list[Any]],
        size: int = WINDOW,
    ) -> None:
        self._submit = submit  # calls, keys -> futures
        self._gather = gather  # futures, seconds -> answers; TimeoutError past the bound
        self.size = size
        self.read_bound = READ_SECONDS
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._flight: dict[str, tuple[Any, Call]] = {}  # dask key -> (future, call)
        self._serial = itertools.count()
        self._prefix = f"{time.time_ns():x}"

    def __len__(self) -> int:
        return len(self._flight)

    def calls(self) -> list[Call]:
        return [call for _, call in self._flight.values()]

    def fill(self, calls: Iterator[Call]) -> int:
        """Submit from ``calls`` until ``size`` are in flight; how many were submitted."""
        submitted = 0
        while len(self._flight) < self.size:
            room = min(BATCH, self.size - len(self._flight))
            batch = list(itertools.islice(calls, room))
            if not batch:
                break
            self._send(batch)
            submitted += len(batch)
        return submitted

    def _send(self, batch: Sequence[Call]) -> None:
        keys = [f"lockstep-{self._prefix}-{next(self._serial)}" for _ in batch]
        futures = self._submit(batch, keys)
        for future, call in zip(futures, batch, strict=True):
            self._flight[future.key] = (future, call)
            future.add_done_callback(self._queue.put)

    def done(self, timeout: float) -> list[Outcome]:
        """What finished, waiting up to ``timeout`` seconds for the first; [] if nothing."""
        try:
            finished = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(finished) < GATHER:
            try:
                finished.append(self._queue.get_nowait())
            except queue.Empty:
                break
        ours = [(f, self._flight.pop(f.key)[1]) for f in finished if f.key in self._flight]
        ok = [(f, c) for f, c in ours if f.status == "finished"]
        outcomes = []
        for future, call in ours:
            if future.status in NOT_DONE:  # finished, then lost with its worker
                self._keep(future, call)
            elif future.status != "finished":
                outcomes.append(Outcome(call, None, _exception(future)))
        if ok:
            try:
                answers = self._gather([f for f, _ in ok], self.read_bound)
            except TimeoutError:
                self._not_read(ok)
            else:
                self.read_bound = READ_SECONDS
                outcomes += [Outcome(c, a, None) for (_, c), a in zip(ok, answers, strict=True)]
        return outcomes

    def _not_read(self, batch: Sequence[tuple[Any, Call]]) -> None:
        """Answers not read within ``read_bound``: still being sent (read again, with twice
        the time), or lost with their worker (in flight again, followed by the runner)."""
        self.read_bound = min(2 * self.read_bound, READ_MOST)
        for future, call in batch:
            if future.status == "finished":
                self._flight[future.key] = (future, call)
                self._queue.put(future)
            else:
                self._keep(future, call)

    def _keep(self, future: Any, call: Call) -> None:
        """``future`` in flight again, answered through the queue when it finishes anew."""
        self._flight[future.key] = (future, call)
        future.add_done_callback(self._queue.put)

    def resubmit(self) -> int:
        """Cancel what is in flight and submit it again (the workers changed); how many."""
        calls = self.calls()
        self.cancel()
        for start in range(0, len(calls), BATCH):
            self._send(calls[start : start + BATCH])
        return len(calls)

    def cancel(self) -> None:
        """Cancel every task in flight and forget it."""
        flight, self._flight = self._flight, {}
        for future, _ in flight.values():
            future.cancel()


def _exception(future: Any) -> BaseException:
    if future.status == "cancelled":  # not by us (we forget a future before cancelling it)
        from distributed.client import FutureCancelledError

        return FutureCancelledError(future.key, "cancelled by the cluster, not by the run")
    try:
        error = future.exception(timeout=READ_SECONDS)
    except BaseException as exc:  # cancelled, or the scheduler is gone
        return exc
    return error if error is not None else RuntimeError(f"task {future.key} {future.status}")


def cluster_failure(error: BaseException) -> bool:
    """Whether a task's error is the cluster's, not the task's: lockstep's executors turn
    everything a task does into ``TaskError``; a future cancelled by no one of ours (the
    scheduler went), a closed comm or Dask giving up on a task whose workers died is
    the cluster failing under it."""
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    from lockstep.runtime.executors import TaskError

    if isinstance(error, TaskError):
        return False
    return isinstance(error, (CommClosedError, OSError, FutureCancelledError, KilledWorker))
