"""One task process seen from the worker: a ``ChildProcess`` is a fresh interpreter running
``_child`` (``warm`` or ``template`` mode) over two pipes and a lifeline, in a session of
its own; it takes one call at a time with a deadline (``call``), answers health checks
(``ping``), and, while pristine, can be given an environment (``serve``).

What the worker reads from a child is bounded and inert: a frame larger than the result
limit is never read (the child is killed), a value is read with ``_wire.safe_loads`` and
an error as JSON (``_process``).
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from lockstep.core import reap as _reap
from lockstep.runtime.executors import ExecutorStartFailed, _wire

ERROR_ALLOWANCE = 64 * 1024  # bytes an error report may take beyond the result limit
KILL_GRACE = 10.0  # seconds a template has to answer after it was told to kill its task
POLL = 0.5  # seconds between checks that the child still lives while a call runs
PING_TIMEOUT = 2.0  # seconds an idle process has to answer its health check


@dataclass(frozen=True)
class Outcome:
    """How a call ended, seen from the worker.

    ``status``: ``answer`` (``kind``/``pid``/``data`` is the child's frame),
    ``died`` (the child process died: ``detail``), ``timeout`` (the deadline
    passed and the task was killed) or ``too_large`` (an answer frame over the
    limit: ``detail``). ``healthy``: the child can take the next call. ``sent``: the
    call reached the child (False: it died before, and the call never ran).
    """

    status: str
    healthy: bool
    kind: bytes = b""
    pid: int = 0
    data: bytes = b""
    detail: str = ""
    task_pid: int | None = None
    sent: bool = True


class ChildProcess:
    """One ``python -m lockstep.runtime.executors._child MODE`` process, its pipes, its tree."""

    def __init__(self, mode: str, start_timeout: float, site: str = "", key: str = "") -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        lifeline_r, self._lifeline = os.pipe()
        self._reaped = threading.Lock()  # held to kill or reap: the pid is ours until reaped
        theirs = (to_child_r, from_child_w, lifeline_r)
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-B",  # a task writes no .pyc (an environment's come from its compiler)
                    "-m",
                    "lockstep.runtime.executors._child",
                    mode,
                    *map(str, theirs),
                    *([site] if site else []),
                ],
                pass_fds=theirs,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            for fd in (self._to_child, self._from_child, self._lifeline):
                os.close(fd)
            raise ExecutorStartFailed(f"cannot start {sys.executable}: {exc}") from exc
        finally:
            for fd in theirs:  # the child's ends: only the child keeps them open
                os.close(fd)
        self.mode = mode
        self.site = site  # a bundle environment's site directory, or ""
        self.key = key  # that environment's key, or "" (no environment)
        self.calls = 0  # calls sent to it: a process that ran none is pristine
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

    def alive(self) -> bool:
        """Not exited yet (checked without reaping it, so its pid stays ours)."""
        with self._reaped:
            if self._proc.returncode is not None:
                return False
            try:
                found = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return False
            return found is None

    def ping(self, timeout: float = PING_TIMEOUT) -> bool:
        """Health check before reuse: alive, and answers ``PING`` with ``READY`` in time."""
        return self.alive() and self._answers_ready(_wire.PING, b"", timeout)

    def _answers_ready(self, kind: bytes, payload: bytes, timeout: float) -> bool:
        """Send one ``kind`` frame; True if ``READY`` came back within ``timeout``."""
        try:
            _wire.write_frame(self._to_child, kind, 0, payload)
            ready, _, _ = select.select([self._from_child], [], [], timeout)
            if not ready:
                return False
            answer, _, _ = _wire.read_frame(self._from_child)
        except (OSError, EOFError):
            return False
        return answer == _wire.READY

    @property
    def pristine(self) -> bool:
        """No environment and no call yet: it holds nothing but its own start."""
        return not self.key and not self.calls

    def serve(self, site: str, key: str, timeout: float = PING_TIMEOUT) -> bool:
        """Make this pristine process serve environment ``key`` (``site`` first on its path),
        as one started for it would; False if it did not answer ``READY`` in time."""
        assert self.pristine and key, "only a pristine process takes an environment"
        if not self._answers_ready(_wire.SERVE, os.fsencode(site), timeout):
            return False
        self.site, self.key = site, key
        return True

    def call(
        self, payload: bytes, timeout: float, max_bytes: int, stop: threading.Event | None = None
    ) -> Outcome:
        """Send one call and wait for its answer, at most ``timeout`` seconds, or until
        ``stop`` is set (then it ends as on a timeout)."""
        self.calls += 1
        try:
            _wire.write_frame(self._to_child, _wire.CALL, 0, payload)
        except OSError as exc:
            return Outcome(
                "died", False, detail=f"its request pipe failed ({exc.strerror})", sent=False
            )
        reader = _wire.FrameReader(self._from_child, max_bytes + ERROR_ALLOWANCE)
        deadline = time.monotonic() + timeout
        task_pid: int | None = None
        killing = False  # told the template to kill the task; waiting for its answer
        while True:
            if stop is not None and stop.is_set() and not killing:
                deadline = min(deadline, time.monotonic())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if self.mode == "template" and task_pid is not None and not killing:
                    try:
                        _wire.write_frame(self._to_child, _wire.KILL, 0)
                    except OSError:
                        self.kill()
                        return Outcome("timeout", False, task_pid=task_pid)
                    killing = True
                    deadline = time.monotonic() + KILL_GRACE
                    continue
                self.kill()  # a warm child, or a template that did not answer
                return Outcome("timeout", False, task_pid=task_pid)
            readable, _, _ = select.select([self._from_child], [], [], min(remaining, POLL))
            if not readable:
                if not self.alive():  # dead, though a process it forked may hold the pipe
                    return Outcome("died", False, detail=self.describe_exit(), task_pid=task_pid)
                continue
            try:
                reader.feed()
                while (frame := reader.frame()) is not None:
                    kind, pid, data = frame
                    if kind == _wire.STARTED and self.mode == "template":
                        task_pid = pid
                        continue
                    if killing and kind == _wire.CRASHED:
                        return Outcome("timeout", True, task_pid=task_pid)
                    if kind not in (*_wire.ANSWERS, _wire.CRASHED):
                        self.kill()
                        return Outcome(
                            "died",
                            False,
                            detail=f"it sent a malformed frame ({kind!r}); killed",
                            task_pid=task_pid,
                        )
                    return Outcome("answer", True, kind, pid, data, task_pid=task_pid)
            except _wire.FrameTooLarge as exc:
                self.kill()
                return Outcome(
                    "too_large",
                    False,
                    pid=exc.pid,
                    task_pid=task_pid,
                    detail=f"an answer of {exc.length} bytes, over the limit of "
                    f"{max_bytes} (LOCKSTEP_RESULT_MAX_BYTES)",
                )
            except OSError as exc:
                self.kill()
                return Outcome(
                    "died",
                    False,
                    detail=f"its answer pipe failed ({exc.strerror})",
                    task_pid=task_pid,
                )
            if reader.eof:
                return Outcome("died", False, detail=self.describe_exit(), task_pid=task_pid)

    def describe_exit(self) -> str:
        try:
            with self._reaped:
                code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def kill(self) -> None:
        """SIGKILL this process and everything below it (frozen first, so nothing escapes)."""
        with self._reaped:
            if self._proc.returncode is None:
                _reap.kill_tree(self.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, 9)  # its session's group, even once it is gone

    def close(self) -> None:
        """Close the pipes (the child ends its tasks and exits on end of input) and reap it;
        kill its tree if it has not exited after 5 s."""
        for fd in (self._to_child, self._from_child, self._lifeline):
            with contextlib.suppress(OSError):  # already closed
                os.close(fd)
        try:
            with self._reaped:
                self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            with self._reaped:
                self._proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, 9)  # anything left in its group
