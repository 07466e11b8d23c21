"""Build benchmark: lockstep build vs `docker build` of an equivalent Dockerfile.

Measured in one run, on a fresh clone of the committed tree:
  - cold build (empty cache: downloads .debs and wheels, compiles, writes), medians of
    --repeat in turns: both images, the worker alone (what the docker side builds), and
    both images of every platform
  - no-op rebuild (warm cache, nothing changed)
  - rebuild after a one-line change in src/
  - compressed image sizes
  - a cold build of every platform (linux/amd64 + linux/arm64) against amd64's alone, and
    the arm64 worker's size against amd64's (issue #22's targets)
and the same three for `docker build` of a Dockerfile that starts FROM the
same Debian base (loaded from our base layer) and pip-installs the same
locked wheels from a local wheelhouse, with the same app files copied in.

Usage: python bench/bench_build.py [--no-docker] [--repeat N]
Prints a table; docs/design.md §7 has the targets.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_heavy import seed_base  # this directory is on sys.path: it holds this script
from cpu_use import Usage, measured

from lockstep.assembly.oci import LayerRef

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


AMD64 = ("--platform", "linux/amd64")  # the docker comparison is of one platform


def lockstep_build(
    src: Path, cache: Path, out: Path, platform: tuple[str, ...] = AMD64, target: str = "all"
) -> dict[str, object]:
    # lockstep's own modules with their .pyc, as an installed lockstep has them (a shell
    # with PYTHONDONTWRITEBYTECODE=1 would compile them at every run: 70 ms of a no-op)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run(
        [sys.executable, "-m", "lockstep", "build", target, "--out", str(out), "--json", *platform],
        cwd=src,
        env={**env, "LOCKSTEP_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"lockstep build failed:\n{proc.stderr}")
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def noop_rows(build: Callable[[], object], out: Path, repeat: int) -> tuple[float, float]:
    """A no-op rebuild's medians: the full check (out/'s record removed before each run: every
    layer found in the cache, every output compared), then as a build a while after the last
    answers (the record of what it wrote, assembly/uptodate.py). The outputs are first left
    older than the racy window, as any build some seconds later finds them."""
    from lockstep.assembly.uptodate import RECORD
    from lockstep.core.stamps import RACY_NS

    def without_record() -> None:
        (out / RECORD).unlink(missing_ok=True)
        build()

    time.sleep(RACY_NS / 1e9)
    full = timed(without_record, repeat)
    build()  # records
    if not (out / RECORD).exists():
        raise SystemExit(f"no-op rebuild: {out / RECORD} was not written")
    return full, timed(build, repeat)


def median_use(samples: list[Usage]) -> Usage:
    """The sample of median wall time (of an odd count: the median itself)."""
    return sorted(samples, key=lambda u: u.wall)[len(samples) // 2]


def one_line_change(src: Path, n: int) -> None:
    target = src / "src/lockstep/runtime/__init__.py"
    target.write_text(target.read_text() + f"\n# bench change {n}\n")


def image_size(path: Path) -> int:
    from lockstep.assembly.oci import read_archive

    return sum(int(layer["size"]) for layer in read_archive(path).manifest["layers"])


@dataclasses.dataclass(frozen=True)
class DockerFigures:
    """`docker build`'s side of the table."""

    cold: float
    cold_use: Usage
    noop: float
    change: float
    size: float


