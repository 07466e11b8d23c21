"""The Pythons a build host may run: pyproject.toml's classifiers (3.11, 3.12, 3.13).

`make` accepts each and refuses others in one line; every lock holds a wheel, by
sha256, for each; the package installs as a tool (a built wheel with `pip` and with
`pipx`, its console script working from anywhere); and `make images` under each gives
the images' digests of the suite's own build.

Interpreters are found on PATH (`python3.12`, as CI's setup-python leaves them) or
under pyenv's versions; a missing one skips, and fails under LOCKSTEP_REQUIRE_ALL=1.
Tests that ask the package index skip (fail) the same way when it is unreachable.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.fixtures.build import ROOT, Built, clone
from tests.fixtures.support import require
from tests.inputs.test_python_lock import _index_reachable


def _load_tool() -> ModuleType:
    """tools/supported_python.py, what `make` runs (not a package: loaded by its path)."""
    spec = importlib.util.spec_from_file_location(
        "supported_python", ROOT / "tools" / "supported_python.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


supported_python = _load_tool()
SUPPORTED = supported_python.supported()
LOCKS = ("build", "dev", "checkov", "docs")  # requirements/<name>.lock.txt: what `make` installs
# The wheel platforms of an x86_64 glibc 2.36 host (Debian 12; newer hosts take these too).
PLATFORMS = [
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]


def version_text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def interpreter(version: tuple[int, int]) -> Path | None:
    """A python of ``version``: on PATH, else the newest of pyenv's versions."""
    name = f"python{version_text(version)}"
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates = [shutil.which(name)]
    candidates += [str(p) for p in sorted(pyenv.glob(f"{version_text(version)}.*/bin/{name}"))]
    for candidate in reversed([c for c in candidates if c]):
        proc = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        if proc.returncode == 0 and proc.stdout.strip() == version_text(version):
            return Path(candidate)
    return None


def need(version: tuple[int, int]) -> Path:
    found = interpreter(version)
    require(found is not None, f"no Python {version_text(version)} (on PATH or under pyenv)")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def index() -> None:
    require(_index_reachable(), "the package index is unreachable")


def test_the_classifiers_are_the_supported_pythons_and_make_checks_them() -> None:
    assert SUPPORTED == [(3, 11), (3, 12), (3, 13)]
    makefile = (ROOT / "Makefile").read_text()
    assert "\t@$(PYTHON) tools/supported_python.py $(PYTHON)\n" in makefile
    assert supported_python.problem("python3.12", (3, 12), SUPPORTED) is None
    assert supported_python.problem("python3.10", (3, 10), SUPPORTED) == (
        "make: python3.10 is Python 3.10; the locks are for Python 3.11, 3.12, 3.13: "
        "run make PYTHON=python3.13 (or another of them)"
    )


@pytest.mark.parametrize("version", SUPPORTED, ids=version_text)
def test_make_accepts_each_supported_python(version: tuple[int, int]) -> None:
    python = need(version)
    proc = subprocess.run(
        [str(python), str(ROOT / "tools" / "supported_python.py"), python.name],
        capture_output=True,
        text=True,
    )
    assert (proc.returncode, proc.stderr) == (0, "")


