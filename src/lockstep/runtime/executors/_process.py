"""The worker side of the executors that run tasks in other processes.

A ``ChildProcess`` is a fresh interpreter running ``_child`` (``warm`` or
``template`` mode) over two pipes. ``ProcessExecutor`` keeps one, sends it
one call at a time, and replaces it when it dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import subprocess
import sys
import threading
from typing import Any, ClassVar

from lockstep.runtime.executors import (
    Executor,
    ExecutorStartFailed,
    TaskCall,
    TaskCrashed,
    TaskResult,
    _wire,
)

log = logging.getLogger(__name__)


class RemoteTraceback(Exception):
    """The traceback of an exception raised in an executor's child process."""


class ChildProcess:
    """One ``python -m lockstep.runtime.executors._child MODE`` process and its pipes."""

    def __init__(self, mode: str, start_timeout: float) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lockstep.runtime.executors._child",
                    mode,
                    str(to_child_r),
                    str(from_child_w),
                ],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            os.close(self._to_child)
            os.close(self._from_child)
            raise ExecutorStartFailed(f"cannot start {sys.executable}: {exc}") from exc
        finally:
            os.close(to_child_r)  # the child's ends: only the child keeps them open
            os.close(from_child_w)
        self.mode = mode
        self.pid: int = self._proc.pid
        ready, _, _ = select.select([self._from_child], [], [], start_timeout)
        try:
            if not ready:
                raise ExecutorStartFailed(
                    f"{mode} process {self.pid} was not ready after {start_timeout:g} s"
                )
            kind, _, _ = _wire.read_frame(self._from_child)
            if kind != _wire.READY:
                raise ExecutorStartFailed(f"{mode} process {self.pid} sent {kind!r}, not ready")
        except EOFError:
            self.close()
            raise ExecutorStartFailed(
                f"{mode} process {self.pid} exited at start "
                f"({self.describe_exit()}); see its stderr above"
            ) from None
        except ExecutorStartFailed:
            self.close()
            raise

    def call(self, payload: bytes) -> tuple[bytes, int, bytes]:
        """Send one call; its answer frame. ``EOFError`` (or ``OSError``) if the process died."""
        _wire.write_frame(self._to_child, _wire.CALL, 0, payload)
        return _wire.read_frame(self._from_child)

    def describe_exit(self) -> str:
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def close(self) -> None:
        """Close the pipes (the child exits on end of input) and reap it."""
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):  # already closed
                os.close(fd)
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class ProcessExecutor(Executor):
    """Runs calls in ``ChildProcess``es: one call per process at a time, up to ``slots``
    processes (one per worker thread), started on demand; a dead one is replaced."""

    mode: ClassVar[str]

    def __init__(self, config: Any, slots: int = 1) -> None:
        super().__init__(config, slots)
        self._lock = threading.Lock()  # guards _idle, _busy, _closed
        self._free_slots = threading.BoundedSemaphore(self.slots)
        self._idle: list[ChildProcess] = []
        self._busy: set[ChildProcess] = set()
        self._closed = False

    def start(self) -> None:
        child = self._spawn()
        with self._lock:
            self._idle.append(child)

    def _spawn(self) -> ChildProcess:
        if self._closed:
            raise ExecutorStartFailed(f"{self.name} executor is closed")
        child = ChildProcess(self.mode, self.config.start_timeout)
        log.info("%s executor: %s process pid %d ready", self.name, self.mode, child.pid)
        return child

    def _take(self) -> ChildProcess:
        with self._lock:
            if self._closed:
                raise ExecutorStartFailed(f"{self.name} executor is closed")
            if self._idle:
                child = self._idle.pop()
                self._busy.add(child)
                return child
        child = self._spawn()  # outside the lock: it takes a while
        with self._lock:
            self._busy.add(child)
        return child

    def _give_back(self, child: ChildProcess) -> None:
        with self._lock:
            self._busy.discard(child)
            closed = self._closed
            if not closed:
                self._idle.append(child)
        if closed:
            child.close()

    def pids(self) -> tuple[int, ...]:
        with self._lock:
            return tuple(sorted(c.pid for c in (*self._idle, *self._busy)))

    def run(self, call: TaskCall) -> TaskResult:
        payload = pickle.dumps(
            (call.target, call.args, call.kwargs, call.paths), protocol=pickle.HIGHEST_PROTOCOL
        )
        with self._free_slots:
            child = self._take()
            try:
                kind, pid, data = child.call(payload)
            except (EOFError, OSError):
                with self._lock:
                    self._busy.discard(child)
                child.close()
                raise TaskCrashed(self._replace(child, call)) from None
            self._give_back(child)
        return self._answer(call, kind, pid, data)

    def _replace(self, dead: ChildProcess, call: TaskCall) -> str:
        """Start a process in place of ``dead``; the message for the task that died with it."""
        message = (
            f"{self.name} executor: {dead.mode} process {dead.pid} died "
            f"({dead.describe_exit()}) while running {call.target}"
        )
        try:
            replacement = self._spawn()
            self._give_back(replacement)
            message += f"; replaced by pid {replacement.pid} for the next task"
        except ExecutorStartFailed as exc:
            message += f"; its replacement did not start ({exc}), the next task retries"
        log.error("%s", message)
        return message

    def _answer(self, call: TaskCall, kind: bytes, pid: int, data: bytes) -> TaskResult:
        if kind == _wire.OK:
            return TaskResult(self.name, pid, pickle.loads(data))
        if kind == _wire.CRASHED:
            message = (
                f"{self.name} executor: task process {pid} {data.decode()} "
                f"while running {call.target}"
            )
            log.error("%s", message)
            raise TaskCrashed(message)
        if kind == _wire.ERROR:
            pickled, text, tb = pickle.loads(data)
            exc: BaseException
            try:
                exc = pickle.loads(pickled) if pickled is not None else RemoteTraceback(text)
            except Exception:  # cannot rebuild it here: keep its text
                exc = RemoteTraceback(text)
            exc.add_note(f"raised in {self.name} executor process {pid}:\n{tb}")
            raise exc
        raise TaskCrashed(f"{self.name} executor: unexpected answer {kind!r} from pid {pid}")

    def close(self) -> None:
        """Stop the idle processes now; a busy one stops when its call returns."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            child.close()
