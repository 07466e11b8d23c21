"""``lockstep bundle lock DIR --image/--release/--archive``: a bundle locked against a
released image, from a directory with no checkout, is the lock the checkout makes.

The release is real (a clone of the committed tree, the tests' private
docker-registry); the archive is ``lockstep build``'s; the resolves are the pinned
pex's against the public index (they skip locally, and fail under
``LOCKSTEP_REQUIRE_ALL=1``, when it is unreachable).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockstep.bundles.lockfile import LOCK_FILE
from tests.fixtures.build import PLATFORM, lockstep, make_repo
from tests.fixtures.registry import OciRegistry
from tests.fixtures.support import require
from tests.inputs.test_python_lock import _index_reachable
from tests.release.test_release import VERSION, docker_config

pytestmark = [pytest.mark.slow, pytest.mark.registry]

BOTH = ("linux/amd64", "linux/arm64")
BUNDLE = '[project]\nname = "demo"\nversion = "0"\ndependencies = ["numpy>=2,<3", "packaging"]\n'


@dataclass(frozen=True)
class Release:
    root: Path  # the checkout it was released from
    record: Path  # release/<version>.json
    worker: str  # the worker image's reference
    archive: Path  # an archive of the same build's worker (unstamped: other digests)


@pytest.fixture(scope="module")
def release(
    tmp_path_factory: pytest.TempPathFactory, oci_registry: OciRegistry, cache_dir: Path
) -> Release:
    require(_index_reachable(), "the package index is unreachable")
    oci_registry.start()
    root = make_repo(tmp_path_factory.mktemp("lock-image"))
    proc = lockstep(
        ["release", VERSION, "--registry", f"{oci_registry.address}/img", "--json"],
        cwd=root,
        cache=cache_dir,
        env=docker_config(root.parent / "docker"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = root / "release" / f"{VERSION}.json"
    built = lockstep(["build", "worker", "--out", "out", *PLATFORM], cwd=root, cache=cache_dir)
    assert built.returncode == 0, built.stderr[-3000:]
    worker = json.loads(record.read_text())["images"]["worker"]["reference"]
    return Release(root, record, worker, root / "out" / "worker-amd64.tar")


def bundle_lock(
    bundle: Path, *args: str, cwd: Path, cache: Path
) -> subprocess.CompletedProcess[str]:
    """The CLI, with no LOCKSTEP_* of the caller's and no project to find from ``cwd``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSTEP_")}
    env["LOCKSTEP_CACHE_DIR"] = str(cache)
    env["DOCKER_CONFIG"] = str(cwd / "docker")
    return subprocess.run(
        [sys.executable, "-m", "lockstep", "bundle", "lock", str(bundle), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def new_bundle(where: Path) -> Path:
    where.mkdir(parents=True)
    (where / "pyproject.toml").write_text(BUNDLE)
    return where


def test_a_lock_against_the_released_image_equals_the_checkout_s(
    release: Release, cache_dir: Path, tmp_path: Path
) -> None:
    """For the platforms the image has (its index's, or the archive's), the lock is the one
    the checkout makes for those platforms (``--platform``)."""
    made: dict[tuple[str, ...], bytes] = {}

    def checkout_lock(platforms: tuple[str, ...]) -> bytes:
        if platforms not in made:
            bundle = new_bundle(tmp_path / "checkout" / "_".join(platforms).replace("/", "-"))
            chosen = [arg for p in platforms for arg in ("--platform", p)]
            proc = bundle_lock(
                bundle, "--project", str(release.root), *chosen, cwd=tmp_path, cache=cache_dir
            )
            assert proc.returncode == 0, proc.stderr
            made[platforms] = (bundle / LOCK_FILE).read_bytes()
        return made[platforms]

    # A modeller's directory: no checkout above it, the record and archive copied into it.
    away = tmp_path / "modeller"
    away.mkdir()
    (away / "docker").mkdir()
    (away / "docker" / "config.json").write_text('{"auths": {}}')
    record = Path(shutil.copy(release.record, away / "release.json"))
    archive = Path(shutil.copy(release.archive, away / "worker.tar"))
    for name, args in (
        # the release pins each role's index of both platforms: every platform of it, or one
        ("image", ["--image", release.worker]),
        ("image-amd64", ["--image", release.worker, "--platform", "linux/amd64"]),
        ("release", ["--release", str(record)]),
        ("archive", ["--archive", str(archive)]),  # one platform's build
    ):
        bundle = new_bundle(away / name)
        proc = bundle_lock(bundle, *args, cwd=away, cache=cache_dir)
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
        got = (bundle / LOCK_FILE).read_bytes()
        platforms = tuple(json.loads(got)["platforms"])
        assert platforms == (BOTH if name in ("image", "release") else BOTH[:1]), name
        assert got == checkout_lock(platforms), name
        assert "/etc/lockstep/python.lock.json in " in proc.stderr, proc.stderr
    assert tuple(json.loads(checkout_lock(("linux/amd64",)))["platforms"]) == ("linux/amd64",)


def test_without_a_checkout_or_an_image_the_error_names_both_ways(tmp_path: Path) -> None:
    bundle = new_bundle(tmp_path / "bundle")
    proc = bundle_lock(bundle, cwd=tmp_path, cache=tmp_path / "cache")
    assert proc.returncode == 2
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("lockstep: error:")]
    assert "pass --project" in line and "--image HOST/REPO@sha256:…" in line, line
    assert "--archive TAR" in line and "--release RECORD" in line, line


def test_an_image_of_another_platform_is_refused(release: Release, tmp_path: Path) -> None:
    bundle = new_bundle(tmp_path / "bundle")
    proc = bundle_lock(
        bundle,
        "--archive",
        str(release.archive),
        "--platform",
        "linux/arm64",
        cwd=tmp_path,
        cache=tmp_path / "cache",
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "lockstep: error: --platform linux/arm64: not a platform of "
        f"/etc/lockstep/python.lock.json in {release.archive} (it has linux/amd64)"
    )
