"""Hostile tasks against each executor in real processes (no Dask): each fails alone, in
one line, the executor serves the next task, and no process the task started is left.

Outcomes only, no timing asserts: a hang is stopped by a 2 s task timeout, and the
checks wait for an outcome (a process gone) with a generous bound.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockstep.core import reap as _reap
from lockstep.core.entrypoints import registered
from lockstep.runtime.config import RuntimeConfig
from lockstep.runtime.executors import (
    Executor,
    TaskCall,
    TaskCrashed,
    TaskError,
    TaskFailed,
    TaskResultRefused,
    TaskTimedOut,
    _wire,
    load_executor,
)
from tests.fixtures.procs import HERE, make_manifest, on_task_path

A = make_manifest("a")
T = "lockstep_test_tasks"
PROCESS_EXECUTORS = ("cold", "isolated_warm")


def running(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie runs nothing; init reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


def wait_gone(pids: set[int], bound: float = 20.0) -> set[int]:
    """The pids still running after waiting up to ``bound`` s for them all to end."""
    deadline = time.monotonic() + bound
    while True:
        left = {p for p in pids if running(p)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def running_descendants() -> set[int]:
    return {p for p in _reap.descendants(os.getpid()) if running(p)}


def pids_in(*files: Path) -> set[int]:
    return {int(f.read_text()) for f in files if f.exists() and f.read_text()}


@pytest.fixture(autouse=True)
def task_path() -> Iterator[None]:
    with on_task_path():
        yield


def make_executor(name: str, slots: int = 1, **env: str) -> Executor:
    settings = {
        "LOCKSTEP_EXECUTOR": name,
        "LOCKSTEP_TASK_TIMEOUT": "2",
        "LOCKSTEP_RESULT_MAX_BYTES": str(1 << 20),
        **env,
    }
    config = RuntimeConfig.from_env(settings, manifest=A)
    executor = load_executor(name, registered())(config, slots)
    executor.start()
    return executor


@pytest.fixture(params=("cold", "isolated_warm", "direct"))
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    before = running_descendants()
    ex = make_executor(request.param)
    try:
        yield ex
    finally:
        ex.close()
    assert wait_gone(running_descendants() - before) == set()


def serves_next(ex: Executor) -> None:
    assert ex.run(TaskCall(f"{T}:add", (2, 3))).value == 5


def one_line(err: TaskError, ex: Executor, target: str) -> str:
    text = str(err)
    assert "\n" not in text
    assert text.endswith(f"({ex.name} process {err.pid} running {T}:{target})"), text
    return text


# --- whatever a task raises ---------------------------------------------------------------


@pytest.mark.parametrize(
    "how, cause",
    [
        ("SystemExit", "SystemExit: 3"),
        ("sys.exit", "SystemExit: bye"),
        ("KeyboardInterrupt", "KeyboardInterrupt"),
        ("GeneratorExit", "GeneratorExit"),
    ],
)
def test_base_exceptions_fail_only_the_task(executor: Executor, how: str, cause: str) -> None:
    with pytest.raises(TaskFailed) as err:
        executor.run(TaskCall(f"{T}:exit_with", (how,)))
    assert isinstance(err.value, Exception)
    assert one_line(err.value, executor, "exit_with").startswith(f"{cause} (")
    assert "exit_with" in err.value.remote_traceback
    serves_next(executor)


def test_multi_line_message_is_one_line(executor: Executor) -> None:
    with pytest.raises(TaskFailed) as err:
        executor.run(TaskCall(f"{T}:boom", ("first\nsecond\n\tthird",)))
    assert one_line(err.value, executor, "boom").startswith("ValueError: first second third (")
    serves_next(executor)


def test_results_never_run_code_in_the_worker(executor: Executor, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(TaskResultRefused) as err:
        executor.run(TaskCall(f"{T}:evil_result", (str(marker),)))
    assert "posix.system, which is not plain data" in one_line(err.value, executor, "evil_result")
    # an exception whose unpickling would run code travels as text
    with pytest.raises(TaskFailed) as failed:
        executor.run(TaskCall(f"{T}:raise_evil", (str(marker),)))
    assert str(failed.value).startswith(f"lockstep_test_tasks.EvilError: touch {marker} (")
    assert not marker.exists()
    serves_next(executor)


def test_huge_result_fails_that_task(executor: Executor) -> None:
    with pytest.raises(TaskResultRefused) as err:
        executor.run(TaskCall(f"{T}:huge_result", (3,)))
    text = one_line(err.value, executor, "huge_result")
    assert f"over the limit of {1 << 20} (LOCKSTEP_RESULT_MAX_BYTES)" in text
    assert executor.run(TaskCall(f"{T}:huge_result", (0,))).value == b""
    serves_next(executor)


def test_plain_data_comes_back_whole(executor: Executor) -> None:
    value = {
        "a": [1, 2.5, None, True, "s", b"b", (1, 2)],
        "c": {1, 2},
        "d": frozenset({3}),
        "e": complex(1, 2),
        "f": bytearray(b"x"),
    }
    assert executor.run(TaskCall("builtins:dict", (), value)).value == value


# --- whatever a task process does (cold and isolated_warm) --------------------------------


@pytest.mark.parametrize("executor", PROCESS_EXECUTORS, indirect=True)
@pytest.mark.parametrize(
    "how, described",
    [
        ("os._exit", "exit code 5"),
        ("SIGKILL", "killed by signal 9"),
        ("SIGTERM", "killed by signal 15"),
    ],
)
def test_process_that_dies_fails_only_its_task(
    executor: Executor, how: str, described: str
) -> None:
    with pytest.raises(TaskCrashed) as err:
        executor.run(TaskCall(f"{T}:exit_with", (how,)))
    text = one_line(err.value, executor, "exit_with")
    assert text.startswith("TaskCrashed: ") and described.split()[-1] in text, text
    serves_next(executor)


@pytest.mark.parametrize("executor", PROCESS_EXECUTORS, indirect=True)
def test_hang_ignoring_sigterm_is_killed_at_its_timeout(executor: Executor, tmp_path: Path) -> None:
    pid_file = tmp_path / "hang.pid"
    with pytest.raises(TaskTimedOut) as err:
        executor.run(TaskCall(f"{T}:hang", (str(pid_file),)))
    assert one_line(err.value, executor, "hang").startswith(
        "TaskTimedOut: did not finish within its timeout of 2 s; its process group was killed"
    )
    assert wait_gone(pids_in(pid_file)) == set()
    serves_next(executor)
    # a call's own timeout wins over the worker's
    with pytest.raises(TaskTimedOut, match=r"timeout of 0\.5 s"):
        executor.run(TaskCall(f"{T}:hang", (str(tmp_path / "short.pid"),), timeout=0.5))
    assert executor.run(TaskCall(f"{T}:sleep_then", (2.5, 9), timeout=30)).value == 9


@pytest.mark.parametrize("executor", PROCESS_EXECUTORS, indirect=True)
def test_daemon_of_a_timed_out_task_is_killed(executor: Executor, tmp_path: Path) -> None:
    daemon, hang = tmp_path / "daemon.pid", tmp_path / "hang.pid"
    with pytest.raises(TaskTimedOut):
        executor.run(TaskCall(f"{T}:fork_daemon_and_hang", (str(daemon), str(hang))))
    pids = pids_in(daemon, hang)
    assert len(pids) == 2
    assert wait_gone(pids) == set()
    serves_next(executor)


def test_cold_task_leaves_nothing_when_it_returns(tmp_path: Path) -> None:
    cold = make_executor("cold")
    try:
        for detach in (False, True):
            pid_file = tmp_path / f"daemon-{detach}.pid"
            assert (
                cold.run(TaskCall(f"{T}:fork_daemon_and_return", (str(pid_file), detach))).value
                == 7
            )
            assert wait_gone(pids_in(pid_file)) == set(), "the task's child outlived it"
            # Nothing left below the template (a task's orphans are re-parented to it). Not
            # "all this process's children": the session's engine and registry are ours too.
            left = {d for t in cold.pids() for d in _reap.descendants(t) if running(d)}
            assert left == set()
    finally:
        cold.close()


@pytest.mark.parametrize("executor", PROCESS_EXECUTORS, indirect=True)
def test_task_that_closes_its_pipes_or_floods_its_output(executor: Executor) -> None:
    with pytest.raises(TaskCrashed) as err:
        executor.run(TaskCall(f"{T}:close_pipes"))
    one_line(err.value, executor, "close_pipes")
    serves_next(executor)
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1), os.dup(2)
    os.dup2(devnull, 1)  # the children inherit our fd 1 and 2: keep the flood out of the log
    os.dup2(devnull, 2)
    try:
        with pytest.raises(TaskFailed) as flood:
            executor.run(TaskCall(f"{T}:huge_output", (4,)))
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (devnull, *saved):
            os.close(fd)
    assert str(flood.value).startswith("OSError: [Errno 9] Bad file descriptor"), flood.value
    serves_next(executor)


def test_forged_answers_are_refused_by_the_reader(tmp_path: Path) -> None:
    """What a task process could write straight into its answer pipe."""
    import pickle

    from lockstep_test_tasks import Evil

    marker = tmp_path / "pwned"
    with pytest.raises(_wire.NotPlainData, match=r"posix\.system"):
        _wire.safe_loads(pickle.dumps(Evil(f"touch {marker}")))
    assert not marker.exists()
    assert _wire.decode_error(b"\x80not json")["type"] == "MalformedAnswer"


# --- stopping: the executor closed mid-task, the worker killed --------------------------


@pytest.mark.parametrize("name", PROCESS_EXECUTORS)
def test_close_while_a_task_is_busy_leaves_no_process(name: str, tmp_path: Path) -> None:
    before = running_descendants()
    ex = make_executor(name, LOCKSTEP_TASK_TIMEOUT="600")
    owned = set(ex.pids())
    daemon, hang = tmp_path / "daemon.pid", tmp_path / "hang.pid"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ex.run(TaskCall(f"{T}:fork_daemon_and_hang", (str(daemon), str(hang))))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while len(pids_in(daemon, hang)) < 2:
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.02)
    ex.close()
    thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], TaskCrashed), errors
    assert "the worker stopped while the task ran" in str(errors[0])
    assert wait_gone(owned | pids_in(daemon, hang)) == set()
    assert wait_gone(running_descendants() - before) == set()


WORKER_SCRIPT = """
import sys, threading
sys.path[:0] = [{here!r}, {root!r}]
from tests.runtime.test_containment import make_executor
from lockstep.runtime.executors import TaskCall
ex = make_executor({name!r}, LOCKSTEP_TASK_TIMEOUT="600")
print(" ".join(map(str, ex.pids())), flush=True)
ex.run(TaskCall("lockstep_test_tasks:fork_daemon_and_hang", ({daemon!r}, {hang!r})))
"""


@pytest.mark.parametrize("name", PROCESS_EXECUTORS)
def test_sigkilled_worker_leaves_no_process(name: str, tmp_path: Path) -> None:
    """A stand-in worker (this executor in a process of its own) is SIGKILLed mid-task:
    its template or warm child and everything the task started end too."""
    daemon, hang = tmp_path / "daemon.pid", tmp_path / "hang.pid"
    script = WORKER_SCRIPT.format(
        here=str(HERE), root=str(HERE.parent.parent), name=name, daemon=str(daemon), hang=str(hang)
    )
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    worker = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert worker.stdout is not None
        owned = {int(p) for p in worker.stdout.readline().split()}
        assert owned
        deadline = time.monotonic() + 30
        while len(pids_in(daemon, hang)) < 2:
            assert time.monotonic() < deadline and worker.poll() is None, "no task started"
            time.sleep(0.02)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(30)
        assert wait_gone(owned | pids_in(daemon, hang)) == set()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_direct_timeout_fails_the_task_and_retires(tmp_path: Path) -> None:
    """A thread cannot be killed: the task fails, and the executor asks to be replaced."""
    direct = make_executor("direct")
    told: list[tuple[str, TaskError]] = []
    direct.on_retire = lambda *said: told.append(said)  # type: ignore[attr-defined]
    try:
        with pytest.raises(TaskTimedOut) as err:
            direct.run(TaskCall(f"{T}:hang", (str(tmp_path / "pid"), False), timeout=0.5))
        assert one_line(err.value, direct, "hang").startswith(
            "TaskTimedOut: did not finish within its timeout of 0.5 s; the direct executor "
            "cannot stop a thread, so its worker retires"
        )
        ((reason, error),) = told
        assert "lockstep_test_tasks:hang" in reason
        assert error is err.value  # the worker reports it before it closes (runtime/retire.py)
        with pytest.raises(TaskFailed, match=r"^WorkerRetiring: this worker no longer takes"):
            direct.run(TaskCall(f"{T}:add", (1, 1)))
    finally:
        direct.close()
