"""Runtime pieces without a cluster: settings, admission rules, executors in real processes."""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockstep.core.entrypoints import registered
from lockstep.core.errors import BadInput, CheckFailed
from lockstep.core.settings import settings_table
from lockstep.runtime.config import RuntimeConfig, scheduler_settings
from lockstep.runtime.dask_handlers import check_hook
from lockstep.runtime.executors import Executor, TaskCall, TaskCrashed, TaskFailed, load_executor
from lockstep.runtime.identity import (
    ALTERED,
    OTHER_BUILD,
    UNREADABLE,
    IncompatibleClusterError,
    Member,
    Refusal,
    admission_refusal,
    format_table,
    hello_refusal,
)
from tests.fixtures.procs import HERE, make_manifest, on_task_path

A = make_manifest("a")
B = make_manifest("b", version="0.0.9")


# --- settings -----------------------------------------------------------------------------


def test_config_reads_executor_and_defaults() -> None:
    config = RuntimeConfig.from_env({"LOCKSTEP_EXECUTOR": "cold"}, manifest=A)
    assert config.executor == "cold"
    assert config.start_timeout == 30.0
    assert "LOCKSTEP_EXECUTOR=cold" in config.describe()
    config = RuntimeConfig.from_env(
        {"LOCKSTEP_EXECUTOR": "direct", "LOCKSTEP_EXECUTOR_START_TIMEOUT": "2.5"}, manifest=A
    )
    assert config.start_timeout == 2.5


def test_image_is_optional_and_only_informational() -> None:
    config = RuntimeConfig.from_env({"LOCKSTEP_EXECUTOR": "cold"}, manifest=A)
    assert config.image is None and "LOCKSTEP_IMAGE=(unset)" in config.describe()
    for value in ("r.io/team/lockstep-worker@sha256:" + "a" * 64, "anything:latest", "x y"):
        config = RuntimeConfig.from_env(
            {"LOCKSTEP_EXECUTOR": "cold", "LOCKSTEP_IMAGE": value}, manifest=A
        )
        assert config.image == value and f"LOCKSTEP_IMAGE={value}" in config.describe()
    line = scheduler_settings({"LOCKSTEP_MANIFEST": "/m.json", "LOCKSTEP_IMAGE": "r.io/w@x"})
    tls_unset = "LOCKSTEP_TLS_CA_FILE=(unset) LOCKSTEP_TLS_CERT=(unset) LOCKSTEP_TLS_KEY=(unset)"
    assert line == (
        "lockstep settings: LOCKSTEP_MANIFEST=/m.json LOCKSTEP_IMAGE=r.io/w@x "
        "LOCKSTEP_ROLE=(unset) " + tls_unset
    )
    line = scheduler_settings({"LOCKSTEP_ROLE": "worker"})
    assert " LOCKSTEP_ROLE=worker " in line
    assert scheduler_settings({}) == (
        "lockstep settings: LOCKSTEP_MANIFEST=/etc/lockstep/"
        "manifest.json LOCKSTEP_IMAGE=(unset) LOCKSTEP_ROLE=(unset) " + tls_unset
    )


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, "LOCKSTEP_EXECUTOR is not set"),
        ({"LOCKSTEP_EXECUTOR": ""}, "LOCKSTEP_EXECUTOR='' (empty) is not an executor"),
        ({"LOCKSTEP_EXECUTOR": "bogus"}, "LOCKSTEP_EXECUTOR='bogus' is not an executor"),
        ({"LOCKSTEP_EXECUTOR": "Cold"}, "LOCKSTEP_EXECUTOR='Cold' is not an executor"),
        ({"LOCKSTEP_EXECUTOR": " cold"}, "LOCKSTEP_EXECUTOR=' cold' is not an executor"),
    ],
)
def test_bad_executor_is_refused_with_valid_values(env: dict[str, str], expected: str) -> None:
    with pytest.raises(BadInput) as err:
        RuntimeConfig.from_env(env, manifest=A)
    assert expected in err.value.message
    assert "cold, direct, isolated_warm" in err.value.message
    assert A.build_id in err.value.message


