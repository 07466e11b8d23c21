"""``[tool.lockstep.deploy]``: sizes and groups checked before anything is built, and a
worker's Dask size derived from its container's cgroup limits."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lockstep import deployment
from lockstep.core.errors import BadInput
from lockstep.project import load_project
from lockstep.runtime import sizing
from tests.fixtures.build import ROOT, lockstep

EXECUTORS = {"cold": "m:C", "direct": "m:D", "isolated_warm": "m:W"}
WHERE = "pyproject.toml [tool.lockstep.deploy]"


def load(table: object) -> deployment.DeploySettings:
    return deployment.load(table, WHERE, EXECUTORS)


def group(**over: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "executor": "cold",
        "replicas": 2,
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    spec.update(over)
    return spec


def test_the_projects_own_settings_and_the_defaults() -> None:
    project = load_project(ROOT)
    assert project.deploy.namespace == "lockstep"
    assert [(g.name, g.executor, g.replicas) for g in project.deploy.workers] == [
        ("warm", "isolated_warm", 4)
    ]
    assert load(None) == deployment.DEFAULTS
    settings = load(
        {"namespace": "sims", "workers": {"cold": group(), "warm": group(executor="isolated_warm")}}
    )
    assert settings.namespace == "sims"
    assert [g.name for g in settings.workers] == ["cold", "warm"]
    assert settings.workers[0].resources.memory_limit_bytes == 4 * 2**30
    assert settings.workers[0].resources.cpu_limit_millis == 2000


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"workers": {"w": group(limits={"cpu": "-1", "memory": "4Gi"})}},
            r"limits\.cpu = '-1' must be greater than zero",
        ),
        (
            {"workers": {"w": group(limits={"cpu": "2", "memory": "4096"})}},
            r"limits\.memory = '4096' has no unit",
        ),
        (
            {"workers": {"w": group(requests={"cpu": "4", "memory": "1Gi"})}},
            r"requests\.cpu = '4' is above limits\.cpu = '2'",
        ),
        (
            {"workers": {"w": group(requests={"cpu": "1", "memory": "8Gi"})}},
            r"requests\.memory = '8Gi' is above limits\.memory = '4Gi'",
        ),
        ({"workers": {"w": group(limits={"cpu": "2"})}}, r"limits\.memory is missing"),
        (
            {"workers": {"w": group(limits={"cpu": "2 cores", "memory": "4Gi"})}},
            "not a Kubernetes quantity",
        ),
        (
            {"workers": {"w": group(limits={"cpu": "2", "memory": 4})}},
            r"limits\.memory is 4, not a string",
        ),
        ({"workers": {"w": group(limits={"cpu": "2Gi", "memory": "4Gi"})}}, "CPU is cores"),
        ({"workers": {"w": group(executor="turbo")}}, "executor = 'turbo' is not one of"),
        ({"workers": {"w": group(replicas=-1)}}, "replicas = -1 must be from 0"),
        ({"workers": {"Warm_1": group()}}, "group name must be lower-case"),
        (
            {"scheduler": {"requests": {"cpu": "1", "memory": "1Gi"}}},
            r"scheduler: limits is missing",
        ),
        ({"namespace": "Default!"}, "not a Kubernetes namespace name"),
        ({"sizes": {}}, "unknown key 'sizes'"),
    ],
)
def test_bad_values_are_refused_with_one_line_naming_the_key(table: object, message: str) -> None:
    with pytest.raises(BadInput, match=message) as caught:
        load(table)
    assert "\n" not in str(caught.value) and WHERE in str(caught.value)


def test_a_bad_size_stops_the_build_before_anything_is_built(tmp_path: Path) -> None:
    project = tmp_path / "p"
    shutil.copytree(ROOT / "images", project / "images")
    text = (ROOT / "pyproject.toml").read_text()
    bad = text.replace('limits = {cpu = "1", memory = "2Gi"}', 'limits = {cpu = "1", memory = "2"}')
    assert bad != text
    (project / "pyproject.toml").write_text(bad)
    proc = lockstep(
        ["build", "all", "--out", str(tmp_path / "out")], cwd=project, cache=tmp_path / "c"
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"lockstep: error: {project}/pyproject.toml [tool.lockstep.deploy].workers.warm: "
        "limits.memory = '2' has no unit; write it with Ki, Mi, Gi (or k, M, G), e.g. \"512Mi\""
    ]
    assert not (tmp_path / "out").exists()


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_limits_from_cgroup_v2_and_v1(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    write(v2, {"sys/cgroup.controllers": "cpu memory\n", "sys/memory.max": "2147483648\n",
               "sys/cpu.max": "150000 100000\n", "proc/self/cgroup": "0::/\n"})  # fmt: skip
    limits = sizing.read_limits(v2 / "sys", v2 / "proc")
    assert (limits.memory, limits.cpu, limits.threads()) == (2 * 2**30, 1.5, 1)
    write(v2, {"sys/memory.max": "max\n", "sys/cpu.max": "max 100000\n"})
    limits = sizing.read_limits(v2 / "sys", v2 / "proc")
    assert (limits.memory, limits.cpu, limits.threads()) == (None, None, None)
    # v1, nested as a host sees a container: /proc/self/cgroup names the path.
    v1 = tmp_path / "v1"
    write(v1, {"proc/self/cgroup": "4:memory:/pod/c1\n2:cpu,cpuacct:/pod/c1\n",
               "sys/memory/pod/c1/memory.limit_in_bytes": "536870912\n",
               "sys/cpu,cpuacct/pod/c1/cpu.cfs_quota_us": "300000\n",
               "sys/cpu,cpuacct/pod/c1/cpu.cfs_period_us": "100000\n"})  # fmt: skip
    limits = sizing.read_limits(v1 / "sys", v1 / "proc")
    assert (limits.memory, limits.cpu, limits.threads()) == (512 * 2**20, 3.0, 3)
    write(v1, {"sys/memory/pod/c1/memory.limit_in_bytes": "9223372036854771712\n",
               "sys/cpu,cpuacct/pod/c1/cpu.cfs_quota_us": "-1\n"})  # fmt: skip
    limits = sizing.read_limits(v1 / "sys", v1 / "proc")
    assert (limits.memory, limits.cpu) == (None, None)


def test_worker_arguments_follow_the_limits_unless_given() -> None:
    limits = sizing.ContainerLimits(2 * 2**30, 2.5, "test")
    assert sizing.worker_args(["tls://s:8786"], limits) == [
        "--memory-limit", str(2 * 2**30), "--nthreads", "2", "tls://s:8786"
    ]  # fmt: skip
    given = ["tls://s:8786", "--nthreads=4", "--memory-limit", "1GB"]
    assert sizing.worker_args(given, limits) == given
    assert sizing.worker_args(["x"], sizing.ContainerLimits(None, 0.5, "t")) == [
        "--nthreads",
        "1",
        "x",
    ]
    assert sizing.worker_args(["x"], sizing.ContainerLimits(None, None, "t")) == ["x"]
