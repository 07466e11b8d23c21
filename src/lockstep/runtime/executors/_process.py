"""The worker side of the executors that run tasks in other processes: ``ProcessExecutor``
keeps ``ChildProcess``es (``_child_process``) pooled by bundle environment, sends each
one call at a time with a deadline, and replaces one when it dies, hangs or misbehaves.

What the worker reads from a child is bounded and inert: a frame larger than the
result limit is never read (the child is killed), a value is read with
``_wire.safe_loads`` and an error as JSON.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, ClassVar

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
from lockstep.runtime.executors._child_process import ChildProcess, Outcome

log = logging.getLogger(__name__)


class ProcessExecutor(Executor):
    """Runs calls in ``ChildProcess``es: one call per process at a time, up to ``slots``
    processes busy at once (one per worker thread), started on demand; a dead one is
    replaced.

    Processes are pooled by bundle environment (``TaskCall.env``; ``""``: none). A
    process of an environment serves only that environment; before it is reused it
    must answer a health check (``ping``; without an environment: be alive), else it is
    replaced, and a call its process never received (it died first) is sent to another
    process. Processes are kept
    for at most ``LOCKSTEP_WARM_ENVIRONMENTS`` environments: beyond that the idle
    processes of the least recently used one are stopped.

    A task in an environment no process serves yet takes a *pristine* process (no
    environment, no call run) if one is idle, and gives it the environment
    (``ChildProcess.serve``) instead of waiting for an interpreter to start; a new
    pristine process is then started in the background."""

    mode: ClassVar[str]

    def __init__(self, config: Any, slots: int = 1) -> None:
        super().__init__(config, slots)
        self._lock = threading.Lock()  # guards _idle, _busy, _used, _closed
        self._free_slots = threading.BoundedSemaphore(self.slots)
        self._idle: dict[str, list[ChildProcess]] = {}
        self._busy: set[ChildProcess] = set()
        self._used: dict[str, None] = {}  # environment keys, least recently used first
        self._closed = False
        self._refill: threading.Thread | None = None  # starting a pristine process
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
            child = self._idle_of(key)
            spare = self._idle_pristine() if key and child is None else None
            for taken in (child, spare):
                if taken is not None:
                    self._busy.add(taken)
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
        if spare is not None:
            if spare.serve(site, key):
                log.info("%s executor: %s process pid %d now serves environment %s",
                         self.name, self.mode, spare.pid, key)  # fmt: skip
                self._start_refill()
                return spare
            log.warning("%s executor: pristine %s process pid %d did not take environment %s "
                        "(it died or did not answer); replacing it", self.name, self.mode,
                        spare.pid, key)  # fmt: skip
            self._drop(spare)
            self._start_refill()
        if child is not None:
            # an environment's process answers a PING; without one, alive is enough (a
            # syscall, not a round trip): one that died while idle is replaced either way
            if child.ping() if key else child.alive():
                return child
            log.warning(
                "%s executor: %s process pid %d%s failed its health check; replacing it",
                self.name,
                self.mode,
                child.pid,
                f" of environment {key}" if key else "",
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

    def _idle_of(self, key: str) -> ChildProcess | None:
        """An idle process of ``key`` (locked); for no environment, one that ran a call
        before a pristine one (the pristine one is kept for a new environment)."""
        pool = self._idle.get(key)
        if not pool:
            return None
        used = [c for c in pool if not c.pristine]
        child = used[-1] if used else pool[-1]
        pool.remove(child)
        return child

    def _idle_pristine(self) -> ChildProcess | None:
        """An idle pristine process, taken from the pool (locked)."""
        pool = self._idle.get("", [])
        for child in reversed(pool):
            if child.pristine:
                pool.remove(child)
                return child
        return None

    def _start_refill(self) -> None:
        """Start a pristine process in the background, unless one is being started."""
        with self._lock:
            if self._closed or (self._refill is not None and self._refill.is_alive()):
                return
            self._refill = threading.Thread(
                target=self._refill_one, name=f"lockstep-{self.name}-spare", daemon=True
            )
            self._refill.start()

    def _refill_one(self) -> None:
        try:
            child = self._spawn()
        except ExecutorStartFailed as exc:
            log.warning("%s executor: no spare process (%s)", self.name, exc)
            return
        self._give_back(child)

    def wait_spare(self, timeout: float) -> bool:
        """Wait for a background start of a pristine process to end; False if it still runs."""
        with self._lock:
            refill = self._refill
        if refill is not None:
            refill.join(timeout)
            return not refill.is_alive()
        return True

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
            for attempt in (1, 2):
                child = self._take(call.env, call.paths[0] if call.env else "")
                outcome = child.call(payload, timeout, max_bytes, stop)
                if outcome.healthy:
                    self._give_back(child)
                    break
                self._drop(child)
                if not outcome.sent and attempt == 1:  # it died before the call reached it
                    log.warning("%s executor: %s process pid %d died before it got %s; "
                                "running it in another", self.name, self.mode, child.pid,
                                call.target)  # fmt: skip
                    continue
                replaced = self._replace(child)
                break
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
        # a spare still starting is closed by its thread (the executor is closed): wait for it
        self.wait_spare(float(self.config.start_timeout) + 5.0)
