"""The result store on a real cluster: a killed runner's results kept and resumed, no
reuse across builds, corrupt entries recomputed, the failure policy, the Parquet export.

A study here is a small bundle whose model returns a few numbers (and, for the
export, an Arrow table); a gate file holds back half of it, so a runner can be
killed with a known half stored. Every process is started by the tests and
stopped by its pid; the runner under test is a real ``lockstep run`` process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from lockstep.core.errors import CheckFailed
from lockstep.jobs.run import run_job
from lockstep.results.keys import Inputs
from lockstep.results.store import ResultStore
from tests.fixtures.cluster import Cluster, ClusterOptions
from tests.fixtures.procs import base_env, lockstep

CLUSTER = ClusterOptions(executors=("cold", "isolated_warm"))
SEEDS = 24
HALF = 12

MODEL = """
import os, time

def simulate(params, seed):
    if seed >= params["held_from"]:
        while not os.path.exists(params["gate"]):  # the test opens it
            time.sleep(0.02)
    if seed in params.get("fail_seeds", []) and os.path.exists(params["fail_flag"]):
        raise ValueError(f"seed {seed} fails while the flag is there")
    out = {"x": seed * params["a"], "y": seed + 0.5}
    if params.get("table"):
        import pyarrow as pa
        out["curve"] = pa.table({"t": list(range(3)), "v": [seed * t * 1.5 for t in range(3)]})
    return out

def total(results):
    return {"n": len(results), "sum": sum(r["output"]["x"] for r in results),
            "order": [[r["params_index"], r["seed"]] for r in results]}
