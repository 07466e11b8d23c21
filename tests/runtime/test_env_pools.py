"""Executor processes pooled per bundle environment: one environment per process, health
checked before reuse, the least recently used evicted beyond LOCKSTEP_WARM_ENVIRONMENTS."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

from lockstep.runtime.executors import TaskCall, TaskFailed
from lockstep.runtime.executors.cold import ColdExecutor
from lockstep.runtime.executors.direct import DirectExecutor
from lockstep.runtime.executors.warm import IsolatedWarmExecutor


def config(envs: int) -> SimpleNamespace:
    return SimpleNamespace(
        start_timeout=30.0, task_timeout=60.0, result_max_bytes=1 << 20, warm_environments=envs
    )


def site(tmp_path: Path, name: str) -> str:
    path = tmp_path / name / "site"
    path.mkdir(parents=True)
    (path / "envmod.py").write_text(
        f"import os\nNAME = {name!r}\ndef where():\n    return [os.getpid(), NAME]\n"
        # the process serving the environment: the task's own (warm), its template's (cold)
        "def server(cold):\n    return os.getppid() if cold else os.getpid()\n"
    )
    return str(path)


def wait_exited(pid: int) -> None:
    """Until ``pid`` (a child of this process) has exited, every thread of it: waitable,
    not reaped (the executor reaps it)."""
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


def call(site_dir: str, key: str) -> TaskCall:
    return TaskCall("envmod:where", paths=(site_dir,), env=key)


def test_warm_processes_per_environment_lru_and_health_check(tmp_path: Path) -> None:
    a, b = site(tmp_path, "a"), site(tmp_path, "b")
    ex = IsolatedWarmExecutor(config(1))
    ex.start()
    try:
        pid_a, name = ex.run(call(a, "A")).value
        assert name == "a"
        assert ex.run(call(a, "A")).value == [pid_a, "a"]  # reused
        pid_b, name = ex.run(call(b, "B")).value
        assert name == "b" and pid_b != pid_a  # one environment per process
        assert pid_a not in ex.pids() and ex.environments() == ("B",)  # A evicted (bound 1)
        again, _ = ex.run(call(a, "A")).value
        assert again not in (pid_a, pid_b)
        os.kill(again, signal.SIGKILL)  # dies while idle: the health check replaces it
        fresh, name = ex.run(call(a, "A")).value
        assert name == "a" and fresh != again
    finally:
        ex.close()


def test_cold_templates_per_environment(tmp_path: Path) -> None:
    a, b = site(tmp_path, "a"), site(tmp_path, "b")
    ex = ColdExecutor(config(4))
    ex.start()
    try:
        first = ex.run(call(a, "A")).value
        second = ex.run(call(a, "A")).value
        third = ex.run(call(b, "B")).value
        assert first[1] == second[1] == "a" and third[1] == "b"
        assert len({first[0], second[0], third[0]}) == 3  # a fresh process per task
        assert set(ex.environments()) == {"A", "B"}
        assert ex.wait_spare(30)
        assert len(ex.pids()) == 3  # a pristine template and one per environment
    finally:
        ex.close()


@pytest.mark.parametrize("cls", [IsolatedWarmExecutor, ColdExecutor])
def test_a_new_environment_takes_the_pristine_process_and_a_spare_follows(
    tmp_path: Path, cls: type[IsolatedWarmExecutor] | type[ColdExecutor]
) -> None:
    """The process started with the executor has run nothing: the first task of an
    environment is given it (no interpreter start on the task's path), and a new pristine
    process is started behind it. One environment per process still holds."""
    a, b = site(tmp_path, "a"), site(tmp_path, "b")
    ex = cls(config(4))
    ex.start()
    try:
        (pristine,) = ex.pids()
        server = TaskCall("envmod:server", (cls is ColdExecutor,), paths=(a,), env="A")
        assert ex.run(server).value == pristine  # A's first task: in the pristine process
        assert ex.run(call(a, "A")).value[1] == "a"
        assert ex.wait_spare(30)
        (spare,) = set(ex.pids()) - {pristine}  # a new pristine process
        on_b = TaskCall("envmod:server", (cls is ColdExecutor,), paths=(b,), env="B")
        assert ex.run(on_b).value == spare  # B's: in that one
        assert ex.run(call(b, "B")).value[1] == "b"  # one environment per process
        assert ex.run(server).value == pristine
        assert ex.wait_spare(30)
        assert set(ex.environments()) == {"A", "B"}
        assert len(ex.pids()) == 3  # A's, B's and a new spare
    finally:
        ex.close()
    assert ex.pids() == ()


@pytest.mark.parametrize("cls", [IsolatedWarmExecutor, ColdExecutor])
def test_a_pristine_process_that_died_idle_is_replaced(
    tmp_path: Path, cls: type[IsolatedWarmExecutor] | type[ColdExecutor]
) -> None:
    """The spare killed while it waits (the OOM killer, an operator): a new environment's
    task runs in a process started for it, and a new spare is started behind it."""
    a = site(tmp_path, "a")
    ex = cls(config(4))
    ex.start()
    try:
        (pristine,) = ex.pids()
        os.kill(pristine, signal.SIGKILL)
        server = TaskCall("envmod:server", (cls is ColdExecutor,), paths=(a,), env="A")
        served_by = ex.run(server).value
        assert served_by != pristine
        assert ex.wait_spare(30)
        assert pristine not in ex.pids() and len(ex.pids()) == 2  # A's and a new spare
    finally:
        ex.close()


@pytest.mark.parametrize("cls", [IsolatedWarmExecutor, ColdExecutor])
@pytest.mark.parametrize("race", [False, True], ids=["seen-dead", "dies-after-the-check"])
def test_a_task_is_not_lost_to_a_process_that_died_idle(
    tmp_path: Path,
    cls: type[IsolatedWarmExecutor] | type[ColdExecutor],
    race: bool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A process killed while idle (no environment: no health check round trip) never
    fails the next task: it is seen dead before the task is sent, or, dying between that
    check and the send, the task (which it never received) goes to a new process."""
    from lockstep.runtime.executors._child_process import ChildProcess

    ex = cls(config(4))
    ex.start()
    try:
        ex.run(TaskCall("os:getpid"))
        (idle,) = ex.pids()
        os.kill(idle, signal.SIGKILL)
        wait_exited(idle)
        if race:  # the liveness check saw it alive; the send finds it dead
            monkeypatch.setattr(ChildProcess, "alive", lambda self: True)
        with caplog.at_level("WARNING", logger="lockstep.runtime.executors._process"):
            pid = ex.run(TaskCall("os:getpid")).value
        assert pid != idle and idle not in ex.pids()
        seen = "died before it got os:getpid" if race else "failed its health check"
        assert [r for r in caplog.records if f"pid {idle} " in r.message and seen in r.message]
    finally:
        monkeypatch.undo()
        ex.close()


def test_a_process_that_ran_a_call_never_takes_an_environment(tmp_path: Path) -> None:
    """A warm process that ran a task without an environment keeps that task's modules and
    state: a task of an environment gets a process of its own, never that one."""
    ex = IsolatedWarmExecutor(config(4))
    ex.start()
    try:
        used = ex.run(TaskCall("os:getpid")).value
        pid, name = ex.run(call(site(tmp_path, "a"), "A")).value
        assert name == "a" and pid != used
        assert ex.run(TaskCall("os:getpid")).value == used  # no environment: the used one
    finally:
        ex.close()


def test_the_child_refuses_an_environment_after_a_call(tmp_path: Path) -> None:
    """The child's own rule, whatever the worker sends: ``SERVE`` after a call (or to a
    process that has an environment) ends it with exit code 2 and a line on stderr."""
    from lockstep.runtime.executors import _wire
    from lockstep.runtime.executors._child_process import ChildProcess

    for started_with, first in (("", _wire.CALL), (site(tmp_path, "s"), _wire.PING)):
        child = ChildProcess("warm", 30.0, started_with, "K" if started_with else "")
        try:
            if first == _wire.CALL:
                payload = _wire.call_payload("os:getpid", (), {}, (), 1 << 20)
                assert child.call(payload, 30.0, 1 << 20).status == "answer"
            _wire.write_frame(child._to_child, _wire.SERVE, 0, os.fsencode(str(tmp_path)))
            assert not child.ping()
            assert child.describe_exit() == "exit code 2"
        finally:
            child.close()


def test_direct_refuses_a_bundle_environment(tmp_path: Path) -> None:
    ex = DirectExecutor(config(4))
    with pytest.raises(TaskFailed, match="EnvironmentRefused: the direct executor"):
        ex.run(call(site(tmp_path, "a"), "A"))