def test_executor_missing_from_this_image_is_refused() -> None:
    only_direct = make_manifest("c", executors=("direct",))
    with pytest.raises(BadInput) as err:
        RuntimeConfig.from_env({"LOCKSTEP_EXECUTOR": "cold"}, manifest=only_direct)
    assert err.value.message.endswith("valid values: direct")
    assert err.value.exit_code == 2


def test_a_manifest_claiming_an_executor_the_code_lacks_is_refused_whatever_is_chosen() -> None:
    """The executor list is the code's (its entry points): a manifest that claims more is not
    this image's, even when the executor asked for exists."""
    odd = make_manifest("d", executors=("direct", "gpu"))
    for chosen in ("gpu", "direct", None):
        env = {"LOCKSTEP_EXECUTOR": chosen} if chosen else {}
        with pytest.raises(BadInput) as err:
            RuntimeConfig.from_env(env, manifest=odd)
        assert "lists executor(s) gpu that this installation does not contain" in str(err.value)
        assert "lockstep.executors entry points: cold, direct, isolated_warm" in str(err.value)
        assert err.value.exit_code == 2


def test_the_scheduler_refuses_an_altered_executor_list_of_its_own_build() -> None:
    """Same inputs (so the same build id), other executors: an altered manifest."""
    from lockstep.manifest import BuildManifest

    altered = BuildManifest(
        name=A.name, version=A.version, inputs=A.inputs, executors=("cold", "direct", "turbo"),
        python=A.python,
    )  # fmt: skip
    assert altered.build_id == A.build_id
    refusal = admission_refusal(A, "tcp://w:3", altered.to_json().decode())
    assert refusal is not None and refusal.reason == ALTERED
    assert refusal.executors == ("cold", "direct", "turbo")
    assert refusal.scheduler_executors == A.executors
    assert "lists executors cold, direct, turbo" in refusal.text
    assert "the manifest was altered" in refusal.text


@pytest.mark.parametrize(
    "env", [{}, {"LOCKSTEP_MANIFEST": ""}, {"LOCKSTEP_MANIFEST": "/elsewhere/m.json"}]
)
def test_one_function_says_which_manifest_file(env: dict[str, str]) -> None:
    from lockstep.manifest import manifest_path

    expected = Path(env.get("LOCKSTEP_MANIFEST") or "/etc/lockstep/manifest.json")
    assert manifest_path(env) == expected
    assert (
        RuntimeConfig.from_env({**env, "LOCKSTEP_EXECUTOR": "direct"}, A).manifest_path == expected
    )
    assert f"LOCKSTEP_MANIFEST={expected} " in scheduler_settings(env)


@pytest.mark.parametrize("raw", ["", "abc", "0", "-1", "nan", "inf", "1e999"])
def test_wrong_typed_start_timeout_is_refused(raw: str) -> None:
    env = {"LOCKSTEP_EXECUTOR": "direct", "LOCKSTEP_EXECUTOR_START_TIMEOUT": raw}
    with pytest.raises(BadInput, match=r"LOCKSTEP_EXECUTOR_START_TIMEOUT=.* is not a number"):
        RuntimeConfig.from_env(env, manifest=A)


def test_manifest_missing_or_corrupt(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(BadInput, match=r"nope\.json: cannot read the build manifest.*MANIFEST"):
        RuntimeConfig.from_env({"LOCKSTEP_MANIFEST": str(missing), "LOCKSTEP_EXECUTOR": "direct"})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BadInput, match="not valid JSON"):
        RuntimeConfig.from_env({"LOCKSTEP_MANIFEST": str(bad), "LOCKSTEP_EXECUTOR": "direct"})
    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(A.to_json().replace(A.build_id.encode(), B.build_id.encode()))
    with pytest.raises(BadInput, match="the manifest is corrupt"):
        RuntimeConfig.from_env({"LOCKSTEP_MANIFEST": str(tampered), "LOCKSTEP_EXECUTOR": "direct"})