def test_make_refuses_another_python_in_one_line(tmp_path: Path) -> None:
    python = interpreter((3, 10))
    require(python is not None, "no Python 3.10 to be refused (on PATH or under pyenv)")
    assert python is not None
    src = clone(tmp_path / "lockstep")
    proc = subprocess.run(
        ["make", "images", f"PYTHON={python}"], cwd=src, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == (
        f"make: {python} is Python 3.10; the locks are for Python 3.11, 3.12, 3.13: "
        "run make PYTHON=python3.13 (or another of them)"
    )
    assert not (src / ".venv").exists()


def dry_run(
    requirements: Path, version: tuple[int, int], report: Path
) -> subprocess.CompletedProcess[str]:
    """pip choosing, for ``version`` on Linux x86_64, one wheel per pin whose sha256 the
    file allows (no sdist: nothing is built), downloading none of them."""
    args = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report"]
    args += [str(report), "--ignore-installed", "--require-hashes", "--no-deps"]
    args += ["--only-binary=:all:", "--implementation", "cp"]
    args += ["--python-version", version_text(version), "--target", str(report.parent / "t")]
    args += [f"--platform={p}" for p in PLATFORMS]
    return subprocess.run(
        [*args, "-r", str(requirements)], capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("lock", LOCKS)
def test_each_lock_holds_a_wheel_for_each_supported_python(
    index: None, lock: str, tmp_path: Path
) -> None:
    requirements = ROOT / "requirements" / f"{lock}.lock.txt"
    pins = sum(1 for line in requirements.read_text().splitlines() if "==" in line[:80])
    for version in SUPPORTED:
        report = tmp_path / f"{version_text(version)}.json"
        proc = dry_run(requirements, version, report)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")]
        assert proc.returncode == 0, f"{lock} for {version_text(version)}: {errors[-3:]}"
        chosen = [
            item["download_info"]["url"] for item in json.loads(report.read_text())["install"]
        ]
        assert len(chosen) == pins and all(url.endswith(".whl") for url in chosen)


def test_a_lock_without_a_wheel_for_a_python_is_caught(index: None, tmp_path: Path) -> None:
    """The check above can fail: numpy 1.26.4 has wheels up to CPython 3.12, not 3.13."""
    unhashed = tmp_path / "numpy.txt"
    unhashed.write_text("numpy==1.26.4\n")
    report = tmp_path / "report.json"
    args = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report"]
    args += [str(report), "--ignore-installed", "--no-deps", "--only-binary=:all:"]
    args += ["--implementation", "cp", "--python-version", "3.12", "--target"]
    args += [str(tmp_path / "t"), *(f"--platform={p}" for p in PLATFORMS), "-r", str(unhashed)]
    subprocess.run(args, check=True, capture_output=True, timeout=600)
    [item] = json.loads(report.read_text())["install"]
    sha = item["download_info"]["archive_info"]["hashes"]["sha256"]
    assert "cp312" in item["download_info"]["url"]
    lock = tmp_path / "numpy.lock.txt"
    lock.write_text(f"numpy==1.26.4 \\\n    --hash=sha256:{sha}\n")
    assert dry_run(lock, (3, 12), tmp_path / "12.json").returncode == 0
    proc = dry_run(lock, (3, 13), tmp_path / "13.json")
    assert proc.returncode != 0 and "numpy==1.26.4" in proc.stderr


@pytest.fixture(scope="module")
def wheelhouse(index: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """lockstep's wheel, built from a clone of the committed tree, and the wheels of
    requirements/build.lock.txt for this Python, each checked against its sha256."""
    base = tmp_path_factory.mktemp("tool")
    src = clone(base / "lockstep")
    dist, house = base / "dist", base / "house"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [
            *pip,
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(dist),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    subprocess.run(
        [
            *pip,
            "download",
            "--quiet",
            "--require-hashes",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(house),
            "-r",
            str(src / "requirements" / "build.lock.txt"),
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    [wheel] = dist.glob("lockstep-*-py3-none-any.whl")
    return wheel, house


def console_script_works(script: Path, cwd: Path) -> None:
    """``lockstep --help`` from a directory with no checkout, and one real command."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKSTEP_", "PYTHON"))}
    proc = subprocess.run(
        [str(script), "--help"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "build" in proc.stdout and "bundle" in proc.stdout
    proc = subprocess.run(
        [str(script), "bundle", "lock", str(cwd)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--image HOST/REPO@sha256:" in proc.stderr, proc.stderr


def test_the_wheel_installs_with_pip_and_its_console_script_works(
    wheelhouse: tuple[Path, Path], tmp_path: Path
) -> None:
    wheel, house = wheelhouse
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "install", "--quiet", "--no-index", "--find-links", str(house), f"{wheel}[build]"],
        check=True,
        capture_output=True,
        timeout=900,
    )
    subprocess.run([*pip, "check"], check=True, capture_output=True, timeout=300)
    console_script_works(venv / "bin" / "lockstep", tmp_path)


def test_the_wheel_installs_with_pipx_and_its_console_script_works(
    wheelhouse: tuple[Path, Path], tmp_path: Path
) -> None:
    pipx = shutil.which("pipx")
    require(pipx is not None, "pipx is not installed (Debian package pipx)")
    assert pipx is not None
    wheel, house = wheelhouse
    env = {**os.environ, "PIPX_HOME": str(tmp_path / "home"), "PIPX_BIN_DIR": str(tmp_path / "bin")}
    proc = subprocess.run(
        [
            pipx,
            "install",
            "--python",
            sys.executable,
            f"{wheel}[build]",
            "--pip-args",
            f"--no-index --find-links {house}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    console_script_works(tmp_path / "bin" / "lockstep", tmp_path)


def image_digests(out: Path) -> dict[str, str]:
    """Each amd64 archive's image manifest digest, read back by `lockstep inspect` (the
    project builds both platforms, so the archives' names say the platform)."""
    found = {}
    for role in ("runner", "worker"):
        proc = subprocess.run(
            [sys.executable, "-m", "lockstep", "inspect", str(out / f"{role}-amd64.tar"), "--json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        found[role] = json.loads(proc.stdout)["digest"]
    return found


@pytest.mark.slow
@pytest.mark.parametrize(
    "version", [v for v in SUPPORTED if v != sys.version_info[:2]], ids=version_text
)
def test_make_images_under_each_python_gives_the_same_digests(
    index: None, version: tuple[int, int], built: Built, tmp_path: Path
) -> None:
    """The set-up command itself: a fresh .venv of that Python from the dev lock, then a
    build with an empty cache (every .deb and wheel fetched, every layer made)."""
    python = need(version)
    src = clone(tmp_path / "lockstep")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSTEP_")}
    env["LOCKSTEP_CACHE_DIR"] = str(tmp_path / "empty-cache")
    proc = subprocess.run(
        ["make", "images", f"PYTHON={python}"],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    venv_python = subprocess.run(
        [str(src / ".venv" / "bin" / "python"), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert venv_python.stdout.strip() == str(version)
    assert image_digests(src / "out") == {r: built.digest(r) for r in ("runner", "worker")}
