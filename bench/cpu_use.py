"""How much of the machine's CPU a measured step used: user + sys CPU seconds / wall / cores.

A step's CPU is what its processes used: the bench's own children once they have been
waited for (``resource.getrusage(RUSAGE_CHILDREN)``: a ``lockstep build``, the docker CLI,
pip), plus, for a daemon that stays up (our private dockerd), the CPU of its live process
tree read from ``/proc`` (each process's own and its waited-for children's user + sys
ticks). What a daemon starts and does not wait for itself (a containerd shim, which
re-parents to init) is not seen: the classic builder's ``RUN`` steps run under such a
shim (a 3 CPU s step showed as 0.3 s), while BuildKit runs each through ``runc`` as
dockerd's own child, which it waits for (the same step: 3.3 s). So the benches build with
BuildKit, and a daemon's figure is still a lower bound.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class Usage:
    """One measured step: wall seconds and user + sys CPU seconds of its processes."""

    wall: float
    cpu: float

    @property
    def utilisation(self) -> float:
        """The share of every core the step kept busy (1.0: all of them, all the time)."""
        return self.cpu / self.wall / CORES if self.wall > 0 else 0.0

    def describe(self) -> str:
        return f"{self.cpu:.1f} CPU s, {100 * self.utilisation:.0f} % of {CORES} cores"


def children_cpu() -> float:
    """User + sys seconds of every child of this process that has been waited for."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, own + waited-for children's user + sys seconds) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / TICKS


def tree_cpu(root: int) -> float:
    """User + sys seconds of the live process ``root`` and every live descendant of it."""
    stats = {int(p.name): s for p in Path("/proc").iterdir() if p.name.isdigit()
             for s in [_stat(int(p.name))] if s is not None}  # fmt: skip
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo.extend(children.get(pid, []))
    return total


def measured(fn: Callable[[], object], daemon: int | None = None) -> Usage:
    """Run ``fn`` once: its wall time and the CPU its waited-for children (and the live tree
    of the ``daemon`` pid, if given) used meanwhile."""
    cpu0 = children_cpu() + (tree_cpu(daemon) if daemon else 0.0)
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    cpu1 = children_cpu() + (tree_cpu(daemon) if daemon else 0.0)
    return Usage(wall, cpu1 - cpu0)
