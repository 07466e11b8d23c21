"""Hostile tasks on real ``lockstep scheduler``/``worker`` processes (127.0.0.1).

The workers run with ``LOCKSTEP_TASK_TIMEOUT=3`` and no nanny, so a worker's
pid is the process we started: "the worker survived" is that pid still running
and answering. Leftovers are read from ``/proc``: descendants of the worker,
and any pid a task wrote to a file. Outcomes only, no timing asserts.

Each case is tested at one level: what an executor does with a hostile task (every kind of
exception, death, hang, daemon, result) is tests/runtime/test_containment.py. Here only what
the real processes add: the line crossing Dask names the worker, the worker process survives,
``LOCKSTEP_TASK_TIMEOUT`` comes from its environment, a worker's signals, a nanny.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lockstep.core import reap as _reap
from lockstep.runtime import (
    TaskFailed,
    TaskResultRefused,
    TaskTimedOut,
    check_cluster,
    connect,
    submit_task,
)
from tests.fixtures.procs import ALL_EXECUTORS, Proc, start_scheduler, start_worker, write_manifest
from tests.runtime.test_containment import pids_in, running, wait_gone

T = "lockstep_test_tasks"
ENV = {"LOCKSTEP_TASK_TIMEOUT": "3"}


@dataclass
class Cluster:
    dir: Path
    address: str
    a_path: Path
    workers: dict[str, Proc]
    addresses: dict[str, str]
    client: Any

    def submit(self, address: str, target: str, *args: Any, **options: Any) -> Any:
        return submit_task(
            self.client,
            f"{T}:{target}",
            args,
            workers=[address],
            allow_other_workers=False,
            **options,
        )

    def on(self, executor: str, target: str, *args: Any) -> Any:
        return self.submit(self.addresses[executor], target, *args).result(timeout=60)

    def identities(self) -> dict[str, dict[str, Any]]:
        return dict(
            self.client.sync(self.client.scheduler.broadcast, msg={"op": "lockstep_identity"})
        )

    def healthy(self, executor: str) -> None:
        """The worker is the process we started, still admitted, and serves the next task."""
        proc = self.workers[executor]
        assert proc.popen.poll() is None, proc.text()[-3000:]
        ident = self.identities()[self.addresses[executor]]
        assert ident["pid"] == proc.pid and ident["ready"] is True
        assert self.on(executor, "add", 2, 3)["value"] == 5
        below = {p for p in _reap.descendants(proc.pid) if running(p)}
        assert below == set(ident["executor_pids"]), (below, ident)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("contain")
    a_path, a = write_manifest(workdir, "a")
    procs: list[Proc] = []
    client = None
    try:
        scheduler, address = start_scheduler(workdir, a_path)
        procs.append(scheduler)
        workers = {
            ex: start_worker(workdir, address, a_path, ex, f"w-{ex}", env=ENV)
            for ex in ALL_EXECUTORS
        }
        procs.extend(workers.values())
        for proc in workers.values():
            proc.wait_for("lockstep worker ready", timeout=60)
        client = connect(address, n_workers=3, timeout=30, manifest=a)
        report = check_cluster(client, a, n_workers=3, timeout=10)
        addresses = {m.executor: m.address for m in report.workers}
        yield Cluster(workdir, address, a_path, workers, addresses, client)
    finally:
        if client is not None:
            client.close()
        for proc in reversed(procs):
            proc.stop()


@pytest.mark.parametrize("executor", ALL_EXECUTORS)
def test_base_exception_fails_the_task_not_the_worker(cluster: Cluster, executor: str) -> None:
    """One kind (the others are the executor's: test_containment.py): through Dask, the line
    names the worker, and the worker process lives on."""
    with pytest.raises(TaskFailed) as err:
        cluster.on(executor, "exit_with", "SystemExit")
    line = str(err.value)
    assert line.startswith(
        f"SystemExit: 3 ({executor} process {err.value.pid} on worker "
        f"{cluster.addresses[executor]} running {T}:exit_with)"
    ), line
    cluster.healthy(executor)


@pytest.mark.parametrize("executor", ALL_EXECUTORS)
def test_evil_or_huge_result_is_refused_and_runs_nothing(
    cluster: Cluster, executor: str, tmp_path: Path
) -> None:
    """Also at the executor level; here the refusal crosses Dask to the client as its own type,
    and for ``direct`` the result is made in the worker process itself."""
    marker = tmp_path / "pwned"
    with pytest.raises(TaskResultRefused, match="not plain data"):
        cluster.on(executor, "evil_result", str(marker))
    with pytest.raises(TaskFailed, match=r"^lockstep_test_tasks\.EvilError"):
        cluster.on(executor, "raise_evil", str(marker))
    with pytest.raises(TaskResultRefused, match="LOCKSTEP_RESULT_MAX_BYTES"):
        cluster.on(executor, "huge_result", 65)  # MiB, over the 64 MiB default
    assert not marker.exists()
    cluster.healthy(executor)


@pytest.mark.parametrize("executor", ["cold", "isolated_warm"])
def test_hanging_forking_task_is_stopped_at_the_worker_s_timeout(
    cluster: Cluster, executor: str, tmp_path: Path
) -> None:
    """The timeout comes from the worker's ``LOCKSTEP_TASK_TIMEOUT`` (or the call's, through
    Dask); dying tasks and daemons are the executor's cases (test_containment.py)."""
    daemon, hang = tmp_path / "daemon.pid", tmp_path / "hang.pid"
    with pytest.raises(TaskTimedOut) as err:  # the workers' LOCKSTEP_TASK_TIMEOUT=3
        cluster.on(executor, "fork_daemon_and_hang", str(daemon), str(hang))
    assert "within its timeout of 3 s; its process group was killed" in str(err.value)
    assert cluster.addresses[executor] in str(err.value)
    assert len(pids_in(daemon, hang)) == 2 and wait_gone(pids_in(daemon, hang)) == set()
    cluster.healthy(executor)
    # a call's own timeout
    with pytest.raises(TaskTimedOut, match="timeout of 1 s"):
        cluster.submit(cluster.addresses[executor], "hang", str(tmp_path / "h2"), timeout=1).result(
            timeout=60
        )
    cluster.healthy(executor)


