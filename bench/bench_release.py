"""Release benchmark: lockstep's push vs `skopeo copy` of the same archives, on loopback.

On a fresh clone, both images are built once (warm cache if LOCKSTEP_CACHE_DIR
is set), and a private docker-registry is started on 127.0.0.1. Then, each
case on fresh repositories and repeated (median):

  - push both images into empty repositories;
  - push them again (every blob already there: what a re-run of a release does);
  - re-release after a one-line change in src/ (base and python layers already
    there; app, manifest and configs new);

for lockstep (in-process: read both archives, push, verify both manifests by
digest) and for `skopeo copy oci-archive:… docker://…` (one process per image,
--dest-tls-verify=false). Every pushed digest is checked against ours. Last, a
whole `lockstep release` run (CLI, stamped build from the warm cache, push,
files, tag) into repositories that already hold every layer but the manifest.

Usage: python bench/bench_release.py [--repeat N]
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lockstep.assembly import oci  # noqa: E402
from lockstep.assembly.layout import image_name  # noqa: E402
from lockstep.core.store import Cache  # noqa: E402
from lockstep.oci.client import PushStats  # noqa: E402
from lockstep.oci.reference import parse_target  # noqa: E402
from lockstep.project import ROLES, load_project  # noqa: E402
from lockstep.release.release import push_release  # noqa: E402
from tests.fixtures.registry import OciRegistry  # noqa: E402


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def build(src: Path, cache: Path, out: Path) -> dict[str, Path]:
    result = json.loads(
        run(
            [sys.executable, "-m", "lockstep", "build", "all", "--out", str(out), "--json"],
            src,
            {"LOCKSTEP_CACHE_DIR": str(cache)},
        )
    )
    return {role: Path(result["images"][role]["path"]) for role in ROLES}


class Bench:
    def __init__(self, src: Path, registry: OciRegistry, cache: Path) -> None:
        self.project = load_project(src)
        self.cache = Cache(cache)
        self.registry = registry
        self.n = 0

    def fresh(self, tool: str) -> str:
        self.n += 1
        return f"bench/{tool}{self.n}"

    def lockstep_push(self, paths: dict[str, Path], repo: str) -> PushStats:
        # push_release takes each role's image index (one platform here)
        indexes = {
            role: oci.ImageIndex.of([oci.read_archive(path).image], {})
            for role, path in paths.items()
        }
        stats = PushStats()
        push_release(
            self.project,
            parse_target(f"{self.registry.address}/{repo}"),
            indexes,
            self.cache,
            "0.1.0",
            stats,
            False,
            lambda _: None,
        )
        return stats

    def skopeo_push(self, paths: dict[str, Path], repo: str) -> None:
        for role, path in paths.items():
            name = image_name(self.project.name, role)
            dest = f"docker://{self.registry.address}/{repo}/{name}:0.1.0"
            with tempfile.NamedTemporaryFile() as digestfile:
                run(
                    [
                        "skopeo",
                        "copy",
                        "--quiet",
                        "--dest-tls-verify=false",
                        "--digestfile",
                        digestfile.name,
                        f"oci-archive:{path}",
                        dest,
                    ],
                    ROOT,
                )
                got = Path(digestfile.name).read_text().strip()
            ours = oci.read_archive(path).digest
            if got != ours:
                raise SystemExit(f"skopeo pushed {got} for {path}, ours is {ours}")


def median_time(setup: Callable[[], str], action: Callable[[str], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        repo = setup()
        start = time.perf_counter()
        action(repo)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("skopeo") is None:
        raise SystemExit("skopeo is not installed (Debian package skopeo)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-release-"))
    registry = None
    try:
        cache = Path(os.environ.get("LOCKSTEP_CACHE_DIR") or tmp / "cache")
        src = tmp / "src"
        run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(src)], ROOT)
        run(["git", "config", "user.name", "bench"], src)
        run(["git", "config", "user.email", "bench@example.invalid"], src)
        v1 = build(src, cache, tmp / "out1")
        changed = src / "src/lockstep/runtime/__init__.py"
        changed.write_text(changed.read_text() + "\n# bench: one-line change\n")
        v2 = build(src, cache, tmp / "out2")
        run(["git", "checkout", "-q", "--", "."], src)
        registry = OciRegistry.start_new(tmp / "registry")
        bench = Bench(src, registry, cache)
        layer_bytes = sum(x["size"] for x in oci.read_archive(v1["runner"]).manifest["layers"])

        def pushed(tool: str, push: Callable[[dict[str, Path], str], object]) -> Callable[[], str]:
            def setup() -> str:
                repo = bench.fresh(tool)
                push(v1, repo)
                return repo

            return setup

        rows = []
        for label, setup_ls, setup_sk, paths in (
            (
                "push both images, empty repositories",
                lambda: bench.fresh("ls"),
                lambda: bench.fresh("sk"),
                v1,
            ),
            (
                "push again, every blob already there",
                pushed("ls", bench.lockstep_push),
                pushed("sk", bench.skopeo_push),
                v1,
            ),
            (
                "re-release after a one-line src/ change",
                pushed("ls", bench.lockstep_push),
                pushed("sk", bench.skopeo_push),
                v2,
            ),
        ):
            ls = median_time(setup_ls, functools.partial(bench.lockstep_push, paths), args.repeat)
            sk = median_time(setup_sk, functools.partial(bench.skopeo_push, paths), args.repeat)
            rows.append((label, ls, sk))
        bench.lockstep_push(v1, "bench/again")
        stats_again = bench.lockstep_push(v1, "bench/again")
        stats_v2 = bench.lockstep_push(v2, "bench/again")

        # A whole release, CLI and all: stamped build from the warm cache, push, files, tag.
        repo = "bench/release"
        bench.lockstep_push(v1, repo)  # every layer but the stamped manifest layer is there
        start = time.perf_counter()
        out = json.loads(
            run(
                [
                    sys.executable,
                    "-m",
                    "lockstep",
                    "release",
                    "0.1.0",
                    "--registry",
                    f"{registry.address}/{repo}",
                    "--json",
                ],
                src,
                {"LOCKSTEP_CACHE_DIR": str(cache), "DOCKER_CONFIG": str(tmp / "docker")},
            )
        )
        whole = time.perf_counter() - start

        print(
            f"\nrelease push on loopback: both images, {layer_bytes / 1e6:.1f} MB of shared "
            f"layers; median of {args.repeat}\n"
        )
        print(f"| {'case':<42} | {'lockstep':>9} | {'skopeo copy':>11} | {'ratio':>5} |")
        print(f"|{'-' * 44}|{'-' * 11}|{'-' * 13}|{'-' * 7}|")
        for label, ls, sk in rows:
            print(f"| {label:<42} | {ls:>7.3f} s | {sk:>9.3f} s | {ls / sk:>5.2f} |")
        print(f"\nlockstep, push again: {stats_again.to_dict()}")
        print(f"lockstep, one-line change: {stats_v2.to_dict()}")
        print(
            f"whole `lockstep release` (warm cache, layers present): {whole:.2f} s, "
            f"pushed {out['push']['blobs_uploaded']} blobs "
            f"({out['push']['bytes_uploaded'] / 1e3:.1f} kB)"
        )
    finally:
        if registry is not None:
            registry.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
