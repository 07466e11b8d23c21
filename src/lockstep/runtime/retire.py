"""A worker's retirement: report the task that made it retire, then close the worker.

The ``direct`` executor cannot stop a thread, so a task past its timeout (or
abandoned by its run) makes its worker retire (``executors/direct.py``): the
task fails with ``TaskTimedOut`` (``TaskCancelled``) and the worker closes
without closing its nanny, which starts a fresh one (without a nanny
``lockstep worker`` exits 4).

The failure must reach the scheduler before the worker leaves, or the scheduler
takes the task back as the worker's loss (one that may run only there then
waits for ever) and the runner waits out its own timeout. Dask reports a
task's failure from the coroutine that awaits the task's thread (its
``execute``), and closing a worker cancels that coroutine. A task that still
holds the GIL (a loop in C calls) starves the worker's other threads: under
load the thread that must raise the error took seconds to minutes, and the
close, a fixed second after the timeout, cancelled the report (3 tries in 10,
under load nearly every try).
So the worker hands the failure to Dask's state machine itself, on its event
loop, as the ``ExecuteFailureEvent`` that ``execute`` would have made, and only
then closes: the ``task-erred`` message is on the scheduler stream, which
closing flushes. Nothing waits, so no load can reorder the two. Dask's own
report, if it comes before the close cancels it, finds the task no longer
executing and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from lockstep.runtime.cancel import current_key
from lockstep.runtime.executors import TaskError
from lockstep.runtime.worker import RETIRED

log = logging.getLogger("lockstep.runtime.worker")
REPORTABLE = frozenset({"executing", "long-running"})  # the scheduler still awaits this run
_background: set[asyncio.Task[None]] = set()


def retirer(worker: Any, loop: asyncio.AbstractEventLoop) -> Callable[[str, TaskError], None]:
    """The callback for ``WorkerRuntime.on_retire``: called in the thread of the task that
    makes the worker retire, it retires the worker on its event loop ``loop``."""

    def stop(reason: str, error: TaskError) -> None:
        loop.call_soon_threadsafe(_start, worker, reason, current_key(), error)

    return stop


def _start(worker: Any, reason: str, key: Any, error: TaskError) -> None:
    task = asyncio.get_running_loop().create_task(_retire(worker, reason, key, error))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _retire(worker: Any, reason: str, key: Any, error: TaskError) -> None:
    """Report task ``key``'s ``error``, then close the worker but not its nanny (also if the
    report failed: a worker that cannot run tasks must not stay)."""
    RETIRED.append(reason)
    log.critical("lockstep worker retiring: %s", reason)
    try:
        report(worker, key, error.on_worker(worker.address))
    finally:
        await worker.close(nanny=False, executor_wait=False, reason=f"lockstep retired: {reason}")


def report(worker: Any, key: Any, error: TaskError) -> bool:
    """Put task ``key``'s failure ``error`` on the worker's scheduler stream, unless it is
    not running there any more (Dask reported it already, or the scheduler let it go);
    whether it did. Runs on the worker's event loop, like Dask's state machine."""
    from distributed.worker_state_machine import ExecuteFailureEvent

    ts = worker.state.tasks.get(key) if key is not None else None
    if ts is None or ts.state not in REPORTABLE:
        return False
    worker.handle_stimulus(
        ExecuteFailureEvent.from_exception(
            error, key=key, run_id=ts.run_id, stimulus_id=f"lockstep-retire-{time.time()}"
        )
    )
    return True
