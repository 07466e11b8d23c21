"""Dask worker preload (``--preload lockstep.runtime.preload_worker``): configure, announce.

In the worker process, before it registers with the scheduler:

1. read ``RuntimeConfig.from_env()`` against this image's manifest and log it;
2. start the configured executor;
3. announce the manifest (canonical JSON) and the executor type through
   ``worker.startup_information``, which the scheduler's gate checks;
4. answer ``lockstep_identity`` (a pickle-free handler) for ``connect``, and
   the job bundle handlers (``lockstep.bundles.handlers``); stop a task Dask
   abandons (``lockstep.runtime.cancel``, a plugin the worker adds to itself);
5. refuse, to every caller, the worker handlers that run a client's function,
   change the worker's plugins or stop it (``run``, ``run_coroutine``, ``plugin-add``,
   ``plugin-remove``, ``upload_file``, ``terminate``): the scheduler's gate never relays them
   (``lockstep.runtime.preload_scheduler``), and this also closes them to a
   process that connects to the worker's own port. The plugins Dask gives a
   worker when it registers (``shuffle``) are added by the worker itself, not
   through these handlers. The lockstep handlers that store or import code run
   only with the proof the scheduler adds (``lockstep.runtime.worker_proof``).

If the worker closes because its scheduler went (Dask's scheduler-connection and
heartbeat reasons), ``lockstep worker`` exits 3, not 0: an orchestrator must not
take it for a requested stop.

If the executor asks to retire (``direct``, after a task outlived its
timeout: its thread cannot be stopped), the worker reports that task's failure
and then closes itself without closing its nanny, so a nanny starts a fresh
worker; without a nanny ``lockstep worker`` exits 4 (``lockstep.runtime.retire``).

Any failure exits the worker process (Dask only logs an exception raised in
``dask_setup`` and runs on, docs/design.md §5). Once the scheduler has admitted
the worker, it logs ``lockstep worker ready: build … executor … pid …``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from lockstep.bundles import handlers as bundle_handlers
from lockstep.core.errors import LockstepError
from lockstep.runtime import cancel, health, retire, worker_proof
from lockstep.runtime._logging import ensure_visible
from lockstep.runtime.config import RuntimeConfig
from lockstep.runtime.executors import ExecutorStartFailed
from lockstep.runtime.identity import ANNOUNCE_KEY, EXECUTOR_KEY, IDENTITY_OP
from lockstep.runtime.worker import (
    EXTENSION,
    LOST,
    SCHEDULER_LOST_REASONS,
    WorkerRuntime,
)

log = logging.getLogger("lockstep.runtime.worker")


async def dask_setup(worker: Any) -> None:
    """Dask's preload hook: exits the process unless the worker is fit to run tasks."""
    ensure_visible()
    try:
        config = RuntimeConfig.from_env()
        log.info("%s", config.describe())
        runtime = WorkerRuntime(config, slots=max(int(worker.state.nthreads), 1))
        await asyncio.to_thread(runtime.start)
    except LockstepError as exc:
        log.critical("lockstep worker cannot start: %s", exc.message)
        sys.exit(exc.exit_code)
    except (ExecutorStartFailed, ImportError, TypeError, OSError) as exc:
        log.critical("lockstep worker cannot start its executor: %s", exc)
        sys.exit(1)
    runtime.on_retire(retire.retirer(worker, asyncio.get_running_loop()))
    _note_scheduler_loss(worker)
    worker.extensions[EXTENSION] = runtime
    worker.startup_information[ANNOUNCE_KEY] = lambda _w: runtime.announce()
    worker.startup_information[EXECUTOR_KEY] = lambda _w: config.executor
    secret = worker_proof.new_secret()
    worker.startup_information[worker_proof.PROOF_KEY] = lambda _w: secret
    try:
        refuse_client_code(worker)
    except RuntimeError as exc:
        from importlib.metadata import version

        log.critical(
            "lockstep worker cannot guard its handlers on distributed %s (%s); use "
            "the pinned distributed version",
            version("distributed"),
            exc,
        )
        sys.exit(1)
    worker.handlers[IDENTITY_OP] = lambda: {
        **runtime.identity(),
        "plugins": sorted(map(str, worker.plugins)),
    }
    cancel.install(worker, runtime.cancels)
    bundle_handlers.install(worker, runtime.bundles, runtime.envs)
    worker_proof.guard(worker, worker_proof.GUARDED_OPS, secret)
    task = asyncio.get_running_loop().create_task(_log_when_admitted(worker, runtime))
    _background.add(task)
    task.add_done_callback(_background.discard)
    await health.start(worker, lambda: _not_ready(worker, runtime))


