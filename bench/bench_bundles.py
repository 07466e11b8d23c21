"""Bundles with locked dependencies (issue 12): a numpy + scipy bundle. Prints Markdown tables.

1. first task on a fresh worker: the bundle and its wheels sent by the runner, the
   environment made (unpacked, RECORD-checked; compiled in the background after), the
   task run — through a real ``lockstep scheduler`` and ``lockstep worker`` on 127.0.0.1;
2. the same on a restarted worker whose environment is on disk (nothing sent);
3. per-task overhead with numpy imported by the model, ``isolated_warm`` and ``cold``
   (executors driven directly, as in ``bench_runtime``), beside the time to import the
   model's modules in a fresh child;
4. the seed system's way on the same requirements: a fresh ``python -m venv`` +
   ``pip install`` (online, no pip cache) per worker — and per task for ``cold``.

Run: ``.venv/bin/python bench/bench_bundles.py [--repeat 30]`` (needs PyPI for the lock and
the pip baseline; the wheels are cached in ``$LOCKSTEP_CACHE_DIR``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lockstep.bundles.env import EnvStore  # noqa: E402
from lockstep.bundles.format import load_bundle  # noqa: E402
from lockstep.bundles.lock import lock_bundle  # noqa: E402
from lockstep.bundles.ship import ship_bundle  # noqa: E402
from lockstep.core.store import default_cache_dir  # noqa: E402
from lockstep.runtime import connect, submit_task  # noqa: E402
from lockstep.runtime.executors import TaskCall  # noqa: E402
from lockstep.runtime.executors.cold import ColdExecutor  # noqa: E402
from lockstep.runtime.executors.warm import IsolatedWarmExecutor  # noqa: E402
from tests.fixtures.procs import (  # noqa: E402
    PYTHON_LOCK,
    start_scheduler,
    start_worker,
    write_manifest,
)

REQUIREMENTS = ["numpy>=2,<3", "scipy>=1.14,<2"]
MODEL = """
import numpy as np
import scipy.special

def simulate(params, seed):
    rng = np.random.default_rng(seed)
    return {"x": float(scipy.special.expit(rng.normal()))}

def tiny(params, seed):
    return {"x": float(np.add(seed, 1))}

def noop(params, seed):
    return None
