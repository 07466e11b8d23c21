"""The worker side of the executors that run tasks in other processes.

A ``ChildProcess`` is a fresh interpreter running ``_child`` (``warm`` or
``template`` mode) over two pipes and a lifeline, in a session of its own.
``ProcessExecutor`` keeps one per slot, sends it one call at a time with a
deadline, and replaces it when it dies, hangs or misbehaves.

What the worker reads from a child is bounded and inert: a frame larger than
the result limit is never read (the child is killed), a value is read with
``_wire.safe_loads`` and an error as JSON.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from lockstep.core import reap as _reap
from lockstep.runtime.executors import (
    Executor,
    ExecutorStartFailed,
    TaskCall,
    TaskCancelled,
    TaskCrashed,
    TaskError,
    TaskFailed,
    TaskResult,
    TaskResultRefused,
    TaskTimedOut,
    _wire,
)

log = logging.getLogger(__name__)
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
    limit: ``detail``). ``healthy``: the child can take the next call.
    """

    status: str
    healthy: bool
    kind: bytes = b""
    pid: int = 0
    data: bytes = b""
    detail: str = ""
    task_pid: int | None = None


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
        if not self.alive():
            return False
        try:
            _wire.write_frame(self._to_child, _wire.PING, 0)
            ready, _, _ = select.select([self._from_child], [], [], timeout)
            if not ready:
                return False
            kind, _, _ = _wire.read_frame(self._from_child)
        except (OSError, EOFError):
            return False
        return kind == _wire.READY

    def call(
        self, payload: bytes, timeout: float, max_bytes: int, stop: threading.Event | None = None
    ) -> Outcome:
        """Send one call and wait for its answer, at most ``timeout`` seconds, or until
        ``stop`` is set (then it ends as on a timeout)."""
        try:
            _wire.write_frame(self._to_child, _wire.CALL, 0, payload)
        except OSError as exc:
            return Outcome("died", False, detail=f"its request pipe failed ({exc.strerror})")
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


