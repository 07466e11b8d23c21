"""An abandoned task ends: when Dask stops wanting a running task, its executor stops it.

A runner that passes its deadline cancels its futures; a runner that is killed
leaves the scheduler to release its keys. Either way the scheduler tells the
worker, whose state machine moves the task out of ``executing`` while the
thread running it carries on (Dask cannot stop a thread). ``Cancels`` hears that
transition (a worker plugin the preload adds to the worker itself) and sets the
task's stop event; the executor watching it ends the task's process group
(``cold``, ``isolated_warm``) or retires the worker (``direct``), so the next job
does not wait for ``LOCKSTEP_TASK_TIMEOUT``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PLUGIN = "lockstep-cancel"
LEFT = frozenset({"released", "cancelled", "forgotten"})  # executing -> one of these: abandoned


class Cancels:
    """The stop events of the tasks running on one worker, by Dask key; thread-safe."""

    def __init__(self) -> None:
        self._events: dict[Any, threading.Event] = {}
        self._lock = threading.Lock()

    @contextmanager
    def running(self, key: Any) -> Iterator[threading.Event]:
        """The stop event of ``key`` while the task runs (``key`` None: never set)."""
        event = threading.Event()
        if key is None:
            yield event
            return
        with self._lock:
            self._events[key] = event
        try:
            yield event
        finally:
            with self._lock:
                if self._events.get(key) is event:
                    del self._events[key]

    def cancel(self, key: Any) -> bool:
        """Set ``key``'s stop event; whether it was running."""
        with self._lock:
            event = self._events.get(key)
        if event is None:
            return False
        event.set()
        return True

    # the WorkerPlugin interface (duck-typed: Dask calls it by name)
    def transition(self, key: Any, start: str, finish: str, **_kwargs: Any) -> None:
        if start == "executing" and finish in LEFT:
            self.cancel(key)


def install(worker: Any, cancels: Cancels) -> None:
    """Add ``cancels`` to the worker's own plugins (not through the refused ``plugin-add``
    handler: no client can add or remove it)."""
    worker.plugins[PLUGIN] = cancels


def current_key() -> Any:
    """The Dask key of the task running in this thread, or None outside a worker task."""
    try:
        from distributed import get_worker

        return get_worker().get_current_task()
    except (ValueError, KeyError):
        return None