def test_registry_matches_the_entry_points_and_settings_table() -> None:
    assert sorted(registered()) == ["cold", "direct", "isolated_warm"]
    for name, target in registered().items():
        cls = load_executor(name, registered())
        assert issubclass(cls, Executor) and cls.name == name, target
    table = settings_table()
    for var in (
        "LOCKSTEP_MANIFEST",
        "LOCKSTEP_EXECUTOR",
        "LOCKSTEP_EXECUTOR_START_TIMEOUT",
        "LOCKSTEP_IMAGE",
    ):
        assert f"`{var}`" in table
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in table.splitlines()}
    assert rows["`LOCKSTEP_EXECUTOR`"].split(" | ")[2] == "none: required"
    assert rows["`LOCKSTEP_IMAGE`"].split(" | ")[1:3] == ["scheduler, worker", "unset"]


# --- admission rules ------------------------------------------------------------------------


def test_admission_pins_the_build_id_not_the_platform() -> None:
    """A release pins one index for both platforms: the amd64 scheduler admits the arm64
    worker of its build (same build id, another platform and image digest), and refuses an
    arm64 worker of another build."""
    amd64 = dataclasses.replace(A, platform="linux/amd64")
    arm64 = dataclasses.replace(A, platform="linux/arm64")
    assert admission_refusal(amd64, "tcp://w:1", arm64.to_json().decode()) is None
    assert hello_refusal(arm64, "c-1", amd64.to_json().decode()) is None
    stranger = dataclasses.replace(B, platform="linux/arm64")
    refusal = admission_refusal(amd64, "tcp://w:2", stranger.to_json().decode())
    assert refusal is not None and refusal.reason == OTHER_BUILD


def test_admission_admits_same_build_only() -> None:
    assert admission_refusal(A, "tcp://w:1", A.to_json().decode()) is None
    other = admission_refusal(A, "tcp://w:1", B.to_json().decode())
    assert other is not None and other.reason == OTHER_BUILD
    assert (other.who, other.subject, other.build_id, other.version) == (
        "worker",
        "tcp://w:1",
        B.build_id,
        "0.0.9",
    )
    assert (other.scheduler_build_id, other.scheduler_version) == (A.build_id, "0.1.0")
    assert other.text == (
        f"lockstep refused worker tcp://w:1: it is build {B.build_id} version 0.0.9 but the "
        f"scheduler is build {A.build_id} version 0.1.0. Start workers from the scheduler's image"
    )
    assert admission_refusal(A, "tcp://w:2", B.to_json().decode().replace("0.0.9", "0.0.8"))
    for announced in (None, 42, "{", "x" * (64 * 1024 + 1)):
        refusal = admission_refusal(A, "tcp://w:2", announced)
        assert refusal is not None and refusal.reason == UNREADABLE, announced
        assert refusal.build_id == "?" and refusal.problem, announced
        assert A.build_id in refusal.text and refusal.problem in refusal.text, announced


def test_hello_refusal_names_the_client_and_both_builds() -> None:
    assert hello_refusal(A, "Client-1", A.to_json().decode()) is None
    other = hello_refusal(A, "Client-1", B.to_json().decode())
    assert other is not None and (other.who, other.subject) == ("client", "Client-1")
    assert other.text == (
        f"lockstep refused client Client-1: it is build {B.build_id} version 0.0.9 but the "
        f"scheduler is build {A.build_id} version 0.1.0. Run the runner from the scheduler's build"
    )
    unreadable = hello_refusal(A, "Client-1", None)
    assert unreadable is not None and unreadable.reason == UNREADABLE
    assert "Connect with lockstep.runtime.connect()" in unreadable.text


def test_refusal_crosses_the_wire_as_fields() -> None:
    import msgpack

    refusal = admission_refusal(A, "tcp://w:1", B.to_json().decode())
    assert refusal is not None
    sent = msgpack.unpackb(msgpack.packb(refusal.to_wire()))
    assert Refusal.from_wire(sent) == refusal
    for bad in (None, "text", {}, {**sent, "extra": 1}, {**sent, "executors": "cold"},
                {**sent, "version": 9}):  # fmt: skip
        assert Refusal.from_wire(bad) is None, bad


