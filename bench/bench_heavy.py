"""Heavy-stack build benchmark (issue 14 "Measure"): lockstep vs `docker build`, one run.

In a fresh clone of the committed tree, numpy, scipy, pandas and pyarrow are added to
`[tool.lockstep] requirements` and `lockstep lock python` runs (not timed). Then:

  lockstep (empty cache at the start):
    - cold `lockstep build all` (downloads of .debs and wheels included; both images), then
      one one-line change with archives (the first build to hash the cached blobs again)
    - the same from a cache holding only the base layer (like for like with the docker side,
      which starts from the base loaded), `--layout DIR --no-archives`
    - no-op rebuild, with archives and with `--layout DIR --no-archives`
    - one-line change in src/, with `--layout DIR --no-archives` and with archives, and the
      same layout-only change on the light stack (distributed alone), for "independent of
      the stack's size"
    - one-wheel change: tzdata pinned to another version in requirements, relocked (not
      timed), then one rebuild timed; with archives (version A) and layout-only (version B);
      the layers that changed are printed; after change A, both images pushed again to a
      loopback docker-registry that holds the first build: which blobs went up
  docker build (a private dockerd, Debian docker.io; BuildKit when it works, else classic):
    the equivalent Dockerfile FROM the same Debian base (our base layer, preloaded), the
    same locked wheel files by URL and sha256 (`pip install --require-hashes`, pip's cache in
    a `RUN --mount=type=cache`), the same app files; cold, no-op, one-line change, and the
    one-wheel change (lock A).

Usage: python bench/bench_heavy.py [--repeat N] [--no-docker]
Prints a Markdown table and the notes under it.
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpu_use import Usage, measured  # this directory is on sys.path: it holds this script

from lockstep.core.stamps import RACY_NS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HEAVY = ["numpy", "scipy", "pandas", "pyarrow"]
SITE = "/usr/local/lib/python3.11/dist-packages"
PIP = "26.2.1"  # requirements/build.lock.txt's pip, run from its wheel in the docker build
REQUIREMENTS = re.compile(r"^requirements = \[(.*)\]$", re.MULTILINE)


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


@dataclass
class Clone:
    root: Path
    cache: Path
    # Locking runs pex, which keeps the wheels it resolved with: in a cache of its own, so
    # the cold build downloads everything itself.
    lock_cache: Path
    changes: int = 0

    def lockstep(self, *args: str, cache: Path | None = None) -> str:
        env = {**os.environ, "LOCKSTEP_CACHE_DIR": str(cache or self.cache)}
        return run([sys.executable, "-m", "lockstep", *args], self.root, env)

    def build(self, *args: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.lockstep("build", "all", "--json", *args))
        return result

    def set_requirements(self, extra: list[str]) -> None:
        pyproject = self.root / "pyproject.toml"
        text = pyproject.read_text()
        reqs = ['"distributed==2026.8.0"', *(json.dumps(r) for r in extra)]
        new, n = REQUIREMENTS.subn(f"requirements = [{', '.join(reqs)}]", text, count=1)
        assert n == 1, "no requirements = [...] line in pyproject.toml"
        # The heavy stack is measured on one platform (its archives: <role>.tar).
        if "\nplatforms = " not in new:  # once: the one-wheel changes set requirements again
            one = '[tool.lockstep]\nplatforms = ["linux/amd64"]\n'
            new = new.replace("[tool.lockstep]\n", one, 1)
        pyproject.write_text(new)
        self.lockstep("lock", "python", cache=self.lock_cache)

    def one_line_change(self) -> None:
        self.changes += 1
        target = self.root / "src/lockstep/runtime/__init__.py"
        target.write_text(target.read_text() + f"\n# bench change {self.changes}\n")

    def pins(self) -> dict[str, str]:
        lock = json.loads((self.root / "images/python.lock.json").read_text())
        return {
            r["project_name"]: r["version"]
            for res in lock["locked_resolves"]
            for r in res["locked_requirements"]
        }


def clone(dest: Path, cache: Path) -> Clone:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    return Clone(dest, cache, dest.parent / "lock-cache")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(samples: list[float]) -> float:
    return statistics.median(samples)


# -- reading the images' layers ----------------------------------------------------------


def _label(created_by: str) -> str:
    text = created_by.removeprefix("lockstep ").removeprefix("lockstep: ")
    return text if len(text) <= 90 else text[:87] + "..."


def archive_layers(path: Path) -> list[tuple[str, str, int]]:
    """(digest, what, compressed size) of each layer of an image archive, bottom first."""
    from lockstep.assembly.oci import read_archive

    archive = read_archive(path)
    history = [h for h in archive.config["history"] if not h.get("empty_layer")]
    return [
        (layer["digest"], _label(str(h.get("created_by", "?"))), int(layer["size"]))
        for layer, h in zip(archive.manifest["layers"], history, strict=True)
    ]


def layout_layers(layout: Path, ref: str) -> list[tuple[str, str, int]]:
    """The same, for the image named ``ref`` in an OCI layout directory."""

    def blob(digest: str) -> Any:
        return json.loads((layout / "blobs/sha256" / digest.removeprefix("sha256:")).read_bytes())

    index = json.loads((layout / "index.json").read_text())
    (entry,) = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref
    ]
    manifest = blob(entry["digest"])
    config = blob(manifest["config"]["digest"])
    history = [h for h in config["history"] if not h.get("empty_layer")]
    return [
        (layer["digest"], _label(str(h.get("created_by", "?"))), int(layer["size"]))
        for layer, h in zip(manifest["layers"], history, strict=True)
    ]


def changed(before: list[tuple[str, str, int]], after: list[tuple[str, str, int]]) -> list[str]:
    old = {digest for digest, _, _ in before}
    return [f"{what} ({size / 1e6:.2f} MB)" for digest, what, size in after if digest not in old]


# -- the docker side ---------------------------------------------------------------------


@dataclass
class Docker:
    ctx: Path
    builder: str = "BuildKit"
    notes: list[str] = field(default_factory=list)


def requirements_txt(lock_bytes: bytes) -> str:
    """Every locked wheel by its URL and sha256: pip installs exactly the lock's files."""
    lock = json.loads(lock_bytes)
    lines = []
    for res in lock["locked_resolves"]:
        for r in res["locked_requirements"]:
            (artifact,) = r["artifacts"]
            lines.append(
                f"{r['project_name']} @ {artifact['url']} "
                f"--hash={artifact['algorithm']}:{artifact['hash']}"
            )
    return "\n".join(sorted(lines)) + "\n"


