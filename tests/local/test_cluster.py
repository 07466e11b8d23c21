"""``lockstep up`` / ``down`` on the suite's private dockerd, from a real build's outputs:
the cluster runs a job (``lockstep run`` on the host, from ``out/manifest.json``), its
containers are locked down as deployed, and ``down`` (or the next ``up``) removes exactly
what ``up`` made, also after ``up`` was killed; with TLS, the cluster speaks only TLS."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from lockstep.local.cluster import LABEL
from tests.fixtures.build import Built
from tests.fixtures.engine import DockerEngine
from tests.fixtures.procs import base_env, lockstep
from tests.jobs.test_jobs_units import copy_example
from tests.runtime.test_tls import make_ca, make_cert

pytestmark = [pytest.mark.slow, pytest.mark.engine]


def cli(engine: DockerEngine, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        lockstep(*args),
        env=base_env(None, extra={"DOCKER_HOST": engine.host}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def labelled(engine: DockerEngine, name: str) -> dict[str, list[Any]]:
    selector = {"label": f"{LABEL}={name}"}
    return {
        "containers": engine.client.containers.list(all=True, filters=selector),
        "networks": engine.client.networks.list(filters=selector),
        "volumes": engine.client.volumes.list(filters=selector),
    }


def test_up_runs_a_job_and_down_leaves_nothing_it_made(
    built: Built, docker_engine: DockerEngine, tmp_path: Path, cache_dir: Path
) -> None:
    name = f"t-{secrets.token_hex(3)}"
    bystander = docker_engine.client.networks.create(
        f"{name}-bystander", labels={LABEL: f"{name}-other"}
    )
    out = str(built.out)
    try:
        up = cli(
            docker_engine, "up", "--out", out, "--name", name, "--port", "0", "--json",
            "--cpus", "500m", "--memory", "768Mi",
        )  # fmt: skip
        assert up.returncode == 0, up.stderr[-4000:]
        state = json.loads(up.stdout)
        assert state["status"] == "up" and state["build_id"] == built.build_id
        assert json.loads((built.out / f"local-{name}.json").read_text()) == state
        assert len(state["containers"]) == 4  # the scheduler, one worker per executor
        for container in labelled(docker_engine, name)["containers"]:
            host = container.attrs["HostConfig"]
            assert container.attrs["Config"]["User"] == "65532:65532"
            assert host["ReadonlyRootfs"] is True
            assert host["CapDrop"] == ["ALL"]
            assert "no-new-privileges" in host["SecurityOpt"]
            assert container.status == "running"
            # the workers' limits as given; the scheduler's as deployed (pyproject.toml)
            scheduler = container.name == f"{name}-scheduler"
            assert host["NanoCpus"] == (10**9 if scheduler else 5 * 10**8)
            assert host["Memory"] == host["MemorySwap"] == (1024 if scheduler else 768) * 2**20

        spec = copy_example(tmp_path)
        run = subprocess.run(
            lockstep("run", str(spec), "--scheduler", state["scheduler"], "--timeout", "120"),
            env=base_env(Path(state["manifest"])),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-4000:]
        assert json.loads(run.stdout)["job"]["name"] == "sir-incidence"
        # A bundle with a native wheel (numpy's .so, mapped executable from the worker's /tmp)
        numpy = subprocess.run(
            lockstep("run", str(built.root / "examples/numpy/job.toml"), "--scheduler",
                     state["scheduler"], "--timeout", "120", "--store", str(tmp_path / "np")),
            env=base_env(Path(state["manifest"]), extra={"LOCKSTEP_CACHE_DIR": str(cache_dir)}),
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert numpy.returncode == 0, numpy.stderr[-4000:]
        assert json.loads(numpy.stdout)["aggregate"][0]["numpy"] == ["2.4.6"]

        down = cli(docker_engine, "down", "--out", out, "--name", name)
        assert down.returncode == 0, down.stderr
        assert "4 container(s), 1 network(s)" in down.stdout
        assert labelled(docker_engine, name) == {"containers": [], "networks": [], "volumes": []}
        assert not (built.out / f"local-{name}.json").exists()
        bystander.reload()  # not made by up: untouched
    finally:
        cli(docker_engine, "down", "--out", out, "--name", name)
        bystander.remove()


def test_a_killed_up_is_cleaned_by_the_next_down(built: Built, docker_engine: DockerEngine) -> None:
    name = f"t-{secrets.token_hex(3)}"
    state = built.out / f"local-{name}.json"
    up = subprocess.Popen(
        lockstep("up", "--out", str(built.out), "--name", name, "--port", "0"),
        env=base_env(None, extra={"DOCKER_HOST": docker_engine.host}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not labelled(docker_engine, name)["containers"]:  # killed mid-way
            assert up.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        up.send_signal(signal.SIGKILL)
        up.wait(30)
        assert json.loads(state.read_text())["status"] == "starting"
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    down = cli(docker_engine, "down", "--out", str(built.out), "--name", name)
    assert down.returncode == 0, down.stderr
    assert labelled(docker_engine, name) == {"containers": [], "networks": [], "volumes": []}
    assert not state.exists()


def test_up_with_tls_speaks_mutual_tls_only(
    built: Built, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    """With LOCKSTEP_TLS_* set, the files reach the containers in a read-only volume (owned
    by the images' user), the address is tls://, a client of the cluster's CA gets through,
    and ``down`` removes the volume too."""
    ca = make_ca(tmp_path, "cluster")
    cert, key = make_cert(tmp_path, "lockstep", ca)
    tls = {"LOCKSTEP_TLS_CA_FILE": str(ca[1]), "LOCKSTEP_TLS_CERT": str(cert),
           "LOCKSTEP_TLS_KEY": str(key)}  # fmt: skip
    name = f"t-{secrets.token_hex(3)}"
    out = str(built.out)
    env = base_env(None, extra={"DOCKER_HOST": docker_engine.host, **tls})
    try:
        up = subprocess.run(
            lockstep(
                "up", "--out", out, "--name", name, "--port", "0", "--json", "--executor", "direct"
            ),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert up.returncode == 0, up.stderr[-4000:]
        state = json.loads(up.stdout)
        assert state["tls"] is True and state["scheduler"].startswith("tls://127.0.0.1:")
        (volume,) = labelled(docker_engine, name)["volumes"]
        for container in labelled(docker_engine, name)["containers"]:
            (mount,) = container.attrs["Mounts"]
            assert (mount["Name"], mount["RW"]) == (volume.name, False)
        runner = subprocess.run(
            lockstep("runner", state["scheduler"], "--workers", "1", "--timeout", "60"),
            env=base_env(Path(state["manifest"]), extra=tls),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert runner.returncode == 0, runner.stderr[-3000:]
        plain = subprocess.run(
            lockstep(
                "doctor",
                "--scheduler",
                state["scheduler"].replace("tls://", "tcp://"),
                "--timeout",
                "5",
            ),
            env=base_env(None),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert plain.returncode == 3 and "a TLS server answers there" in plain.stderr
        down = cli(docker_engine, "down", "--out", out, "--name", name)
        assert "1 volume(s)" in down.stdout, down.stdout
        assert labelled(docker_engine, name) == {"containers": [], "networks": [], "volumes": []}
    finally:
        cli(docker_engine, "down", "--out", out, "--name", name)
