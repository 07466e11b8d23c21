"""Runtime benchmark (issue 3 item 9; targets in docs/design.md §7). Prints Markdown tables.

1. connect + handshake (``lockstep.runtime.connect``) versus a plain
   ``distributed.Client()`` connect, at 2, 8 and 32 workers;
2. per-task overhead of each executor versus a bare call, a
   ``multiprocessing`` spawn and a fresh ``python -c`` process;
   also a task's round trip through Dask under each executor;
3. ``lockstep worker`` start to its ready line, and refusals of a worker of
   another build;
4. how long ``connect`` and ``lockstep doctor`` take to give up on a
   scheduler that is not there (``--timeout 2``; target: under 15 s and 30 s,
   the limits the tests used to assert).

Real processes on 127.0.0.1, all stopped by pid at the end.
Run: ``.venv/bin/python bench/bench_runtime.py [--workers 2,8,32] [--repeat 15]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from lockstep.core.entrypoints import registered
from lockstep.manifest import BuildManifest
from lockstep.runtime.config import RuntimeConfig
from lockstep.runtime.executors import Executor, TaskCall, load_executor

TASKS = """
def noop():
    return None
"""


def manifest(tag: str) -> BuildManifest:
    return BuildManifest(
        name="lockstep",
        version="0.1.0",
        inputs={
            "builder": "lockstep-build/1",
            "debian_lock": "sha256:" + "d" * 64,
            "python_lock": "sha256:" + "e" * 64,
            "sources": "sha256:" + tag * 64,
        },
        executors=("cold", "direct", "isolated_warm"),
        python="3.11.2",
    )


def median_ms(fn: Callable[[], object], repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


class Procs:
    """Processes started by this benchmark; stopped by pid."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, args: Sequence[str], **env: str
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.workdir / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "lockstep", *args],
            env={**self.env, **env},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc, log

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_count(
    log: Path, pattern: str, count: int, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, log.read_text(errors="replace"))) < count:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{log} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {count}x {pattern!r} in {log}")
        time.sleep(0.05)


