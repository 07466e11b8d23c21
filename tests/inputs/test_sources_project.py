"""Declared sources and the project definition: what counts, and bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lockstep.core.digests import tree_digest
from lockstep.core.errors import BadInput
from lockstep.inputs import declared as sources
from lockstep.project import load_project

ROOT = Path(__file__).resolve().parents[2]


def tree(tmp: Path) -> Path:
    (tmp / "src/pkg").mkdir(parents=True)
    (tmp / "src/pkg/__init__.py").write_text("x = 1\n")
    (tmp / "src/pkg/run.sh").write_text("#!/bin/sh\n")
    (tmp / "src/pkg/run.sh").chmod(0o755)
    return tmp


def test_digest_covers_path_exec_bit_and_content_only(tmp_path: Path) -> None:
    a = tree(tmp_path / "a")
    b = tree(tmp_path / "b")
    os.utime(b / "src/pkg/__init__.py", (1, 1))
    pats = ["src/**/*"]
    assert tree_digest(sources.load(a, pats)) == tree_digest(sources.load(b, pats))
    (b / "src/pkg/run.sh").chmod(0o644)
    d_exec = tree_digest(sources.load(b, pats))
    assert d_exec != tree_digest(sources.load(a, pats))
    (b / "src/pkg/run.sh").chmod(0o755)
    (b / "src/pkg/__init__.py").write_text("x = 2\n")
    assert tree_digest(sources.load(b, pats)) != tree_digest(sources.load(a, pats))


def test_build_outputs_and_git_ignored_files_never_count(tmp_path: Path) -> None:
    a = tree(tmp_path / "a")
    clean = tree_digest(sources.load(a, ["src/**/*"]))
    (a / "src/pkg/__pycache__").mkdir()
    (a / "src/pkg/__pycache__/x.cpython-311.pyc").write_bytes(b"\0")
    (a / "src/pkg.egg-info").mkdir()
    (a / "src/pkg.egg-info/PKG-INFO").write_text("x")
    assert tree_digest(sources.load(a, ["src/**/*"])) == clean
    subprocess.run(["git", "init", "-q", str(a)], check=True)
    (a / ".gitignore").write_text("secret.py\n")
    (a / "src/pkg/secret.py").write_text("token = 1\n")
    assert "src/pkg/secret.py" not in sources.select(a, ["src/**/*"])
    assert tree_digest(sources.load(a, ["src/**/*"])) == clean


def test_a_declared_input_that_does_not_exist_is_bad_input(tmp_path: Path) -> None:
    a = tree(tmp_path)
    with pytest.raises(BadInput, match=r"'images/missing\.json' matches no file"):
        sources.select(a, ["src/**/*", "images/missing.json"])


def copy_project(tmp_path: Path) -> Path:
    dest = tmp_path / "proj"
    dest.mkdir()
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_the_project_definition_loads() -> None:
    p = load_project(ROOT)
    assert p.name == "lockstep"
    assert set(p.executors) == {"cold", "direct", "isolated_warm"}
    assert p.images["worker"].entrypoint[-1] == "worker"
    assert p.images["runner"].entrypoint[-1] == "runner"
    # Both platforms unless the project declares fewer; each has its complete platform.
    assert p.platforms == ("linux/amd64", "linux/arm64")
    assert p.complete_platform_of("linux/amd64") == ROOT / "images/complete-platform.json"
    assert p.complete_platform_of("linux/arm64") == ROOT / "images/complete-platform-arm64.json"


def test_a_project_may_declare_one_platform(tmp_path: Path) -> None:
    dest = copy_project(tmp_path)
    text = (dest / "pyproject.toml").read_text()
    (dest / "pyproject.toml").write_text(
        text.replace("[tool.lockstep]\n", '[tool.lockstep]\nplatforms = ["linux/arm64"]\n', 1)
    )
    assert load_project(dest).platforms == ("linux/arm64",)


def test_a_roles_own_requirements_and_lock_and_the_lock_is_a_declared_source() -> None:
    """The runner's own packages (pyarrow) are declared on its image; its lock counts as a
    declared source, so the build id covers it without a new manifest input."""
    p = load_project(ROOT)
    runner, worker = p.images["runner"], p.images["worker"]
    assert runner.requirements == ("pyarrow==26.0.1",)
    assert runner.python_lock == ROOT / "images/python-runner.lock.json"
    assert worker.requirements == () and worker.python_lock is None
    assert "images/python-runner.lock.json" in p.sources
    assert "images/python-runner.lock.json" in sources.select(ROOT, p.sources)


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("[tool.lockstep]\n", '[tool.lockstep]\nsources = "oops"\n', "not valid TOML"),
        ("sources = [", "sources_x = [", "sources must list"),
        ("[tool.lockstep.images.runner]", "[tool.lockstep.images.other]", "images.runner"),
        (
            'entrypoint = ["/usr/bin/python3.11", "-m", "lockstep", "worker"]',
            "entrypoint = []",
            "entrypoint",
        ),
        (
            'cold = "lockstep.runtime.executors.cold:ColdExecutor"',
            'cold = "not an entry point"',
            "must be name",
        ),
        ('python_lock = "images/python.lock.json"\n', "", "python_lock"),
        (
            'python_lock = "images/python-runner.lock.json"\n',
            "",
            r"images\.runner\]: requirements and python_lock go together",
        ),
        (
            'python_lock = "images/python-runner.lock.json"',
            'python_lock = "../runner.lock.json"',
            "must be a path relative to the project",
        ),
        ('lockstep = "lockstep.cli:main"', 'lockstep = "lockstep.cli"', "script 'lockstep'"),
        ("[tool.lockstep]\n", '[tool.lockstep]\nplatforms = ["linux/s390x"]\n', "'linux/s390x'"),
        ("[tool.lockstep]\n", "[tool.lockstep]\nplatforms = []\n", "platforms is empty"),
        (
            "[tool.lockstep]\n",
            '[tool.lockstep]\nplatforms = ["linux/arm64", "linux/arm64"]\n',
            "platforms names a platform twice",
        ),
    ],
)
def test_malformed_tool_lockstep_is_one_clear_line(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    dest = copy_project(tmp_path)
    text = (dest / "pyproject.toml").read_text()
    assert old in text
    (dest / "pyproject.toml").write_text(text.replace(old, new, 1))
    with pytest.raises(BadInput, match=message) as info:
        load_project(dest)
    assert "\n" not in str(info.value)
    assert "pyproject.toml" in str(info.value)


def test_a_platform_the_project_does_not_build_is_one_clear_line() -> None:
    from lockstep.inputs.build_inputs import read_platforms

    with pytest.raises(BadInput, match=r"--platform linux/s390x: .* builds linux/amd64, linux/a"):
        read_platforms(load_project(ROOT), "builder", platforms=("linux/s390x",))
