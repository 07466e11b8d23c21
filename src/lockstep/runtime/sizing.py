"""A worker's size from its container's limits: Dask's memory limit and thread count.

Kubernetes turns a container's ``resources.limits`` into its cgroup: on
cgroup v2 ``memory.max`` and ``cpu.max`` (quota and period), on v1
``memory.limit_in_bytes`` and ``cpu.cfs_quota_us``/``cpu.cfs_period_us``.
``lockstep worker`` reads them (the process's own cgroup, from
``/proc/self/cgroup``) and gives Dask ``--memory-limit`` = the memory limit (so
its spill, pause and terminate thresholds are fractions of what the kernel
allows) and ``--nthreads`` = the whole CPUs of the limit (at least one),
unless the command line sets them. No limit: Dask's own defaults. Pure but
for ``read_limits``, which reads the files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

UNLIMITED_V1 = 2**62  # v1 writes "no limit" as a page-rounded 2**63 - 1


@dataclass(frozen=True)
class ContainerLimits:
    memory: int | None  # bytes
    cpu: float | None  # CPUs (quota / period)
    source: str  # which files, for the log line

    def threads(self) -> int | None:
        return None if self.cpu is None else max(1, math.floor(self.cpu + 1e-9))

    def describe(self) -> str:
        memory = "none" if self.memory is None else f"{self.memory} bytes"
        cpu = "none" if self.cpu is None else f"{self.cpu:g} CPUs"
        return f"container limits ({self.source}): memory {memory}, cpu {cpu}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _own_paths(proc_cgroup: str) -> dict[str, str]:
    """Controller (``""`` for v2) -> the process's cgroup path, from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _first(root: Path, candidates: Sequence[str], name: str) -> tuple[str | None, Path]:
    for directory in candidates:
        path = root / directory.lstrip("/") / name
        text = _read(path)
        if text is not None:
            return text, path
    return None, root


def read_limits(root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc")) -> ContainerLimits:
    """This process's memory and CPU limits (cgroup v2, else v1); None where there is none."""
    own = _own_paths(_read(proc / "self" / "cgroup") or "")
    if (root / "cgroup.controllers").exists():  # v2: one hierarchy
        places = [own.get("", "/"), "/"]
        memory_text, _ = _first(root, places, "memory.max")
        cpu_text, _ = _first(root, places, "cpu.max")
        memory = int(memory_text) if memory_text and memory_text.isdigit() else None
        cpu = None
        if cpu_text:
            quota, _, period = cpu_text.partition(" ")
            if quota.isdigit() and period.isdigit() and int(period) > 0:
                cpu = int(quota) / int(period)
        return ContainerLimits(memory, cpu, "cgroup v2")
    mem_places = [f"memory/{own.get('memory', '/')}", "memory/"]
    cpu_dirs = ("cpu,cpuacct", "cpu")
    cpu_places = [f"{d}/{own.get('cpu', '/')}" for d in cpu_dirs] + [f"{d}/" for d in cpu_dirs]
    memory_text, _ = _first(root, mem_places, "memory.limit_in_bytes")
    quota_text, where = _first(root, cpu_places, "cpu.cfs_quota_us")
    period_text = _read(where.parent / "cpu.cfs_period_us") if quota_text else None
    memory = int(memory_text) if memory_text and memory_text.isdigit() else None
    if memory is not None and memory >= UNLIMITED_V1:
        memory = None
    cpu = None
    if quota_text and period_text and quota_text.isdigit() and period_text.isdigit():
        cpu = int(quota_text) / int(period_text) if int(period_text) > 0 else None
    return ContainerLimits(memory, cpu, "cgroup v1")


def _given(args: Sequence[str], option: str) -> bool:
    return any(a == option or a.startswith(option + "=") for a in args)


def worker_args(args: Sequence[str], limits: ContainerLimits) -> list[str]:
    """``args`` with ``--memory-limit`` and ``--nthreads`` from ``limits`` where the command
    line does not set them."""
    extra: list[str] = []
    if limits.memory is not None and not _given(args, "--memory-limit"):
        extra += ["--memory-limit", str(limits.memory)]
    threads = limits.threads()
    if threads is not None and not _given(args, "--nthreads"):
        extra += ["--nthreads", str(threads)]
    return [*extra, *args]