def dockerfile(buildkit: bool) -> str:
    pip_args = [
        "python3.11",
        "/tmp/pip.whl/pip",
        "install",
        "--quiet",
        "--no-deps",
        "--require-hashes",
        "--only-binary=:all:",
        "--no-warn-script-location",
        "--cert",
        "/tmp/ca.pem",
        "--cache-dir",
        "/tmp/pipcache",
        "--target",
        SITE,
        "-r",
        "/tmp/requirements.txt",
    ]
    head = "FROM lockstep-bench-base:1\nUSER 0\n"
    tail = (
        f"COPY src/lockstep {SITE}/lockstep\n"
        f'RUN ["python3.11", "-m", "compileall", "-q", "{SITE}/lockstep"]\n'
        "USER 65532\n"
        'ENTRYPOINT ["/usr/bin/python3.11", "-m", "lockstep", "worker"]\n'
    )
    if buildkit:
        mounts = (
            "--mount=type=cache,target=/tmp/pipcache "
            "--mount=type=bind,source=pip.whl,target=/tmp/pip.whl "
            "--mount=type=bind,source=ca.pem,target=/tmp/ca.pem "
            "--mount=type=bind,source=requirements.txt,target=/tmp/requirements.txt"
        )
        return head + f"RUN {mounts} {json.dumps(pip_args)}\n" + tail
    # The classic builder has no mounts: the files are copied in and pip's cache is off.
    pip_args[pip_args.index("--cache-dir") : pip_args.index("--cache-dir") + 2] = ["--no-cache-dir"]
    return (
        head
        + "COPY pip.whl /tmp/pip.whl\nCOPY ca.pem /tmp/ca.pem\n"
        + "COPY requirements.txt /tmp/requirements.txt\n"
        + f"RUN {json.dumps(pip_args)}\n"
        + tail
    )