def docker_side(
    work: Path, base_blob: bytes, base_ref: LayerRef, src: Path, repeat: int
) -> DockerFigures:
    """Time `docker build` of the equivalent Dockerfile on a private dockerd."""
    from lockstep.assembly import oci
    from lockstep.assembly.layout import image_env
    from tests.fixtures.engine import DockerEngine

    engine = DockerEngine.start()
    try:
        base_tar = work / "base.tar"
        from lockstep.core.platforms import AMD64

        image = oci.make_image(
            platform=AMD64,
            layers=[base_ref],
            entrypoint=["/usr/bin/python3.11"],
            env=image_env("worker"),
            labels={},
        )
        oci.write_archives(
            [oci.ArchiveOut(base_tar, image, "base", ("lockstep-bench-base:1",))],
            oci.copy_from(lambda _digest: base_blob),
        )
        engine.cli("load", "-i", str(base_tar))
        ctx = work / "ctx"
        wheels = ctx / "wheels"
        wheels.mkdir(parents=True)
        lock = json.loads((src / "images/python.lock.json").read_text())
        reqs = sorted(
            {
                f"{r['project_name']}=={r['version']}"
                for res in lock["locked_resolves"]
                for r in res["locked_requirements"]
            }
        )
        download_use = measured(
            lambda: subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--no-deps",
                    "--index-url",
                    "https://pypi.org/simple/",
                    "--only-binary=:all:",
                    "--platform",
                    "manylinux2014_x86_64",
                    "--platform",
                    "manylinux_2_17_x86_64",
                    "--python-version",
                    "3.11",
                    "--implementation",
                    "cp",
                    "-d",
                    str(wheels),
                    *reqs,
                    "pip==24.2",
                ],
                check=True,
            )
        )
        download = download_use.wall
        shutil.copytree(src / "src", ctx / "src")
        site = "/usr/local/lib/python3.11/dist-packages"
        pip_install = [
            "python3.11",
            "/wheels/pip-24.2-py3-none-any.whl/pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--find-links",
            "/wheels",
            "--target",
            site,
            *reqs,
        ]
        # The base has no shell (like ours): RUN in exec form.
        (ctx / "Dockerfile").write_text(
            "FROM lockstep-bench-base:1\n"
            "USER 0\n"
            "COPY wheels /wheels\n"
            f"RUN {json.dumps(pip_install)}\n"
            f"COPY src/lockstep {site}/lockstep\n"
            f'RUN ["python3.11", "-m", "compileall", "-q", "{site}/lockstep"]\n'
            "USER 65532\n"
            'ENTRYPOINT ["/usr/bin/python3.11", "-m", "lockstep", "worker"]\n'
        )

        def docker_build() -> None:
            # BuildKit, as bench_heavy: its RUN steps are dockerd's own children (runc), so
            # their CPU is seen (cpu_use); the classic builder's run under a shim.
            # The engine has no bridge (tests/fixtures/engine.py): BuildKit's RUN steps need
            # the host's network namespace, as in bench_heavy (pip here reads /wheels only).
            args = [str(engine.docker_cli), "build", "-q", "--network", "host"]
            args += ["-t", "lockstep-bench-worker:1"]
            subprocess.run(
                [*args, str(ctx)], env=engine.env(DOCKER_BUILDKIT="1"), check=True, timeout=3600
            )

        cold_use = measured(docker_build, engine.process.pid)
        cold = download + cold_use.wall
        noop = timed(docker_build, repeat)
        changes = iter(range(10**6))

        def change_and_build() -> None:
            target = ctx / "src/lockstep/runtime/__init__.py"
            target.write_text(target.read_text() + f"\n# bench change {next(changes)}\n")
            docker_build()

        change = timed(change_and_build, repeat)
        inspect = engine.cli("image", "inspect", "lockstep-bench-worker:1").stdout
        size = json.loads(inspect)[0]["Size"]
        return DockerFigures(
            cold=cold,
            cold_use=Usage(cold, download_use.cpu + cold_use.cpu),
            noop=noop,
            change=change,
            size=float(size),
        )
    finally:
        engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-docker", action="store_true", help="skip the docker build side")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lockstep-bench-") as tmp:
        work = Path(tmp)
        src = work / "lockstep"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(src)], check=True)
        lockstep_build(src, work / "warm-up", work / "warm-up-out")  # lockstep's own .pyc
        # Cold builds, each from an empty cache (downloads included), in turns: both images
        # of amd64, the worker alone (what the docker side builds), the worker from a cache
        # holding only the base layer (like for like: docker starts FROM that base,
        # preloaded), both images of every platform; medians of --repeat.
        seed_base(src, work / "seed")
        colds: dict[str, list[Usage]] = {"all": [], "worker": [], "on-base": [], "both": []}
        runs = (
            ("all", AMD64, "all"), ("worker", AMD64, "worker"), ("on-base", AMD64, "worker"),
            ("both", (), "all"),
        )  # fmt: skip
        for n in range(args.repeat):
            for kind, platform, target in runs:
                there = work / f"cold-{kind}-{n}"
                if kind == "on-base":
                    shutil.copytree(work / "seed", there / "c", symlinks=True)
                colds[kind].append(measured(functools.partial(
                    lockstep_build, src, there / "c", there / "o", platform, target
                )))  # fmt: skip
                if n < args.repeat - 1:
                    shutil.rmtree(there)  # the disk: the last of each kind is kept
        last = args.repeat - 1
        cache, out = work / f"cold-all-{last}" / "c", work / f"cold-all-{last}" / "o"
        cold_use, worker_use = median_use(colds["all"]), median_use(colds["worker"])
        cold = cold_use.wall
        on_base, both = median_use(colds["on-base"]).wall, median_use(colds["both"]).wall
        noop_full, noop = noop_rows(lambda: lockstep_build(src, cache, out), out, args.repeat)
        changes = iter(range(10**6))

        def change_and_build() -> None:
            one_line_change(src, next(changes))
            lockstep_build(src, cache, out)

        change = timed(change_and_build, args.repeat)
        worker_size = image_size(out / "worker-amd64.tar")
        arm64_size = image_size(work / f"cold-both-{last}" / "o" / "worker-arm64.tar")
        import gzip

        from lockstep.assembly.oci import read_archive

        archive = read_archive(out / "worker-amd64.tar")
        layers = archive.manifest["layers"]
        unpacked = sum(len(gzip.decompress(archive.blob(layer["digest"]))) for layer in layers)
        names = [str(h.get("created_by", "?")).split(":")[0].removeprefix("lockstep ")
                 for h in archive.config.get("history", [])]  # fmt: skip
        sizes = ", ".join(
            f"{n} {int(layer['size']) / 1e6:.1f}" for n, layer in zip(names, layers, strict=True)
        )
        docker = None
        if not args.no_docker:
            base = layers[0]
            base_ref = LayerRef(
                base["digest"], archive.config["rootfs"]["diff_ids"][0], int(base["size"])
            )
            docker = docker_side(work, archive.blob(base["digest"]), base_ref, src, args.repeat)

    def row(name: str, ours: float, theirs: float | None, unit: str = "s") -> str:
        if theirs is None:
            return f"| {name} | {ours:.2f} {unit} | n/a | n/a |"
        return f"| {name} | {ours:.2f} {unit} | {theirs:.2f} {unit} | {ours / theirs:.2f}x |"

    print("| measure | lockstep build | docker build | ratio |")
    print("|---|---|---|---|")
    print(row("cold build, the worker (as docker builds it; empty caches, downloads included)",
              worker_use.wall, docker.cold if docker else None))  # fmt: skip
    theirs_use = docker.cold_use.describe() if docker else "n/a"
    print(f"| cold build of the worker, CPU used (user + sys), cores kept busy | "
          f"{worker_use.describe()} | {theirs_use} | |")  # fmt: skip
    print(row("cold build, the worker, from a cache holding the base layer (docker starts "
              "FROM it)", on_base, docker.cold if docker else None))  # fmt: skip
    print(row("cold build, both images (the runner adds pyarrow)", cold, None))
    print(f"| cold build of both images, CPU used | {cold_use.describe()} | | |")
    print(row("no-op rebuild (median; out/ as recorded)", noop, docker.noop if docker else None))
    print(
        row(
            "no-op rebuild, full check (median; no record)",
            noop_full,
            docker.noop if docker else None,
        )
    )
    print(row("one-line change in src/ (median)", change, docker.change if docker else None))
    print(
        row("worker image, unpacked", unpacked / 1e6, docker.size / 1e6 if docker else None, "MB")
    )
    print(f"| worker image, compressed layers | {worker_size / 1e6:.1f} MB | | |")
    print(
        f"| cold build, both images, amd64 + arm64 (empty caches) | {both:.2f} s | | "
        f"{both / cold:.2f}x amd64 |"
    )
    print(
        f"| arm64 worker, compressed layers | {arm64_size / 1e6:.1f} MB | | "
        f"{arm64_size / worker_size:.3f}x amd64 |"
    )
    print(f"\nlockstep worker layers (MB, gzip): {sizes}")
    for kind, samples in colds.items():
        print(f"cold {kind}: " + ", ".join(f"{u.wall:.2f} s ({u.describe()})" for u in samples))
    print(
        f"cold rows: medians of {args.repeat}, in turns, each from an empty cache; docker's cold "
        "build once.\n"
        "docker side (BuildKit): FROM the same base (preloaded), wheels by pip download (timed\n"
        "in the cold row) and pip install --no-index; it builds the worker image."
    )


if __name__ == "__main__":
    main()
