"""Executors: where a worker runs a task. One small interface, registered by entry points.

An executor is made from the worker's own ``RuntimeConfig``, started once when
the worker starts (a failure stops the worker), then asked to ``run`` calls
named ``module:callable``. Every result says which executor ran it and in
which process. The registry is the ``lockstep.executors`` entry-point group
(``pyproject.toml``); the image's manifest lists what the image contains.

- ``direct``: in the worker process itself.
- ``isolated_warm``: in a warm child process (one per worker thread),
  reused across tasks and replaced if it dies.
- ``cold``: in a fresh process per task, forked from a clean template
  process that never imports task code.

A task is contained: whatever it raises (``SystemExit`` and
``KeyboardInterrupt`` too), however it dies, hangs past its deadline or
whatever it returns, ``run`` raises a ``TaskError`` (an ``Exception``, never a
``BaseException`` that Dask would take for a shutdown) and the executor serves
the next call. A value crosses from a task process to the worker only as plain
data (``_wire.safe_loads``), and an exception only as text.

Kept light: the executors' child processes import this package.
"""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from lockstep.core import entrypoints

if TYPE_CHECKING:
    from lockstep.runtime.config import RuntimeConfig

# Executors that run a task in the worker process itself, where a bundle's dependencies
# cannot be isolated: they take no bundle environment. Preflight refuses such a job
# (``bundles/format.py``) and the executor refuses such a task (``no_environment``).
IN_PROCESS = frozenset({"direct"})


def no_environment(executor: str) -> str | None:
    """Why ``executor`` takes no bundle environment, or None if it takes one."""
    if executor not in IN_PROCESS:
        return None
    return (
        f"the {executor} executor runs tasks in the worker process, where a bundle's "
        "dependencies cannot be isolated"
    )


@dataclass(frozen=True)
class TaskCall:
    """One call: ``target`` is ``module:qualified.name``; args must pickle with stdlib pickle.

    ``paths`` are directories (a job bundle's) put first on ``sys.path`` in the
    process that runs the call, before the target is imported. ``timeout``:
    seconds the call may run (None: the worker's ``LOCKSTEP_TASK_TIMEOUT``).
    ``env``: the key of the bundle environment the call runs in (``""``: none);
    then ``paths[0]`` is that environment's site directory, ahead of the bundle.
    """

    target: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    paths: tuple[str, ...] = ()
    timeout: float | None = None
    env: str = ""


@dataclass(frozen=True)
class TaskResult:
    """A call's value, with the executor type and the PID of the process that ran it."""

    executor: str
    pid: int
    value: Any


class TaskError(RuntimeError):
    """A task failed; ``str()`` is one line: the cause, the executor, process and target.

    ``cause`` is one line (``ValueError: kaboom``); ``remote_traceback`` the
    task's traceback text, if it raised; ``worker`` the worker's address, set
    by ``run_task``. Pickles (Dask sends it to the runner) as plain fields.
    """

    def __init__(
        self,
        cause: str,
        *,
        executor: str = "",
        pid: int | None = None,
        target: str = "",
        worker: str = "",
        remote_traceback: str = "",
    ) -> None:
        self.cause = " ".join(cause.split())
        self.executor, self.pid, self.target = executor, pid, target
        self.worker, self.remote_traceback = worker, remote_traceback
        super().__init__(self._line())

    def _line(self) -> str:
        where = [
            f"{self.executor or 'task'} process {self.pid}"
            if self.pid is not None
            else f"{self.executor or 'task'} executor"
        ]
        if self.worker:
            where.append(f"on worker {self.worker}")
        if self.target:
            where.append(f"running {self.target}")
        return f"{self.cause} ({' '.join(where)})"

    def __str__(self) -> str:
        return self._line()

    def fields(self) -> dict[str, Any]:
        return {
            "executor": self.executor,
            "pid": self.pid,
            "target": self.target,
            "worker": self.worker,
            "remote_traceback": self.remote_traceback,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.cause, self.fields()))

    def on_worker(self, worker: str) -> TaskError:
        """The same error, naming the worker."""
        return type(self)(self.cause, **{**self.fields(), "worker": worker})


def _rebuild(cls: type[TaskError], cause: str, fields: dict[str, Any]) -> TaskError:
    return cls(cause, **fields)


class TaskFailed(TaskError):
    """The task raised (its exception's type name and message are the cause), or exited."""


class TaskCrashed(TaskError):
    """The process running a task died before it answered (killed, crashed, ``os._exit``)."""


class TaskTimedOut(TaskError):
    """The task ran past its deadline; its process group was killed."""


class TaskCancelled(TaskError):
    """The task was abandoned (its run ended) while it ran; its process group was killed, or
    (``direct``) its worker retires."""


class TaskResultRefused(TaskError):
    """The task's value is not plain data, or over ``LOCKSTEP_RESULT_MAX_BYTES``."""


class ExecutorStartFailed(RuntimeError):
    """An executor's process did not start or did not say it was ready in time."""


class Executor(abc.ABC):
    """Runs calls for one worker. Thread-safe; ``start`` before, ``close`` after use.

    ``slots`` is how many calls may run at once (the worker's thread count).
    """

    name: ClassVar[str]

    def __init__(self, config: RuntimeConfig, slots: int = 1) -> None:
        if slots < 1:
            raise ValueError(f"an executor needs at least one slot, not {slots}")
        self.config = config
        self.slots = slots

    def start(self) -> None:  # noqa: B027 - optional hook: nothing to start by default
        """Make the executor ready; raise ``ExecutorStartFailed`` if it cannot be."""

    @abc.abstractmethod
    def run(self, call: TaskCall, stop: threading.Event | None = None) -> TaskResult:
        """Run ``call``; a ``TaskError`` if it failed in any way (never another exception).

        ``stop``, once set while the call runs, ends it as a timeout does
        (``TaskCancelled``): nobody wants its result any more (``runtime/cancel.py``).
        """

    def close(self) -> None:  # noqa: B027 - optional hook: nothing to stop by default
        """Stop any process the executor started."""

    def pids(self) -> tuple[int, ...]:
        """The long-lived processes this executor keeps (for logs and the identity handler)."""
        return ()


def load_executor(name: str, targets: dict[str, str]) -> type[Executor]:
    """The executor class registered as ``name`` in ``targets`` (name -> ``module:attr``)."""
    cls: Any = entrypoints.resolve(targets[name])
    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        raise TypeError(f"executor entry point {name} = {targets[name]} is not an Executor class")
    return cls
