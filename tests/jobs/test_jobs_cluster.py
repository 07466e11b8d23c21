"""Jobs on a real cluster: ``lockstep scheduler`` and one ``lockstep worker`` per executor.

Every process is started here on 127.0.0.1 and stopped by its pid. Each
worker caches bundles in its own ``LOCKSTEP_BUNDLE_DIR``. "No task reached a
worker" is read from the workers themselves: ``lockstep_identity`` counts the
tasks each one ran.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lockstep.bundles.format import load_bundle
from lockstep.bundles.protocol import Op
from lockstep.bundles.ship import check_on_worker, ship_bundle
from lockstep.bundles.store import to_wire
from lockstep.core.errors import CheckFailed
from lockstep.jobs.preflight import preflight
from lockstep.jobs.run import run_job
from lockstep.jobs.spec import PreflightFailed
from lockstep.runtime import submit_task
from lockstep.runtime.cluster import with_token
from tests.fixtures.cluster import Cluster
from tests.fixtures.procs import (
    ALL_EXECUTORS,
    start_scheduler,
    start_worker,
    write_manifest,
)
from tests.jobs.test_jobs_units import EXAMPLES, copy_example, edit_spec


def with_executor(tmp_path: Path, executor: str) -> Path:
    return edit_spec(copy_example(tmp_path), executor=f'"{executor}"')


# --- preflight against the cluster ------------------------------------------------------------


def test_incident_is_caught_by_preflight_and_no_task_reaches_a_worker(
    cluster: Cluster, tmp_path: Path
) -> None:
    spec = EXAMPLES / "incident" / "job.toml"
    before = cluster.tasks_run()
    cli = cluster.cli("preflight", str(spec), "--scheduler", cluster.address)
    assert cli.returncode == 1, cli.stderr
    lines = cli.stderr.strip().splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("lockstep: error")) :]
    assert len(lines) == 2, cli.stderr
    assert lines[0] == (
        f"lockstep: error: preflight of {spec} found 1 problem(s); nothing was submitted"
    ), cli.stderr
    assert lines[1].startswith(
        f"{spec}: target targets.incidence:incidence_target: module targets.incidence ("
    )
    assert "has no incidence_target; did you mean incidence?" in lines[1]
    # `lockstep run` stops at the same place: nothing submitted, nothing written.
    out = tmp_path / "result.json"
    run = cluster.cli("run", str(spec), "--scheduler", cluster.address, "--out", str(out))
    assert run.returncode == 1 and "incidence_target" in run.stderr, run.stderr
    assert not out.exists()
    assert cluster.tasks_run() == before


def test_preflight_with_the_cluster_passes_and_imports_on_a_worker(cluster: Cluster) -> None:
    spec = EXAMPLES / "sir" / "job.toml"
    before = cluster.tasks_run()
    cli = cluster.cli("preflight", str(spec), "--scheduler", cluster.address)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.startswith(f"preflight ok: {spec}\n")
    assert (
        f"{cluster.address}: build {cluster.a.build_id}, 1 worker(s) running cold; the "
        f"bundle imports on {cluster.addresses['cold']}"
    ) in cli.stdout
    bundle, _ = load_bundle(spec.parent / "bundle")
    assert bundle is not None
    assert (cluster.caches["cold"] / bundle.digest.removeprefix("sha256:")).is_dir()
    assert cluster.tasks_run() == before


def test_missing_executor_on_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    """A cluster whose workers run direct only, for a job that needs cold."""
    scheduler, address = start_scheduler(tmp_path, cluster.a_path, name="small")
    worker = start_worker(
        tmp_path,
        address,
        cluster.a_path,
        "direct",
        "only-direct",
        env={"LOCKSTEP_BUNDLE_DIR": str(tmp_path / "cache")},
    )
    try:
        worker.wait_for("lockstep worker ready", timeout=60)
        spec = EXAMPLES / "sir" / "job.toml"
        with pytest.raises(PreflightFailed) as failed:
            preflight(spec, address, timeout=3, manifest=cluster.a)
        [problem] = failed.value.problems
        assert str(problem).startswith(
            f"{address}: executor cold: the job needs 1 ready "
            "worker(s) running executor cold, the cluster has 0 "
        )
        assert "runs direct" in problem.message and "LOCKSTEP_EXECUTOR=cold" in problem.message
    finally:
        worker.stop()
        scheduler.stop()


def test_handshake_problem_is_reported_with_the_bundle_problems(
    cluster: Cluster, tmp_path: Path
) -> None:
    _, other = write_manifest(tmp_path, "b", version="0.0.9")
    spec = edit_spec(copy_example(tmp_path), model='"sir.model:simulat"')
    before = cluster.tasks_run()
    with pytest.raises(PreflightFailed) as failed:
        preflight(spec, cluster.address, timeout=5, manifest=other)
    names = [p.name for p in failed.value.problems]
    assert names == ["model sir.model:simulat", "handshake"], str(failed.value)
    assert "did you mean simulate?" in failed.value.problems[0].message
    assert other.build_id in failed.value.problems[1].message
    assert cluster.a.build_id in failed.value.problems[1].message
    assert cluster.tasks_run() == before


def test_worker_import_check_reports_what_does_not_import_there(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The worker's check runs in a fresh process of the worker's image, from its cached copy."""
    spec = with_executor(tmp_path, "isolated_warm")
    model = spec.parent / "bundle" / "sir" / "model.py"
    model.write_text(model.read_text() + "import helper_the_worker_lacks  # noqa: F401\n")
    line = len(model.read_text().splitlines())
    bundle, _ = load_bundle(spec.parent / "bundle")
    assert bundle is not None
    worker = cluster.addresses["isolated_warm"]
    before = cluster.tasks_run()
    ship_bundle(cluster.client, bundle, [worker])
    [result] = check_on_worker(
        cluster.client,
        worker,
        bundle.digest,
        [{"role": "model", "ref": "sir.model:simulate", "args": ["params", "seed"]}],
        30,
    )
    cached = cluster.caches["isolated_warm"] / bundle.digest.removeprefix("sha256:")
    assert not result["ok"] and result["file"] is None
    assert "No module named 'helper_the_worker_lacks'" in result["problem"]
    assert f"{cached}/sir/model.py line {line}" in result["problem"]
    assert cluster.tasks_run() == before


