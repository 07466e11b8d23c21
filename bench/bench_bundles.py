"""Bundles with locked dependencies (issue 12): a numpy + scipy bundle. Prints Markdown tables.

1. first task on a fresh worker: the bundle and its wheels sent by the runner, the
   environment made (unpacked, RECORD-checked; compiled in the background after), the
   task run — through a real ``lockstep scheduler`` and ``lockstep worker`` on 127.0.0.1;
2. the same on a restarted worker whose environment is on disk (nothing sent); each in
   four forms side by side: the wheels, the prebuilt layer one piece per round trip
   (window 1) and with ``ship_layer.WINDOW`` pieces in flight, all sent through the
   scheduler, and the bundle pushed with its layer to a loopback docker-registry and
   pulled from there by the worker (``lockstep bundle push --prebuilt``); and
   where a fresh worker's time goes without the network (the layer inflated, then
   extracted from memory);
3. per-task overhead with numpy imported by the model, ``isolated_warm`` and ``cold``
   (executors driven directly, as in ``bench_runtime``), beside the time to import the
   model's modules in a fresh child;
4. the seed system's way on the same requirements: a fresh ``python -m venv`` +
   ``pip install`` (online, no pip cache) per worker — and per task for ``cold``.

Run: ``.venv/bin/python bench/bench_bundles.py [--repeat 30] [--store DIR]`` (needs PyPI for
the lock and the pip baseline; the wheels are cached in ``$LOCKSTEP_CACHE_DIR``). ``--store``
puts the workers' environments, the extraction rows and the pip baseline's venv in ``DIR``
(default: the bench's temporary directory): creating 3 000 files costs what the filesystem
makes it cost, so the table names the filesystem it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lockstep.bundles import ship_layer  # noqa: E402
from lockstep.bundles.env import EnvStore  # noqa: E402
from lockstep.bundles.format import Bundle, load_bundle  # noqa: E402
from lockstep.bundles.image_pins import from_project  # noqa: E402
from lockstep.bundles.lock import lock_bundle  # noqa: E402
from lockstep.bundles.prebuilt import env_layer  # noqa: E402
from lockstep.bundles.remote import push_bundle, resolve  # noqa: E402
from lockstep.bundles.ship import ship_bundle  # noqa: E402
from lockstep.bundles.ship_layer import WINDOW  # noqa: E402
from lockstep.core.atomic import remove_read_only  # noqa: E402
from lockstep.core.store import Cache, default_cache_dir  # noqa: E402
from lockstep.project import load_project  # noqa: E402
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
from tests.fixtures.registry import OciRegistry  # noqa: E402

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
    image = from_project(load_project(ROOT))
    lock_bundle(bundle, image, default_cache_dir())
    return bundle


def filesystem(path: Path) -> str:
    """The filesystem holding ``path``, as /proc/mounts names it (type, device, options)."""
    best = ("", "?")
    for line in Path("/proc/mounts").read_text().splitlines():
        device, mount, kind, options = line.split()[:4]
        if (path.resolve().is_relative_to(mount)) and len(mount) >= len(best[0]):
            best = (mount, f"{kind} on {mount} ({device}; {options})")
    return best[1]


def first_task(
    workdir: Path,
    bundle: Path,
    repeat: int,
    runs: int = 3,
    stores: Path | None = None,
    pulled: Bundle | None = None,
) -> list[tuple[str, float, str]]:
    """Rows (what, median seconds of ``runs``, note) for a fresh worker, then a restarted
    worker (environment on disk), for each executor and each form: the wheels sent and
    unpacked on the worker, or the environment prebuilt into one layer (made once by the
    runner beforehand, as ``lockstep bundle push --prebuilt`` does; its making is its own
    row), sent through the scheduler or, with ``pulled`` (the bundle pushed with its layer,
    resolved by reference), pulled by the worker from the registry."""
    rows = []
    stores = stores or workdir
    a_path, a = write_manifest(workdir, "a")
    scheduler, address = start_scheduler(workdir, a_path)
    loaded, _ = load_bundle(bundle)
    assert loaded is not None
    lock = loaded.lock()
    assert lock is not None
    cache = Cache(default_cache_dir())
    t = time.perf_counter()
    layer = env_layer(lock, lambda w: cache.get_blob(w.digest) or b"", Cache(workdir / "runner"))
    rows.append((f"making the prebuilt layer once (runner side, {layer.size / 1e6:.1f} MB)",
                 time.perf_counter() - t, "RECORD checks, .pyc compile, tar + gzip"))  # fmt: skip
    rows += unpack_only(stores, bundle, Cache(workdir / "runner"), layer.digest, runs)
    os.environ["LOCKSTEP_CACHE_DIR"] = str(workdir / "runner")  # the layer, and the wheels:
    for w in lock.wheels:
        Cache(workdir / "runner").put_blob(cache.get_blob(w.digest) or b"")
    try:
        for executor in ("isolated_warm", "cold"):
            # the layer's pieces one round trip at a time (window 1), then a window in flight
            forms = [("wheels", 0), ("prebuilt, window 1", 1), ("prebuilt", WINDOW)]
            for form, window in forms + ([("prebuilt, pulled from a registry", -1)] * bool(pulled)):
                ship_layer.WINDOW = max(window, 0) or WINDOW
                shipped_bundle = (
                    pulled
                    if window < 0 and pulled
                    else dataclasses.replace(loaded, prebuilt=window > 0)
                )
                samples: dict[str, list[float]] = {"fresh": [], "cached": []}
                notes: dict[str, str] = {}
                next_times: list[float] = []
                for run in range(runs):
                    store = stores / f"bundles-{executor}-{window}-{run}"
                    for attempt in ("fresh", "cached"):
                        worker = start_worker(
                            workdir, address, a_path, executor,
                            f"w-{executor}-{window}-{run}-{attempt}",
                            env={"LOCKSTEP_BUNDLE_DIR": str(store), "DOCKER_CONFIG": str(workdir)},
                        )  # fmt: skip
                        try:
                            worker.wait_for("lockstep worker ready", timeout=60)
                            client = connect(address, n_workers=1, timeout=30, manifest=a)
                            try:
                                [addr] = list(client.scheduler_info()["workers"])
                                start = time.perf_counter()
                                shipped = ship_bundle(client, shipped_bundle, [addr])
                                shipped_at = time.perf_counter()
                                submit_task(client, "npmodel.model:simulate", ({}, 1),
                                            bundle=shipped_bundle.digest, workers=[addr],
                                            ).result(timeout=300)  # fmt: skip
                                done = time.perf_counter()
                                samples[attempt].append(done - start)
                                how = "made" if shipped.env_built else "found"
                                if not shipped.env_built and shipped.wheel_bytes:
                                    how = "pulled and made"  # by the worker, from the registry
                                notes[attempt] = (
                                    f"{shipped.wheels_sent} wheels sent, "
                                    f"{shipped.wheel_bytes / 1e6:.1f} MB; environment {how} in "
                                    f"{shipped_at - start:.2f} s, task {done - shipped_at:.2f} s"
                                )
                                if shipped.env_built and shipped.env and form == "wheels":
                                    EnvStore(store, "", "").wait_compiled(shipped.env, 300)
                                if attempt == "cached" and run == runs - 1:
                                    for seed in range(repeat):
                                        t = time.perf_counter()
                                        submit_task(client, "npmodel.model:simulate",
                                                    ({}, seed), bundle=shipped_bundle.digest,
                                                    workers=[addr]).result(timeout=60)  # fmt: skip
                                        next_times.append(time.perf_counter() - t)
                            finally:
                                client.close()
                        finally:
                            worker.stop()
                for attempt in ("fresh", "cached"):
                    rows.append((
                        f"{executor}, {attempt} worker, {form}",
                        statistics.median(samples[attempt]),
                        f"median of {runs} ({', '.join(f'{x:.2f}' for x in samples[attempt])}); "
                        f"last: {notes[attempt]}",
                    ))  # fmt: skip
                rows.append((f"{executor}, {form}, next tasks (Dask round trip)",
                             statistics.median(next_times), f"median of {repeat}"))  # fmt: skip
    finally:
        scheduler.stop()
    return rows


def unpack_only(
    workdir: Path, bundle: Path, cache: Cache, digest: str, runs: int
) -> list[tuple[str, float, str]]:
    """Where a fresh worker's time goes without the network: the layer inflated and hashed
    only (zlib-ng, as the worker inflates), then inflated, hashed and extracted (files
    written, verified, renamed into place) from memory in the transport's 4 MiB pieces — the
    worker's side of a transfer alone."""
    import hashlib

    from zlib_ng import zlib_ng

    from lockstep.bundles.ship_layer import CHUNK

    blob = cache.blob_path(digest).read_bytes()
    inflate, extract = [], []
    for run in range(runs):
        t = time.perf_counter()
        hashlib.sha256(blob).digest()
        raw = zlib_ng.decompressobj(wbits=31).decompress(blob)
        inflate.append(time.perf_counter() - t)
        envs = EnvStore(workdir / f"unpack-{run}", "sha256:" + "b" * 64, PYTHON_LOCK)
        t = time.perf_counter()
        sink = envs.layer_sink(bundle, digest, len(blob))
        for offset in range(0, len(blob), CHUNK):
            sink.feed(blob[offset : offset + CHUNK])
        envs.adopt(sink)
        extract.append(time.perf_counter() - t)
        remove_read_only(workdir / f"unpack-{run}")
    each = ", ".join(f"{x:.2f}" for x in extract)
    return [
        (f"  where it goes: sha256 + inflate (zlib-ng) only ({len(raw) / 1e6:.0f} MB out)",
         statistics.median(inflate), f"median of {runs}"),
        ("  where it goes: extraction from memory (inflate, files written, verified, renamed)",
         statistics.median(extract), f"median of {runs} ({each})"),
    ]  # fmt: skip