"""


def make_bundle(workdir: Path) -> Path:
    bundle = workdir / "bundle"
    (bundle / "npmodel").mkdir(parents=True)
    (bundle / "npmodel" / "__init__.py").write_text("")
    (bundle / "npmodel" / "model.py").write_text(MODEL)
    deps = ", ".join(f'"{r}"' for r in REQUIREMENTS)
    (bundle / "pyproject.toml").write_text(
        f'[project]\nname = "bench"\nversion = "0"\ndependencies = [{deps}]\n'
    )
    lock_bundle(
        bundle,
        ROOT / "images" / "python.lock.json",
        ROOT / "images" / "complete-platform.json",
        default_cache_dir(),
    )
    return bundle


def first_task(workdir: Path, bundle: Path, repeat: int) -> list[tuple[str, float, str]]:
    """Rows (what, seconds, note) for a fresh worker, then restarted workers (env on disk)."""
    rows = []
    a_path, a = write_manifest(workdir, "a")
    scheduler, address = start_scheduler(workdir, a_path)
    loaded, _ = load_bundle(bundle)
    assert loaded is not None
    try:
        for executor in ("isolated_warm", "cold"):
            cache = workdir / f"bundles-{executor}"
            for attempt in ("fresh", "cached"):
                worker = start_worker(
                    workdir,
                    address,
                    a_path,
                    executor,
                    f"w-{executor}-{attempt}",
                    env={"LOCKSTEP_BUNDLE_DIR": str(cache)},
                )
                try:
                    worker.wait_for("lockstep worker ready", timeout=60)
                    client = connect(address, n_workers=1, timeout=30, manifest=a)
                    try:
                        [addr] = list(client.scheduler_info()["workers"])
                        start = time.perf_counter()
                        shipped = ship_bundle(client, loaded, [addr])
                        shipped_at = time.perf_counter()
                        submit_task(
                            client,
                            "npmodel.model:simulate",
                            ({}, 1),
                            bundle=loaded.digest,
                            workers=[addr],
                        ).result(timeout=300)
                        done = time.perf_counter()
                        note = (
                            f"{shipped.wheels_sent} wheels sent "
                            f"({shipped.wheel_bytes / 1e6:.1f} MB), environment "
                            f"{'made' if shipped.env_built else 'found'} in "
                            f"{shipped_at - start:.2f} s, task {done - shipped_at:.2f} s"
                        )
                        if shipped.env_built and shipped.env:
                            # the worker compiles the environment in the background
                            EnvStore(cache, "", "").wait_compiled(shipped.env, 300)
                            note += (
                                f"; compiled in the background by "
                                f"{time.perf_counter() - start:.2f} s"
                            )
                        rows.append((f"{executor}, {attempt} worker", done - start, note))
                        # a second task in the same environment: the steady state
                        times = []
                        for seed in range(repeat):
                            t = time.perf_counter()
                            submit_task(
                                client,
                                "npmodel.model:simulate",
                                ({}, seed),
                                bundle=loaded.digest,
                                workers=[addr],
                            ).result(timeout=60)
                            times.append(time.perf_counter() - t)
                        if attempt == "cached":
                            rows.append(
                                (
                                    f"{executor}, next tasks (Dask round trip)",
                                    statistics.median(times),
                                    f"median of {repeat}",
                                )
                            )
                    finally:
                        client.close()
                finally:
                    worker.stop()
    finally:
        scheduler.stop()
    return rows


def per_task(workdir: Path, bundle: Path, repeat: int) -> list[tuple[str, float]]:
    """Per-task milliseconds in the executors, with the environment made here."""
    envs = EnvStore(workdir / "local", "sha256:" + "a" * 64, PYTHON_LOCK)
    loaded, _ = load_bundle(bundle)
    assert loaded is not None
    lock = loaded.lock()
    assert lock is not None
    from lockstep.core.store import Cache

    cache = Cache(default_cache_dir())
    for w in lock.wheels:
        data = cache.get_blob(w.digest)
        assert data is not None
        envs.put_wheel(w.digest, data)
    env = envs.ensure(bundle)
    assert env is not None and envs.wait_compiled(env.key, 300)
    config = SimpleNamespace(
        start_timeout=30.0, task_timeout=60.0, result_max_bytes=1 << 20, warm_environments=4
    )
    rows = []
    for cls in (IsolatedWarmExecutor, ColdExecutor):
        ex = cls(config)
        ex.start()
        try:
            for target in ("noop", "tiny"):
                call = TaskCall(
                    f"npmodel.model:{target}",
                    ({}, 1),
                    paths=(str(env.site), str(bundle)),
                    env=env.key,
                )
                ex.run(call)
                ex.run(call)
                samples = []
                for _ in range(repeat):
                    t = time.perf_counter()
                    ex.run(call)
                    samples.append(time.perf_counter() - t)
                rows.append((f"`{cls.name}`, model `{target}`", statistics.median(samples) * 1e3))
        finally:
            ex.close()
    # importing the model's modules (numpy) in a fresh child: a fork of a clean python
    code = (
        "import os, sys, time\n"
        f"sys.path[:0] = [{str(env.site)!r}, {str(bundle)!r}]\n"
        "samples = []\n"
        f"for _ in range({repeat}):\n"
        "    r, w = os.pipe()\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        t = time.perf_counter(); import npmodel.model; npmodel.model.tiny({}, 1)\n"
        "        os.write(w, repr(time.perf_counter() - t).encode()); os._exit(0)\n"
        "    os.close(w); samples.append(float(os.read(r, 100))); os.waitpid(pid, 0)\n"
        "samples.sort(); print(samples[len(samples) // 2])\n"
    )
    out = subprocess.run([sys.executable, "-I", "-B", "-c", code], capture_output=True, text=True)
    rows.append(
        (
            "import of the model's modules (numpy, scipy.special) in a fresh forked child",
            float(out.stdout) * 1e3,
        )
    )
    return rows


def pip_baseline(workdir: Path) -> list[tuple[str, float, str]]:
    """The seed system's way: a fresh venv and an online pip install, then a task's import."""
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_INDEX_URL")}
    venv = workdir / "venv"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    made = time.perf_counter()
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "-q",
            "--no-cache-dir",
            "--index-url",
            "https://pypi.org/simple",
            *REQUIREMENTS,
        ],
        check=True,
        env=env,
    )
    installed = time.perf_counter()
    t = time.perf_counter()
    subprocess.run([str(venv / "bin" / "python"), "-c", "import numpy, scipy.special"], check=True)
    task = time.perf_counter() - t
    return [
        (
            "fresh `python -m venv` + `pip install` (online, no cache), per worker",
            installed - start,
            f"venv {made - start:.2f} s, pip {installed - made:.2f} s",
        ),
        ("then a fresh interpreter importing numpy + scipy.special (per cold task)", task, ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lockstep-bench-bundles-") as tmp:
        workdir = Path(tmp)
        bundle = make_bundle(workdir)
        lock = load_bundle(bundle)[0]
        assert lock is not None and lock.lock() is not None
        wheels = lock.lock().wheels  # type: ignore[union-attr]
        print(
            f"bundle: {', '.join(REQUIREMENTS)} -> "
            + ", ".join(f"{w.project} {w.version}" for w in wheels)
        )
        print("\n| first task on a worker (through Dask) | seconds | what |\n|---|---|---|")
        for what, seconds, note in first_task(workdir, bundle, args.repeat):
            print(f"| {what} | {seconds:.3f} | {note} |")
        print("\n| per task (executor only) | ms |\n|---|---|")
        for what, ms in per_task(workdir, bundle, args.repeat):
            print(f"| {what} | {ms:.2f} |")
        print("\n| the seed system's way | seconds | |\n|---|---|---|")
        for what, seconds, note in pip_baseline(workdir):
            print(f"| {what} | {seconds:.2f} | {note} |")
        shutil.rmtree(workdir / "venv", ignore_errors=True)


if __name__ == "__main__":
    main()
