"""The arm64 worker, proven under emulation in the real engine (issue #22, Deliver 7).

The arm64 worker image of a build of every platform is loaded into the test run's
dockerd and run with ``--platform linux/arm64`` (the host's qemu, registered with
binfmt_misc by ``.ci/run``), locked down as deployed (user 65532, read-only root,
a tmpfs ``/tmp``). What this adds to tests/replay/test_replay.py: the image of
another architecture passes its self-check, joins an amd64 ``lockstep scheduler``
of the same build (one build id: admitted; the doctor shows each one's platform),
runs a job, and a job whose bundle needs numpy (its lock's aarch64 wheel, sent by the
runner and installed by the arm64 worker), each with the aggregate an amd64 worker
gives, and an arm64 worker of another build is refused as any other is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lockstep.bundles.lockfile import parse_lock
from lockstep.core.fetch import fetch_verified
from lockstep.core.store import Cache
from tests.fixtures.build import ROOT, Built, build, clone, lockstep
from tests.fixtures.engine import DockerEngine
from tests.fixtures.replay import (
    JOBS,
    LOCKED_DOWN,
    LOCKSTEP,
    SCHEDULER,
    Replay,
    assert_refused_worker,
    wait_exit,
    wait_for_log,
)
from tests.fixtures.support import require_platform

pytestmark = pytest.mark.slow

ARM64 = "linux/arm64"
INSECURE = "--insecure"  # a private internal network, on purpose (as test_replay)
WORKER_ARGS = [SCHEDULER, "--no-dashboard", INSECURE]
READY = r"lockstep worker ready: build (sha256:[0-9a-f]{64}) version (\S+) executor (\S+) pid"
# The workers' lockdown, with /tmp (their LOCKSTEP_BUNDLE_DIR) executable as a Kubernetes
# emptyDir is: docker's tmpfs is noexec unless told `exec`, and a bundle's native wheels
# (numpy's .so) are mapped executable from there (under qemu-user an arm64 .so loads anyway:
# qemu maps the guest's code itself).
WORKER = {**LOCKED_DOWN, "tmpfs": {"/tmp": "rw,exec,nosuid,nodev"}}
NUMPY_LOCK = "examples/numpy/bundle/lockstep.lock.json"
EMULATED = 600  # seconds: an emulated python starts ~20x slower than a native one


def _image(b: Built, platform: str, role: str) -> dict[str, str]:
    if "platforms" in b.result:
        return dict(b.result["platforms"][platform]["images"][role])
    assert b.result["platform"] == platform
    return dict(b.result["images"][role])


@pytest.fixture(scope="module")
def other(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """arm64 images of another build: the tree with one more line in a declared source."""
    src = clone(tmp_path_factory.mktemp("other") / "lockstep")
    init = src / "src/lockstep/__init__.py"
    init.write_text(init.read_text() + "# another build\n")
    found = build(src, src / "out", built.cache, platform=("--platform", ARM64))
    assert found.build_id != built.build_id
    return found


@pytest.fixture(scope="module")
def loaded(built_platforms: Built, other: Built, docker_engine: DockerEngine) -> dict[str, str]:
    """Image IDs: the amd64 runner and worker, the arm64 worker, the other build's arm64."""
    require_platform(ARM64)
    want = {
        "runner": _image(built_platforms, "linux/amd64", "runner"),
        "worker": _image(built_platforms, "linux/amd64", "worker"),
        "arm64": _image(built_platforms, ARM64, "worker"),
        "other": _image(other, ARM64, "worker"),
    }
    for image in want.values():
        proc = lockstep(
            ["load", image["path"]],
            cwd=ROOT,
            cache=built_platforms.cache,
            env={"DOCKER_HOST": docker_engine.host},
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == image["config"]
    return {name: image["config"] for name, image in want.items()}


@pytest.fixture(scope="module")
def replay(
    loaded: dict[str, str], docker_engine: DockerEngine, built: Built
) -> Iterator[tuple[Replay, Any]]:
    """An amd64 scheduler of the build on a private network; its container."""
    examples = built.root / "examples"
    for path in (examples, *examples.rglob("*")):  # readable by the containers' user 65532
        path.chmod(0o755 if path.is_dir() else 0o644)
    run = Replay(docker_engine, examples)
    try:
        scheduler = run.start(
            "scheduler",
            loaded["worker"],
            ["--host", "0.0.0.0", "--port", "8786", INSECURE],
            entrypoint=[*LOCKSTEP, "scheduler"],
            alias="scheduler",
        )
        wait_for_log(scheduler, "lockstep scheduler ready", 90)
        yield run, scheduler
    finally:
        run.close()


@pytest.fixture(scope="module")
def runner_cache(built: Built, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runner container's lockstep cache: the numpy example's wheels of every platform
    (as ``lockstep bundle lock`` leaves them; the containers' network reaches no index),
    writable by the containers' user."""
    path = built.root / NUMPY_LOCK
    lock, problems = parse_lock(path.read_bytes(), str(path))
    assert lock is not None and not problems, problems
    assert list(lock.platforms) == ["linux/amd64", ARM64]
    dest = tmp_path_factory.mktemp("runner-cache")
    for wheel in lock.wheels:
        data = fetch_verified(Cache(cache_dir), wheel.url, wheel.sha256, wheel.filename, "relock")
        Cache(dest).put_blob(data)
    for p in (dest, *dest.rglob("*")):
        p.chmod(0o777 if p.is_dir() else 0o644)
    return dest


def _run(
    run: Replay, loaded: dict[str, str], name: str, job: str, cache: Path | None = None
) -> dict[str, Any]:
    done = run.lockstep(
        name,
        loaded["runner"],
        "run",
        f"{JOBS}/{job}/job.toml",
        "--scheduler",
        SCHEDULER,
        "--workers",
        "1",
        "--store",
        f"/tmp/{name}.results",  # the examples are mounted read-only
        timeout=EMULATED,
        env={"LOCKSTEP_CACHE_DIR": "/cache"} if cache else None,
        volumes={str(cache): {"bind": "/cache", "mode": "rw"}} if cache else None,
    )
    assert done.code == 0, done.describe()
    return dict(json.loads(done.stdout))


def test_the_arm64_worker_checks_itself_joins_the_amd64_scheduler_and_runs_a_job(
    replay: tuple[Replay, Any],
    loaded: dict[str, str],
    built_platforms: Built,
    runner_cache: Path,
) -> None:
    run, _ = replay
    check = run.start(
        "arm64-self-check", loaded["arm64"], ["self-check"], entrypoint=LOCKSTEP, platform=ARM64
    )
    checked = wait_exit(check, EMULATED, "(self-check, arm64)")
    assert checked.code == 0, checked.describe()

    arm = run.start(
        "arm64-worker", loaded["arm64"], WORKER_ARGS, env={"LOCKSTEP_EXECUTOR": "cold"},
        platform=ARM64, constraints=WORKER,
    )  # fmt: skip
    ready = wait_for_log(arm, READY, EMULATED)
    assert ready.group(1) == built_platforms.build_id
    arm.reload()
    assert run.client.images.get(arm.image.id).attrs["Architecture"] == "arm64"
    # One build on two platforms: the doctor says so, and shows each process's platform.
    doctor, found = run.doctor(loaded["runner"], "doctor-mixed")
    assert doctor.code == 0 and found["ok"], doctor.describe()
    assert [(m["role"], m["platform"], m["build_id"]) for m in found["members"]] == [
        ("scheduler", "linux/amd64", built_platforms.build_id),
        ("worker", ARM64, built_platforms.build_id),
    ]
    on_arm = _run(run, loaded, "sir-arm64", "sir")
    assert on_arm["build_id"] == built_platforms.build_id
    # A bundle that needs numpy: the arm64 worker installs the lock's aarch64 wheel.
    numpy_arm = _run(run, loaded, "numpy-arm64", "numpy", runner_cache)
    assert numpy_arm["environment"] is not None

    # The same job on an amd64 worker of the build, the arm64 one gone: the same aggregate.
    arm.stop(timeout=30)
    amd = run.start(
        "amd64-worker", loaded["worker"], WORKER_ARGS, env={"LOCKSTEP_EXECUTOR": "cold"},
        constraints=WORKER,
    )  # fmt: skip
    wait_for_log(amd, READY, 90)
    on_amd = _run(run, loaded, "sir-amd64", "sir")
    assert on_arm["aggregate"] == on_amd["aggregate"]
    assert set(on_arm["workers"]).isdisjoint(on_amd["workers"])
    numpy_amd = _run(run, loaded, "numpy-amd64", "numpy", runner_cache)
    assert numpy_arm["aggregate"] == numpy_amd["aggregate"]
    assert numpy_arm["aggregate"][0]["numpy"] == numpy_amd["aggregate"][0]["numpy"]
    assert set(numpy_arm["workers"]).isdisjoint(numpy_amd["workers"])


def test_an_arm64_worker_of_another_build_is_refused(
    replay: tuple[Replay, Any], loaded: dict[str, str], other: Built, built_platforms: Built
) -> None:
    run, _ = replay
    intruder = run.start(
        "other-arm64", loaded["other"], WORKER_ARGS, env={"LOCKSTEP_EXECUTOR": "direct"},
        platform=ARM64,
    )  # fmt: skip
    refused = wait_exit(intruder, EMULATED, "(another build's arm64 worker)")
    assert_refused_worker(refused, other.build_id, built_platforms.build_id)