def test_lockstep_worker_shows_the_refusal_from_its_fields() -> None:
    """Dask raises the repr of the scheduler's answer; the text comes from its ``refusal``."""
    from lockstep.runtime.commands import _refusal

    refusal = admission_refusal(A, "tcp://w:1", B.to_json().decode())
    assert refusal is not None
    answer = {"status": "error", "message": "not read", "refusal": refusal.to_wire()}
    try:
        try:
            raise ValueError(f"Unexpected response from register: {answer!r}")
        except ValueError as inner:
            raise RuntimeError("worker failed to start") from inner
    except RuntimeError as exc:
        assert _refusal(exc) == refusal.text
    assert _refusal(ValueError("Unexpected response from register: {'status': 'x'}")) is None
    assert _refusal(ValueError("something else")) is None


def test_incompatible_error_has_a_table_and_pickles() -> None:
    members = [
        Member.of("runner", "runner", B),
        Member.of("tcp://s:1", "scheduler", A, status="other build"),
    ]
    err = IncompatibleClusterError("runner and scheduler differ", members)
    assert isinstance(err, CheckFailed) and err.exit_code == 1
    lines = str(err).splitlines()
    assert lines[0] == "runner and scheduler differ"
    assert lines[1].split() == ["address", "role", "version", "build", "id", "executor", "status"]
    assert B.build_id in lines[2] and A.build_id in lines[3]
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.members == err.members
    assert format_table(members) in str(err)


def test_gate_hook_fits_the_pinned_distributed() -> None:
    """Fails loudly if a distributed upgrade changes what the admission gate wraps."""
    import inspect
    import types
    from importlib.metadata import version

    from distributed import Scheduler, Worker

    pyproject = (HERE.parent.parent / "pyproject.toml").read_text()
    assert f'"distributed=={version("distributed")}"' in pyproject, (
        "distributed is not the pinned version the admission gate was verified against"
    )
    check_hook(types.MethodType(Scheduler.add_worker, object()))
    register = inspect.getsource(Worker._register_with_scheduler)
    assert 'op="register-worker"' in register
    assert "extra=await self.get_startup_information()" in register
    assert 'response["status"] != "OK"' in register


# --- executors in real processes -----------------------------------------------------------


@pytest.fixture
def task_path() -> Iterator[None]:
    with on_task_path():
        yield


def make_executor(name: str) -> Executor:
    config = RuntimeConfig.from_env({"LOCKSTEP_EXECUTOR": name}, manifest=A)
    executor = load_executor(name, registered())(config)
    executor.start()
    return executor


@pytest.mark.usefixtures("task_path")
def test_executors_record_type_and_pid() -> None:
    for name in ("direct", "isolated_warm", "cold"):
        executor = make_executor(name)
        try:
            result = executor.run(TaskCall("lockstep_test_tasks:add", (2,), {"b": 3}))
            assert (result.executor, result.value) == (name, 5)
            if name == "direct":
                assert result.pid == os.getpid()
            else:
                assert result.pid != os.getpid()
        finally:
            executor.close()


@pytest.mark.usefixtures("task_path")
def test_cold_pids_distinct_and_globals_fresh_warm_reused() -> None:
    cold, warm = make_executor("cold"), make_executor("isolated_warm")
    try:
        cold_pids = {cold.run(TaskCall("lockstep_test_tasks:pid")).pid for _ in range(20)}
        assert len(cold_pids) == 20 and not cold_pids & set(cold.pids())
        assert [cold.run(TaskCall("lockstep_test_tasks:bump")).value for _ in range(3)] == [1, 1, 1]
        warm_pids = {warm.run(TaskCall("lockstep_test_tasks:pid")).pid for _ in range(20)}
        assert warm_pids == set(warm.pids())
        first = warm.run(TaskCall("lockstep_test_tasks:bump")).value
        assert warm.run(TaskCall("lockstep_test_tasks:bump")).value == first + 1
    finally:
        cold.close()
        warm.close()