@contextmanager
def workspace() -> Iterator[tuple[Path, dict[str, str], Procs]]:
    with tempfile.TemporaryDirectory(prefix="lockstep-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "lockstep_bench_tasks.py").write_text(TASKS)
        (workdir / "a.json").write_bytes(manifest("a").to_json())
        (workdir / "b.json").write_bytes(manifest("b").to_json())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKSTEP_", "DASK_"))}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(workdir), env.get("PYTHONPATH")]))
        env["LOCKSTEP_MANIFEST"] = str(workdir / "a.json")
        env["DASK_TEMPORARY_DIRECTORY"] = str(workdir)
        procs = Procs(workdir, env)
        try:
            yield workdir, env, procs
        finally:
            procs.stop_all()


def start_scheduler(procs: Procs, workdir: Path) -> str:
    sched_file = workdir / "scheduler.json"
    proc, log = procs.start(
        "scheduler",
        [
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(sched_file),
        ],
    )
    wait_count(log, "lockstep scheduler ready", 1, 60, proc)
    while not sched_file.exists():
        time.sleep(0.05)
    return str(json.loads(sched_file.read_text())["address"])


def bench_connect(worker_counts: Sequence[int], repeat: int) -> list[tuple[str, ...]]:
    from distributed import Client

    from lockstep.runtime import connect

    rows: list[tuple[str, ...]] = []
    a = manifest("a")
    with workspace() as (workdir, _env, procs):
        address = start_scheduler(procs, workdir)
        have = 0
        for i, n in enumerate(sorted(worker_counts)):
            add = n - have
            proc, log = procs.start(
                f"workers-{i}",
                [
                    "worker",
                    address,
                    "--host",
                    "127.0.0.1",
                    "--nworkers",
                    str(add),
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                ],
                LOCKSTEP_EXECUTOR="direct",
            )
            wait_count(log, "lockstep worker ready", add, 300, proc)
            have = n

            def plain() -> None:
                Client(address, timeout=30).close()  # type: ignore[no-untyped-call]

            def handshake(n: int = n) -> None:
                connect(address, n_workers=n, timeout=30, manifest=a).close()

            def probing(n: int = n) -> None:
                connect(address, n_workers=n, timeout=30, manifest=a, probe_workers=True).close()

            # Interleaved rounds, so a burst of load elsewhere hits all three alike.
            samples: dict[str, list[float]] = {"plain": [], "hand": [], "probe": []}
            for warm in (plain, handshake, probing):
                warm()
            for _ in range(repeat):
                samples["plain"].append(median_ms(plain, 1, warmup=0))
                samples["hand"].append(median_ms(handshake, 1, warmup=0))
                samples["probe"].append(median_ms(probing, 1, warmup=0))
            t_plain, t_hand, t_probe = (
                statistics.median(samples[k]) for k in ("plain", "hand", "probe")
            )
            rows.append(
                (
                    str(n),
                    f"{t_plain:.1f}",
                    f"{t_hand:.1f}",
                    f"{t_hand / t_plain:.2f}x",
                    f"{t_probe:.1f}",
                    f"{t_probe / t_plain:.2f}x",
                )
            )
    return rows


def _runner(executor: Executor) -> Callable[[], object]:
    call = TaskCall("lockstep_bench_tasks:noop")
    return lambda: executor.run(call)


def bench_executors(repeat: int) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    a = manifest("a")
    with workspace() as (workdir, env, _procs):
        os.environ["PYTHONPATH"] = env["PYTHONPATH"]
        sys.path.insert(0, str(workdir))
        import lockstep_bench_tasks  # type: ignore[import-not-found]

        bare = median_ms(lockstep_bench_tasks.noop, repeat * 20)
        rows.append(("bare call", f"{bare:.4f}", "in the caller"))
        for name in ("direct", "isolated_warm", "cold"):
            config = RuntimeConfig.from_env({"LOCKSTEP_EXECUTOR": name}, manifest=a)
            executor = load_executor(name, registered())(config)
            executor.start()
            try:
                t = median_ms(_runner(executor), repeat * 10)
            finally:
                executor.close()
            rows.append((f"`{name}` executor", f"{t:.3f}", "run() in the worker"))
        ctx = multiprocessing.get_context("spawn")

        def spawn() -> None:
            p = ctx.Process(target=lockstep_bench_tasks.noop)
            p.start()
            p.join()

        rows.append(
            (
                "multiprocessing spawn",
                f"{median_ms(spawn, repeat):.1f}",
                "Process(target=noop), start, join",
            )
        )

        def fresh() -> None:
            subprocess.run(
                [sys.executable, "-c", "import lockstep_bench_tasks; lockstep_bench_tasks.noop()"],
                env=env,
                check=True,
            )

        rows.append(
            (
                "fresh `python -c`",
                f"{median_ms(fresh, repeat):.1f}",
                "import the task module, call it",
            )
        )
    return rows


def bench_dask_tasks(repeat: int) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    from lockstep.runtime import connect, submit_task

    rows: list[tuple[str, ...]] = []
    start_rows: list[tuple[str, ...]] = []
    a = manifest("a")
    with workspace() as (workdir, _env, procs):
        address = start_scheduler(procs, workdir)
        starts = []
        for name in ("direct", "isolated_warm", "cold"):
            t0 = time.perf_counter()
            proc, log = procs.start(
                f"w-{name}",
                [
                    "worker",
                    address,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--name",
                    name,
                ],
                LOCKSTEP_EXECUTOR=name,
            )
            wait_count(log, "lockstep worker ready", 1, 60, proc)
            starts.append(time.perf_counter() - t0)
        start_rows.append(
            (
                "`lockstep worker --no-nanny` start → ready line (process)",
                f"{statistics.median(starts) * 1000:.0f} ms median of 3",
            )
        )
        client = connect(address, n_workers=3, timeout=30, manifest=a)
        try:
            report = {m.executor: m.address for m in connect_report(client, a)}
            for name in ("direct", "isolated_warm", "cold"):

                def one(name: str = name) -> None:
                    submit_task(
                        client, "lockstep_bench_tasks:noop", workers=[report[name]]
                    ).result()

                rows.append(
                    (
                        f"`{name}` via Dask",
                        f"{median_ms(one, repeat * 4):.2f}",
                        "submit_task(...).result(), one at a time",
                    )
                )
        finally:
            client.close()
        # Workers of another build: refused every time, time to the refusal.
        refusals, refused_ok = [], 0
        trials = 5
        for i in range(trials):
            t0 = time.perf_counter()
            proc, log = procs.start(
                f"bad-{i}",
                ["worker", address, "--host", "127.0.0.1", "--no-nanny", "--no-dashboard"],
                LOCKSTEP_EXECUTOR="direct",
                LOCKSTEP_MANIFEST=str(workdir / "b.json"),
            )
            code = proc.wait(60)
            refusals.append(time.perf_counter() - t0)
            text = log.read_text(errors="replace")
            refused_ok += (
                code != 0
                and "lockstep refused worker" in text
                and "lockstep worker ready" not in text
            )
        start_rows.append(
            (
                "worker of another build refused (start → exit)",
                f"{refused_ok}/{trials} refused, "
                f"{statistics.median(refusals) * 1000:.0f} ms median",
            )
        )
    return rows, start_rows


def connect_report(client: Any, a: BuildManifest) -> Any:
    from lockstep.runtime import check_cluster

    return check_cluster(client, a, n_workers=3, timeout=30).workers


def bench_unreachable() -> list[tuple[str, ...]]:
    """Seconds until ``connect`` and ``lockstep doctor`` give up on a closed port (timeout 2 s)."""
    import socket

    from lockstep.core.errors import ServiceFailed
    from lockstep.runtime.cluster import connect

    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    rows: list[tuple[str, ...]] = []
    start = time.monotonic()
    with suppress(ServiceFailed):
        connect(address, n_workers=1, timeout=2, manifest=manifest("a"))
    rows.append(("connect(timeout=2)", f"{time.monotonic() - start:.2f} s", "< 15 s"))
    start = time.monotonic()
    doctor = [sys.executable, "-m", "lockstep", "doctor", "--scheduler", address]
    subprocess.run([*doctor, "--timeout", "2"], capture_output=True, check=False)
    rows.append(("lockstep doctor --timeout 2", f"{time.monotonic() - start:.2f} s", "< 30 s"))
    return rows


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", default="2,8,32", help="worker counts (default 2,8,32)")
    parser.add_argument("--repeat", type=int, default=15, help="samples per figure (median)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",") if n]
    print(f"lockstep runtime benchmark: {os.cpu_count()} cores, python {sys.version.split()[0]}\n")
    print("Per-task overhead (median ms, a no-op task):\n")
    print(table(("what", "ms", "how"), bench_executors(args.repeat)))
    dask_rows, start_rows = bench_dask_tasks(args.repeat)
    print()
    print(table(("what", "ms", "how"), dask_rows))
    print()
    print(table(("what", "figure"), start_rows))
    print("\nConnect (median ms of a fresh connect, closed after):\n")
    print(
        table(
            (
                "workers",
                "plain Client()",
                "connect()",
                "ratio",
                "connect(probe_workers=True)",
                "ratio",
            ),
            bench_connect(counts, args.repeat),
        )
    )
    print("\nGiving up on a scheduler that is not there:\n")
    print(table(("what", "took", "target"), bench_unreachable()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
