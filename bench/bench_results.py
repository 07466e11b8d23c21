"""Studies at scale through the result store (issue 24). Prints a Markdown table.

On one cluster of real processes on 127.0.0.1 (``lockstep scheduler`` and two
``lockstep worker --nthreads 1``, executor ``direct``), for each size N:

1. ``lockstep run`` of N trivial simulations (a model returning three numbers)
   into a fresh store, as a real process: wall time and peak RSS
   (``ru_maxrss`` of that process, read by a one-child wrapper);
2. plain Dask on the same cluster and the same tasks: ``client.map`` of
   ``run_task(lockstep.jobs.entry:simulate, …)`` over the N simulations, then one
   ``client.gather`` (the bundle is on the workers already);
3. the same ``lockstep run`` again on the full store (reuse: nothing computed, the
   aggregate stored too, so it is answered from the store and contacts no cluster);
4. at the smallest size only: a run SIGKILLed once half its results are stored,
   then the rerun: simulations computed, and its aggregate against the
   uninterrupted run's.

Run: ``.venv/bin/python bench/bench_results.py [--sizes 10000,100000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lockstep.bundles.format import load_bundle  # noqa: E402
from lockstep.bundles.ship import ship_bundle  # noqa: E402
from lockstep.results.store import ResultStore, Stored  # noqa: E402
from lockstep.runtime import connect  # noqa: E402
from lockstep.runtime.tasks import run_task  # noqa: E402
from tests.fixtures.procs import (  # noqa: E402
    base_env,
    lockstep,
    start_scheduler,
    start_worker,
    write_manifest,
)

PARAM_SETS = 10
MODEL = """
def simulate(params, seed):
    return {"x": seed * params["a"], "y": seed % 7, "z": 0.5}

def total(results):
    return {"n": len(results), "sum": sum(r["output"]["x"] for r in results)}