@pytest.mark.parametrize("executor", ["cold", "isolated_warm"])
def test_sigterm_to_a_busy_worker_leaves_no_process(
    cluster: Cluster, executor: str, tmp_path: Path
) -> None:
    proc = start_worker(
        tmp_path,
        cluster.address,
        cluster.a_path,
        executor,
        f"busy-{executor}",
        env={"LOCKSTEP_TASK_TIMEOUT": "600"},
    )
    try:
        found = proc.wait_for(r"lockstep worker ready: .* pid (\d+)", timeout=60)
        assert int(found.group(1)) == proc.pid
        address = next(a for a, i in cluster.identities().items() if i["pid"] == proc.pid)
        owned = set(cluster.identities()[address]["executor_pids"])
        daemon, hang = tmp_path / "daemon.pid", tmp_path / "hang.pid"
        future = cluster.submit(address, "fork_daemon_and_hang", str(daemon), str(hang))
        deadline = time.monotonic() + 30
        while len(pids_in(daemon, hang)) < 2:
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(60)
        assert wait_gone(owned | pids_in(daemon, hang)) == set(), proc.text()[-3000:]
        future.cancel()
    finally:
        proc.stop()
    for executor_ in ALL_EXECUTORS:
        assert cluster.workers[executor_].popen.poll() is None


