"""``lockstep doctor`` against real scheduler and worker processes on 127.0.0.1.

Builds are told apart by manifest files (``tests.fixtures.procs``). The doctor
runs as the CLI, in its own process, with no manifest of its own.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lockstep.runtime.doctor import REFUSED, Diagnosis, Row, _refused_rows, diagnose
from lockstep.runtime.identity import admission_refusal
from tests.fixtures.cluster import Cluster, ClusterOptions
from tests.fixtures.procs import (
    base_env,
    lockstep,
    make_manifest,
    start_plain_scheduler,
    start_worker,
    write_manifest,
)

A_IMAGE = "registry.test/sim/worker@sha256:" + "a" * 64
S_IMAGE = "registry.test/sim/worker@sha256:" + "5" * 64  # the scheduler's (another pull)


CLUSTER = ClusterOptions(
    executors=("cold", "direct"),
    scheduler_env={"LOCKSTEP_IMAGE": S_IMAGE},
    worker_env={"cold": {"LOCKSTEP_IMAGE": A_IMAGE}},
)


def doctor(address: str, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        lockstep("doctor", "--scheduler", address, *extra),
        env=base_env(None),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def rows(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    data = json.loads(proc.stdout)
    return list(data["members"])


def test_one_build_cluster_is_ok(cluster: Cluster) -> None:
    proc = doctor(cluster.address)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == [
        "address",
        "role",
        "version",
        "build",
        "id",
        "platform",
        "executor",
        "image",
        "status",
    ]
    assert len(lines) == 1 + 3 + 1  # header, scheduler, two workers, summary
    assert lines[-1] == (
        f"ok: scheduler {cluster.address} and 2 worker(s) are all build "
        f"{cluster.a_build} version 0.1.0"
    )
    found = rows(doctor(cluster.address, "--json"))
    assert (found[0]["role"], found[0]["status"], found[0]["build_id"]) == (
        "scheduler",
        "ok",
        cluster.a_build,
    )
    assert sorted((r["role"], r["executor"], r["status"], r["build_id"]) for r in found[1:]) == [
        ("worker", "cold", "ok", cluster.a_build),
        ("worker", "direct", "ok", cluster.a_build),
    ]
    assert found[0]["image"] == S_IMAGE
    images = {r["executor"]: r["image"] for r in found[1:]}
    assert images == {"cold": A_IMAGE, "direct": "-"}
    assert f"  {S_IMAGE}  " in lines[1] and f"  {A_IMAGE}  " in proc.stdout
    pids = {r["executor"]: r["pid"] for r in found[1:]}
    assert pids == {ex: p.pid for ex, p in cluster.workers.items()}
    assert all(isinstance(r["tasks"], int) for r in found[1:])


def test_the_image_column_comes_from_lockstep_identity(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Dask ``run``: each process answers its LOCKSTEP_IMAGE in its own identity, which
    it also logged with its settings at start-up."""
    from distributed import Client

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the doctor must not use Dask's run (pickled calls)")

    monkeypatch.setattr(Client, "run", refuse)
    monkeypatch.setattr(Client, "run_on_scheduler", refuse)
    found = diagnose(cluster.address, timeout=30)
    scheduler, *others = [
        (r.role, r.executor, r.image) for r in found.rows if not r.status.startswith(REFUSED)
    ]
    assert scheduler == ("scheduler", "-", S_IMAGE)
    assert sorted(others) == [("worker", "cold", A_IMAGE), ("worker", "direct", "-")]
    assert f"LOCKSTEP_IMAGE={S_IMAGE}" in cluster.scheduler.text()
    assert f"LOCKSTEP_IMAGE={A_IMAGE}" in cluster.workers["cold"].text()
    assert "LOCKSTEP_IMAGE=(unset)" in cluster.workers["direct"].text()


def test_a_refused_worker_of_another_build_makes_it_fail(cluster: Cluster) -> None:
    late = start_worker(cluster.dir, cluster.address, cluster.b_path, "direct", "w-b")
    try:
        assert late.wait(60) != 0
    finally:
        late.stop()
    proc = doctor(cluster.address)
    assert proc.returncode == 1, proc.stderr
    refused = [line for line in proc.stdout.splitlines() if REFUSED in line]
    assert len(refused) == 1, proc.stdout
    assert cluster.b_build in refused[0] and "0.0.9" in refused[0]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(
        f"lockstep: error: cluster at {cluster.address} is not all build "
        f"{cluster.a_build} version 0.1.0: worker tcp://127.0.0.1:"
    )
    assert cluster.b_build in error
    live = [r for r in rows(doctor(cluster.address, "--json")) if r["status"] == "ok"]
    assert len(live) == 3  # the gate kept the cluster itself clean


