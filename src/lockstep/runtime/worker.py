"""A worker's lockstep state: its config, its executor, and what it tells others about itself.

Made by the worker preload from the worker's own environment; kept in
``worker.extensions["lockstep"]`` where ``run_task`` finds it (Dask closes it
with the worker).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from lockstep.bundles.env import EnvStore
from lockstep.bundles.store import BundleStore
from lockstep.core.entrypoints import registered
from lockstep.runtime.cancel import Cancels
from lockstep.runtime.config import RuntimeConfig
from lockstep.runtime.executors import Executor, TaskCall, TaskError, TaskResult, load_executor

log = logging.getLogger(__name__)
EXTENSION = "lockstep"
RETIRED: list[str] = []  # why this process's worker retired, if it did (``preload_worker``)
EXIT_RETIRED = 4  # ``lockstep worker``'s exit code after its worker retired
LOST: list[str] = []  # why this process's worker closed on losing its scheduler, if it did
EXIT_SCHEDULER_LOST = 3  # ``lockstep worker``'s exit code then (an outside service failed)
# Dask's close reasons (distributed 2026.8.0) when the scheduler connection goes.
SCHEDULER_LOST_REASONS = frozenset(
    {
        "worker-handle-scheduler-connection-broken",
        "worker-heartbeat-missing",
        "worker-heartbeat-error",
    }
)


class WorkerRuntime:
    """The executor of one worker and the facts it announces; thread-safe."""

    def __init__(self, config: RuntimeConfig, slots: int = 1) -> None:
        self.config = config
        cls = load_executor(config.executor, registered())
        self.executor: Executor = cls(config, slots)
        self.bundles = BundleStore(config.bundle_dir)
        self.envs = EnvStore(
            config.bundle_dir, config.manifest.build_id, config.manifest.inputs["python_lock"]
        )
        self.cancels = Cancels()
        self.ready = False
        self.retiring = ""  # why the executor asked the worker to stop, if it did
        self._tasks = 0
        self._lock = threading.Lock()

    def on_retire(self, stop: Callable[[str, TaskError], None]) -> None:
        """Call ``stop(reason, error)`` if the executor must have the worker replaced
        (``direct`` after a task outlived its timeout), in the thread of that task before it
        fails with ``error`` (``lockstep.runtime.retire``)."""

        def retire(reason: str, error: TaskError) -> None:
            self.retiring = reason
            self.ready = False
            stop(reason, error)

        if hasattr(self.executor, "on_retire"):
            self.executor.on_retire = retire

    def start(self) -> None:
        """Make the bundle cache and start the executor (blocking); raises if either cannot."""
        self.bundles.prepare()
        self.executor.start()
        self.ready = True
        threading.Thread(target=self._check_envs, name="lockstep-envs", daemon=True).start()

    def _check_envs(self) -> None:
        """Verify (and watch) the environments already on disk, so a job does not wait."""
        try:
            ready = self.envs.check_all()
        except OSError as exc:
            log.warning("lockstep: the bundle environments were not checked (%s)", exc)
            return
        if ready:
            log.info("lockstep: %d bundle environment(s) on disk checked", ready)

    def run(self, call: TaskCall, key: Any = None) -> TaskResult:
        """Run ``call`` under the executor; ``key`` (its Dask key) is stopped if Dask
        abandons it (``cancel.Cancels``)."""
        with self._lock:
            self._tasks += 1
        with self.cancels.running(key) as stop:
            return self.executor.run(call, stop)

    def announce(self) -> str:
        """The manifest, as canonical JSON: what the scheduler's gate checks."""
        return self.config.manifest.to_json().decode()

    def identity(self) -> dict[str, Any]:
        """The answer to the ``lockstep_identity`` handler: plain data, no pickles."""
        return {
            "manifest": self.announce(),
            "executor": self.config.executor,
            "pid": os.getpid(),
            "ready": self.ready,
            "retiring": self.retiring,
            "tasks": self._tasks,
            "executor_pids": list(self.executor.pids()),
            "image": self.config.image,  # LOCKSTEP_IMAGE, as read at start-up
        }

    def ready_line(self) -> str:
        m = self.config.manifest
        return (
            f"lockstep worker ready: build {m.build_id} version {m.version} "
            f"executor {self.config.executor} pid {os.getpid()}"
        )

    def close(self) -> None:
        self.ready = False
        self.executor.close()
