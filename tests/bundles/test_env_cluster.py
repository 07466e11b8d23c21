"""Bundles with locked dependencies on a real cluster, with real wheels from PyPI.

One ``lockstep worker`` per executor (``cold``, ``direct``, ``isolated_warm``),
each with its own ``LOCKSTEP_BUNDLE_DIR``. The runner takes wheels from the
session's lockstep cache (downloaded once, checked against the lock) and sends
them to the workers; the workers never reach an index.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from lockstep.bundles.env_layer import host_platform
from lockstep.bundles.format import load_bundle
from lockstep.bundles.lockfile import lock_bytes
from lockstep.bundles.protocol import Op
from lockstep.bundles.ship import ship_bundle
from lockstep.core.digests import canonical_json, sha256_digest
from lockstep.core.errors import CheckFailed
from lockstep.jobs.preflight import preflight
from lockstep.jobs.run import run_job
from lockstep.jobs.spec import PreflightFailed
from lockstep.runtime import submit_task
from lockstep.runtime.cluster import with_token
from tests.fixtures.cluster import Cluster
from tests.fixtures.procs import start_worker
from tests.fixtures.support import require
from tests.inputs.test_python_lock import LOCK, PLATFORM, PROJECT, _index_reachable
from tests.jobs.test_jobs_units import EXAMPLES, edit_spec

NUMPY = EXAMPLES / "numpy"
NATIVE = EXAMPLES / "native_state"


@pytest.fixture(autouse=True)
def runner_cache(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> Path:
    """The runner's wheel cache: the session's (downloads happen once)."""
    monkeypatch.setenv("LOCKSTEP_CACHE_DIR", str(cache_dir))
    return cache_dir


@pytest.fixture(scope="module")
def index() -> None:
    require(_index_reachable(), "the package index is unreachable (wheels come from PyPI)")


def copy(example: Path, tmp_path: Path, **values: str) -> Path:
    dest = tmp_path / example.name
    shutil.copytree(example, dest, ignore=shutil.ignore_patterns("__pycache__"))
    spec = dest / "job.toml"
    return edit_spec(spec, **values) if values else spec


def env_dirs(cluster: Cluster, executor: str) -> list[Path]:
    envs = cluster.caches[executor] / "envs"
    return sorted(p for p in envs.iterdir() if p.is_dir()) if envs.exists() else []


def test_numpy_bundle_runs_under_cold_and_warm_with_one_aggregate(
    index: None, cluster: Cluster, tmp_path: Path
) -> None:
    results: dict[str, dict[str, Any]] = {}
    lines: dict[str, list[str]] = {}
    for executor in ("cold", "isolated_warm"):
        spec = copy(NUMPY, tmp_path / executor, executor=f'"{executor}"')
        said: list[str] = []
        results[executor] = run_job(spec, cluster.address, manifest=cluster.a, progress=said.append)
        lines[executor] = said
    cold, warm = results["cold"], results["isolated_warm"]
    assert cold["aggregate"] == warm["aggregate"]
    assert cold["aggregate"][0]["numpy"] == ["2.4.6"] or cold["aggregate"][0]["numpy"]
    for executor, result in results.items():
        [env] = env_dirs(cluster, executor)
        assert result["environment"] == "sha256:" + env.name
        for sim in result["simulations"]:
            assert sim["environment"] == result["environment"]
            # numpy came from the environment the worker made, not from anywhere else
            assert sim["output"]["numpy_file"].startswith(str(env / "site" / "numpy"))
        assert any(
            line.startswith(f"environment {result['environment']}: 1 wheel(s) sent (")
            and "made on 1 worker(s)" in line
            for line in lines[executor]
        ), lines[executor]
    assert len({s["pid"] for s in cold["simulations"]}) == len(cold["simulations"])  # forked
    assert len({s["pid"] for s in warm["simulations"]}) == 1  # one warm process
    # Again: the worker has the environment already, nothing is sent or made.
    again: list[str] = []
    spec = copy(NUMPY, tmp_path / "again", executor='"cold"')
    second = run_job(spec, cluster.address, manifest=cluster.a, progress=again.append)
    assert second["aggregate"] == cold["aggregate"]
    assert any(
        line == f"environment {second['environment']}: 0 wheel(s) sent (0.0 MB), made on 0 "
        "worker(s), ready on 1"
        for line in again
    ), again


def test_native_state_depends_on_task_order_under_warm_only(cluster: Cluster) -> None:
    bundle, problems = load_bundle(NATIVE / "bundle")
    assert bundle is not None and not problems
    draws: dict[str, dict[str, list[tuple[int, int]]]] = {}
    for executor in ("isolated_warm", "cold"):
        address = cluster.addresses[executor]
        ship_bundle(cluster.client, bundle, [address])
        draws[executor] = {}
        for order in ("forward", "backward"):
            seeds = [1, 2, 3, 4] if order == "forward" else [4, 3, 2, 1]
            got = []
            for seed in seeds:  # one after the other: the order is the test
                answer = submit_task(
                    cluster.client,
                    "native.model:simulate",
                    ({"scale": 1000}, seed),
                    bundle=bundle.digest,
                    workers=[address],
                    allow_other_workers=False,
                ).result(timeout=60)
                got.append((seed, answer["value"]["draw"]))
            draws[executor][order] = sorted(got)
    cold, warm = draws["cold"], draws["isolated_warm"]
    assert cold["forward"] == cold["backward"]  # every task starts from the same state
    assert len({d for _, d in cold["forward"]}) == 1
    assert warm["forward"] != warm["backward"]  # each draw depends on the tasks before it
    assert len({d for _, d in warm["forward"] + warm["backward"]}) == 8


def _relock(bundle: Path, **wheel: str) -> None:
    """Rewrite the bundle's lock with one wheel of this host's platform changed, as a
    consistent lock (so only the bytes can tell)."""
    path = bundle / "lockstep.lock.json"
    data = json.loads(path.read_bytes())
    data.pop("content_digest")
    data["platforms"][host_platform()]["wheels"][0].update(wheel)
    data["content_digest"] = sha256_digest(canonical_json(data))
    path.write_bytes(lock_bytes(data))


def test_a_tampered_wheel_is_refused_and_nothing_is_installed(
    index: None, cluster: Cluster, tmp_path: Path
) -> None:
    spec = copy(NUMPY, tmp_path, executor='"isolated_warm"')
    _relock(spec.parent / "bundle", sha256="0" * 64)  # the lock says other bytes
    before = env_dirs(cluster, "isolated_warm")
    with pytest.raises(CheckFailed) as failed:
        run_job(spec, cluster.address, manifest=cluster.a)
    assert "has sha256 " in str(failed.value) and "the lock says 0000" in str(failed.value)
    assert failed.value.exit_code == 1
    assert env_dirs(cluster, "isolated_warm") == before
    # A wheel sent to a worker under another digest than its bytes: refused, not stored.
    data = b"PK\x03\x04 not the wheel"
    digest = "sha256:" + "1" * 64
    address = cluster.addresses["cold"]
    answers = cluster.client.sync(
        cluster.client.scheduler.broadcast,
        msg=with_token(cluster.client, {"op": Op.WHEEL_PUT.value, "digest": digest, "data": data}),
        workers=[address],
    )
    answer = answers[address]
    assert answer["ok"] is False and answer["code"] == 1
    assert f"has sha256 {sha256_digest(data)}: refused, nothing stored" in answer["error"]
    assert not (cluster.caches["cold"] / "wheels" / ("1" * 64)).exists()


def test_dependency_problems_are_reported_at_once_with_exit_codes(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Direct cannot isolate dependencies; the lock is stale; made for another image.
    spec = copy(NUMPY, tmp_path, executor='"direct"')
    bundle = spec.parent / "bundle"
    pyproject = bundle / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"numpy>=2,<3"', '"numpy>=2,<3", "scipy"'))
    data = json.loads((bundle / "lockstep.lock.json").read_bytes())
    before = cluster.tasks_run()
    with pytest.raises(PreflightFailed) as failed:
        preflight(spec, cluster.address, timeout=10, manifest=cluster.a)
    text = str(failed.value)
    lock_file = bundle / "lockstep.lock.json"
    assert f"{lock_file}: dependencies: the lock is older than the requirements" in text
    assert "the direct executor runs tasks in the worker process" in text
    assert failed.value.exit_code == 2
    assert cluster.tasks_run() == before
    # A lock made for another image's pins (another python lock)
    other = copy(NUMPY, tmp_path / "other", executor='"cold"')
    data = json.loads((other.parent / "bundle" / "lockstep.lock.json").read_bytes())
    data["image"]["python_lock"] = "sha256:" + "2" * 64
    data.pop("content_digest")
    data["content_digest"] = sha256_digest(canonical_json(data))
    (other.parent / "bundle" / "lockstep.lock.json").write_text(json.dumps(data))
    with pytest.raises(PreflightFailed) as failed:
        preflight(other, cluster.address, timeout=10, manifest=cluster.a)
    [problem] = failed.value.problems
    assert "made for the image Python lock sha256:2222" in problem.message
    assert failed.value.exit_code == 2
    _ = LOCK, PLATFORM  # the image lock the examples were locked against


def test_preflight_refuses_a_bundle_locked_without_a_platform_of_the_cluster(
    index: None, cluster: Cluster, tmp_path: Path
) -> None:
    """A worker of the build whose manifest names linux/arm64 (the platform is not part of
    the build id: it is admitted) joins; a bundle whose lock lacks linux/arm64 is refused
    in one line naming that worker, before anything is sent to any worker."""
    spec = copy(NUMPY, tmp_path / "amd64-only", executor='"cold"')
    lock_file = spec.parent / "bundle" / "lockstep.lock.json"
    data = json.loads(lock_file.read_bytes())
    data.pop("content_digest")
    del data["platforms"]["linux/arm64"]
    data["content_digest"] = sha256_digest(canonical_json(data))
    lock_file.write_bytes(lock_bytes(data))
    (cluster.dir / "arm64").mkdir(exist_ok=True)
    claims = cluster.dir / "arm64" / "manifest-a.json"
    claims.write_bytes(dataclasses.replace(cluster.a, platform="linux/arm64").to_json())
    arm_bundles = tmp_path / "arm64-bundles"
    arm = start_worker(
        cluster.dir, cluster.address, claims, "cold", "w-arm64",
        env={"LOCKSTEP_BUNDLE_DIR": str(arm_bundles)},
    )  # fmt: skip
    try:
        arm.wait_for("lockstep worker ready", 90)
        address = arm.wait_for(r"Start worker at:\s+(tcp://\S+)").group(1)
        with pytest.raises(PreflightFailed) as failed:
            preflight(spec, cluster.address, n_workers=2, timeout=30, manifest=cluster.a)
        [problem] = failed.value.problems
        assert problem.file == str(spec.parent / "bundle" / "lockstep.lock.json")
        assert problem.message == (
            "locked for linux/amd64 only, but the cluster has worker(s) on linux/arm64 "
            f"(linux/arm64: {address}); lock it for every platform of the image: run "
            f"`lockstep bundle lock {spec.parent / 'bundle'}` in a checkout of this build "
            "(or with --image of its index)"
        )
        assert failed.value.exit_code == 2
        assert not arm_bundles.exists() or not any(arm_bundles.rglob("*.py"))  # nothing sent
        # The example's own lock has both platforms: the same cluster takes it.
        whole = copy(NUMPY, tmp_path / "both", executor='"cold"')
        checked = preflight(whole, cluster.address, n_workers=2, timeout=30, manifest=cluster.a)
        checked.close()
    finally:
        arm.stop()


def test_two_jobs_with_different_locks_on_one_worker_at_once(
    index: None, cluster: Cluster, tmp_path: Path, cache_dir: Path
) -> None:
    from lockstep.bundles.image_pins import from_project
    from lockstep.bundles.lock import lock_bundle

    first = copy(NUMPY, tmp_path / "one", executor='"isolated_warm"')
    second = copy(NUMPY, tmp_path / "two", executor='"isolated_warm"')
    pyproject = second.parent / "bundle" / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"numpy>=2,<3"', '"numpy==2.3.5"'))
    lock_bundle(
        second.parent / "bundle",
        from_project(PROJECT),
        cache_dir,
    )
    results: dict[str, Any] = {}

    def run(name: str, spec: Path) -> None:
        try:
            results[name] = run_job(spec, cluster.address, manifest=cluster.a)
        except Exception as exc:  # reported below
            results[name] = exc

    threads = [
        threading.Thread(target=run, args=("one", first)),
        threading.Thread(target=run, args=("two", second)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    one, two = results["one"], results["two"]
    assert isinstance(one, dict) and isinstance(two, dict), results
    assert one["environment"] != two["environment"]
    assert one["aggregate"][0]["numpy"] != two["aggregate"][0]["numpy"]
    assert two["aggregate"][0]["numpy"] == ["2.3.5"]
    # Same walks, same numbers: numpy's generator is stable across these versions
    assert [a["seeds"] for a in one["aggregate"]] == [a["seeds"] for a in two["aggregate"]]
    identity = cluster.client.sync(
        cluster.client.scheduler.broadcast, msg={"op": "lockstep_identity"}
    )[cluster.addresses["isolated_warm"]]
    assert len(identity["executor_pids"]) >= 2  # a warm process per environment


def test_a_worker_that_cannot_write_its_environment_says_so(
    index: None, cluster: Cluster, tmp_path: Path
) -> None:
    spec = copy(NUMPY, tmp_path, executor='"cold"')
    envs = cluster.caches["cold"] / "envs"
    moved = None
    if envs.exists():
        moved = envs.rename(envs.with_name("envs-saved"))
    envs.write_text("not a directory")  # as root, a mode cannot stop a write; this can
    try:
        with pytest.raises(PreflightFailed) as failed:
            preflight(spec, cluster.address, timeout=10, manifest=cluster.a)
        [problem] = failed.value.problems
        assert "cannot make the environment under LOCKSTEP_BUNDLE_DIR=" in problem.message
        assert "give the worker a writable LOCKSTEP_BUNDLE_DIR" in problem.message
        assert failed.value.exit_code == 2
    finally:
        envs.unlink()
        if moved is not None:
            moved.rename(envs)


def test_preflight_cli_stale_lock_and_direct_one_line_each_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.fixtures.procs import base_env

    spec = copy(NUMPY, tmp_path, executor='"direct"')
    (spec.parent / "bundle" / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "0"\ndependencies = ["numpy>=2,<3", "scipy"]\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "lockstep", "preflight", str(spec)],
        env=base_env(None),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lock = spec.parent / "bundle" / "lockstep.lock.json"
    assert proc.stderr.splitlines() == [
        f"lockstep: error: preflight of {spec} found 2 problem(s); nothing was submitted",
        f"{lock}: dependencies: the lock is older than the requirements: it was made for "
        "['numpy>=2,<3'], pyproject.toml now declares ['numpy>=2,<3', 'scipy']; run "
        f"`lockstep bundle lock {spec.parent / 'bundle'}`",
        f"{lock}: dependencies: the bundle has dependencies (1 locked wheel(s) for linux/amd64 "
        "and linux/arm64) and the direct executor runs tasks in the worker process, where a "
        "bundle's dependencies cannot be isolated; use executor isolated_warm or cold",
    ]