"""


def study(tmp_path: Path, executor: str = "cold", **params: Any) -> Path:
    """A job of SEEDS simulations; seeds >= held_from wait for the gate file."""
    root = tmp_path / "job"
    (root / "bundle").mkdir(parents=True)
    (root / "bundle" / "study.py").write_text(MODEL)
    values = {"a": 3, "held_from": SEEDS, "gate": str(tmp_path / "gate"), **params}
    table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    spec = root / "job.toml"
    spec.write_text(
        'bundle = "bundle"\nmodel = "study:simulate"\ntarget = "study:total"\n'
        f'executor = "{executor}"\nseeds = {list(range(SEEDS))}\ntask_timeout = 120\n'
        f"[[params]]\n{table}"
    )
    return spec


def stored(store: Path, status: str = "ok") -> list[dict[str, Any]]:
    return [
        f.record
        for f in ResultStore(store).scan()
        if not isinstance(f, Exception) and getattr(f, "record", {}).get("status") == status
    ]


def run(cluster: Cluster, spec: Path, store: Path, **options: Any) -> dict[str, Any]:
    messages: list[str] = []
    result = run_job(
        spec,
        cluster.address,
        timeout=30,
        manifest=cluster.a,
        store=store,
        progress=messages.append,
        **options,
    )
    result["messages"] = messages
    return result


def outputs(result: dict[str, Any]) -> list[tuple[int, int, Any]]:
    return [(s["params_index"], s["seed"], s["output"]) for s in result["simulations"]]


def test_a_killed_runner_keeps_its_results_and_the_rerun_computes_only_the_rest(
    cluster: Cluster, tmp_path: Path
) -> None:
    spec = study(tmp_path, held_from=HALF)
    store = tmp_path / "store"
    runner = subprocess.Popen(
        lockstep("run", str(spec), "--scheduler", cluster.address, "--store", str(store)),
        env=base_env(cluster.a_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (store.is_dir() and len(stored(store)) == HALF):
            assert runner.poll() is None, runner.communicate()[1]
            assert time.monotonic() < deadline, "the first half was not stored"
            time.sleep(0.05)
        os.kill(runner.pid, signal.SIGKILL)
    finally:
        runner.wait(timeout=60)
        if runner.stderr is not None:
            runner.stderr.close()
    assert runner.returncode == -signal.SIGKILL
    assert sorted(r["seed"] for r in stored(store)) == list(range(HALF))
    (tmp_path / "gate").touch()
    resumed = run(cluster, spec, store)
    assert (resumed["reused"], resumed["computed"], resumed["failed"]) == (HALF, SEEDS - HALF, [])
    assert f"submitted {SEEDS - HALF} simulation(s)" in "\n".join(resumed["messages"])
    assert len(stored(store)) == SEEDS  # nothing stored twice: the half kept was not recomputed
    uninterrupted = run(cluster, spec, tmp_path / "other-store", fresh=True)
    assert uninterrupted["computed"] == SEEDS and uninterrupted["reused"] == 0
    assert resumed["aggregate"] == uninterrupted["aggregate"]
    assert resumed["aggregate"]["order"] == [[0, s] for s in range(SEEDS)]
    assert outputs(resumed) == outputs(uninterrupted)
    # the same job again: everything reused, the aggregate too, nothing submitted
    before = cluster.tasks_run()
    again = run(cluster, spec, store)
    assert (again["reused"], again["computed"], again["aggregate_reused"]) == (SEEDS, 0, True)
    assert again["aggregate"] == uninterrupted["aggregate"]
    assert cluster.tasks_run() == before
    # --fresh ignores the store
    fresh = run(cluster, spec, store, fresh=True)
    assert (fresh["reused"], fresh["computed"]) == (0, SEEDS)


def test_a_fully_stored_rerun_computes_nothing_and_contacts_no_cluster(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Every simulation and the aggregate over them are stored: `lockstep run` answers
    from the store with no scheduler there at all. An aggregate that fails its digest is
    not used: the target runs again on the cluster (and only the target)."""
    spec = study(tmp_path)
    store = tmp_path / "store"
    first = run(cluster, spec, store)
    assert (first["computed"], first["aggregate_reused"]) == (SEEDS, False)
    before = cluster.tasks_run()
    nowhere = "tcp://127.0.0.1:1"  # nothing listens there
    proc = subprocess.run(
        lockstep("run", str(spec), "--scheduler", nowhere, "--store", str(store)),
        env=base_env(cluster.a_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert (again["reused"], again["computed"], again["aggregate_reused"]) == (SEEDS, 0, True)
    assert again["aggregate"] == first["aggregate"]
    assert again["aggregated_by"] == first["aggregated_by"]
    assert outputs(again) == outputs(first) and again["processes"] == first["processes"]
    assert f"nothing to run, the cluster at {nowhere} was not contacted" in proc.stderr
    assert cluster.tasks_run() == before
    [stored_aggregate] = (store / "aggregates").iterdir()
    stored_aggregate.write_bytes(stored_aggregate.read_bytes().replace(b'"sum":', b'"sum":1'))
    recomputed = run(cluster, spec, store)
    assert (recomputed["computed"], recomputed["aggregate_reused"]) == (0, False)
    assert recomputed["aggregate"] == first["aggregate"]
    assert cluster.tasks_run() == before + 1  # the target only


def test_a_result_of_another_build_is_never_reused(cluster: Cluster, tmp_path: Path) -> None:
    spec = study(tmp_path)
    store = tmp_path / "store"
    first = run(cluster, spec, store)
    assert first["computed"] == SEEDS
    # The same simulations, as another build (b) made them, with other outputs.
    bundle = first["bundle"]
    theirs = Inputs(cluster.b.build_id, bundle, "cold", "study:simulate")
    records = []
    for s in first["simulations"]:
        record = {k: v for k, v in stored(store)[0].items()}
        record.update(
            params=s["params"],
            seed=s["seed"],
            build_id=cluster.b.build_id,
            key=theirs.key(s["params"], s["seed"]),
            output={"x": -1, "y": -1},
        )
        records.append(record)
    other = tmp_path / "other-build"
    writer = ResultStore.open(other).writer()
    writer.write(records)
    result = run(cluster, spec, other)
    assert (result["reused"], result["computed"]) == (0, SEEDS)
    assert outputs(result) == outputs(first)
    # and another bundle (one changed byte) reuses nothing either
    (spec.parent / "bundle" / "NOTE").write_text("another bundle\n")
    changed = run(cluster, spec, store)
    assert changed["bundle"] != bundle and (changed["reused"], changed["computed"]) == (0, SEEDS)


def test_a_corrupted_entry_is_detected_and_recomputed(cluster: Cluster, tmp_path: Path) -> None:
    spec = study(tmp_path)
    store = tmp_path / "store"
    first = run(cluster, spec, store)
    segment = max((store / "segments").iterdir(), key=lambda p: len(p.read_bytes()))
    lines = segment.read_bytes().splitlines(keepends=True)
    line = len(lines) - 1
    victim = json.loads(lines[line].split(b" ", 1)[1])
    lines[line] = lines[line].replace(b'"x":', b'"x":1', 1)  # a changed digit: same shape
    segment.write_bytes(b"".join(lines))
    second = run(cluster, spec, store)
    assert (second["reused"], second["computed"]) == (SEEDS - 1, 1)
    joined = "\n".join(second["messages"])
    assert (
        f"1 corrupt entr(y/ies) ignored, their simulations run again: {segment.name} "
        f"line {line + 1}: its sha256 does not match its content"
    ) in joined
    assert outputs(second) == outputs(first)
    assert [s["seed"] for s in second["simulations"] if s["key"] == victim["key"]] == [
        victim["seed"]
    ]


def test_the_failure_policy_tolerates_and_records_failures_and_retries_them(
    cluster: Cluster, tmp_path: Path
) -> None:
    flag = tmp_path / "fail"
    flag.touch()
    spec = study(tmp_path, fail_seeds=[3, 7], fail_flag=str(flag))
    store = tmp_path / "store"
    # default (max_failures = 0): the run fails at the first, keeping what it stored
    with pytest.raises(
        CheckFailed,
        match=r"simulation params\[0\] seed [37] \(study:simulate\) "
        r"failed: ValueError: seed [37] fails while the flag is there",
    ):
        run(cluster, spec, store)
    failed = stored(store, "failed")
    assert failed and {r["seed"] for r in failed} <= {3, 7}
    assert all("ValueError: seed" in r["cause"] and r["output"] is None for r in failed)
    # tolerated: the run completes, the summary lists both, the target gets the rest
    spec.write_text(
        spec.read_text().replace("task_timeout = 120\n", "task_timeout = 120\nmax_failures = 2\n")
    )
    tolerated = run(cluster, spec, store)
    assert sorted(f["seed"] for f in tolerated["failed"]) == [3, 7]
    assert all("ValueError: seed" in f["cause"] for f in tolerated["failed"])
    assert tolerated["aggregate"]["n"] == SEEDS - 2
    assert any(m.startswith("2 simulation(s) failed (tolerated") for m in tolerated["messages"])
    # one over the tolerance fails the run
    spec.write_text(spec.read_text().replace("max_failures = 2", "max_failures = 1"))
    with pytest.raises(CheckFailed, match=r"2 simulation\(s\) failed, the job tolerates 1"):
        run(cluster, spec, store)
    # the next run retries the failed ones only
    flag.unlink()
    retried = run(cluster, spec, store)
    assert (retried["reused"], retried["computed"], retried["failed"]) == (SEEDS - 2, 2, [])
    assert retried["aggregate"]["n"] == SEEDS


def test_the_parquet_export_reads_back_as_the_run_s_results(
    cluster: Cluster, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    spec = study(tmp_path, table=True)
    store = tmp_path / "store"
    result = run(cluster, spec, store)
    out = tmp_path / "tables"
    cli = cluster.cli("results", str(store), "--parquet", str(out))
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.startswith(f"store {store}: {SEEDS} simulation(s), {SEEDS} ok, 0 failed")
    assert f"tables in {out / 'tables'}: curve ({SEEDS})" in cli.stdout
    rows = pq.read_table(out / "simulations.parquet").to_pylist()
    assert sorted(
        (r["key"], r["seed"], r["params"], r["output"], r["worker"], r["pid"], r["status"])
        for r in rows
    ) == sorted(
        (s["key"], s["seed"], s["params"], s["output"], s["worker"], s["pid"], "ok")
        for s in result["simulations"]
    )
    assert {(r["build_id"], r["bundle"], r["executor"]) for r in rows} == {
        (cluster.a.build_id, result["bundle"], "cold")
    }
    assert all(r["tables"] == ["curve"] and r["seconds"] >= 0 for r in rows)
    curves = pq.read_table(out / "tables" / "curve.parquet").to_pylist()
    assert len(curves) == 3 * SEEDS
    assert sorted((c["seed"], c["t"], c["v"]) for c in curves) == [
        (s, t, s * t * 1.5) for s in range(SEEDS) for t in range(3)
    ]


def test_an_answer_the_cluster_cancels_before_it_is_read_is_the_clusters_failure(
    cluster: Cluster,
) -> None:
    """A finished task that the cluster forgets before its answer is read (cancelled): the
    run's read says the cluster failed (an OSError, so ClusterFailed, exit 3). Before, Dask's
    FutureCancelledError (a BaseException) escaped every handler of the run, or was lost in
    Dask's sync (UnboundLocalError) when it came while the read waited."""
    from types import SimpleNamespace

    from lockstep.jobs.preflight import Checked
    from lockstep.jobs.run import _Tasks
    from lockstep.runtime import submit_task
    from tests.fixtures.cluster import TASKS

    future = submit_task(cluster.client, f"{TASKS}:add", (1, 2))
    assert future.result(timeout=60)["value"] == 3
    cluster.client.cancel([future], force=True)
    checked = Checked(spec=None, bundle=SimpleNamespace(digest=None), client=cluster.client)  # type: ignore[arg-type]
    window = _Tasks(checked, lambda _: None, 1.0, None).window()
    with pytest.raises(ConnectionError, match="cancelled by the cluster"):
        window._gather([future], 30.0)