class ProcessExecutor(Executor):
    """Runs calls in ``ChildProcess``es: one call per process at a time, up to ``slots``
    processes busy at once (one per worker thread), started on demand; a dead one is
    replaced.

    Processes are pooled by bundle environment (``TaskCall.env``; ``""``: none). A
    process of an environment serves only that environment; before it is reused it
    must answer a health check (``ping``), else it is replaced. Processes are kept
    for at most ``LOCKSTEP_WARM_ENVIRONMENTS`` environments: beyond that the idle
    processes of the least recently used one are stopped."""

    mode: ClassVar[str]

    def __init__(self, config: Any, slots: int = 1) -> None:
        super().__init__(config, slots)
        self._lock = threading.Lock()  # guards _idle, _busy, _used, _closed
        self._free_slots = threading.BoundedSemaphore(self.slots)
        self._idle: dict[str, list[ChildProcess]] = {}
        self._busy: set[ChildProcess] = set()
        self._used: dict[str, None] = {}  # environment keys, least recently used first
        self._closed = False
        self.max_environments = int(getattr(config, "warm_environments", 4))

    def start(self) -> None:
        child = self._spawn()
        with self._lock:
            self._idle.setdefault("", []).append(child)

    def _spawn(self, key: str = "", site: str = "") -> ChildProcess:
        if self._closed:
            raise ExecutorStartFailed(f"{self.name} executor is closed")
        child = ChildProcess(self.mode, self.config.start_timeout, site, key)
        log.info(
            "%s executor: %s process pid %d ready%s",
            self.name,
            self.mode,
            child.pid,
            f" for environment {key}" if key else "",
        )
        return child

    def _take(self, key: str = "", site: str = "") -> ChildProcess:
        with self._lock:
            if self._closed:
                raise ExecutorStartFailed(f"{self.name} executor is closed")
            if key:
                self._used.pop(key, None)
                self._used[key] = None
            pool = self._idle.get(key)
            child = pool.pop() if pool else None
            if child is not None:
                self._busy.add(child)
            evicted = self._evict(key)
        for old in evicted:
            log.info(
                "%s executor: stopping idle %s process pid %d of environment %s (least "
                "recently used beyond %d)",
                self.name,
                self.mode,
                old.pid,
                old.key,
                self.max_environments,
            )
            old.close()
        if child is not None:
            if not key or child.ping():
                return child
            log.warning(
                "%s executor: %s process pid %d of environment %s failed its health check; "
                "replacing it",
                self.name,
                self.mode,
                child.pid,
                key,
            )
            self._drop(child)
        child = self._spawn(key, site)  # outside the lock: it takes a while
        with self._lock:
            self._busy.add(child)
            closed = self._closed
        if closed:
            self._drop(child)
            raise ExecutorStartFailed(f"{self.name} executor is closed")
        return child

    def _evict(self, current: str) -> list[ChildProcess]:
        """Idle processes of the least recently used environments beyond the bound (locked)."""
        kept = {k for k, pool in self._idle.items() if pool and k} | {
            c.key for c in self._busy if c.key
        }
        if current:
            kept.add(current)
        evicted: list[ChildProcess] = []
        for key in list(self._used):
            if len(kept) <= self.max_environments:
                break
            if key == current or key not in kept or any(c.key == key for c in self._busy):
                continue
            evicted += self._idle.pop(key, [])
            kept.discard(key)
            del self._used[key]
        return evicted

    def _give_back(self, child: ChildProcess) -> None:
        with self._lock:
            self._busy.discard(child)
            closed = self._closed
            if not closed:
                self._idle.setdefault(child.key, []).append(child)
        if closed:
            child.close()

    def _drop(self, child: ChildProcess) -> None:
        with self._lock:
            self._busy.discard(child)
        child.kill()
        child.close()

    def _all(self) -> list[ChildProcess]:
        return [*(c for pool in self._idle.values() for c in pool), *self._busy]

    def pids(self) -> tuple[int, ...]:
        with self._lock:
            return tuple(sorted(c.pid for c in self._all()))

    def environments(self) -> tuple[str, ...]:
        """The environments this executor keeps processes for, least recently used first."""
        with self._lock:
            live = {c.key for c in self._all()}
            return tuple(k for k in self._used if k in live)

    def run(self, call: TaskCall, stop: threading.Event | None = None) -> TaskResult:
        timeout = call.timeout if call.timeout is not None else self.config.task_timeout
        max_bytes = int(self.config.result_max_bytes)
        payload = _wire.call_payload(call.target, call.args, call.kwargs, call.paths, max_bytes)
        replaced = ""
        with self._free_slots:
            child = self._take(call.env, call.paths[0] if call.env else "")
            outcome = child.call(payload, timeout, max_bytes, stop)
            if outcome.healthy:
                self._give_back(child)
            else:
                self._drop(child)
                replaced = self._replace(child)
        if outcome.status == "answer":
            return self._answer(call, outcome)
        task = outcome.task_pid if outcome.task_pid is not None else child.pid
        with self._lock:
            closed = self._closed
        if outcome.status == "timeout" and stop is not None and stop.is_set():
            error: TaskError = TaskCancelled(
                "TaskCancelled: its run ended while it ran (deadline passed or runner gone); "
                "its process group was killed",
                executor=self.name,
                pid=task,
                target=call.target,
            )
        elif outcome.status == "timeout":
            error = TaskTimedOut(
                f"TaskTimedOut: did not finish within its timeout of {timeout:g} s; its "
                "process group was killed",
                executor=self.name,
                pid=task,
                target=call.target,
            )
        elif outcome.status == "too_large":
            error = TaskResultRefused(
                f"ResultTooLarge: the task sent {outcome.detail}",
                executor=self.name,
                pid=task,
                target=call.target,
            )
        elif closed:
            error = TaskCrashed(
                f"TaskCrashed: the worker stopped while the task ran "
                f"({self.mode} process {child.pid} {outcome.detail})",
                executor=self.name,
                pid=task,
                target=call.target,
            )
        else:
            error = TaskCrashed(
                f"TaskCrashed: {self.mode} process {child.pid} died ({outcome.detail}); {replaced}",
                executor=self.name,
                pid=task,
                target=call.target,
            )
        log.error("%s", error)
        raise error

    def _replace(self, dead: ChildProcess) -> str:
        """Start a process in place of ``dead``; says so (for the task's message)."""
        try:
            replacement = self._spawn(dead.key, dead.site)
        except ExecutorStartFailed as exc:
            return f"its replacement did not start ({exc}), the next task retries"
        self._give_back(replacement)
        return f"replaced by pid {replacement.pid} for the next task"

    def _answer(self, call: TaskCall, outcome: Outcome) -> TaskResult:
        kind, pid, data = outcome.kind, outcome.pid, outcome.data
        where: dict[str, Any] = {"executor": self.name, "pid": pid, "target": call.target}
        if kind == _wire.OK:
            try:
                return TaskResult(self.name, pid, _wire.safe_loads(data))
            except Exception as exc:  # a forged or broken answer: never more than data
                raise TaskResultRefused(
                    f"ResultRefused: its value does not read as plain data "
                    f"({type(exc).__name__}: {exc})",
                    **where,
                ) from None
        if kind == _wire.CRASHED:
            error: TaskError = TaskCrashed(
                f"TaskCrashed: task process {pid} {data.decode(errors='replace')}", **where
            )
            log.error("%s", error)
            raise error
        report = _wire.decode_error(data)
        if report["refused"]:
            raise TaskResultRefused(f"ResultRefused: {report['message']}", **where)
        cause = f"{report['type']}: {report['message']}" if report["message"] else report["type"]
        raise TaskFailed(cause, remote_traceback=report["traceback"], **where)

    def close(self) -> None:
        """Stop every process: idle ones end on end of input, busy ones are killed with their
        tasks (the call that ran there fails with ``TaskCrashed``)."""
        with self._lock:
            self._closed = True
            idle = [c for pool in self._idle.values() for c in pool]
            self._idle = {}
            busy = list(self._busy)
        for child in busy:
            child.kill()
        for child in idle:
            child.close()
