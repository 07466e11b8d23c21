"""The handshake with real processes: ``lockstep scheduler``/``worker``/``runner`` on 127.0.0.1.

The module's cluster (``tests/conftest.py``: a scheduler of build "a" and one
worker per executor, no nanny so a worker's pid is the process we started)
serves most tests; builds are told apart by manifest files. Every process is
ours and is stopped by its pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lockstep.core.errors import ServiceFailed
from lockstep.runtime import (
    IncompatibleClusterError,
    TaskCrashed,
    TaskFailed,
    check_cluster,
    connect,
    submit_task,
)
from lockstep.runtime.identity import ClusterNotReady
from tests.fixtures.cluster import TASKS, Cluster, ClusterOptions
from tests.fixtures.procs import (
    ALL_EXECUTORS,
    Proc,
    base_env,
    lockstep,
    start_plain_scheduler,
    start_worker,
    write_manifest,
)

T = TASKS


CLUSTER = ClusterOptions(probe=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(
    *args: str, manifest: Path | None, executor: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        lockstep(*args),
        env=base_env(manifest, executor),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- a same-build cluster ---------------------------------------------------------------------


def test_same_build_cluster_runs_tasks_under_each_executor(cluster: Cluster) -> None:
    for executor, proc in cluster.workers.items():
        ready = (
            f"lockstep worker ready: build {cluster.a.build_id} version 0.1.0 "
            f"executor {executor} pid {proc.pid}"
        )
        assert proc.text().count(ready) == 1, proc.text()[-3000:]
        assert f"LOCKSTEP_EXECUTOR={executor}" in proc.text()
        result = cluster.on(executor, "add", 2, b=3)
        assert result["value"] == 5
        assert result["executor"] == executor
        assert result["build_id"] == cluster.a.build_id
        assert result["worker"] == cluster.addresses[executor]
        if executor == "direct":
            assert result["pid"] == proc.pid
        else:
            assert result["pid"] != proc.pid


def test_cold_gives_a_distinct_pid_per_task(cluster: Cluster) -> None:
    futures = [
        submit_task(
            cluster.client,
            f"{T}:pid",
            workers=[cluster.addresses["cold"]],
            allow_other_workers=False,
        )
        for _ in range(20)
    ]
    results = cluster.client.gather(futures)
    pids = {r["pid"] for r in results}
    assert len(pids) == 20
    assert cluster.workers["cold"].pid not in pids
    assert {r["executor"] for r in results} == {"cold"}


def test_isolated_warm_reuses_one_child(cluster: Cluster) -> None:
    futures = [
        submit_task(
            cluster.client,
            f"{T}:pid",
            workers=[cluster.addresses["isolated_warm"]],
            allow_other_workers=False,
        )
        for _ in range(20)
    ]
    pids = {r["pid"] for r in cluster.client.gather(futures)}
    assert len(pids) == 1
    assert cluster.workers["isolated_warm"].pid not in pids


def test_module_global_is_not_carried_over_under_cold(cluster: Cluster) -> None:
    assert [cluster.on("cold", "bump")["value"] for _ in range(4)] == [1, 1, 1, 1]
    warm = [cluster.on("isolated_warm", "bump")["value"] for _ in range(3)]
    assert warm[1] == warm[0] + 1 and warm[2] == warm[0] + 2


def test_task_error_reaches_the_runner(cluster: Cluster) -> None:
    with pytest.raises(TaskFailed) as err:
        cluster.on("cold", "boom", "kaboom")
    assert str(err.value).startswith(
        f"ValueError: kaboom (cold process {err.value.pid} on worker {cluster.addresses['cold']} "
        f"running {T}:boom)"
    )
    assert "raise ValueError(message)" in err.value.remote_traceback
    assert cluster.on("cold", "add", 1, 1)["value"] == 2


def test_killing_the_warm_child_mid_task_fails_that_task_and_the_next_works(
    cluster: Cluster,
) -> None:
    pid_file = cluster.dir / "warm-victim.pid"
    future = submit_task(
        cluster.client,
        f"{T}:write_pid_and_sleep",
        (str(pid_file), 60),
        workers=[cluster.addresses["isolated_warm"]],
        allow_other_workers=False,
    )
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.02)
    victim = int(pid_file.read_text())
    assert victim != cluster.workers["isolated_warm"].pid
    os.kill(victim, signal.SIGKILL)  # the warm child our worker started
    with pytest.raises(TaskCrashed, match=rf"process {victim} died \(killed by signal 9\)"):
        future.result(timeout=30)
    after = [cluster.on("isolated_warm", "pid")["pid"] for _ in range(3)]
    assert victim not in after and len(set(after)) == 1


# --- other builds are refused ------------------------------------------------------------------


def test_runner_of_another_build_gets_incompatible_error_before_submitting(
    cluster: Cluster,
) -> None:
    before = cluster.tasks_run()
    with pytest.raises(IncompatibleClusterError) as err:
        connect(cluster.address, n_workers=1, timeout=20, manifest=cluster.b)
    text = str(err.value)
    assert cluster.a.build_id in text and cluster.b.build_id in text
    rows = {m.role for m in err.value.members}
    assert rows == {"runner", "scheduler", "worker"}
    assert {m.executor for m in err.value.members if m.role == "worker"} == set(ALL_EXECUTORS)
    assert cluster.tasks_run() == before

    cli = run_cli("runner", cluster.address, "--timeout", "20", manifest=cluster.b_path)
    assert cli.returncode == 1, cli.stderr
    last = cli.stderr[cli.stderr.index("lockstep: error:") :]
    assert last.startswith(
        f"lockstep: error: runner is build {cluster.b.build_id} version 0.0.9 "
        f"but scheduler {cluster.address} is build {cluster.a.build_id}"
    )
    (cluster.dir / "runner-mismatch.txt").write_text(last)
    assert cluster.tasks_run() == before


def test_runner_of_the_same_build_prints_the_table(cluster: Cluster) -> None:
    for probe in ((), ("--probe",)):
        cli = run_cli(
            "runner",
            cluster.address,
            "--workers",
            "3",
            "--timeout",
            "20",
            *probe,
            manifest=cluster.a_path,
        )
        assert cli.returncode == 0, cli.stderr
        lines = cli.stdout.splitlines()
        assert lines[0].split()[:3] == ["address", "role", "version"]
        assert len(lines) == 1 + 1 + 1 + 3
        assert all(line.rstrip().endswith("ok") for line in lines[1:])
        assert sorted(line.split()[-2] for line in lines[3:]) == list(ALL_EXECUTORS)


def test_worker_of_another_build_is_refused_at_start_with_a_nanny(cluster: Cluster) -> None:
    bad = start_worker(
        cluster.dir, cluster.address, cluster.b_path, "direct", "w-b-nanny", nanny=True
    )
    try:
        code = bad.wait(90)
    finally:
        bad.stop()
    assert code != 0
    text = bad.text()
    assert "lockstep refused worker" in text
    assert cluster.a.build_id in text and cluster.b.build_id in text
    assert "lockstep worker ready" not in text
    ident = cluster.identity()
    assert len(ident["workers"]) == 3
    assert any(cluster.b.build_id in r["message"] for r in ident["refused"])


def test_worker_whose_manifest_claims_an_executor_its_code_lacks_never_joins(
    cluster: Cluster,
) -> None:
    """Build a's inputs (so its build id) with an executor list the code does not have."""
    (cluster.dir / "claims").mkdir(exist_ok=True)  # not over the cluster's own manifest-a
    claims, manifest = write_manifest(
        cluster.dir / "claims", "a", executors=(*ALL_EXECUTORS, "turbo")
    )  # fmt: skip
    assert manifest.build_id == cluster.a.build_id
    odd = start_worker(cluster.dir, cluster.address, claims, "cold", "w-claims")
    try:
        code = odd.wait(60)
    finally:
        odd.stop()
    assert code == 2
    assert "lists executor(s) turbo that this installation does not contain" in odd.text()
    assert "lockstep worker ready" not in odd.text()
    assert len(cluster.identity()["workers"]) == 3