def test_unreachable_scheduler_exits_3() -> None:
    proc = doctor("tcp://127.0.0.1:1", "--timeout", "2")  # how long it takes: bench_runtime
    assert proc.returncode == 3, proc.stderr
    assert "unreachable" in proc.stderr and "tcp://127.0.0.1:1" in proc.stderr


def test_plain_dask_scheduler_is_not_guarded(tmp_path: Path) -> None:
    """A plain `dask scheduler` admits two builds; the doctor shows both and fails."""
    a_path, a = write_manifest(tmp_path, "a")
    b_path, b = write_manifest(tmp_path, "b", version="0.0.9")
    plain, address = start_plain_scheduler(tmp_path)
    procs = [plain]
    try:
        for name, path in (("w-a1", a_path), ("w-a2", a_path), ("w-b", b_path)):
            procs.append(start_worker(tmp_path, address, path, "direct", name))
        for proc in procs[1:]:
            proc.wait_for("lockstep worker ready", timeout=60)
        result = doctor(address)
        found = rows(doctor(address, "--json"))
    finally:
        for proc in reversed(procs):
            proc.stop()
    assert result.returncode == 1, result.stderr
    assert "is not guarded: scheduler no lockstep gate" in result.stderr
    assert found[0]["role"] == "scheduler" and found[0]["build_id"] == "?"
    workers = sorted((r["build_id"], r["status"]) for r in found[1:])
    assert workers == sorted([(a.build_id, "ok"), (a.build_id, "ok"), (b.build_id, "other build")])


# --- units -----------------------------------------------------------------------------------


def test_refused_rows_read_the_refusal_fields_and_keep_the_last_per_address() -> None:
    a, b = make_manifest("a"), make_manifest("b", version="0.0.9")
    refusal = admission_refusal(a, "tcp://w:1", b.to_json().decode())
    unreadable = admission_refusal(a, "tcp://x:2", None)
    assert refusal is not None and unreadable is not None
    refused = [
        {"address": "tcp://w:1", "message": "first", "time": 0, "executor": "cold"},
        {
            "address": "tcp://w:1",
            "message": "prose the doctor does not parse",
            "refusal": refusal.to_wire(),
            "time": 86400,
            "executor": "cold",
        },
        {"address": "tcp://x:2", "refusal": unreadable.to_wire(), "executor": "-"},
        {"address": "tcp://live:3", "refusal": refusal.to_wire()},
    ]
    found = _refused_rows(refused, ["tcp://live:3"])
    assert [(r.address, r.build_id, r.version, r.executor, r.status) for r in found] == [
        ("tcp://w:1", b.build_id, "0.0.9", "cold", f"{REFUSED} 1970-01-02T00:00:00Z"),
        ("tcp://x:2", "?", "?", "-", REFUSED),
    ]


def test_diagnosis_verdicts() -> None:
    own, other = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    sched = Row("tcp://s:1", "scheduler", "0.1.0", own, "-", "-", "ok")
    starting = Row(
        "tcp://w:1", "worker", "0.1.0", own, "cold", "-", "not ready (executor starting)"
    )
    good = Diagnosis("tcp://s:1", own, "0.1.0", (sched, starting))
    assert good.ok and good.summary().startswith("ok: scheduler tcp://s:1 and 1 worker(s)")
    stranger = Row("tcp://w:2", "worker", "0.2.0", other, "cold", "-", "other build")
    bad = Diagnosis("tcp://s:1", own, "0.1.0", (sched, starting, stranger))
    assert not bad.ok and bad.problems == (stranger,)
    assert "worker tcp://w:2: other build (build " + other in bad.summary()
    table = bad.table().splitlines()
    assert len(table) == 4 and table[3].split()[-2:] == ["other", "build"]
    assert not Diagnosis("tcp://s:1", None, None, (sched,)).ok


def test_the_table_shows_each_processs_platform() -> None:
    """A mixed cluster of one build: the text table has a platform column (issue #22)."""
    own = "sha256:" + "1" * 64
    sched = Row("tcp://s:1", "scheduler", "0.1.0", own, "-", "-", "ok", platform="linux/amd64")
    arm = Row("tcp://w:1", "worker", "0.1.0", own, "cold", "-", "ok", platform="linux/arm64")
    unknown = Row("tcp://w:2", "worker", "?", "?", "cold", "-", REFUSED)
    mixed = Diagnosis("tcp://s:1", own, "0.1.0", (sched, arm, unknown))
    header, *lines = mixed.table().splitlines()
    columns = header.split("  ")
    assert [c.strip() for c in columns if c.strip()] == [
        "address", "role", "version", "build id", "platform", "executor", "image", "status"
    ]  # fmt: skip
    at = header.index("platform")
    assert [line[at:].split()[0] for line in lines] == ["linux/amd64", "linux/arm64", "-"]
