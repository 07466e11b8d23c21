"""A bounded window of tasks in flight: submitted in batches, answered in batches.

The runner never holds a future per simulation, only per task in flight: it
submits up to ``size`` tasks (one ``client.map`` per batch, one scheduler
message), and as tasks finish, their futures reach a queue through Dask's
done callbacks; ``done`` returns what finished, the answers of a batch gathered
in one call, and the caller tops the window up again. A released future is
forgotten by the scheduler and its result by the worker, so memory stays flat
on all three, whatever the number of simulations.
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
        gather: Callable[[list[Any]], list[Any]],
        size: int = WINDOW,
    ) -> None:
        self._submit = submit  # calls, keys -> futures
        self._gather = gather
        self.size = size
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
        answers = self._gather([f for f, _ in ok]) if ok else []
        outcomes = [Outcome(c, a, None) for (_, c), a in zip(ok, answers, strict=True)]
        for future, call in ours:
            if future.status != "finished":
                outcomes.append(Outcome(call, None, _exception(future)))
        return outcomes

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
    try:
        error = future.exception(timeout=60)
    except BaseException as exc:  # cancelled, or the scheduler is gone
        return exc
    return error if error is not None else RuntimeError(f"task {future.key} {future.status}")