def per_task(workdir: Path, bundle: Path, repeat: int) -> list[tuple[str, float]]:
    """Per-task milliseconds in the executors, with the environment made here."""
    envs = EnvStore(workdir / "local", "sha256:" + "a" * 64, PYTHON_LOCK)
    loaded, _ = load_bundle(bundle)
    assert loaded is not None
    lock = loaded.lock()
    assert lock is not None

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
    parser.add_argument("--runs", type=int, default=3, help="fresh/cached workers per row")
    parser.add_argument("--no-pip", action="store_true", help="leave out the pip baseline")
    parser.add_argument("--store", type=Path, help="where environments are made (default: tmp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lockstep-bench-bundles-") as tmp:
        workdir = Path(tmp)
        stores = Path(tempfile.mkdtemp(prefix="lockstep-bench-stores-", dir=args.store or tmp))
        print(f"environments made on: {filesystem(stores)}")
        bundle = make_bundle(workdir)
        lock = load_bundle(bundle)[0]
        assert lock is not None and lock.lock() is not None
        wheels = lock.lock().wheels  # type: ignore[union-attr]
        print(
            f"bundle: {', '.join(REQUIREMENTS)} -> "
            + ", ".join(f"{w.project} {w.version}" for w in wheels)
        )
        registry = OciRegistry.start_new(workdir / "registry")
        try:
            reference = push_bundle(bundle, registry.address, "bench/np", prebuilt=True).reference
            pulled, _ = resolve(reference)
            print("\n| first task on a worker (through Dask) | seconds | what |\n|---|---|---|")
            for what, seconds, note in first_task(
                workdir, bundle, args.repeat, args.runs, stores, pulled
            ):
                print(f"| {what} | {seconds:.3f} | {note} |")
        finally:
            registry.close()
        print("\n| per task (executor only) | ms |\n|---|---|")
        for what, ms in per_task(workdir, bundle, args.repeat):
            print(f"| {what} | {ms:.2f} |")
        print("\n| the seed system's way | seconds | |\n|---|---|---|")
        for what, seconds, note in [] if args.no_pip else pip_baseline(stores):
            print(f"| {what} | {seconds:.2f} | {note} |")
        remove_read_only(stores)


if __name__ == "__main__":
    main()