# --- bundles on workers -----------------------------------------------------------------------


def test_a_bundle_changed_after_preflight_ships_the_checked_bytes_and_a_partial_one_is_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    spec = with_executor(tmp_path, "cold")
    root = spec.parent / "bundle"
    (root / "sir" / "TAG").write_text("a bundle no worker has yet\n")
    bundle, _ = load_bundle(root)
    assert bundle is not None
    model = root / "sir" / "model.py"
    checked = model.read_text()
    model.write_text(checked.replace("beta * infected", "2 * beta * infected"))
    changed, _ = load_bundle(root)
    assert changed is not None and changed.digest != bundle.digest
    worker = cluster.addresses["cold"]
    # What ships is what was read and checked (``Bundle.files``), not the tree as it is now.
    shipped = ship_bundle(cluster.client, bundle, [worker])
    assert shipped.sent == (worker,)
    cache = cluster.caches["cold"]
    stored = cache / bundle.digest.removeprefix("sha256:") / "sir" / "model.py"
    assert stored.read_text() == checked
    # Files that are not those of their digest (here: one missing) are refused by the worker.
    # (With the runner's token: the scheduler relays bundle puts only for a handshaken client.)
    answers = cluster.client.sync(
        cluster.client.scheduler.broadcast,
        workers=[worker],
        msg=with_token(
            cluster.client,
            {"op": Op.PUT.value, "digest": changed.digest, "files": to_wire(changed.files[:-1])},
        ),
    )
    error = answers[worker]["error"]
    assert answers[worker]["ok"] is False
    assert error.startswith(f"worker {worker}: bundle sent as {changed.digest} arrived as "), error
    assert "(4 file(s)): its files changed after its digest was taken, or it is partial" in error
    assert not (cache / changed.digest.removeprefix("sha256:")).exists()
    # And a task naming the refused bundle does not run.
    with pytest.raises(Exception, match=f"bundle {changed.digest} is not on worker {worker}"):
        submit_task(
            cluster.client,
            "sir.model:simulate",
            ({}, 1),
            bundle=changed.digest,
            workers=[worker],
            allow_other_workers=False,
        ).result(timeout=60)