def test_plain_dask_worker_without_a_manifest_is_refused(cluster: Cluster) -> None:
    plain = Proc(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            cluster.address,
            "--host",
            "127.0.0.1",
            "--no-nanny",
            "--no-dashboard",
            "--nthreads",
            "1",
        ],
        base_env(None),
        cluster.dir / "plain-dask.log",
    )
    try:
        code = plain.wait(60)
    finally:
        plain.stop()
    assert code != 0
    assert "announced no lockstep manifest" in plain.text()
    assert len(cluster.identity()["workers"]) == 3


def test_late_worker_of_another_build_is_refused_while_tasks_are_queued(cluster: Cluster) -> None:
    futures = [submit_task(cluster.client, f"{T}:sleep_then", (0.1, i)) for i in range(120)]
    late = start_worker(cluster.dir, cluster.address, cluster.b_path, "direct", "w-late")
    try:
        code = late.wait(60)
        queued = sum(not f.done() for f in futures)
    finally:
        late.stop()
    assert code != 0
    assert queued > 0, "the queue drained before the late worker arrived: the test proved nothing"
    assert "lockstep refused worker" in late.text()
    results = cluster.client.gather(futures)
    assert [r["value"] for r in results] == list(range(120))
    assert {r["worker"] for r in results} <= set(cluster.addresses.values())
    assert late.pid not in {r["pid"] for r in results}
    with pytest.raises(ClusterNotReady) as err:
        check_cluster(cluster.client, cluster.a, n_workers=4, timeout=0.5)
    assert "only 3 of 4 required worker(s)" in str(err.value)
    assert "the scheduler refused" in str(err.value) and cluster.b.build_id in str(err.value)


