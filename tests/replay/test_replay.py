"""The incident, replayed in real containers (issue 7): drift is refused, cold really is cold.

Two builds of lockstep, as images built by the CLI and loaded into the test
run's dockerd with ``lockstep load``:

- **new**: the session's ``built`` images (the committed tree);
- **old**: a copy of the tree whose ``[project.entry-points."lockstep.executors"]``
  has no ``cold`` line, so its manifest lists only ``direct`` and
  ``isolated_warm`` (only the app and manifest layers rebuild: seconds).

One cluster of the new build serves the whole module, on a private internal
network: a scheduler (``lockstep scheduler``, run from the new *worker* image,
as the rendered Kubernetes files do) and two workers with
``LOCKSTEP_EXECUTOR=cold``. Runners and the doctor run as containers of a
runner image on the same network, with ``examples/`` mounted read-only: the
runner ships the job's bundle, it is not in the image. Every container runs
under the constraints of its pod in the files ``lockstep release`` renders
(``pod_constraints``): user 65532, read-only root, ``--cap-drop ALL``,
``no-new-privileges``, the default seccomp profile, the pod's CPU and memory
limits, a tmpfs ``/tmp`` (the pod's ``emptyDir``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lockstep.deployment import Resources, WorkerGroup, cpu_millis, memory_bytes
from lockstep.project import load_project
from lockstep.release import render
from tests.fixtures.build import ROOT, Built, build, clone, lockstep
from tests.fixtures.engine import DockerEngine
from tests.fixtures.replay import (
    JOBS,
    LOCKSTEP,
    PYTHON,
    SCHEDULER,
    Finished,
    Replay,
    assert_refused_worker,
    line_instants,
    pod_constraints,
    seconds_to_line,
    wait_exit,
    wait_for_log,
)

pytestmark = pytest.mark.slow

EXECUTORS = ("cold", "direct", "isolated_warm")
COLD_LINE = re.compile(
    r'^cold\s*=\s*"lockstep\.runtime\.executors\.cold:ColdExecutor"\n', re.MULTILINE
)
READY = r"lockstep worker ready: build (sha256:[0-9a-f]{64}) version (\S+) executor (\S+) pid"
# Both builds (the old one is this tree with an executor removed) listen beyond loopback
# without TLS only when told so (protected mode): here a private Docker network, on purpose.
INSECURE = "--insecure"
# threads and memory: from the container's limits
WORKER_ARGS = [SCHEDULER, "--no-dashboard", INSECURE]
# A job long enough (~5 s on two workers) for a worker to try to join while it runs.
LONG_JOB = """\
name = "sir-long"
bundle = "bundle"
model = "sir.model:simulate"
target = "targets.incidence:incidence"
executor = "cold"
seeds = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]

[[params]]
name = "slow-a"
population = 50000
initial_infected = 5
beta = 0.12
gamma = 0.1
days = 100

[[params]]
name = "slow-b"
population = 50000
initial_infected = 10
beta = 0.12
gamma = 0.1
days = 100
"""


HOG = """\
def simulate(params, seed):
    block = bytearray(params["mb"] * 2**20)
    for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
        block[i] = 1
    return {"mb": params["mb"], "seed": seed}


def total(results):
    return sum(r["mb"] for r in results)
"""
HOG_JOB = """\
name = "memory"
bundle = "bundle"
model = "hog:simulate"
target = "hog:total"
executor = "cold"
seeds = [1]

[[params]]
name = "small"
mb = 8