def docker_side(work: Path, src: Path, base_tar: Path, locks: dict[str, bytes], repeat: int) -> Any:
    from tests.fixtures.engine import DockerEngine

    ctx = work / "docker-ctx"
    ctx.mkdir()
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "-d",
            str(work / "pip"),
            "--index-url",
            "https://pypi.org/simple/",
            f"pip=={PIP}",
        ],
        work,
    )
    (wheel,) = (work / "pip").glob("pip-*.whl")
    shutil.copy(wheel, ctx / "pip.whl")
    ca = os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    shutil.copy(ca, ctx / "ca.pem")  # the host's CA bundle: a TLS-inspecting proxy may sit between
    shutil.copytree(src / "src/lockstep", ctx / "src/lockstep")
    (ctx / "requirements.txt").write_text(requirements_txt(locks["heavy"]))

    engine = DockerEngine.start()
    try:
        engine.cli("load", "-i", str(base_tar), timeout=600)
        docker = Docker(ctx)
        daemon = engine.process.pid

        def docker_build(buildkit: bool) -> None:
            env = engine.env(DOCKER_BUILDKIT="1" if buildkit else "0")
            args = [str(engine.docker_cli), "build", "-q", "--network", "host"]
            args += ["-t", "lockstep-bench-worker:1", str(ctx)]
            proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.strip()[-3000:])

        (ctx / "Dockerfile").write_text(dockerfile(buildkit=True))
        try:
            cold_use = measured(lambda: docker_build(True), daemon)
        except RuntimeError as exc:
            docker.builder = "classic builder"
            docker.notes.append(f"BuildKit failed ({str(exc).splitlines()[-1]}); classic builder")
            (ctx / "Dockerfile").write_text(dockerfile(buildkit=False))
            cold_use = measured(lambda: docker_build(False), daemon)
        cold = cold_use.wall
        buildkit = docker.builder == "BuildKit"
        noop = median([timed(lambda: docker_build(buildkit)) for _ in range(repeat)])
        samples = []
        for n in range(repeat):
            target = ctx / "src/lockstep/runtime/__init__.py"
            target.write_text(target.read_text() + f"\n# docker change {n}\n")
            samples.append(timed(lambda: docker_build(buildkit)))
        change = median(samples)
        (ctx / "requirements.txt").write_text(requirements_txt(locks["A"]))
        wheel_change = timed(lambda: docker_build(buildkit))
        inspect = json.loads(engine.cli("image", "inspect", "lockstep-bench-worker:1").stdout)
        version = engine.cli("version", "--format", "{{.Server.Version}}").stdout.strip()
        return {
            "cold": cold,
            "cold_use": cold_use,
            "noop": noop,
            "change": change,
            "wheel": wheel_change,
            "size": float(inspect[0]["Size"]),
            "builder": docker.builder,
            "notes": docker.notes,
            "version": version,
        }
    finally:
        engine.stop()


# -- the like-for-like cold build and the re-release ------------------------------------


def seed_base(root: Path, cache: Path) -> None:
    """A cache holding the base layer of ``root``'s project (and its .debs), nothing else."""
    from lockstep.assembly.layers import LayerMaker
    from lockstep.core.store import Cache
    from lockstep.inputs.build_inputs import DebianInput
    from lockstep.project import load_project

    project = load_project(root)
    LayerMaker(Cache(cache)).base_layer(DebianInput.read(project.debian_lock), project.mirror())


def start_registry(work: Path) -> Any:
    """A docker-registry on 127.0.0.1, or None (the re-release row is left out)."""
    from tests.fixtures.registry import OciRegistry

    try:
        return OciRegistry.start_new(work / "registry")
    except Exception as exc:  # no docker-registry here: say so, go on
        print(f"no registry for the re-release row: {exc}", file=sys.stderr)
        return None


def archive_blobs(out: Path) -> dict[str, int]:
    """Every blob (layers and configs) of both archives in ``out``: digest -> size."""
    from lockstep.assembly.oci import read_archive

    blobs: dict[str, int] = {}
    for role in ("runner", "worker"):
        archive = read_archive(out / f"{role}.tar")
        blobs[archive.manifest["config"]["digest"]] = int(archive.manifest["config"]["size"])
        for layer in archive.manifest["layers"]:
            blobs[layer["digest"]] = int(layer["size"])
    return blobs


def push(root: Path, cache: Path, registry: Any, out: Path, repo: str) -> Any:
    """Push both archives in ``out`` as ``lockstep release`` does; its ``PushStats``."""
    from bench_release import Bench  # this directory is on sys.path: it holds this script

    paths = {role: out / f"{role}.tar" for role in ("runner", "worker")}
    return Bench(root, registry, cache).lockstep_push(paths, repo)