"""
PEAK = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


def job(workdir: Path, n: int) -> Path:
    """A spec of ``n`` simulations: PARAM_SETS parameter sets x n / PARAM_SETS seeds."""
    root = workdir / f"job-{n}"
    (root / "bundle").mkdir(parents=True, exist_ok=True)
    (root / "bundle" / "trivial.py").write_text(MODEL)
    seeds = list(range(n // PARAM_SETS))
    params = "".join(f"[[params]]\na = {i + 1}\n" for i in range(PARAM_SETS))
    spec = root / "job.toml"
    spec.write_text(
        'bundle = "bundle"\nmodel = "trivial:simulate"\ntarget = "trivial:total"\n'
        f'executor = "direct"\nseeds = {seeds}\n{params}'
    )
    return spec


def run(
    env: dict[str, str], address: str, spec: Path, store: Path, *extra: str
) -> tuple[float, float, dict[str, Any]]:
    """``lockstep run`` as a process: (seconds, peak RSS MB, result head)."""
    out = store.parent / f"{store.name}.json"
    args = lockstep("run", str(spec), "--scheduler", address, "--store", str(store))
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PEAK, *args, "--out", str(out), "--workers", "2", *extra],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"lockstep run failed:\n{proc.stderr[-3000:]}")
    peak_kb = int(proc.stderr.strip().splitlines()[-1])
    with out.open() as f:
        result = json.load(f)
    result.pop("simulations")
    return seconds, peak_kb / 1024, result


def plain_dask(address: str, manifest: Any, spec: Path, n: int) -> float:
    """``client.map`` + ``gather`` of the same tasks; seconds."""
    from lockstep.jobs.spec import load_spec

    loaded = load_spec(spec, {"direct": ""})
    bundle, _ = load_bundle(spec.parent / "bundle")
    assert bundle is not None
    client = connect(address, n_workers=2, timeout=30, manifest=manifest)
    try:
        ship_bundle(client, bundle, list(client.scheduler_info()["workers"]))
        calls = [(loaded.model, params, seed) for params in loaded.params for seed in loaded.seeds]
        assert len(calls) == n
        started = time.perf_counter()
        futures = client.map(
            run_task,
            ["lockstep.jobs.entry:simulate"] * n,
            calls,
            [{}] * n,
            [bundle.digest] * n,
            [None] * n,
            pure=False,
        )
        values = client.gather(futures)
        seconds = time.perf_counter() - started
        assert len(values) == n
        del futures, values
        return seconds
    finally:
        client.close()


def kill_at_half(env: dict[str, str], address: str, spec: Path, store: Path, n: int) -> None:
    runner = subprocess.Popen(
        lockstep("run", str(spec), "--scheduler", address, "--store", str(store)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while runner.poll() is None:
            done = sum(1 for f in ResultStore(store).scan() if isinstance(f, Stored))
            if done >= n // 2:
                os.kill(runner.pid, signal.SIGKILL)
                break
            time.sleep(0.2)
    finally:
        runner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument(
        "--no-plain-dask", action="store_true", help="skip plain Dask (memory and reuse only)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="lockstep-bench-results-") as tmp:
        workdir = Path(tmp)
        a_path, a = write_manifest(workdir, "a")
        env = base_env(a_path)
        scheduler, address = start_scheduler(workdir, a_path)
        bundles = {i: {"LOCKSTEP_BUNDLE_DIR": str(workdir / f"bundles-{i}")} for i in range(2)}
        workers = [
            start_worker(workdir, address, a_path, "direct", f"w{i}", env=bundles[i])
            for i in range(2)
        ]
        try:
            for w in workers:
                w.wait_for("lockstep worker ready", timeout=60)
            for n in sizes:
                spec = job(workdir, n)
                store = workdir / f"store-{n}"
                first, first_rss, result = run(env, address, spec, store)
                assert result["computed"] == n, result
                dask = float("nan") if args.no_plain_dask else plain_dask(address, a, spec, n)
                again, again_rss, reused = run(env, address, spec, store)
                assert reused["reused"] == n and reused["computed"] == 0
                assert reused["aggregate_reused"]
                assert reused["aggregate"] == result["aggregate"]
                rows.append((n, first, dask, first_rss, again, again_rss))
                print(
                    f"n={n}: lockstep run {first:.1f} s (peak RSS {first_rss:.0f} MB), plain "
                    f"Dask {dask:.1f} s, ratio {first / dask:.2f}; rerun {again:.2f} s "
                    f"({again / first:.1%}, peak RSS {again_rss:.0f} MB)",
                    flush=True,
                )
            small = sizes[0]
            spec = job(workdir, small)
            killed = workdir / f"killed-{small}"
            kill_at_half(env, address, spec, killed, small)
            kept = sum(1 for f in ResultStore(killed).scan() if isinstance(f, Stored))
            _, _, resumed = run(env, address, spec, killed)
            _, _, whole = run(env, address, spec, workdir / f"whole-{small}")
        finally:
            for w in workers:
                w.stop()
            scheduler.stop()
    print()
    print("| simulations | `lockstep run` | plain Dask map + gather | ratio | runner peak RSS "
          "| rerun (all reused) | rerun / first |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for n, first, dask, rss, again, again_rss in rows:
        plain = "—" if dask != dask else f"{dask:.1f} s"  # nan: --no-plain-dask
        ratio = "—" if dask != dask else f"{first / dask:.2f}x"
        print(
            f"| {n:,} | {first:.1f} s | {plain} | {ratio} | {rss:.0f} MB | "
            f"{again:.2f} s ({again_rss:.0f} MB) | {again / first:.1%} |"
        )
    print()
    print(
        f"Killed at half ({small:,}): {kept:,} stored when SIGKILLed; the rerun reused "
        f"{resumed['reused']:,} and computed {resumed['computed']:,}; aggregate equal to an "
        f"uninterrupted run's: {resumed['aggregate'] == whole['aggregate']}"
    )


if __name__ == "__main__":
    main()
