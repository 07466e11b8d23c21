"""``direct``: run each task in the worker process itself (no isolation, no overhead)."""

from __future__ import annotations

import os

from lockstep.runtime.executors import Executor, TaskCall, TaskResult, _wire


class DirectExecutor(Executor):
    """Calls the target in the worker's own process and thread; modules stay imported."""

    name = "direct"

    def run(self, call: TaskCall) -> TaskResult:
        _wire.use_paths(call.paths)
        value = _wire.resolve(call.target)(*call.args, **call.kwargs)
        return TaskResult(self.name, os.getpid(), value)