# -- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-docker", action="store_true", help="skip the docker build side")
    parser.add_argument(
        "--also", nargs="*", default=[], metavar="NAME",
        help=f"more requirements beside {', '.join(HEAVY)} (a stack the bench never saw: "
        "--also scikit-learn matplotlib polars statsmodels)",
    )  # fmt: skip
    args = parser.parse_args()
    n = args.repeat
    stack = [*HEAVY, *args.also]
    with tempfile.TemporaryDirectory(prefix="lockstep-bench-heavy-") as tmp:
        work = Path(tmp)
        cache = work / "cache"
        heavy = clone(work / "heavy", cache)
        heavy.set_requirements(stack)
        pins = heavy.pins()
        print(
            "heavy stack: "
            + ", ".join(
                f"{name} {pins.get(name, '?')}" for name in ["distributed", *stack, "tzdata"]
            )
            + f" ({len(pins)} wheels)",
            file=sys.stderr,
        )
        locks = {"heavy": (heavy.root / "images/python.lock.json").read_bytes()}
        out, layout = work / "out", work / "layout"
        rows: dict[str, float] = {}

        cold_use = measured(lambda: heavy.build("--out", str(out)))
        rows["cold"] = cold_use.wall
        # The first change after the cold build hashes each cached blob once (a stamp is
        # kept only from a hash after the blob's racy window: core/stamps.py); later ones not.
        heavy.one_line_change()
        rows["change_first"] = timed(lambda: heavy.build("--out", str(out)))
        first = heavy.build("--out", str(out))
        # Like for like with the docker side, which starts from the base image loaded: a
        # cache holding only the base layer, every wheel downloaded, layout output only.
        stack_cache = work / "cache-stack"
        seed_base(heavy.root, stack_cache)
        rows["cold_stack"] = timed(
            lambda: heavy.lockstep(
                "build", "all", "--json", "--layout", str(work / "layout-stack"), "--no-archives",
                cache=stack_cache,
            )
        )  # fmt: skip
        registry = start_registry(work)
        if registry is not None:
            atexit.register(registry.stop)  # on any way out of this bench
        before = archive_layers(out / "worker.tar")
        # A no-op as a build some seconds later meets it: the outputs older than the racy
        # window, and the record of what they are written by the full check before
        # (assembly/uptodate.py); bench_build also times the full check alone.
        time.sleep(RACY_NS / 1e9)
        heavy.build("--out", str(out))
        rows["noop"] = median([timed(lambda: heavy.build("--out", str(out))) for _ in range(n)])
        heavy.build("--layout", str(layout), "--no-archives")
        time.sleep(RACY_NS / 1e9)
        heavy.build("--layout", str(layout), "--no-archives")
        rows["noop_layout"] = median(
            [timed(lambda: heavy.build("--layout", str(layout), "--no-archives")) for _ in range(n)]
        )

        def change_and(*build_args: str) -> float:
            heavy.one_line_change()
            return timed(lambda: heavy.build(*build_args))

        rows["change_layout"] = median(
            [change_and("--layout", str(layout), "--no-archives") for _ in range(n)]
        )
        rows["change_archives"] = median([change_and("--out", str(out)) for _ in range(n)])
        heavy.build("--out", str(out), "--layout", str(layout))  # both outputs current

        light = clone(work / "light", cache)
        light_layout = work / "light-layout"
        light.build("--layout", str(light_layout), "--no-archives")
        light_samples = []
        for _ in range(n):
            light.one_line_change()
            light_samples.append(
                timed(lambda: light.build("--layout", str(light_layout), "--no-archives"))
            )
        rows["change_layout_light"] = median(light_samples)

        # One-wheel change: tzdata pinned to another version (A with archives, B layout-only).
        locked_tz = pins["tzdata"]
        other = [v for v in ("2024.2", "2024.1", "2023.4") if v != locked_tz]
        archive_before = archive_layers(out / "worker.tar")
        heavy.set_requirements([*stack, f"tzdata=={other[0]}"])
        drift_a = {k: (pins.get(k), v) for k, v in heavy.pins().items() if pins.get(k) != v}
        locks["A"] = (heavy.root / "images/python.lock.json").read_bytes()
        blobs_before = archive_blobs(out)
        if registry is not None:  # the release before the change: what the registry holds
            push(heavy.root, cache, registry, out, "bench/heavy")
        rows["wheel_archives"] = timed(lambda: heavy.build("--out", str(out)))
        changed_a = changed(archive_before, archive_layers(out / "worker.tar"))
        rerelease: dict[str, Any] = {}
        if registry is not None:
            new_blobs = {d: n for d, n in archive_blobs(out).items() if d not in blobs_before}
            stats = push(heavy.root, cache, registry, out, "bench/heavy")
            rerelease = {
                "uploaded": stats.uploaded,
                "bytes": stats.uploaded_bytes,
                "present": stats.present,
                "expected": len(new_blobs),
                "expected_bytes": sum(new_blobs.values()),
            }

        ref_before = heavy.build("--layout", str(layout), "--no-archives")["images"]["worker"][
            "ref"
        ]
        layout_before = layout_layers(layout, ref_before)
        pins_a = heavy.pins()
        heavy.set_requirements([*stack, f"tzdata=={other[1]}"])
        drift_b = {k: (pins_a.get(k), v) for k, v in heavy.pins().items() if pins_a.get(k) != v}
        result: dict[str, Any] = {}
        rows["wheel_layout"] = timed(
            lambda: result.update(heavy.build("--layout", str(layout), "--no-archives"))
        )
        changed_b = changed(layout_before, layout_layers(layout, result["images"]["worker"]["ref"]))

        # Sizes, from the first (heavy, unchanged) build.
        from lockstep.assembly.oci import read_archive

        worker = read_archive(work / "out/worker.tar")
        unpacked = sum(
            len(gzip.decompress(worker.blob(layer["digest"])))
            for layer in worker.manifest["layers"]
        )
        compressed = sum(size for _, _, size in archive_layers(work / "out/worker.tar"))

        docker = None
        if not args.no_docker:
            from lockstep.assembly import oci

            base_tar = work / "base.tar"
            base_layer = worker.manifest["layers"][0]
            ref = oci.LayerRef(
                base_layer["digest"],
                worker.config["rootfs"]["diff_ids"][0],
                int(base_layer["size"]),
            )
            from lockstep.assembly.layout import image_env
            from lockstep.core.platforms import AMD64

            image = oci.make_image(
                platform=AMD64,
                layers=[ref],
                entrypoint=["/usr/bin/python3.11"],
                env=image_env("worker"),
                labels={},
            )
            oci.write_archives(
                [oci.ArchiveOut(base_tar, image, "base", ("lockstep-bench-base:1",))],
                oci.copy_from(lambda _digest: worker.blob(base_layer["digest"])),
            )
            docker = docker_side(work, heavy.root, base_tar, locks, n)

    report(rows, cold_use, docker, n, first, before, unpacked, compressed, pins, locked_tz, other,
           drift_a, drift_b, changed_a, changed_b, rerelease)  # fmt: skip


