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
    )
    return str(path)


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
        assert len(ex.pids()) == 3  # the plain template and one per environment
    finally:
        ex.close()


def test_direct_refuses_a_bundle_environment(tmp_path: Path) -> None:
    ex = DirectExecutor(config(4))
    with pytest.raises(TaskFailed, match="EnvironmentRefused: the direct executor"):
        ex.run(call(site(tmp_path, "a"), "A"))