@pytest.mark.usefixtures("task_path")
def test_task_exception_comes_back_with_its_traceback() -> None:
    for name in ("isolated_warm", "cold"):
        executor = make_executor(name)
        try:
            with pytest.raises(TaskFailed, match=r"^ValueError: kaboom") as err:
                executor.run(TaskCall("lockstep_test_tasks:boom", ("kaboom",)))
            assert err.value.executor == name and err.value.pid not in (None, os.getpid())
            assert "raise ValueError(message)" in err.value.remote_traceback
            with pytest.raises(TaskFailed, match=r"^ModuleNotFoundError: No module named"):
                executor.run(TaskCall("no_such_module_here:f"))
            assert executor.run(TaskCall("lockstep_test_tasks:add", (1, 1))).value == 2
        finally:
            executor.close()


@pytest.mark.usefixtures("task_path")
def test_killed_warm_child_fails_its_task_and_is_replaced(tmp_path: Path) -> None:
    warm = make_executor("isolated_warm")
    try:
        (victim,) = warm.pids()
        pid_file = tmp_path / "pid"
        errors: list[BaseException] = []

        def run() -> None:
            try:
                warm.run(TaskCall("lockstep_test_tasks:write_pid_and_sleep", (str(pid_file), 60)))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 20
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert int(pid_file.read_text()) == victim
        os.kill(victim, signal.SIGKILL)
        thread.join(20)
        assert len(errors) == 1 and isinstance(errors[0], TaskCrashed)
        assert f"process {victim} died (killed by signal 9)" in str(errors[0])
        after = warm.run(TaskCall("lockstep_test_tasks:pid"))
        again = warm.run(TaskCall("lockstep_test_tasks:pid"))
        assert after.pid != victim and after.pid == again.pid
    finally:
        warm.close()


@pytest.mark.usefixtures("task_path")
def test_cold_task_that_dies_is_reported_and_template_survives() -> None:
    cold = make_executor("cold")
    try:
        template = cold.pids()
        with pytest.raises(TaskCrashed, match="exited with code 3 without a result"):
            cold.run(TaskCall("os:_exit", (3,)))
        assert cold.pids() == template
        assert cold.run(TaskCall("lockstep_test_tasks:add", (4, 4))).value == 8
    finally:
        cold.close()


def test_cold_start_timeout_is_enforced() -> None:
    config = RuntimeConfig.from_env(
        {"LOCKSTEP_EXECUTOR": "cold", "LOCKSTEP_EXECUTOR_START_TIMEOUT": "0.0001"}, manifest=A
    )
    executor = load_executor("cold", registered())(config)
    from lockstep.runtime.executors import ExecutorStartFailed

    with pytest.raises(ExecutorStartFailed, match="was not ready after"):
        executor.start()
    executor.close()


def _collect(executor: Executor, call: TaskCall, into: list[tuple[int, object]]) -> None:
    result = executor.run(call)
    into.append((result.pid, result.value))


@pytest.mark.usefixtures("task_path")
def test_process_executors_run_one_task_per_slot_at_once(tmp_path: Path) -> None:
    """Two slots run two tasks at once: each task waits for the other to have started, so
    they can only both succeed if they overlapped (no wall-clock bound)."""
    for name in ("isolated_warm", "cold"):
        config = RuntimeConfig.from_env({"LOCKSTEP_EXECUTOR": name}, manifest=A)
        executor = load_executor(name, registered())(config, 2)
        executor.start()
        try:
            meet = tmp_path / name
            meet.mkdir()
            results: list[tuple[int, object]] = []
            calls = [
                TaskCall("lockstep_test_tasks:rendezvous", (str(meet), me, other))
                for me, other in (("a", "b"), ("b", "a"))
            ]
            threads = [
                threading.Thread(target=_collect, args=(executor, call, results)) for call in calls
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert [value for _, value in results] == [True, True], (
                f"{name}: the two tasks did not overlap"
            )
            assert len({pid for pid, _ in results}) == 2
            assert len(executor.pids()) == 2
        finally:
            executor.close()
