"""Running a task under the worker's own executor: the API the runner (and jobs) use.

The runner submits ``run_task`` by reference with a target *name* and the
task's arguments; the worker looks up the executor it configured from its
own environment. Nothing in the submission configures the worker or claims
an identity::

    from lockstep.runtime import connect, submit_task

    client = connect("tcp://scheduler:8786", n_workers=4, timeout=60)
    future = submit_task(client, "mysim.model:step", args=(42,), kwargs={"dt": 0.1})
    future.result()
    # {"value": ..., "executor": "cold", "pid": 4711,
    #  "worker": "tcp://10.0.0.7:40123", "build_id": "sha256:…"}

``target`` is ``module:qualified.name``, imported where the executor runs the
task (in a ``cold`` task's own process, never in the worker). Arguments cross
into executor processes with the standard ``pickle``; a value comes back only
if it is plain data (None, bool, numbers, str, bytes, lists, tuples, dicts,
sets) of at most ``LOCKSTEP_RESULT_MAX_BYTES`` pickled, under every executor.
Whatever a task does, the runner gets a ``TaskError`` (one line: the cause, the
executor, process, worker and target): ``TaskFailed`` if it raised (any
exception, ``SystemExit`` too: its type name and message, the traceback in
``remote_traceback``), ``TaskCrashed`` if its process died, ``TaskTimedOut``
past its ``timeout`` (default: the worker's ``LOCKSTEP_TASK_TIMEOUT``),
``TaskResultRefused`` for a value that is not plain data or too large.
Under ``isolated_warm`` and ``cold`` a worker with ``--nthreads N`` keeps up
to N child processes (warm children, or cold templates), each running one
task at a time.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from lockstep.runtime.cancel import current_key
from lockstep.runtime.executors import TaskCall, TaskError
from lockstep.runtime.worker import EXTENSION, WorkerRuntime

MAX_TIMEOUT = 1e7  # seconds (115 days): any longer is a typo
log = logging.getLogger(__name__)
_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class NotALockstepWorker(RuntimeError):
    """``run_task`` ran on a worker that was not started with ``lockstep worker``."""


def check_target(target: str) -> str:
    """``target`` if it reads ``module:qualified.name``; ``ValueError`` otherwise."""
    if not isinstance(target, str) or not _TARGET.match(target):
        raise ValueError(f"task target {target!r} must read 'module:callable'")
    return target


def run_task(
    target: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    bundle: str | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run ``target(*args, **kwargs)`` under this worker's executor (runs on the worker).

    ``bundle`` is the digest of a job bundle this worker holds
    (``lockstep.bundles.store``): its directory comes first on the task
    process's ``sys.path``, after its environment's site directory if it locks
    dependencies (``lockstep.bundles.env``). ``timeout``: seconds the task
    may run (default: the worker's ``LOCKSTEP_TASK_TIMEOUT``). Returns ``{"value",
    "executor", "pid", "worker", "build_id", "bundle", "environment"}``; raises a
    ``TaskError`` naming this worker.
    """
    from distributed import get_worker

    check_target(target)
    worker = get_worker()
    runtime = worker.extensions.get(EXTENSION)
    if not isinstance(runtime, WorkerRuntime):
        raise NotALockstepWorker(
            f"worker {worker.address} has no lockstep runtime: start it "
            "with `lockstep worker` (it adds the lockstep preload)"
        )
    paths: tuple[str, ...] = ()
    env = None
    if bundle:
        stored = runtime.bundles.path(bundle, f"worker {worker.address}")
        env = runtime.envs.for_bundle(stored)  # the bundle's dependencies, if it locks any
        paths = (str(env.site), str(stored)) if env else (str(stored),)
    try:
        result = runtime.run(
            TaskCall(
                target,
                tuple(args),
                dict(kwargs or {}),
                paths,
                check_timeout(timeout),
                env.key if env else "",
            ),
            current_key(),
        )
    except TaskError as exc:
        failed = exc.on_worker(worker.address)
        log.error(
            "lockstep task failed: %s%s",
            failed,
            f"\n{exc.remote_traceback.rstrip()}" if exc.remote_traceback else "",
        )
        raise failed from None
    return {
        "value": result.value,
        "executor": result.executor,
        "pid": result.pid,
        "worker": worker.address,
        "build_id": runtime.config.manifest.build_id,
        "bundle": bundle,
        "environment": env.key if env else None,
    }


def check_timeout(timeout: float | None) -> float | None:
    """``timeout`` if it is None or a finite number of seconds > 0; ``ValueError`` otherwise."""
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or not 0 < timeout <= MAX_TIMEOUT
    ):
        raise ValueError(
            f"task timeout {timeout!r} must be a number of seconds > 0 and at most {MAX_TIMEOUT:g}"
        )
    return float(timeout)


def submit_task(
    client: Any,
    target: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    bundle: str | None = None,
    timeout: float | None = None,
    **submit_options: Any,
) -> Any:
    """``client.submit(run_task, …)``: a Future of ``run_task``'s dict.

    ``bundle``: a job bundle's digest, shipped to the workers beforehand
    (``lockstep.bundles.ship``); the task imports ``target`` from it. ``timeout``:
    seconds it may run (default: the worker's ``LOCKSTEP_TASK_TIMEOUT``).

    ``submit_options`` go to ``Client.submit`` (``key``, ``workers``,
    ``retries``…); ``pure`` defaults to False so equal calls all run.
    """
    submit_options.setdefault("pure", False)
    return client.submit(
        run_task,
        check_target(target),
        tuple(args),
        dict(kwargs or {}),
        bundle,
        check_timeout(timeout),
        **submit_options,
    )


def map_tasks(
    client: Any,
    calls: Sequence[tuple[str, Sequence[Any]]],
    keys: Sequence[str],
    bundle: str | None = None,
    timeout: float | None = None,
    **map_options: Any,
) -> list[Any]:
    """``run_task`` for each ``(target, args)`` of ``calls`` in one ``client.map`` (one
    message to the scheduler): their Futures, with the Dask ``keys`` given.

    ``bundle`` and ``timeout`` as ``submit_task``; ``map_options`` go to ``Client.map``.
    """
    n = len(calls)
    return list(
        client.map(
            run_task,
            [check_target(target) for target, _ in calls],
            [tuple(args) for _, args in calls],
            [{}] * n,
            [bundle] * n,
            [check_timeout(timeout)] * n,
            key=list(keys),
            pure=False,
            **map_options,
        )
    )