def test_direct_timeout_retires_the_worker_and_its_nanny_replaces_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A thread cannot be killed: the task fails, the worker leaves, the nanny starts a new one
    (at a new address) that serves the next task. Without a nanny the worker exits 4. (That the
    executor asks to retire is test_containment.py's; the nanny and the exit code are these.)"""
    nanny = start_worker(
        tmp_path,
        cluster.address,
        cluster.a_path,
        "direct",
        "retire-nanny",
        nanny=True,
        env={"LOCKSTEP_TASK_TIMEOUT": "2"},
    )
    alone = start_worker(
        tmp_path,
        cluster.address,
        cluster.a_path,
        "direct",
        "retire-alone",
        env={"LOCKSTEP_TASK_TIMEOUT": "2"},
    )
    try:
        first = int(nanny.wait_for(r"lockstep worker ready: .* pid (\d+)", 90).group(1))
        alone.wait_for("lockstep worker ready", 60)
        idents = cluster.identities()
        old = next(a for a, i in idents.items() if i["pid"] == first)
        lone = next(a for a, i in idents.items() if i["pid"] == alone.pid)
        for address in (old, lone):
            with pytest.raises(TaskTimedOut) as err:
                cluster.submit(
                    address, "hang", str(tmp_path / f"{address[-5:]}.pid"), False
                ).result(timeout=60)
            assert str(err.value).startswith(
                "TaskTimedOut: did not finish within its timeout of 2 s; the direct executor "
                f"cannot stop a thread, so its worker retires (a nanny starts a fresh one) "
                f"(direct process {err.value.pid} on worker {address}"
            )
        assert alone.wait(60) == 4
        assert "lockstep worker retired: a task (lockstep_test_tasks:hang) ran past" in alone.text()
        deadline = time.monotonic() + 90
        while True:
            fresh = [
                a
                for a, i in cluster.identities().items()
                if i["executor"] == "direct"
                and i["pid"] not in (first, alone.pid)
                and a not in cluster.addresses.values()
                and i["ready"]
            ]
            if fresh:
                break
            assert time.monotonic() < deadline, nanny.text()[-4000:]
            time.sleep(0.2)
        assert nanny.popen.poll() is None
        answer = cluster.submit(fresh[0], "pid").result(timeout=60)
        assert answer["value"] not in (first, alone.pid)
    finally:
        alone.stop()
        nanny.stop()
    cluster.healthy("direct")


RETIRES = 5


def test_a_retiring_direct_worker_reports_its_busy_task_s_timeout_every_time(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Issue #26 item 5: a ``direct`` worker closed a fixed second after its task's timeout,
    and a GIL-holding task starved the worker's threads so long that the close cancelled
    Dask's ``execute`` before it reported the failure: the task went back to the scheduler
    (no worker may run it) and the client waited out its own timeout (3 in 10 tries; every
    try under load). The worker now reports the failure itself before it closes: every try
    ends in TaskTimedOut, and the worker exits 4 without claiming it lost its scheduler."""
    procs = [
        start_worker(
            tmp_path,
            cluster.address,
            cluster.a_path,
            "direct",
            f"busy-{attempt}",
            env={"LOCKSTEP_TASK_TIMEOUT": "1"},
        )
        for attempt in range(RETIRES)
    ]
    try:
        for proc in procs:  # they start together; each retires in turn
            proc.wait_for("lockstep worker ready", 90)
            address = next(a for a, i in cluster.identities().items() if i["pid"] == proc.pid)
            with pytest.raises(TaskTimedOut) as err:
                cluster.submit(address, "busy").result(timeout=120)
            assert str(err.value).startswith(
                "TaskTimedOut: did not finish within its timeout of 1 s; the direct executor "
                f"cannot stop a thread, so its worker retires (a nanny starts a fresh one) "
                f"(direct process {proc.pid} on worker {address}"
            ), str(err.value)
            assert proc.wait(90) == 4, proc.text()[-3000:]
            assert "lost its scheduler" not in proc.text(), proc.text()[-3000:]
    finally:
        for proc in procs:
            proc.stop()
    cluster.healthy("direct")