[[params]]
name = "greedy"
mb = 1024
"""
# The replay's pods: the project's own settings, plus a small group for the memory test.
SMALL = WorkerGroup("small", "cold", 1, Resources("250m", "1", "256Mi", "256Mi"))


@dataclass(frozen=True)
class Images:
    """Image IDs (config digests) as loaded, and the references the deployment would name."""

    new: Built
    old: Built

    def id(self, build: Built, role: str) -> str:
        return build.config(role)

    @staticmethod
    def reference(build: Built, role: str) -> str:
        return f"lockstep-{role}@{build.digest(role)}"


@dataclass
class Cluster:
    replay: Replay
    images: Images
    scheduler: Any
    workers: list[Any]
    start_to_ready: list[float]  # seconds, engine start to the worker's ready line

    @property
    def new(self) -> Built:
        return self.images.new

    @property
    def old(self) -> Built:
        return self.images.old

    def run(
        self, name: str, *args: str, build: Built | None = None, timeout: float = 180
    ) -> Finished:
        """``lockstep ARGS`` in a runner container (the new build's unless ``build``)."""
        image = (build or self.new).config("runner")
        return self.replay.lockstep(name, image, *args, timeout=timeout)

    def doctor(self, name: str) -> tuple[Finished, dict[str, Any]]:
        return self.replay.doctor(self.new.config("runner"), name)

    def worker_rows(self, name: str) -> list[dict[str, Any]]:
        _, found = self.doctor(name)
        return [m for m in found["members"] if m["role"] == "worker" and m["status"] == "ok"]

    def tasks_run(self, name: str) -> int:
        """Tasks the live workers have run, as each worker counts them itself."""
        return sum(int(m["tasks"]) for m in self.worker_rows(name))


@pytest.fixture(scope="module")
def old(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The new tree without the ``cold`` entry point, built with the session cache."""
    src = clone(tmp_path_factory.mktemp("old") / "lockstep")
    pyproject = src / "pyproject.toml"
    text, found = COLD_LINE.subn("", pyproject.read_text())
    assert found == 1, "pyproject.toml no longer registers cold as the replay expects"
    pyproject.write_text(text)
    old = build(src, src / "out", built.cache)
    assert old.build_id != built.build_id
    return old


@pytest.fixture(scope="module")
def images(built: Built, old: Built, docker_engine: DockerEngine) -> Images:
    """Both builds' runner and worker images, loaded with ``lockstep load``."""
    for b in (built, old):
        for role in ("runner", "worker"):
            proc = lockstep(
                ["load", str(b.path(role))],
                cwd=ROOT,
                cache=b.cache,
                env={"DOCKER_HOST": docker_engine.host},
            )
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.strip() == b.config(role)
    return Images(built, old)


@pytest.fixture(scope="module")
def examples(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed ``examples/`` plus a longer job over the same bundle."""
    dest = tmp_path_factory.mktemp("examples") / "examples"
    shutil.copytree(built.root / "examples", dest)
    (dest / "sir" / "long.toml").write_text(LONG_JOB)
    (dest / "memory" / "bundle" / "hog").mkdir(parents=True)
    (dest / "memory" / "bundle" / "hog" / "__init__.py").write_text(HOG)
    (dest / "memory" / "job.toml").write_text(HOG_JOB)
    for path in (dest, *dest.rglob("*")):  # readable by the containers' user 65532
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


@pytest.fixture(scope="module")
def pods(built: Built, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The pod of each component in the files a release of ``built`` renders, by name."""
    import yaml

    project = load_project(built.root)
    deploy = dataclasses.replace(project.deploy, workers=(*project.deploy.workers, SMALL))
    digest = built.digest("worker")
    values = {
        "version": "0.1.0", "tag": "v0.1.0", "commit": "0" * 40, "build_id": built.build_id,
        "short_id": built.build_id[7:19], "registry": "127.0.0.1:5000/replay",
        "runner_image": f"127.0.0.1:5000/replay/lockstep-runner@{built.digest('runner')}",
        "worker_image": f"127.0.0.1:5000/replay/lockstep-worker@{digest}",
    }  # fmt: skip
    dest = tmp_path_factory.mktemp("rendered")
    found = {}
    for path in render.render(built.root, values, dest, EXECUTORS, deploy):
        if path.parent == dest:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc["kind"] in ("Deployment", "Job"):
                    found[doc["metadata"]["name"]] = doc["spec"]["template"]["spec"]
    return {
        "scheduler": found["lockstep-scheduler"],
        "worker": found["lockstep-worker-warm"],
        "small": found["lockstep-worker-small"],
        "runner": found[f"lockstep-runner-{values['short_id']}"],
    }


def probe_env(pods: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The probe socket's setting, as the rendered scheduler and worker pods set it."""
    envs = [
        {e["name"]: e["value"] for e in pods[name]["containers"][0]["env"]}
        for name in ("scheduler", "worker")
    ]
    assert envs[0]["LOCKSTEP_HEALTH_SOCKET"] == envs[1]["LOCKSTEP_HEALTH_SOCKET"]
    return {"LOCKSTEP_HEALTH_SOCKET": envs[0]["LOCKSTEP_HEALTH_SOCKET"]}


@pytest.fixture(scope="module")
def cluster(
    images: Images, docker_engine: DockerEngine, examples: Path, pods: dict[str, dict[str, Any]]
) -> Iterator[Cluster]:
    replay = Replay(docker_engine, examples, runner=pod_constraints(pods["runner"]))
    new = images.new
    try:
        scheduler = replay.start(
            "scheduler",
            new.config("worker"),
            ["--host", "0.0.0.0", "--port", "8786", INSECURE],
            entrypoint=[*LOCKSTEP, "scheduler"],
            alias="scheduler",
            env={"LOCKSTEP_IMAGE": Images.reference(new, "worker"), **probe_env(pods)},
            constraints=pod_constraints(pods["scheduler"]),
        )
        wait_for_log(scheduler, "lockstep scheduler ready", 90)
        workers = [
            replay.start(
                f"worker-{i}",
                new.config("worker"),
                WORKER_ARGS,
                env={
                    "LOCKSTEP_EXECUTOR": "cold",
                    "LOCKSTEP_IMAGE": Images.reference(new, "worker"),
                    **probe_env(pods),
                },
                constraints=pod_constraints(pods["worker"]),
            )
            for i in (1, 2)
        ]
        for worker in workers:
            wait_for_log(worker, READY, 90)
        start_to_ready = [seconds_to_line(w, "lockstep worker ready") for w in workers]
        yield Cluster(replay, images, scheduler, workers, start_to_ready)
    finally:
        replay.close()


# --- the new cluster ---------------------------------------------------------------------------


def test_new_cluster_is_one_build_and_runs_the_job_cold(cluster: Cluster) -> None:
    new = cluster.new
    for worker in cluster.workers:
        log = worker.logs().decode(errors="replace")
        ready = re.findall(READY, log)
        assert ready == [(new.build_id, "0.1.0", "cold")], log[-4000:]
        assert "LOCKSTEP_EXECUTOR=cold" in log

    doctor, found = cluster.doctor("doctor-before")
    assert doctor.code == 0, doctor.describe()
    assert found["ok"] and found["build_id"] == new.build_id
    members = found["members"]
    assert [m["role"] for m in members] == ["scheduler", "worker", "worker"]
    assert {m["build_id"] for m in members} == {new.build_id}
    assert {m["image"] for m in members} == {Images.reference(new, "worker")}
    assert [m["executor"] for m in members[1:]] == ["cold", "cold"]
    main_pids = {m["address"]: m["pid"] for m in members[1:]}

    done = cluster.run(
        "run-sir",
        "run",
        f"{JOBS}/sir/job.toml",
        "--scheduler",
        SCHEDULER,
        "--workers",
        "2",
        "--store",
        "/tmp/sir.results",  # the examples are mounted read-only
    )
    assert done.code == 0, done.describe()
    result = json.loads(done.stdout)
    assert result["build_id"] == new.build_id
    assert result["executor"] == "cold"
    tasks = [*result["simulations"], {**result["aggregated_by"]}]
    assert len(result["simulations"]) == 8
    assert {t["executor"] for t in tasks} == {"cold"}
    # Each worker container has its own PID namespace: a task is (worker, pid).
    ran_in = [(t["worker"], t["pid"]) for t in tasks]
    assert len(set(ran_in)) == len(tasks) == 9, ran_in
    assert set(result["workers"]) == set(main_pids)
    assert all(pid != main_pids[worker] for worker, pid in ran_in)
    assert "pids" not in result
    assert result["processes"] == [{"worker": w, "pid": p} for w, p in sorted(set(ran_in))]
    assert "preflight ok" in done.stderr


def test_every_container_runs_under_its_pods_constraints(
    cluster: Cluster, pods: dict[str, dict[str, Any]]
) -> None:
    """What the engine enforces is what the rendered pods ask (the job above ran under it),
    and each worker sized Dask from its container's limits."""
    for container, pod in [(cluster.scheduler, pods["scheduler"])] + [
        (w, pods["worker"]) for w in cluster.workers
    ]:
        container.reload()
        host = container.attrs["HostConfig"]
        limits = pod["containers"][0]["resources"]["limits"]
        assert container.attrs["Config"]["User"] == "65532:65532"
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in host["SecurityOpt"]
        assert not [o for o in host["SecurityOpt"] if o.startswith("seccomp")]  # the default
        assert host["Memory"] == memory_bytes(limits["memory"]) == host["MemorySwap"]
        assert host["NanoCpus"] == cpu_millis(limits["cpu"]) * 1_000_000
        assert set(host["Tmpfs"]) == {"/tmp"}
    limits = pods["worker"]["containers"][0]["resources"]["limits"]
    memory = memory_bytes(limits["memory"])
    for worker in cluster.workers:
        log = worker.logs().decode(errors="replace")
        assert re.search(
            rf"container limits \(cgroup v[12]\): memory {memory} bytes, cpu 1 CPUs", log
        )
        assert f"--memory-limit {memory} --nthreads 1" in log, log[-3000:]


def test_the_rendered_probes_answer_inside_the_images(
    cluster: Cluster, pods: dict[str, dict[str, Any]]
) -> None:
    """The pods' exec probes, run in the real images as the kubelet runs them (exec in the
    container, its environment): the image's python and its built-in ``_socket`` suffice."""
    for container, pod in [(cluster.scheduler, pods["scheduler"])] + [
        (w, pods["worker"]) for w in cluster.workers
    ]:
        spec = pod["containers"][0]
        for kind in ("readinessProbe", "livenessProbe"):
            command = spec[kind]["exec"]["command"]
            code, output = container.exec_run(command, user="65532:65532")
            assert (code, output) == (0, b"ok\n"), (container.name, kind, output)


def test_a_simulation_over_the_memory_limit_fails_naming_its_task(
    cluster: Cluster, pods: dict[str, dict[str, Any]]
) -> None:
    """A worker of the small group (256Mi): a simulation that touches 1 GiB is killed by
    the kernel (the largest process in the container's cgroup: the task's own, under
    ``cold``); the run fails naming that simulation, and the worker serves on."""
    replay, new = cluster.replay, cluster.new
    scheduler = replay.start(
        "scheduler-small",
        new.config("worker"),
        ["--host", "0.0.0.0", "--port", "8786", INSECURE],
        entrypoint=[*LOCKSTEP, "scheduler"],
        alias="scheduler-small",
        constraints=pod_constraints(pods["scheduler"]),
    )
    wait_for_log(scheduler, "lockstep scheduler ready", 90)
    worker = replay.start(
        "worker-small",
        new.config("worker"),
        ["tcp://scheduler-small:8786", "--no-dashboard", INSECURE],
        env={"LOCKSTEP_EXECUTOR": "cold"},
        constraints=pod_constraints(pods["small"]),
    )
    wait_for_log(worker, READY, 90)
    address = "tcp://scheduler-small:8786"
    done = cluster.run(
        "run-greedy",
        "run",
        f"{JOBS}/memory/job.toml",
        "--scheduler",
        address,
        "--workers",
        "1",
        "--store",
        "/tmp/memory.results",  # the examples are mounted read-only
    )
    assert done.code == 1, done.describe()
    assert "simulation params[1] seed 1 (hog:simulate) failed" in done.stderr, done.describe()
    assert "killed by signal 9" in done.stderr, done.describe()
    worker.reload()
    assert worker.status == "running"  # the task's process died, not the worker
    assert len(re.findall(READY, worker.logs().decode(errors="replace"))) == 1


def test_worker_container_start_to_ready(cluster: Cluster) -> None:
    """Each worker became ready in order: started, read its settings, then (the scheduler being
    ready first) joined and said ready. How fast is measured by bench/bench_replay.py
    (docs/design.md §7), not asserted here (a shared CI machine)."""
    print(
        f"\nworker container start to ready: "
        f"{', '.join(f'{s:.2f} s' for s in cluster.start_to_ready)}"
    )
    _, scheduler_ready = line_instants(cluster.scheduler, ["lockstep scheduler ready"])
    for worker in cluster.workers:
        started, settings, ready = line_instants(
            worker, ["lockstep settings: ", "lockstep worker ready"]
        )
        assert started <= settings <= ready, (worker.name, started, settings, ready)
        assert scheduler_ready <= ready, (worker.name, scheduler_ready, ready)


# --- drift, three ways ---------------------------------------------------------------------------


def test_old_worker_asked_for_cold_refuses_to_start(cluster: Cluster) -> None:
    container = cluster.replay.start(
        "old-cold", cluster.old.config("worker"), WORKER_ARGS, env={"LOCKSTEP_EXECUTOR": "cold"}
    )
    done = wait_exit(container, 90)
    assert done.code == 2, done.describe()
    assert done.stderr.strip().splitlines()[-1] == (
        f"lockstep: error: LOCKSTEP_EXECUTOR='cold' is not an executor of build "
        f"{cluster.old.build_id} version 0.1.0; valid values: direct, isolated_warm"
    )
    assert "lockstep worker ready" not in done.stdout + done.stderr


def test_old_worker_is_refused_at_registration_while_a_job_runs(cluster: Cluster) -> None:
    new, old = cluster.new, cluster.old
    workers = {m["address"] for m in cluster.worker_rows("doctor-workers")}
    runner = cluster.replay.start(
        "run-long",
        new.config("runner"),
        [
            "run",
            f"{JOBS}/sir/long.toml",
            "--scheduler",
            SCHEDULER,
            "--workers",
            "2",
            "--store",
            "/tmp/long.results",
        ],  # the examples are mounted read-only
        entrypoint=LOCKSTEP,
        mount_examples=True,
    )
    wait_for_log(runner, r"submitted \d+ simulation", 120)
    intruder = cluster.replay.start(
        "old-direct", old.config("worker"), WORKER_ARGS, env={"LOCKSTEP_EXECUTOR": "direct"}
    )
    refused = wait_exit(intruder, 90)
    runner.reload()
    job_was_running = runner.status == "running"
    done = wait_exit(runner, 300)

    intruder_address = assert_refused_worker(refused, old.build_id, new.build_id)
    assert job_was_running, (
        "the long job ended before the old worker was refused; make "
        f"LONG_JOB longer\n{done.describe()}"
    )
    assert done.code == 0, done.describe()
    result = json.loads(done.stdout)
    assert result["build_id"] == new.build_id and len(result["simulations"]) == 24
    assert set(result["workers"]) <= workers  # no task on the intruder
    assert {s["executor"] for s in result["simulations"]} == {"cold"}

    doctor, diagnosis = cluster.doctor("doctor-after")
    assert doctor.code == 1, doctor.describe()
    rows = diagnosis["members"]
    assert [
        (m["address"], m["build_id"], m["executor"])
        for m in rows
        if m["status"].startswith("refused")
    ] == [(intruder_address, old.build_id, "direct")]
    assert sum(m["status"] == "ok" for m in rows) == 3
    assert (
        doctor.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"lockstep: error: cluster at {SCHEDULER} is not all build {new.build_id} version "
            f"0.1.0: worker {intruder_address}: refused at registration"
        )
    )


def test_old_runner_is_refused_before_submitting_anything(cluster: Cluster) -> None:
    new, old = cluster.new, cluster.old
    before = cluster.tasks_run("doctor-tasks-before-old-runner")
    mismatch = (
        f"runner is build {old.build_id} version 0.1.0 but scheduler {SCHEDULER} is "
        f"build {new.build_id} version 0.1.0; refusing to submit: run the runner from "
        "the same build as the cluster"
    )

    # The image's own entry point: `lockstep runner ADDR`.
    runner = cluster.replay.start("old-runner", old.config("runner"), [SCHEDULER, "--workers", "2"])
    done = wait_exit(runner, 120)
    assert done.code == 1, done.describe()
    assert f"lockstep: error: {mismatch}\n" in done.stderr, done.describe()

    # The Python API: connect() raises IncompatibleClusterError.
    script = (
        "import sys\n"
        "from lockstep.runtime import IncompatibleClusterError, connect\n"
        "try:\n"
        f"    connect({SCHEDULER!r}, n_workers=2, timeout=60)\n"
        "except IncompatibleClusterError as exc:\n"
        "    print(type(exc).__name__, exc.exit_code, exc.summary)\n"
        "    sys.exit(exc.exit_code)\n"
    )
    api = cluster.replay.start(
        "old-connect", old.config("runner"), [], entrypoint=[PYTHON, "-c", script]
    )
    done = wait_exit(api, 120)
    assert done.code == 1, done.describe()
    assert done.stdout.strip() == f"IncompatibleClusterError 1 {mismatch}"

    # `lockstep run` of the example job: preflight refuses it, nothing is submitted.
    done = cluster.run(
        "old-run",
        "run",
        f"{JOBS}/sir/job.toml",
        "--scheduler",
        SCHEDULER,
        "--workers",
        "2",
        build=old,
    )
    assert done.code == 1, done.describe()
    assert "found 2 problem(s); nothing was submitted" in done.stderr, done.describe()
    assert (
        f"{JOBS}/sir/job.toml: executor: 'cold' is not a lockstep executor; valid values: "
        "direct, isolated_warm" in done.stderr
    )
    assert f"{SCHEDULER}: handshake: {mismatch}" in done.stderr
    assert cluster.tasks_run("doctor-tasks-after-old-runner") == before


def test_preflight_in_the_runner_container_catches_the_missing_target(cluster: Cluster) -> None:
    before = cluster.tasks_run("doctor-tasks-before-incident")
    spec = f"{JOBS}/incident/job.toml"
    missing = (
        f"{spec}: target targets.incidence:incidence_target: module targets.incidence "
        f"({JOBS}/sir/bundle/targets/incidence.py) has no incidence_target; did you "
        "mean incidence?"
    )
    for command in ("preflight", "run"):
        done = cluster.run(
            f"incident-{command}", command, spec, "--scheduler", SCHEDULER, "--workers", "2"
        )
        assert done.code == 1, done.describe()
        lines = done.stderr.strip().splitlines()
        assert lines[-2:] == [
            f"lockstep: error: preflight of {spec} found 1 problem(s); nothing was submitted",
            missing,
        ], done.describe()
        assert done.stdout == ""
    assert cluster.tasks_run("doctor-tasks-after-incident") == before


# --- the deployment files a release renders -------------------------------------------------------


K8S_VERSIONS = ("1.28", "1.37")


def k8s_documents(paths: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    import yaml

    found = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
                found.append((path, doc))
    return found


def test_rendered_deployment_files_validate_and_are_pinned(built: Built, tmp_path: Path) -> None:
    """`lockstep release --dry-run` renders Kubernetes files that validate offline against the
    Kubernetes schemas (kubernetes-validate, strict: no unknown field), pass `check-pins`, and
    start the processes the way this replay does."""
    import kubernetes_validate

    src = clone(tmp_path / "release")
    proc = lockstep(
        ["release", "0.1.0", "--registry", "127.0.0.1:5000/sim", "--dry-run", "--json"],
        cwd=src,
        cache=built.cache,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    files = [Path(p) for p in record["deploy_files"]]
    plain = src / "release" / "0.1.0"
    docs = k8s_documents([f for f in files if f.parent == plain])
    assert sorted((p.name, d["kind"]) for p, d in docs) == [
        ("10-network.yaml", "NetworkPolicy"),
        ("10-network.yaml", "NetworkPolicy"),
        ("10-network.yaml", "NetworkPolicy"),
        ("20-scheduler.yaml", "Deployment"),
        ("20-scheduler.yaml", "Service"),
        ("30-workers-warm.yaml", "Deployment"),
        ("30-workers-warm.yaml", "PodDisruptionBudget"),
        ("40-workspace.yaml", "ConfigMap"),
        ("50-runner-job.yaml", "Job"),
    ]
    for path, doc in docs:
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(
                    f"{path.name} {doc['kind']} is not valid Kubernetes {version}: "
                    f"{exc.message} at {'/'.join(map(str, exc.path))}"
                )

    pins = lockstep(["check-pins", str(src / "release" / "0.1.0")], cwd=src, cache=built.cache)
    assert pins.returncode == 0, pins.stdout + pins.stderr
    # Plain: 3 pods x (image + LOCKSTEP_IMAGE), 2 in the workspace; the operator's set:
    # 4 pods x 2, 2 in its workspace.
    assert pins.stdout.strip() == "ok: 18 image references in 6 files, all pinned by digest"

    # The pods run as the replay's containers do: same images, commands and lockdown.
    images = {role: record["images"][role]["reference"] for role in ("runner", "worker")}
    pods = {
        doc["metadata"]["name"]: doc["spec"]["template"]["spec"]
        for _, doc in docs
        if doc["kind"] in ("Deployment", "Job")
    }
    assert set(pods) == {
        "lockstep-scheduler",
        "lockstep-worker-warm",
        f"lockstep-runner-{record['build_id'][7:19]}",
    }, sorted(pods)
    for name, pod in pods.items():
        assert pod["securityContext"]["runAsUser"] == 65532, name
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        tmp = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        assert len(tmp) == 1 and tmp[0] in empty_dirs, name
        assert container["image"] == images["runner" if "runner" in name else "worker"], name
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["LOCKSTEP_IMAGE"] == container["image"], name  # what doctor shows
    scheduler = pods["lockstep-scheduler"]["containers"][0]
    assert scheduler["command"] == [*LOCKSTEP, "scheduler"]
    assert scheduler["args"][:4] == ["--host", "0.0.0.0", "--port", "8786"]
    worker = pods["lockstep-worker-warm"]["containers"][0]
    assert {e["name"]: e["value"] for e in worker["env"]}["LOCKSTEP_EXECUTOR"] in record[
        "executors"
    ]


def test_the_schema_check_is_real() -> None:
    """kubernetes-validate refuses what a typo or a wrong type would make of a rendered file."""
    import kubernetes_validate

    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "w"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "w"}},
            "template": {
                "metadata": {"labels": {"app": "w"}},
                "spec": {"containers": [{"name": "w", "image": "r/w@sha256:" + "0" * 64}]},
            },
        },
    }
    kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    wrong_type = json.loads(json.dumps(deployment))
    wrong_type["spec"]["replicas"] = "four"
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    for bad in (wrong_type, typo):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)
