"""``direct``: run each task in the worker process itself (no process isolation, no overhead).

Contained as far as a thread can be: whatever the task raises (``SystemExit``
too) fails only that task, and its value must be plain data within
``LOCKSTEP_RESULT_MAX_BYTES``, like under the other executors. But a thread
cannot be killed: a task that runs past its timeout keeps running, and keeps
its slot, however long it runs. So on a timeout the task fails with
``TaskTimedOut`` (``TaskCancelled`` if its run ended first: nobody waits for it)
and the executor *retires its worker*: it refuses further
tasks and asks the worker to stop (``on_retire``, given the error the task
fails with, which the worker reports before it closes: ``runtime/retire.py``),
so that a nanny starts a fresh one (without a nanny the worker is gone; its
tasks go to other workers).
A task that calls ``os._exit``, gets a fatal signal or forks and leaves its
children running takes the worker down or leaves them behind: run untrusted
code under ``cold`` or ``isolated_warm``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from lockstep.runtime.executors import (
    Executor,
    TaskCall,
    TaskCancelled,
    TaskError,
    TaskFailed,
    TaskResult,
    TaskResultRefused,
    TaskTimedOut,
    _wire,
    no_environment,
)

log = logging.getLogger(__name__)
POLL = 0.5  # seconds between looks at the stop event while a task runs


class DirectExecutor(Executor):
    """Calls the target in the worker's own process, in a thread of its own per call."""

    name = "direct"

    def __init__(self, config: Any, slots: int = 1) -> None:
        super().__init__(config, slots)
        self.on_retire: Callable[[str, TaskError], None] = lambda _reason, _error: None
        self.retired = ""  # why, once a task has timed out

    def run(self, call: TaskCall, stop: threading.Event | None = None) -> TaskResult:
        where: dict[str, Any] = {"executor": self.name, "pid": os.getpid(), "target": call.target}
        refused = no_environment(self.name) if call.env else None
        if refused:
            raise TaskFailed(
                f"EnvironmentRefused: {refused}; run a bundle with dependencies under "
                "isolated_warm or cold",
                **where,
            )
        if self.retired:
            raise TaskFailed(
                f"WorkerRetiring: this worker no longer takes tasks: {self.retired}", **where
            )
        timeout = call.timeout if call.timeout is not None else self.config.task_timeout
        max_bytes = int(self.config.result_max_bytes)
        outcome: list[Any] = []

        def target() -> None:
            try:
                _wire.use_paths(call.paths)
                value = _wire.resolve(call.target)(*call.args, **call.kwargs)
                data = _wire.plain_value(value, max_bytes, call.target)
                outcome.append(("ok", _wire.safe_loads(data)))
            except _wire.ResultRefused as exc:
                outcome.append(("refused", str(exc)))
            except BaseException as exc:  # SystemExit too: it ends this thread, not the worker
                try:
                    text = traceback.format_exc()
                except BaseException:
                    text = ""
                report = _wire.decode_error(_wire.encode_error(exc, text))
                outcome.append(("error", report))

        thread = threading.Thread(target=target, daemon=True, name=f"lockstep-direct {call.target}")
        thread.start()
        ends = time.monotonic() + timeout
        while thread.is_alive() and not (stop is not None and stop.is_set()):
            remaining = ends - time.monotonic()
            if remaining <= 0:
                break
            thread.join(min(remaining, POLL))
        if thread.is_alive():
            cancelled = stop is not None and stop.is_set()
            self.retired = (
                f"a task ({call.target}) was abandoned by its run while it ran"
                if cancelled
                else f"a task ({call.target}) ran past its timeout of {timeout:g} s"
            ) + " and its thread cannot be stopped"
            log.critical(
                "direct executor: %s; retiring worker pid %d so that a fresh one takes its place",
                self.retired,
                os.getpid(),
            )
            error: TaskError = (
                TaskCancelled(
                    "TaskCancelled: its run ended while it ran; the direct executor cannot "
                    "stop a thread, so its worker retires (a nanny starts a fresh one)",
                    **where,
                )
                if cancelled
                else TaskTimedOut(
                    f"TaskTimedOut: did not finish within its timeout of "
                    f"{timeout:g} s; the direct executor cannot stop a thread, so "
                    "its worker retires (a nanny starts a fresh one)",
                    **where,
                )
            )
            self.on_retire(self.retired, error)
            raise error
        if not outcome:  # the thread ended without a word: cannot happen, but never hang
            raise TaskFailed("TaskFailed: the task's thread ended without a result", **where)
        status, value = outcome[0]
        if status == "ok":
            return TaskResult(self.name, os.getpid(), value)
        if status == "refused":
            raise TaskResultRefused(f"ResultRefused: {value}", **where)
        cause = f"{value['type']}: {value['message']}" if value["message"] else value["type"]
        raise TaskFailed(cause, remote_traceback=value["traceback"], **where)
