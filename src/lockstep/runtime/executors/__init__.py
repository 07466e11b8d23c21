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

Kept light: the executors' child processes import this package.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from lockstep.core import registry

if TYPE_CHECKING:
    from lockstep.runtime.config import RuntimeConfig


@dataclass(frozen=True)
class TaskCall:
    """One call: ``target`` is ``module:qualified.name``; args must pickle with stdlib pickle.

    ``paths`` are directories (a job bundle's) put first on ``sys.path`` in the
    process that runs the call, before the target is imported.
    """

    target: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskResult:
    """A call's value, with the executor type and the PID of the process that ran it."""

    executor: str
    pid: int
    value: Any


class TaskCrashed(RuntimeError):
    """The process running a task died before it answered (killed, crashed, ``os._exit``)."""


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
    def run(self, call: TaskCall) -> TaskResult:
        """Run ``call``; its exception is re-raised here, ``TaskCrashed`` if its process died."""

    def close(self) -> None:  # noqa: B027 - optional hook: nothing to stop by default
        """Stop any process the executor started."""

    def pids(self) -> tuple[int, ...]:
        """The long-lived processes this executor keeps (for logs and the identity handler)."""
        return ()


def load_executor(name: str, targets: dict[str, str]) -> type[Executor]:
    """The executor class registered as ``name`` in ``targets`` (name -> ``module:attr``)."""
    cls: Any = registry.resolve(targets[name])
    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        raise TypeError(f"executor entry point {name} = {targets[name]} is not an Executor class")
    return cls
