"""Probe cost (issue 21 item 3; the figure is in docs/design.md §4.10). Prints a Markdown table.

CPU time (user + system) per Kubernetes probe, measured with ``getrusage`` on the
probing side and ``psutil`` on the answering process:

- the deployment files' probe (``runtime.health.probe_command``: ``python3.11 -I -S``
  importing the built-in ``_socket``, one round trip on the Unix socket) against a
  live ``lockstep scheduler``, and the scheduler's own CPU for the answers;
- for scale: ``python3.11 -I -S -c pass``, ``python3.11 -c pass`` (with ``site``), and
  ``python -m lockstep --help`` (what a probe through the CLI would cost).

Real processes, stopped by pid. Run: ``.venv/bin/python bench/bench_probes.py [--repeat 100]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lockstep.core import health_probe as health  # noqa: E402
from tests.fixtures.procs import start_scheduler, write_manifest  # noqa: E402


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_per_run(argv: Sequence[str], env: dict[str, str], repeat: int) -> list[float]:
    """CPU milliseconds of each of ``repeat`` runs of ``argv`` (exit 0 required)."""
    out = []
    for _ in range(repeat):
        before = children_cpu()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        out.append((children_cpu() - before) * 1000)
    return out


def row(name: str, values: list[float]) -> str:
    median = statistics.median(values)
    q = statistics.quantiles(values, n=10)
    return f"| {name} | {median:.1f} | {q[0]:.1f}-{q[-1]:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-probes-") as tmp:
        workdir = Path(tmp)
        manifest, _ = write_manifest(workdir, "a")
        sock = workdir / "health.sock"
        scheduler, _address = start_scheduler(
            workdir, manifest, env={"LOCKSTEP_HEALTH_SOCKET": str(sock)}
        )
        try:
            env = {"LOCKSTEP_HEALTH_SOCKET": str(sock), "PATH": os.environ["PATH"]}
            answering = psutil.Process(scheduler.pid)
            cpu0 = sum(answering.cpu_times()[:2])
            ready = cpu_per_run(health.probe_command("ready"), env, args.repeat)
            server_ms = (sum(answering.cpu_times()[:2]) - cpu0) * 1000 / args.repeat
            bare = cpu_per_run([health.PYTHON, "-I", "-S", "-c", "pass"], env, args.repeat)
            site = cpu_per_run([health.PYTHON, "-c", "pass"], env, args.repeat)
            cli_env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
            cli = cpu_per_run(
                [sys.executable, "-m", "lockstep", "--help"], cli_env, max(10, args.repeat // 5)
            )
        finally:
            scheduler.stop()
    print(f"CPU per probe, {args.repeat} runs, this machine ({os.cpu_count()} cores)\n")
    print("| what | median ms | p10-p90 ms |")
    print("|---|---|---|")
    print(row("readiness probe (python3.11 -I -S, _socket, one round trip)", ready))
    print(f"| the scheduler answering it (its own CPU) | {server_ms:.2f} | |")
    print(row("python3.11 -I -S -c pass", bare))
    print(row("python3.11 -c pass (site)", site))
    print(row("python -m lockstep --help (a probe through the CLI)", cli))


if __name__ == "__main__":
    main()