def report(
    rows: dict[str, float],
    cold_use: Usage,
    docker: dict[str, Any] | None,
    n: int,
    first: dict[str, Any],
    layers: list[tuple[str, str, int]],
    unpacked: int,
    compressed: int,
    pins: dict[str, str],
    locked_tz: str,
    other: list[str],
    drift_a: dict[str, Any],
    drift_b: dict[str, Any],
    changed_a: list[str],
    changed_b: list[str],
    rerelease: dict[str, Any],
) -> None:
    def s(x: float) -> str:
        return f"{x:.2f} s"

    def ratio(ours: float, key: str) -> str:
        return f"{ours / docker[key]:.2f}x" if docker else "n/a"

    def theirs(key: str) -> str:
        return s(docker[key]) if docker else "n/a"

    def ok(cond: bool) -> str:
        return "✓" if cond else "✗"

    stack = ", ".join(f"{k} {pins[k]}" for k in ["numpy", "scipy", "pandas", "pyarrow"])
    print(f"Heavy stack: distributed {pins['distributed']}, {stack} ({len(pins)} wheels).\n")
    print("| case | lockstep | docker build | ratio | target (issue 14) |")
    print("|---|---|---|---|---|")
    cold_ok = docker is not None and rows["cold"] <= docker["cold"]
    print(
        f"| cold build (empty caches, downloads included) | {s(rows['cold'])} | "
        f"{theirs('cold')} | {ratio(rows['cold'], 'cold')} | ≤ docker build {ok(cold_ok)} |"
    )
    theirs_use = docker["cold_use"].describe() if docker else "n/a"
    print(
        f"| cold build, CPU used (user + sys) and cores kept busy | {cold_use.describe()} | "
        f"{theirs_use} | | both cores busy |"
    )
    stack_ok = docker is not None and rows["cold_stack"] <= docker["cold"]
    print(
        f"| cold build, base cached (as docker's preloaded base), every wheel downloaded, "
        f"`--layout DIR --no-archives` | {s(rows['cold_stack'])} | {theirs('cold')} | "
        f"{ratio(rows['cold_stack'], 'cold')} | ≤ docker build {ok(stack_ok)} |"
    )
    print(
        f"| no-op rebuild, archives (median of {n}) | {s(rows['noop'])} | {theirs('noop')} | "
        f"{ratio(rows['noop'], 'noop')} | ≤ 0.1 s {ok(rows['noop'] <= 0.1)} |"
    )
    print(
        f"| no-op rebuild, `--layout DIR --no-archives` (median of {n}) | "
        f"{s(rows['noop_layout'])} | | | ≤ 0.1 s {ok(rows['noop_layout'] <= 0.1)} |"
    )
    print(
        f"| one-line change in `src/`, `--layout DIR --no-archives` (median of {n}) | "
        f"{s(rows['change_layout'])} | {theirs('change')} | "
        f"{ratio(rows['change_layout'], 'change')}"
        f" | ≤ 0.5 s {ok(rows['change_layout'] <= 0.5)} |"
    )
    print(
        f"| the same on the light stack (distributed alone) | {s(rows['change_layout_light'])} "
        "| | | independent of the stack's size "
        f"{ok(rows['change_layout'] <= rows['change_layout_light'] * 1.5 + 0.05)} |"
    )
    print(
        f"| one-line change in `src/`, archives (median of {n}) | {s(rows['change_archives'])} | "
        f"{theirs('change')} | {ratio(rows['change_archives'], 'change')} | "
        f"≤ 0.5 s {ok(rows['change_archives'] <= 0.5)} |"
    )
    print(
        f"| first one-line change after the cold build, archives (every blob hashed once) | "
        f"{s(rows['change_first'])} | | | |"
    )
    print(
        f"| one-wheel change (tzdata {locked_tz} → {other[0]}), archives | "
        f"{s(rows['wheel_archives'])} | {theirs('wheel')} | "
        f"{ratio(rows['wheel_archives'], 'wheel')}"
        f" | ≤ 3 s {ok(rows['wheel_archives'] <= 3)} |"
    )
    print(
        f"| one-wheel change (tzdata {other[0]} → {other[1]}), `--layout DIR --no-archives` | "
        f"{s(rows['wheel_layout'])} | | | ≤ 3 s {ok(rows['wheel_layout'] <= 3)} |"
    )
    if rerelease:
        exact = (rerelease["uploaded"], rerelease["bytes"]) == (
            rerelease["expected"],
            rerelease["expected_bytes"],
        )
        print(
            f"| re-release after the one-wheel change (push to a loopback registry) | "
            f"{rerelease['uploaded']} blobs, {rerelease['bytes'] / 1e6:.2f} MB uploaded, "
            f"{rerelease['present']} already there | | | only the new blobs "
            f"({rerelease['expected']}, {rerelease['expected_bytes'] / 1e6:.2f} MB) {ok(exact)} |"
        )
    docker_size = f"{docker['size'] / 1e6:.1f} MB" if docker else "n/a"
    print(f"| worker image, unpacked | {unpacked / 1e6:.1f} MB | {docker_size} | | |")
    print(f"| worker image, compressed layers | {compressed / 1e6:.1f} MB | | | |")
    print()
    print(f"lockstep worker layers ({len(layers)}), compressed:")
    for _, what, size in layers:
        print(f"    {size / 1e6:8.2f} MB  {what}")
    print(f"one-wheel change A, lock drift: {drift_a}; layers changed: {changed_a}")
    print(f"one-wheel change B, lock drift: {drift_b}; layers changed: {changed_b}")
    if docker:
        print(
            f"docker: engine {docker['version']}, {docker['builder']}; "
            + "; ".join(docker["notes"])
        )
    print(f"build id of the heavy cold build: {first['build_id']}")


if __name__ == "__main__":
    main()
