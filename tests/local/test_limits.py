"""``lockstep up``'s CPU and memory limits: as deployed (``[tool.lockstep.deploy]``) unless
``--cpus``/``--memory`` say otherwise; a bad quantity is one line, exit 2, before the engine
is asked anything. tests/local/test_cluster.py reads them back from running containers."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lockstep.deployment import DEFAULTS, DeploySettings, Resources, WorkerGroup
from lockstep.local.cluster import Limits, Plan
from tests.fixtures.build import ROOT
from tests.fixtures.procs import base_env, lockstep

GIB = 2**30


def test_every_container_gets_its_deployed_limits() -> None:
    deploy = DeploySettings(
        "lockstep",
        Resources("250m", "1500m", "512Mi", "1Gi"),
        DEFAULTS.runner,
        (
            WorkerGroup("warm", "isolated_warm", 4, Resources("1", "2", "2Gi", "3Gi")),
            WorkerGroup("cold", "cold", 2, Resources("1", "1", "1Gi", "1Gi")),
        ),
    )
    plan = Plan(Path("out"), "t", deploy=deploy)
    assert plan.limits(None) == Limits(1500, GIB)  # the scheduler's
    assert plan.limits("isolated_warm") == Limits(2000, 3 * GIB)
    assert plan.limits("cold") == Limits(1000, GIB)
    assert plan.limits("direct") == Limits(2000, 3 * GIB)  # no group of its own: the first's
    assert Limits(1500, GIB).engine() == {
        "nano_cpus": 1_500_000_000,
        "mem_limit": GIB,
        "memswap_limit": GIB,  # no swap beyond the limit, as on Kubernetes
    }


def test_cpus_and_memory_set_every_workers_limits_not_the_schedulers() -> None:
    plan = Plan(Path("out"), "t", worker_cpu_millis=500)
    assert plan.limits("cold") == Limits(500, 2 * GIB)  # memory: the default group's
    assert plan.limits(None) == Limits(1000, GIB)  # the default scheduler's
    plan = Plan(Path("out"), "t", worker_cpu_millis=500, worker_memory_bytes=768 * 2**20)
    assert plan.limits("isolated_warm") == Limits(500, 768 * 2**20)


def test_a_bad_quantity_is_one_line_before_the_engine_is_asked(tmp_path: Path) -> None:
    for args, says in (
        (["--cpus", "2x"], "lockstep up: --cpus = '2x' has the unit 'x'"),
        (["--memory", "768"], "lockstep up: --memory = '768' has no unit"),
        (["--cpus", "-1"], "lockstep up: --cpus = '-1' must be greater than zero"),
        (["--cpus", "two"], "--cpus = 'two' is not a Kubernetes quantity; write e.g. \"500m\""),
    ):
        proc = subprocess.run(
            lockstep("up", "--project", str(ROOT), "--out", str(tmp_path), *args),
            env=base_env(None, extra={"DOCKER_HOST": "unix:///nonexistent.sock"}),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert says in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