def test_bundle_is_shipped_once_and_a_tampered_cache_is_sent_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    spec = with_executor(tmp_path, "direct")
    (spec.parent / "bundle" / "sir" / "VERSION").write_text("ship-once\n")
    bundle, _ = load_bundle(spec.parent / "bundle")
    assert bundle is not None
    worker = cluster.addresses["direct"]
    first = ship_bundle(cluster.client, bundle, [worker])
    second = ship_bundle(cluster.client, bundle, [worker])
    assert (first.sent, first.cached) == ((worker,), ())
    assert (second.sent, second.cached) == ((), (worker,))
    cached = cluster.caches["direct"] / bundle.digest.removeprefix("sha256:") / "sir" / "VERSION"
    assert cached.read_text() == "ship-once\n" and cached.stat().st_mode & 0o222 == 0
    cached.chmod(0o644)
    cached.write_text("tampered\n")
    third = ship_bundle(cluster.client, bundle, [worker])
    assert third.sent == (worker,) and cached.read_text() == "ship-once\n"


def test_two_bundles_with_the_same_module_names_do_not_mix_in_a_reused_process(
    cluster: Cluster, tmp_path: Path
) -> None:
    digests = []
    for tag in ("one", "two"):
        root = tmp_path / tag
        (root / "samename").mkdir(parents=True)
        (root / "samename" / "__init__.py").write_text(f"def which():\n    return {tag!r}\n")
        bundle, _ = load_bundle(root)
        assert bundle is not None
        ship_bundle(cluster.client, bundle, list(cluster.addresses.values()))
        digests.append((tag, bundle.digest))
    for executor, worker in cluster.addresses.items():
        for tag, digest in [*digests, *digests]:
            answer = submit_task(
                cluster.client,
                "samename:which",
                bundle=digest,
                workers=[worker],
                allow_other_workers=False,
            ).result(timeout=60)
            assert (answer["value"], answer["executor"], answer["bundle"]) == (
                tag,
                executor,
                digest,
            )


# --- running the example ----------------------------------------------------------------------


def test_example_job_gives_the_same_aggregate_under_every_executor(
    cluster: Cluster, tmp_path: Path
) -> None:
    results = {}
    for executor in ALL_EXECUTORS:
        spec = with_executor(tmp_path / executor, executor)
        messages: list[str] = []
        result = run_job(
            spec, cluster.address, timeout=30, manifest=cluster.a, progress=messages.append
        )
        assert result["executor"] == executor and result["build_id"] == cluster.a.build_id
        assert {s["executor"] for s in result["simulations"]} == {executor}
        assert result["workers"] == [cluster.addresses[executor]]
        assert len(result["simulations"]) == 8 and messages[-1].startswith("aggregated by")
        pids = [s["pid"] for s in result["simulations"]]
        worker_pid = cluster.workers[executor].pid
        if executor == "direct":
            assert set(pids) == {worker_pid}
        elif executor == "cold":
            assert len(set(pids)) == 8 and worker_pid not in pids
        else:
            assert len(set(pids)) == 1 and worker_pid not in pids
        results[executor] = result
    aggregates = [r["aggregate"] for r in results.values()]
    assert aggregates[0] == aggregates[1] == aggregates[2]
    bundles = {r["bundle"] for r in results.values()}
    assert len(bundles) == 1  # the same bytes, whatever the directory
    baseline, distancing = aggregates[0]["parameter_sets"]
    assert baseline["name"] == "baseline" and distancing["name"] == "distancing"
    assert baseline["attack_rate"] > distancing["attack_rate"] > 0
    assert [s["output"] for s in results["cold"]["simulations"]] == [
        s["output"] for s in results["direct"]["simulations"]
    ]