def _not_ready(worker: Any, runtime: WorkerRuntime) -> str | None:
    """Why the worker is not ready for tasks (its readiness probe), or None."""
    from distributed.core import Status

    if runtime.retiring:
        return f"retiring: {runtime.retiring}"
    if not runtime.ready:
        return "executor not running"
    if worker.status not in (Status.running, Status.paused):
        return f"not admitted by the scheduler (status {worker.status.name})"
    return None


def _note_scheduler_loss(worker: Any) -> None:
    """Record (``LOST``) that the worker closes because its scheduler went, so that
    ``lockstep worker`` exits ``EXIT_SCHEDULER_LOST``, not 0 as after a requested stop."""
    close = worker.close

    async def closing(*args: Any, reason: str = "worker-close", **kwargs: Any) -> Any:
        from distributed.core import Status

        # A close already under way (the worker's own: the scheduler then closes its end
        # of the stream) is no loss; Dask ignores this second close.
        stopping = worker.status in (Status.closing, Status.closed, Status.failed)
        if reason in SCHEDULER_LOST_REASONS and not LOST and not stopping:
            LOST.append(reason)
            log.error("lockstep worker lost its scheduler (%s); stopping", reason)
        return await close(*args, reason=reason, **kwargs)

    worker.close = closing


_background: set[asyncio.Task[None]] = set()


# Worker handler -> the Worker method distributed 2026.8.0 binds to it.
REFUSED_WORKER_OPS = {
    "run": "run",
    "run_coroutine": "run_coroutine",
    "plugin-add": "plugin_add",
    "plugin-remove": "plugin_remove",
    "upload_file": "upload_file",
    "terminate": "close",  # the scheduler stops a worker on its own stream, never this way
}


def refuse_client_code(worker: Any) -> None:
    """Replace the handlers of ``REFUSED_WORKER_OPS``; ``RuntimeError`` if Dask changed them."""
    for op, method in REFUSED_WORKER_OPS.items():
        name = getattr(worker.handlers.get(op), "__name__", None)
        if name != method:
            raise RuntimeError(f"worker.handlers[{op!r}] is {name}, not {method}")
    for op in REFUSED_WORKER_OPS:
        worker.handlers[op] = _refuser(op, worker)


def _refuser(op: str, worker: Any) -> Any:
    async def refuse(comm: Any = None, **_msg: Any) -> Any:
        peer = getattr(comm, "peer_address", None) or "?"
        if op == "terminate":
            message = (
                f"lockstep worker {worker.address} refused terminate from {peer}: a "
                "lockstep worker is stopped by its scheduler or its process manager, "
                "never by a caller of its port"
            )
            log.warning("%s", message)
            raise PermissionError(message)
        message = (
            f"lockstep worker {worker.address} refused {op} from {peer}: functions and "
            "plugins never run on a lockstep worker from a client; the worker is "
            "configured only from its own image and environment (LOCKSTEP_EXECUTOR). "
            "Run code as tasks with lockstep.runtime.submit_task after connect()"
        )
        log.warning("%s", message)
        raise PermissionError(message)

    refuse.__name__ = f"lockstep_refuse_{op}"
    return refuse


async def _log_when_admitted(worker: Any, runtime: WorkerRuntime) -> None:
    """Log the ready line once the scheduler has admitted the worker (never if refused)."""
    from distributed.core import Status

    admitted = {Status.running, Status.paused}
    ended = {
        Status.closing,
        Status.closing_gracefully,
        Status.closed,
        Status.failed,
        Status.stopping,
        Status.stopped,
    }
    while worker.status not in admitted | ended:
        await asyncio.sleep(0.02)
    if worker.status in admitted:
        log.info("%s", runtime.ready_line())
