"""``runtime/retire.py``'s report against Dask's own state machine (a real scheduler, worker
and client in this process, on 127.0.0.1).

The cluster test (test_containment_cluster.py) shows the report reaching the runner from a
real retiring worker, where Dask's own report is cancelled by the close. Here the case it
cannot show: Dask's own report comes *after* the worker's (its thread ends before the close)
and changes nothing: the task stays failed with the worker's error, no second report, and the
worker carries on.
"""

from __future__ import annotations

import asyncio
import operator
import threading
import time

import pytest
from distributed import Client, Scheduler, Worker

from lockstep.runtime.executors import TaskTimedOut
from lockstep.runtime.retire import report

STARTED = threading.Event()
RELEASE = threading.Event()


def held() -> None:
    """Run until released, then fail (Dask's own report, which must change nothing)."""
    STARTED.set()
    RELEASE.wait(60)
    raise ValueError("Dask's own report")


async def until(condition: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


def test_the_worker_s_report_wins_and_dask_s_later_one_changes_nothing() -> None:
    async def main() -> None:
        async with (
            Scheduler(host="127.0.0.1", port=0, dashboard=False) as s,
            Worker(s.address, host="127.0.0.1", nthreads=1, dashboard=False) as w,
            Client(s.address, asynchronous=True) as c,
        ):
            future = c.submit(held, key="held")
            await asyncio.to_thread(STARTED.wait, 30)
            error = TaskTimedOut("TaskTimedOut: did not finish", executor="direct", pid=1)
            assert report(w, "held", error.on_worker(w.address)) is True
            with pytest.raises(TaskTimedOut, match=f"^TaskTimedOut: did not finish .*{w.address}"):
                await asyncio.wait_for(future.result(), 30)
            RELEASE.set()  # Dask's execute now ends with its own failure
            await until(lambda: w.state.executed_count == 2, "Dask's own report never came")
            assert w.state.tasks["held"].state == "error"
            into_error = [t for t in w.state.story("held") if t[1:3] == ("executing", "error")]
            assert len(into_error) == 1, w.state.story("held")
            assert "TaskTimedOut" in s.tasks["held"].exception_text
            assert report(w, "held", error) is False  # reported once only
            assert await c.submit(operator.add, 2, 3) == 5  # the worker carries on

    try:
        asyncio.run(main())
    finally:
        RELEASE.set()
