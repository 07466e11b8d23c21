"""Worker container start to "ready" (docs/design.md §7: ≤ 1 s), side by side. Prints Markdown.

Builds the images from a clone of the committed tree (``$LOCKSTEP_CACHE_DIR``
or the default cache), starts a private dockerd (``tests.fixtures.engine``, needs
root), loads the worker image and, on a private internal network, starts:

- a ``lockstep scheduler`` and a plain ``dask scheduler`` container;
- N times each, one worker container, locked down as deployed (user 65532,
  read-only root, tmpfs ``/tmp``), timed from the engine's ``StartedAt`` to the
  log line that says it is ready (the engine's log timestamp):

  * ``lockstep worker`` with ``LOCKSTEP_EXECUTOR`` = cold, isolated_warm,
    direct (with Dask's nanny, as the rendered Deployment runs it), and cold
    with ``--no-nanny`` — to ``lockstep worker ready``;
  * a plain ``dask worker`` (no lockstep preload) of the same image against the
    plain scheduler — to Dask's ``Registered to``;
  * ``python3.11 -c pass`` — to its exit: the floor of a container.

Times are from the process start (the engine's ``StartedAt``) and, for
what the engine adds (runc, mounts, network), from our create + start call.

Every container and the network are removed by id; dockerd is stopped by pid.
Run: ``.venv/bin/python bench/bench_replay.py [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.engine import DockerEngine  # noqa: E402
from tests.fixtures.replay import (  # noqa: E402
    LOCKED_DOWN,
    LOCKSTEP,
    PYTHON,
    Replay,
    _instant,
    seconds_to_line,
    wait_exit,
    wait_for_log,
)

READY = "lockstep worker ready"
DASK_READY = "Registered to"


def build_worker(work: Path) -> dict[str, Any]:
    src = work / "lockstep"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(src)], check=True)
    proc = subprocess.run(
        [sys.executable, "-m", "lockstep", "build", "worker", "--out", str(work / "out"), "--json"],
        cwd=src,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"build failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


Samples = tuple[list[float], list[float]]  # (from StartedAt, from the create call)


def samples(start: Callable[[int], Any], pattern: str, repeat: int) -> Samples:
    """Seconds to ``pattern`` from the process start and from our create + start call;
    one warm-up run first (page cache, overlay mounts)."""
    started, called = [], []
    for i in range(repeat + 1):
        before = time.time()  # the engine's log timestamps are this host's wall clock
        container = start(i)
        try:
            wait_for_log(container, pattern, 120)
            seconds = seconds_to_line(container, pattern)
            container.reload()
            begun = _instant(container.attrs["State"]["StartedAt"]).timestamp()
        finally:
            container.remove(force=True)
        if i:
            started.append(seconds)
            called.append(begun + seconds - before)
    return started, called


def run_to_exit(replay: Replay, image: str, repeat: int) -> Samples:
    started, called = [], []
    for i in range(repeat + 1):
        before = time.time()
        container = replay.client.containers.create(
            image, ["-c", "pass"], entrypoint=[PYTHON], network=replay.network.name, **LOCKED_DOWN
        )
        try:
            container.start()
            done = wait_exit(container, 60)
            assert done.code == 0, done.describe()
            container.reload()
            state = container.attrs["State"]
            begun, ended = _instant(state["StartedAt"]), _instant(state["FinishedAt"])
        finally:
            container.remove(force=True)
        if i:
            started.append((ended - begun).total_seconds())
            called.append(ended.timestamp() - before)
    return started, called


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lockstep-bench-replay-") as tmp:
        work = Path(tmp)
        result = build_worker(work)
        engine = DockerEngine.start()
        engine_seconds = engine.startup_seconds
        try:
            with open(result["images"]["worker"]["path"], "rb") as f:
                engine.client.images.load(f.read())
            image = result["images"]["worker"]["config"]
            examples = work / "empty"
            examples.mkdir()
            replay = Replay(engine, examples)
            try:
                rows = measure(replay, image, args.repeat)
            finally:
                replay.close()
        finally:
            engine.stop()
    print(
        f"worker container start to ready, {args.repeat} runs each after one warm-up "
        f"({os.cpu_count()} cores; engine StartedAt to the log line)\n"
    )
    print(
        "| container | until | from process start: median (min-max) | vs plain dask "
        "worker | from the create + start call: median |"
    )
    print("|---|---|---|---|---|")
    plain = statistics.median(rows["plain `dask worker`"][1][0])
    for name, (until, (started, called)) in rows.items():
        median = statistics.median(started)
        print(
            f"| {name} | {until} | {median:.2f} s ({min(started):.2f}-{max(started):.2f}) | "
            f"{median / plain:.2f}x | {statistics.median(called):.2f} s |"
        )
    print(f"\nthe private dockerd (tests.fixtures.engine) started in {engine_seconds:.2f} s")


def measure(replay: Replay, image: str, repeat: int) -> dict[str, tuple[str, Samples]]:
    scheduler = replay.start(
        "scheduler",
        image,
        ["--host", "0.0.0.0", "--port", "8786", "--no-dashboard", "--insecure"],
        entrypoint=[*LOCKSTEP, "scheduler"],
        alias="scheduler",
    )
    plain_scheduler = replay.start(
        "plain-scheduler",
        image,
        [
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "0.0.0.0",
            "--port",
            "8786",
            "--no-dashboard",
        ],
        entrypoint=[PYTHON],
        alias="plain-scheduler",
    )
    wait_for_log(scheduler, "lockstep scheduler ready", 120)
    wait_for_log(plain_scheduler, "Scheduler at", 120)

    def lockstep_worker(executor: str, *extra: str) -> Callable[[int], Any]:
        def start(i: int) -> Any:
            return replay.start(
                f"w-{executor}-{len(extra)}-{i}",
                image,
                ["tcp://scheduler:8786", "--nthreads", "1", "--no-dashboard", "--insecure", *extra],
                env={"LOCKSTEP_EXECUTOR": executor},
            )

        return start

    def plain_worker(i: int) -> Any:
        return replay.start(
            f"plain-{i}",
            image,
            [
                "-m",
                "distributed.cli.dask_worker",
                "tcp://plain-scheduler:8786",
                "--nthreads",
                "1",
                "--no-dashboard",
            ],
            entrypoint=[PYTHON],
        )

    until = "`lockstep worker ready`"
    return {
        "`lockstep worker`, cold": (until, samples(lockstep_worker("cold"), READY, repeat)),
        "`lockstep worker`, isolated_warm": (
            until,
            samples(lockstep_worker("isolated_warm"), READY, repeat),
        ),
        "`lockstep worker`, direct": (until, samples(lockstep_worker("direct"), READY, repeat)),
        "`lockstep worker --no-nanny`, cold": (
            until,
            samples(lockstep_worker("cold", "--no-nanny"), READY, repeat),
        ),
        "plain `dask worker`": ("`Registered to`", samples(plain_worker, DASK_READY, repeat)),
        "`python3.11 -c pass`": ("exit", run_to_exit(replay, image, repeat)),
    }


if __name__ == "__main__":
    main()