# --- bad input and failures --------------------------------------------------------------------


def test_unknown_executor_stops_the_worker_with_the_valid_values(cluster: Cluster) -> None:
    cli = run_cli(
        "worker", cluster.address, "--no-nanny", manifest=cluster.a_path, executor="bogus"
    )
    assert cli.returncode == 2
    assert cli.stderr.strip().splitlines()[-1] == (
        f"lockstep: error: LOCKSTEP_EXECUTOR='bogus' is not an executor of build "
        f"{cluster.a.build_id} version 0.1.0; valid values: cold, direct, isolated_warm"
    )
    unset = run_cli("worker", cluster.address, manifest=cluster.a_path)
    assert unset.returncode == 2 and "LOCKSTEP_EXECUTOR is not set" in unset.stderr


def test_preload_itself_stops_a_worker_with_a_bad_executor(cluster: Cluster) -> None:
    """Without the CLI's check (plain `dask worker` + our preload), the worker still stops."""
    proc = Proc(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            cluster.address,
            "--preload",
            "lockstep.runtime.preload_worker",
            "--host",
            "127.0.0.1",
            "--no-nanny",
            "--no-dashboard",
            "--nthreads",
            "1",
        ],
        base_env(cluster.a_path, "isolated_warm ", None),
        cluster.dir / "preload-bad.log",
    )
    try:
        code = proc.wait(60)
    finally:
        proc.stop()
    assert code == 2
    assert (
        "lockstep worker cannot start: LOCKSTEP_EXECUTOR='isolated_warm ' is not an executor"
    ) in proc.text()
    assert len(cluster.identity()["workers"]) == 3


def test_missing_or_corrupt_manifest_is_bad_input(cluster: Cluster) -> None:
    missing = cluster.dir / "absent.json"
    corrupt = cluster.dir / "corrupt.json"
    corrupt.write_bytes(cluster.a.to_json().replace(b'"0.1.0"', b'"0.1.1"')[:-10])
    for command in (
        ("scheduler", "--port", "0"),
        ("worker", cluster.address),
        ("runner", cluster.address),
    ):
        cli = run_cli(*command, manifest=missing, executor="direct")
        assert cli.returncode == 2, (command, cli.stderr)
        assert (
            cli.stderr.strip()
            .splitlines()[-1]
            .startswith(f"lockstep: error: {missing}: cannot read the build manifest")
        )
        cli = run_cli(*command, manifest=corrupt, executor="direct")
        assert cli.returncode == 2, (command, cli.stderr)
        assert "not valid JSON" in cli.stderr


def test_unreachable_scheduler_is_a_clear_timeout(cluster: Cluster) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceFailed, match=f"scheduler {address} unreachable after 2 s"):
        connect(address, n_workers=1, timeout=2, manifest=cluster.a)  # how long: bench_runtime
    cli = run_cli("runner", address, "--timeout", "2", manifest=cluster.a_path)
    assert cli.returncode == 3
    assert f"lockstep: error: scheduler {address} unreachable after 2 s" in cli.stderr


def test_worker_crashing_during_start_up(cluster: Cluster) -> None:
    crash = start_worker(
        cluster.dir,
        cluster.address,
        cluster.a_path,
        "direct",
        "w-crash",
        extra_args=["--preload", "crash_preload"],
    )
    try:
        code = crash.wait(60)
    finally:
        crash.stop()
    assert code == 7
    assert "lockstep worker ready" not in crash.text()
    with pytest.raises(ClusterNotReady, match=r"only 3 of 4 required worker\(s\)"):
        connect(cluster.address, n_workers=4, timeout=2, manifest=cluster.a)


def test_scheduler_without_the_gate_is_incompatible(tmp_path: Path) -> None:
    """A plain `dask scheduler` admits anything, so the runner refuses to use it."""
    plain, address = start_plain_scheduler(tmp_path)
    try:
        _, a = write_manifest(tmp_path, "a")
        with pytest.raises(IncompatibleClusterError, match="no lockstep gate"):
            connect(address, n_workers=0, timeout=20, manifest=a)
    finally:
        plain.stop()