def test_lockstep_run_end_to_end_writes_the_result(cluster: Cluster, tmp_path: Path) -> None:
    spec = EXAMPLES / "sir" / "job.toml"
    out = tmp_path / "out" / "result.json"
    cli = cluster.cli(
        "run",
        str(spec),
        "--scheduler",
        cluster.address,
        "--out",
        str(out),
        "--store",
        str(tmp_path / "store"),
    )
    assert cli.returncode == 0, cli.stderr
    result = json.loads(out.read_text())
    bundle, _ = load_bundle(spec.parent / "bundle")
    assert bundle is not None
    assert result["schema"] == "lockstep.result/v1"
    assert result["build_id"] == cluster.a.build_id and result["bundle"] == bundle.digest
    assert result["executor"] == "cold" and result["job"]["spec"] == str(spec)
    assert result["workers"] == [cluster.addresses["cold"]]
    assert "pids" not in result
    worker = cluster.addresses["cold"]
    ran = [(s["worker"], s["pid"]) for s in result["simulations"]]
    ran.append((result["aggregated_by"]["worker"], result["aggregated_by"]["pid"]))
    assert result["processes"] == [{"worker": w, "pid": p} for w, p in sorted(set(ran))]
    assert len(result["processes"]) == 9 and {w for w, _ in ran} == {worker}
    assert [(s["params_index"], s["seed"]) for s in result["simulations"]] == [
        (i, s) for i in (0, 1) for s in (1, 2, 3, 4)
    ]
    assert len(result["aggregate"]["parameter_sets"]) == 2
    stderr = cli.stderr
    for part in (
        f"lockstep: preflight ok: bundle {bundle.digest}",
        "lockstep: submitted 8 simulation(s): 2 parameter set(s) x 4 seed(s)",
        "lockstep: simulations 8/8 done",
        "lockstep: aggregated by targets.incidence:incidence on",
        f"lockstep: wrote {out}: build {cluster.a.build_id}",
        f"executor cold, 9 process(es) on 1 worker(s): {worker} pids "
        + ", ".join(str(p["pid"]) for p in result["processes"])
        + "\n",
    ):
        assert part in stderr, stderr
    assert stderr.count("worker(s) ready") == 1, stderr  # the cluster line, once
    assert list(out.parent.iterdir()) == [out]  # no temporary left behind


def test_a_failing_simulation_fails_the_run_naming_it(cluster: Cluster, tmp_path: Path) -> None:
    spec = with_executor(tmp_path, "isolated_warm")
    model = spec.parent / "bundle" / "sir" / "model.py"
    model.write_text(
        model.read_text().replace(
            "    rng = random.Random(seed)\n",
            "    rng = random.Random(seed)\n    if seed == 3 and params['name'] == 'distancing':\n"
            "        raise ValueError('bad seed')\n",
        )
    )
    with pytest.raises(
        CheckFailed,
        match=r"simulation params\[1\] seed 3 \(sir.model:simulate\) "
        r"failed: ValueError: bad seed",
    ):
        run_job(spec, cluster.address, timeout=30, manifest=cluster.a, progress=lambda _m: None)


def test_copy_of_examples_is_not_needed_by_the_runner(cluster: Cluster, tmp_path: Path) -> None:
    """The bundle reaches the workers from wherever the spec points, not from their image."""
    spec = with_executor(tmp_path, "cold")
    moved = tmp_path / "elsewhere"
    shutil.move(str(spec.parent / "bundle"), moved)
    edit_spec(spec, bundle=f'"{moved}"')
    result = run_job(
        spec, cluster.address, timeout=30, manifest=cluster.a, progress=lambda _m: None
    )
    assert result["job"]["bundle"] == str(moved)
