"""``lockstep bundle lock``: real resolves with the pinned pex against the public index.

Tests that need the package index skip (locally) or fail (``LOCKSTEP_REQUIRE_ALL=1``)
when it is unreachable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lockstep.bundles.image_pins import from_project
from lockstep.bundles.lock import _conflict, lock_bundle
from lockstep.bundles.lockfile import parse_lock
from lockstep.core.errors import BadInput
from lockstep.core.store import Cache
from tests.fixtures.procs import PYTHON_LOCK
from tests.fixtures.support import require
from tests.inputs.test_python_lock import PROJECT, ROOT, _index_reachable

CHECKOUT = from_project(PROJECT)


@pytest.fixture(scope="module")
def index() -> None:
    require(_index_reachable(), "the package index is unreachable")


LOCK_CLI = (sys.executable, "-m", "lockstep", "bundle", "lock")


def cli(bundle: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSTEP_")}
    env["LOCKSTEP_CACHE_DIR"] = str(cache)
    return subprocess.run(
        [*LOCK_CLI, str(bundle), "--project", str(ROOT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_a_numpy_bundle_is_locked_for_every_platform_without_the_image_s_projects(
    index: None, cache_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0"\ndependencies = ["numpy>=2,<3", "packaging"]\n'
    )
    proc = cli(tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "lockstep.lock.json"
    assert proc.stdout.startswith(
        f"{path}: 1 wheel(s) for linux/amd64 and linux/arm64, content sha256:"
    )
    lock, problems = parse_lock(path.read_bytes(), str(path))
    assert problems == [] and lock is not None
    assert lock.requirements == ("numpy>=2,<3", "packaging")
    assert lock.python_lock == PYTHON_LOCK
    assert list(lock.platforms) == ["linux/amd64", "linux/arm64"]
    machines = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
    found = {}
    for name, part in lock.platforms.items():
        assert [w.project for w in part.wheels] == ["numpy"]  # packaging is the image's
        assert part.pins["packaging"] == "26.4"
        [numpy] = part.wheels
        assert numpy.url.startswith("https://")
        assert numpy.filename.endswith(f"_{machines[name]}.whl"), numpy.filename
        assert Cache(cache_dir).get_blob(numpy.digest) is not None  # fetched for the runner
        found[name] = numpy
    assert found["linux/amd64"].version == found["linux/arm64"].version  # one resolve each
    assert "1 project(s) for linux/amd64 and linux/arm64 provided by the image" in proc.stderr, (
        proc.stderr
    )

    # --platform keeps one platform: that platform's part, as the full lock has it.
    one = tmp_path / "arm64"
    one.mkdir()
    (one / "pyproject.toml").write_bytes((tmp_path / "pyproject.toml").read_bytes())
    proc = cli(one, cache_dir, "--platform", "linux/arm64")
    assert proc.returncode == 0, proc.stderr
    arm, _ = parse_lock((one / "lockstep.lock.json").read_bytes(), "arm64")
    assert arm is not None and list(arm.platforms) == ["linux/arm64"]
    assert arm.platforms["linux/arm64"] == lock.platforms["linux/arm64"]


def test_a_requirement_against_the_image_s_pin_names_both_sides(
    index: None, cache_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "requirements.txt").write_text("tornado>=7\n")
    proc = cli(tmp_path, cache_dir)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"lockstep: error: {tmp_path}/requirements.txt: requirement 'tornado>=7' conflicts "
        "with the image, which pins tornado==6.6.1 (images/python.lock.json); a bundle "
        "cannot replace what the image pins: require a range that includes 6.6.1"
    )
    assert not (tmp_path / "lockstep.lock.json").exists()


def test_a_transitive_conflict_and_an_sdist_only_project(
    index: None, cache_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "requirements.txt").write_text("dask-expr==1.0\n")
    with pytest.raises(
        BadInput, match=r"dask-expr 1.0 depends on dask==2024.3.0; the image pins dask==2026.8.0"
    ):
        lock_bundle(tmp_path, CHECKOUT, cache_dir)
    (tmp_path / "requirements.txt").write_text("pyperclip==1.9.0\n")  # published as an sdist only
    with pytest.raises(
        BadInput, match=r"no wheel for the image's python and platform satisfies pyperclip==1.9.0"
    ):
        lock_bundle(tmp_path, CHECKOUT, cache_dir)
    assert not (tmp_path / "lockstep.lock.json").exists()


def test_a_vcs_requirement_or_no_requirements_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("demo @ git+https://github.com/x/demo\n")
    with pytest.raises(BadInput, match="is a URL or VCS requirement"):
        lock_bundle(tmp_path, CHECKOUT, tmp_path / "cache")
    (tmp_path / "requirements.txt").unlink()
    with pytest.raises(BadInput, match="declares no requirements"):
        lock_bundle(tmp_path, CHECKOUT, tmp_path / "cache")


def test_pip_s_conflict_lines_become_both_sides() -> None:
    output = (
        "pip:  The conflict is caused by:\n"
        "pip:      The user requested tornado>=7\n"
        "pip:      The user requested (constraint) tornado==6.6.1\n"
        "pip:  \n"
    )
    assert _conflict(output) == "the bundle requires tornado>=7; the image pins tornado==6.6.1"
    assert json.dumps(_conflict("nothing")) == '""'
