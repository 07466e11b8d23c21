"""Bundles as OCI artifacts (issue 13): a numpy + scipy bundle. Prints Markdown tables.

1. ``push_bundle`` into an empty loopback docker-registry, then again after a one-line
   change in the bundle's code: bytes uploaded and seconds;
2. eight ``lockstep worker``s (``isolated_warm``, each its own empty bundle directory)
   getting the bundle and making its environment, then one task each: once with the
   bundle and wheels sent through the scheduler, once with the workers pulling the
   reference from the registry. Meanwhile a thread asks the scheduler ``identity``
   every 20 ms over its own connection: its round trips are the event loop's
   responsiveness.

Run: ``.venv/bin/python bench/bench_oci_bundles.py`` (needs PyPI for the lock; wheels are
cached in ``$LOCKSTEP_CACHE_DIR``).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_bundles import make_bundle  # noqa: E402

from lockstep.bundles.format import Bundle, load_bundle  # noqa: E402
from lockstep.bundles.remote import push_bundle, resolve  # noqa: E402
from lockstep.bundles.ship import ship_bundle  # noqa: E402
from lockstep.runtime import connect, submit_task  # noqa: E402
from tests.fixtures.procs import start_scheduler, start_worker, write_manifest  # noqa: E402
from tests.fixtures.registry import OciRegistry  # noqa: E402

WORKERS = 8


class LoopProbe:
    """Round trips of ``identity`` to the scheduler, every 20 ms, on a thread of its own."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        from distributed.core import rpc

        async with rpc(self.address) as scheduler:  # type: ignore[no-untyped-call]
            while not self._stop.is_set():
                start = time.perf_counter()
                await scheduler.identity()
                self.samples.append(time.perf_counter() - start)
                await asyncio.sleep(0.02)

    def __enter__(self) -> LoopProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def summary(self) -> str:
        s = sorted(self.samples)
        if not s:
            return "no samples"
        p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
        return (
            f"median {statistics.median(s) * 1e3:.1f} ms, p99 {p99 * 1e3:.0f} ms, "
            f"max {s[-1] * 1e3:.0f} ms ({len(s)} round trips)"
        )


def eight_workers(workdir: Path, bundle_of: dict[str, Bundle], registry: OciRegistry) -> list[str]:
    rows = []
    a_path, a = write_manifest(workdir, "a")
    for mode, bundle in bundle_of.items():
        scheduler, address = start_scheduler(workdir, a_path, name=f"scheduler-{mode}")
        workers = []
        try:
            for i in range(WORKERS):
                workers.append(
                    start_worker(
                        workdir,
                        address,
                        a_path,
                        "isolated_warm",
                        f"w-{mode}-{i}",
                        env={
                            "LOCKSTEP_BUNDLE_DIR": str(workdir / f"b-{mode}-{i}"),
                            "DOCKER_CONFIG": str(workdir),
                        },
                    )
                )
            for w in workers:
                w.wait_for("lockstep worker ready", timeout=120)
            client = connect(address, n_workers=WORKERS, timeout=60, manifest=a)
            try:
                addrs = sorted(client.scheduler_info()["workers"])
                with LoopProbe(address) as probe:
                    start = time.perf_counter()
                    shipped = ship_bundle(client, bundle, addrs, timeout=600)
                    got = time.perf_counter()
                    futures = [
                        submit_task(
                            client,
                            "npmodel.model:simulate",
                            ({}, i),
                            bundle=bundle.digest,
                            workers=[addr],
                            allow_other_workers=False,
                        )
                        for i, addr in enumerate(addrs)
                    ]
                    for f in futures:
                        f.result(timeout=600)
                    done = time.perf_counter()
                rows.append(
                    f"| {mode} | {done - start:.1f} s | {got - start:.1f} s | "
                    f"{shipped.wheel_bytes / 1e6:.0f} MB | {probe.summary()} |"
                )
            finally:
                client.close()
        finally:
            for w in workers:
                w.stop()
            scheduler.stop()
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="lockstep-bench-oci-") as tmp:
        workdir = Path(tmp)
        bundle_dir = make_bundle(workdir)
        registry = OciRegistry.start_new(workdir / "registry")
        try:
            print("| push | blobs uploaded | bytes uploaded | seconds |\n|---|---|---|---|")
            first = push_bundle(bundle_dir, registry.address, "bench/np")
            print(
                f"| cold (empty registry) | {first.stats.uploaded} | "
                f"{first.stats.uploaded_bytes / 1e6:.1f} MB | {first.seconds:.2f} |"
            )
            model = bundle_dir / "npmodel" / "model.py"
            model.write_text(model.read_text() + "\n# one more line\n")
            second = push_bundle(bundle_dir, registry.address, "bench/np")
            print(
                f"| after a one-line code change | {second.stats.uploaded} | "
                f"{second.stats.uploaded_bytes} B (code blob) | {second.seconds:.2f} |"
            )
            local, _ = load_bundle(bundle_dir)
            assert local is not None, f"{bundle_dir} is not a bundle"
            pulled, _ = resolve(second.reference)
            print(
                f"\n{WORKERS} fresh `isolated_warm` workers, one task each "
                f"(bundle {pulled.digest[:19]}…):\n"
            )
            print(
                "| bundle via | first task on all | bundle + env ready | wheel bytes moved "
                "| scheduler `identity` round trip meanwhile |\n|---|---|---|---|---|"
            )
            for row in eight_workers(
                workdir, {"scheduler (sent)": local, "registry (pulled)": pulled}, registry
            ):
                print(row)
        finally:
            registry.close()


if __name__ == "__main__":
    main()
