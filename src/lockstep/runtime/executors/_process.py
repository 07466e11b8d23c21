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
                [sys.executable, "-m", "lockstep.runtime.executors._child", mode,
                 str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
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
                raise ExecutorStartFailed(f"{mode} process {self.pid} was not ready after "
                                          f"{start_timeout:g} s")
            kind, _, _ = _wire.read_frame(self._from_child)
            if kind != _wire.READY:
                raise ExecutorStartFailed(f"{mode} process {self.pid} sent {kind!r}, not ready")
        except EOFError:
            self.close()
            raise ExecutorStartFailed(f"{mode} process {self.pid} exited at start "
                                      f"({self.describe_exit()}); see its stderr above") from None
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
    """Runs calls in a ``ChildProcess``, one at a time; a dead child is replaced."""

    mode: ClassVar[str]

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._lock = threading.Lock()
        self._child: ChildProcess | None = None
        self._closed = False

    def start(self) -> None:
        with self._lock:
            self._ensure_child()

    def _ensure_child(self) -> ChildProcess:
        if self._closed:
            raise ExecutorStartFailed(f"{self.name} executor is closed")
        if self._child is None:
            self._child = ChildProcess(self.mode, self.config.start_timeout)
            log.info("%s executor: %s process pid %d ready", self.name, self.mode,
                     self._child.pid)
        return self._child

    def pids(self) -> tuple[int, ...]:
        child = self._child
        return (child.pid,) if child else ()

    def run(self, call: TaskCall) -> TaskResult:
        payload = pickle.dumps((call.target, call.args, call.kwargs),
                               protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            child = self._ensure_child()
            try:
                kind, pid, data = child.call(payload)
            except (EOFError, OSError):
                self._child = None
                child.close()
                message = (f"{self.name} executor: {child.mode} process {child.pid} died "
                           f"({child.describe_exit()}) while running {call.target}")
                try:
                    replacement = self._ensure_child()
                    message += f"; replaced by pid {replacement.pid} for the next task"
                except ExecutorStartFailed as exc:
                    message += f"; its replacement did not start ({exc}), the next task retries"
                log.error("%s", message)
                raise TaskCrashed(message) from None
        return self._answer(call, kind, pid, data)

    def _answer(self, call: TaskCall, kind: bytes, pid: int, data: bytes) -> TaskResult:
        if kind == _wire.OK:
            return TaskResult(self.name, pid, pickle.loads(data))
        if kind == _wire.CRASHED:
            message = (f"{self.name} executor: task process {pid} {data.decode()} "
                       f"while running {call.target}")
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
        with self._lock:
            self._closed = True
            if self._child is not None:
                self._child.close()
                self._child = None
